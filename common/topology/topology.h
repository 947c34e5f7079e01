// The cluster topology as kept in ZooKeeper (design brief, "ZooKeeper layout"; docs/contracts.md):
//   /tally/keyspace         {"version":N,"shards":["-80","80-"]}
//   /tally/shards/<range>   {"leader":"host:port","replica":"host:port","state":"serving",
//                            "sync":true,"fenced":["host:port"],"state_since_ms":N}
//   /tally/health/<range>   written by the leading config_service every health round
//   /tally/election/config_service/n_<seq>   ephemeral sequential: config_service election
//   /tally/processors/<id>  ephemeral: a live processor, its ingest address and partitions
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
inline constexpr const char* kHealth = "/tally/health";
inline constexpr const char* kConfigServiceElection = "/tally/election/config_service";
inline constexpr const char* kProcessors = "/tally/processors";
std::string shard(const std::string& range);
std::string processor(const std::string& id);
std::string shard_proxies(const std::string& range);
std::string health(const std::string& range);
}  // namespace topology_paths

struct KeyspaceRecord {
  int64_t version = 1;
  std::vector<std::string> shards;
};

// Shard states. Shard proxies hold new leader transactions (for a bounded time) while a shard is
// paused or failing over, and the leading config_service never starts a failover of a paused shard
// unless the pause is older than its bound (the switchover that set it died).
namespace shard_states {
inline constexpr const char* kServing = "serving";
inline constexpr const char* kPaused = "paused";             // planned switchover in progress
inline constexpr const char* kFailingOver = "failing_over";  // config_service is promoting
}  // namespace shard_states

struct ShardRecord {
  std::string leader;             // host:port of the PostgreSQL node taking writes
  std::string replica;            // host:port of its streaming replica; empty when it has none
  std::string state = "serving";  // see shard_states
  // True only while the leader runs with the replica as its synchronous standby and the replica
  // was streaming when that was confirmed: every acknowledged commit is then on the replica, so a
  // failover to it loses nothing. Set to false BEFORE synchronous replication is downgraded, set
  // true only AFTER it is confirmed (Patroni's /sync key). No failover happens while it is false.
  bool sync = false;
  // Former leaders demoted by a failover: they must not take writes again (config_service fences
  // them if they come back as primaries) until `tallyctl shard rejoin` makes them replicas.
  std::vector<std::string> fenced;
  int64_t state_since_ms = 0;  // wall clock (ms since the epoch) of the last state change
};

std::string encode_keyspace(const KeyspaceRecord& record);
Result<KeyspaceRecord> decode_keyspace(const std::string& json_text);
std::string encode_shard(const ShardRecord& record);
Result<ShardRecord> decode_shard(const std::string& range, const std::string& json_text);

// What the leading config_service saw in its last health round of one shard.
struct NodeHealthReport {
  std::string address;       // host:port
  bool ok = false;           // accepts connections and answers queries
  bool in_recovery = false;  // pg_is_in_recovery()
  std::string error;         // why not ok, for operators
};

struct HealthRecord {
  NodeHealthReport leader;
  NodeHealthReport replica;                 // address empty when the shard has no replica
  bool replica_streaming = false;           // the leader lists the replica's walsender as streaming
  bool replica_sync = false;                // ... with sync_state 'sync'
  int64_t replica_lag_ms = -1;              // -1: unknown
  int64_t replica_lag_bytes = -1;           // leader's current LSN minus the replica's replay LSN
  std::vector<std::string> fenced_running;  // fenced former leaders found up as primaries
  int64_t at_ms = 0;                        // wall clock of the round
  std::string checked_by;                   // config_service id
};

std::string encode_health(const HealthRecord& record);
Result<HealthRecord> decode_health(const std::string& range, const std::string& json_text);

// A live processor (ephemeral /tally/processors/<id>, held by the processor's ZooKeeper session).
struct ProcessorRecord {
  std::string id;
  std::string ingest;         // host:port of its POST /v1/events API
  int partitions = 0;         // it owns partitions 0 .. partitions-1 of its log
  std::string cluster_proxy;  // the URL its writers apply through; empty: none configured
  int64_t started_at_ms = 0;  // wall clock
};
std::string encode_processor(const ProcessorRecord& record);
Result<ProcessorRecord> decode_processor(const std::string& id, const std::string& json_text);

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
