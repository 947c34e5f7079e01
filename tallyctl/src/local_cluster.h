// LocalCluster: `tallyctl cluster up|down|status` for a cluster on one machine, under one
// directory: ZooKeeper, and per shard a PostgreSQL leader with a streaming replica, the schema
// migrated and the topology bootstrapped in ZooKeeper. Everything it starts is recorded in
// DIR/cluster.json (design brief, contract 6) and stopped by recorded PID. `up` on an existing
// cluster starts only the processes that are not running (the restart path). Call from one control
// thread.
#pragma once

#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include "common/cluster/cluster_manifest.h"
#include "common/config/yaml_reader.h"
#include "common/core/result.h"
#include "common/topology/topology.h"

namespace tally {

struct LocalClusterOptions {
  std::filesystem::path dir;
  int shards = 2;         // a power of two, 1 to 16
  int base_port = 16000;  // see port_layout() below
  std::filesystem::path migrations_dir;
  std::filesystem::path pg_bin_dir = "/usr/lib/postgresql/15/bin";
  std::string service_user = "tally";  // the account servers run as when tallyctl runs as root
  int zookeeper_tick_ms = 500;
  std::string pg_shared_buffers = "128MB";
  int pg_max_connections = 200;
  std::filesystem::path bin_dir;  // where shard_proxy & co. live; default: next to tallyctl
};

// Reads the `local_cluster` YAML config (config/local-cluster.yaml); every key is optional.
// Throws ConfigError naming the file and key on a bad value.
LocalClusterOptions load_local_cluster_options(const std::filesystem::path& file);

// Ports derive from base_port so two clusters with different bases never collide:
//   base+0 ZooKeeper, base+10+2i shard i's leader, base+11+2i its replica,
//   base+100+10i shard i's proxy (PostgreSQL wire), base+101+10i its HTTP admin port.
struct PortLayout {
  int zookeeper;
  int pg_leader(int shard) const { return base + 10 + 2 * shard; }
  int pg_replica(int shard) const { return base + 11 + 2 * shard; }
  int shard_proxy_pg(int shard) const { return base + 100 + 10 * shard; }
  int shard_proxy_http(int shard) const { return base + 101 + 10 * shard; }
  // Cluster-wide services below base+10 (docs/contracts.md, ports).
  int cluster_proxy_http() const { return base + 1; }            // REST
  int config_service_http(int i) const { return base + 2 + i; }  // i = 0, 1
  int cluster_proxy_pg() const { return base + 4; }              // analyst SQL (wire protocol)
  int processor_http() const { return base + 6; }                // ingest
  int base;
};
PortLayout port_layout(int base_port);

// The configuration files `cluster up` writes for the services (p.config; the keys are documented
// in config/*.example.yaml). Exposed so tests can compare them with config/compose/*.yaml.
// cluster_proxy_config_text lists m's shard_proxy processes as its fallback; processor_config_text
// points at m.endpoints["rest"] with the token m.users["rest"] when both are set.
std::string shard_proxy_config_text(const ManifestProcess& p, const ShardRecord& record,
                                    const ClusterManifest& m);
std::string config_service_config_text(const ManifestProcess& p, const ClusterManifest& m);
std::string cluster_proxy_config_text(const ManifestProcess& p, const ClusterManifest& m);
std::string processor_config_text(const ManifestProcess& p, const ClusterManifest& m);

struct ProcessHealth {
  std::string name;
  std::string role;
  std::string shard;
  pid_t pid = 0;
  bool running = false;     // the recorded PID is alive and is this process
  bool responding = false;  // answers its protocol (ruok / PQping)
  std::string detail;       // e.g. "primary", "standby, replay lag 0 B"
};

class LocalCluster {
 public:
  // Creates and starts a new cluster, or starts what is not running in an existing one.
  static Result<ClusterManifest> up(const LocalClusterOptions& options, std::ostream& progress);
  // Stops every process the manifest lists, replicas first, ZooKeeper last; keeps the data.
  static Status down(const std::filesystem::path& dir, std::ostream& progress);
  static Result<std::vector<ProcessHealth>> status(const std::filesystem::path& dir);
  static std::filesystem::path manifest_path(const std::filesystem::path& dir) {
    return dir / "cluster.json";
  }
};

}  // namespace tally
