// ClusterManifest: the cluster.json that `tallyctl cluster up` writes (design brief, contract 6).
// It records every process as started (role, shard, pid, ports, dirs, log, config), the endpoints
// and the users, so tests, operators and later `up` runs (the restart path) find everything.
// Plain data plus JSON (de)serialization; no I/O beyond reading and writing the file.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/core/result.h"

namespace tally {

struct ManifestUser {
  std::string name;
  std::string password;
};

struct ManifestProcess {
  std::string name;  // unique, e.g. "pg-shard0-leader"
  std::string role;  // zookeeper, pg_leader, pg_replica, shard_proxy, cluster_proxy, ...
  std::optional<std::string> shard;  // the shard range in Vitess notation, for per-shard roles
  pid_t pid = 0;
  std::map<std::string, int> ports;  // "pg", "http", "zk"
  std::string data_dir;
  std::string log;
  std::string config;
};

struct ClusterManifest {
  std::string database = "tally";
  std::map<std::string, ManifestUser> users;  // "admin", "analyst", "replication"
  // Endpoints of services that exist; absent ones are null in the file.
  std::map<std::string, std::optional<std::string>> endpoints;
  std::string zookeeper;  // connect string
  int base_port = 0;
  std::vector<std::string> shards;  // ranges in keyspace order
  std::vector<ManifestProcess> processes;

  const ManifestProcess* find(const std::string& name) const;
  ManifestProcess* find(const std::string& name);
  std::vector<const ManifestProcess*> with_role(const std::string& role) const;
  // libpq conninfo for a PostgreSQL process as a named user ("admin", "analyst").
  std::string conninfo(const ManifestProcess& pg, const std::string& user) const;
};

std::string manifest_to_json(const ClusterManifest& manifest);
Result<ClusterManifest> manifest_from_json(const std::string& text);

// The file is written atomically (temp file + rename) with mode 0600: it holds passwords.
Status write_manifest(const std::filesystem::path& file, const ClusterManifest& manifest);
Result<ClusterManifest> read_manifest(const std::filesystem::path& file);

}  // namespace tally
