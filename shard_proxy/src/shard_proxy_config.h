// The shard proxy's configuration: one YAML file, validated at start-up. Every mistake stops the
// process with an error naming the file, the key and the expected form (ConfigError).
// Read once at start-up; immutable afterwards, shared read-only by every thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/pgwire/scram.h"

namespace tally::shard_proxy {

enum class AuthMethod { kScramSha256, kMd5, kTrust };

struct ProxyUser {
  std::string name;
  std::string password;            // for md5 and for the server connections
  pgwire::ScramCredentials scram;  // derived once at load
};

struct ShardProxyConfig {
  std::string file;
  std::string id;     // unique per proxy; names its ZooKeeper registration
  std::string shard;  // the range it fronts, e.g. "-80"
  std::string listen_address = "127.0.0.1";
  // The host others reach this proxy at, as registered in ZooKeeper; empty: listen_address.
  // Needed when listen_address is 0.0.0.0 (in a container: its service name).
  std::string advertise_address;
  int pg_port = 0;
  int http_port = 0;
  int worker_threads = 2;

  std::string zk_hosts;  // empty: static addresses only
  int zk_session_timeout_ms = 10000;

  std::string database = "tally";
  std::string leader;   // host:port; ZooKeeper's topology overrides it when configured
  std::string replica;  // may be empty
  int pool_size = 20;   // server connections per node and user, over all workers
  int connect_timeout_ms = 2000;
  // Per worker thread, node and user, out of its share of pool_size: server connections that
  // pipeline many clients' autocommit reads at once (0: every read leases a connection alone).
  int pipelined_connections = 1;
  int pipeline_depth = 32;    // reads in flight on one pipelined connection at most
  int pipeline_stall_ms = 5;  // a pipelined connection whose oldest read is older takes no more

  int max_clients = 1000;
  int pool_wait_timeout_ms = 5000;
  int statement_timeout_ms = 120000;
  int max_replica_lag_ms = 1000;
  // While the shard is paused or failing over, a new transaction that needs the leader waits up to
  // this long for it to serve again, then fails with 57P03.
  int pause_hold_ms = 10000;
  int health_interval_ms = 250;
  int64_t cache_max_bytes = 64 << 20;

  AuthMethod auth_method = AuthMethod::kScramSha256;
  std::vector<ProxyUser> users;
  std::vector<std::string> read_only_functions;

  const ProxyUser* user(std::string_view name) const;
};

// Throws ConfigError on any problem.
ShardProxyConfig load_shard_proxy_config(const std::filesystem::path& file);

}  // namespace tally::shard_proxy
