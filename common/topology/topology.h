// The cluster topology as kept in ZooKeeper (design brief, "ZooKeeper layout"):
//   /tally/keyspace         {"version":N,"shards":["-80","80-"]}
//   /tally/shards/<range>   {"leader":"host:port","replica":"host:port","state":"serving"}
// Encoding, decoding and whole-topology reads live here so every service agrees on one format.
// Writers use ZooKeeper versions (compare-and-set). Blocking ZooKeeper calls: never on an io
// thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/core/result.h"
#include "common/keyspace/shard_map.h"
#include "common/zk/zk_client.h"

namespace tally {

namespace topology_paths {
inline constexpr const char* kRoot = "/tally";
inline constexpr const char* kKeyspace = "/tally/keyspace";
inline constexpr const char* kShards = "/tally/shards";
std::string shard(const std::string& range);
std::string shard_proxies(const std::string& range);
std::string health(const std::string& range);
}  // namespace topology_paths

struct KeyspaceRecord {
  int64_t version = 1;
  std::vector<std::string> shards;
};

struct ShardRecord {
  std::string leader;             // host:port of the PostgreSQL node taking writes
  std::string replica;            // host:port of its streaming replica; empty when it has none
  std::string state = "serving";  // serving, paused, failing_over, down
};

std::string encode_keyspace(const KeyspaceRecord& record);
Result<KeyspaceRecord> decode_keyspace(const std::string& json_text);
std::string encode_shard(const ShardRecord& record);
Result<ShardRecord> decode_shard(const std::string& range, const std::string& json_text);

// A consistent-enough snapshot: the keyspace, its validated shard map, and each shard's record with
// the ZooKeeper version it was read at (for compare-and-set).
struct TopologySnapshot {
  KeyspaceRecord keyspace;
  ShardMap map;
  struct Shard {
    ShardRange range;
    ShardRecord record;
    int32_t zk_version = 0;
  };
  std::vector<Shard> shards;  // in keyspace order

  const Shard* shard_for(KeyspaceId ksid) const { return &shards[map.index_for(ksid)]; }
};

Result<TopologySnapshot> read_topology(ZkClient& zk);

// `shards[i]` describes `keyspace.shards[i]`.
// Creates the keyspace and shard nodes when the keyspace node does not exist yet. When it exists,
// nothing is written (the config service owns the topology from then on) and the existing snapshot
// is returned, so a re-run of `cluster up` never overwrites a failover's result.
Result<TopologySnapshot> bootstrap_topology(ZkClient& zk, const KeyspaceRecord& keyspace,
                                            const std::vector<ShardRecord>& shards);

}  // namespace tally
