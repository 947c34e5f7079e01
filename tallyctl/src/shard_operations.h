// Shard operations of a local cluster (docs/contracts.md, contract 8): `tallyctl shard switchover`
// (a planned, lossless swap of a shard's leader and replica while shard proxies hold new leader
// work) and `tallyctl shard rejoin` (a fenced former leader back as a streaming replica). Every
// topology write is a compare-and-set; cluster.json's roles and PIDs follow. A switchover that
// fails after pausing resumes the shard and says what happened. Blocking; one control thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>

#include "common/core/result.h"

namespace tally {

struct ShardOperationOptions {
  std::filesystem::path dir;  // the cluster directory (cluster.json)
  std::string range;          // the shard, e.g. "-80"
  std::filesystem::path pg_bin_dir = "/usr/lib/postgresql/15/bin";
  std::string service_user = "tally";  // the servers' account when tallyctl runs as root
};

struct SwitchoverOptions {
  ShardOperationOptions shard;
  // How long in-flight transactions on the leader may take to end after the pause; past it the
  // leader's fast shutdown rolls them back (they were never acknowledged).
  std::chrono::milliseconds drain_timeout{5000};
  // How long the replica may take to replay the stopped leader's last checkpoint.
  std::chrono::milliseconds catch_up_timeout{30000};
};

struct SwitchoverOutcome {
  std::string old_leader;  // host:port, now the replica
  std::string new_leader;
  int64_t pause_ms = 0;               // state paused -> serving again
  bool old_leader_streaming = false;  // the old leader runs as a standby of the new one
};

Result<SwitchoverOutcome> switchover_shard(const SwitchoverOptions& options,
                                           std::ostream& progress);

struct RejoinOptions {
  ShardOperationOptions shard;
  std::string node;  // host:port; empty: the shard's only fenced node
  std::chrono::milliseconds streaming_timeout{60000};
};

struct RejoinOutcome {
  std::string node;
  std::string method;       // "pg_rewind" or "pg_basebackup"
  std::string moved_aside;  // the old data directory when pg_basebackup replaced it
};

Result<RejoinOutcome> rejoin_shard_node(const RejoinOptions& options, std::ostream& progress);

// The replication slot a node streams through from whichever node leads: one per node, named
// after its address ("node_127_0_0_1_16010").
std::string replication_slot_for(const std::string& address);

}  // namespace tally
