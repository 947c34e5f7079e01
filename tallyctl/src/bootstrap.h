// Bootstrap: `tallyctl bootstrap`, the one-shot set-up of a cluster whose servers something else
// runs (docker compose): applies the migrations to every shard leader and writes the topology to
// ZooKeeper once. Idempotent: a second run applies nothing new and leaves an existing topology (and
// its leaders, which may have changed by failover) as ZooKeeper has it. Call from one thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include "common/core/result.h"

namespace tally {

struct BootstrapShard {
  std::string range;    // e.g. "-80"
  std::string leader;   // host:port
  std::string replica;  // host:port, empty for none
};

struct BootstrapOptions {
  std::string zookeeper;  // connect string
  std::vector<BootstrapShard> shards;
  std::string database = "tally";
  std::string admin_user = "tally";
  std::string admin_password;
  std::string analyst_password;  // non-empty: tally_analyst gets LOGIN with this password
  std::filesystem::path migrations_dir;
  std::chrono::seconds wait{120};  // how long to wait for ZooKeeper and the leaders to answer
};

// Parses "-80=leader:5432/replica:5432,80-=host:port/host:port" (replica optional); errors name
// the entry and the expected form.
Result<std::vector<BootstrapShard>> parse_bootstrap_shards(const std::string& text);

Status bootstrap_cluster(const BootstrapOptions& options, std::ostream& progress);

}  // namespace tally
