// FailoverPolicy: the decisions of contract 8 (docs/contracts.md) for one shard, without any I/O.
// Input: what the last health round observed, the shard's ZooKeeper record and the time; output:
// the one action the supervisor should take now (and why). It keeps only the failure windows
// (since when the leader has been down, since when the replica has been unhealthy). Owned and
// called by one ShardSupervisor thread; reset() when the instance stops leading.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/topology/topology.h"

namespace tally::config_service {

struct NodeObservation {
  std::string address;
  bool reachable = false;  // answers PQping and a query
  bool in_recovery = false;
  uint64_t lsn = 0;   // leader: pg_current_wal_lsn(); replica: pg_last_wal_replay_lsn()
  std::string error;  // why not reachable
};

struct FencedObservation {
  NodeObservation node;
  bool already_fenced = false;  // default_transaction_read_only on and the 'tally_fenced' standby
};

struct ShardObservation {
  NodeObservation leader;
  std::string leader_sync_names;   // the leader's synchronous_standby_names (when reachable)
  NodeObservation replica;         // address empty when the shard has none
  bool replica_streaming = false;  // the leader's pg_stat_replication has a streaming walsender
  bool replica_sync = false;       // ... whose sync_state is 'sync'
  int64_t lag_bytes = -1;          // -1: unknown
  int64_t lag_ms = -1;
  std::vector<FencedObservation> fenced;
};

struct PolicyOptions {
  int64_t failover_after_ms = 1000;
  int64_t replica_unhealthy_after_ms = 1000;
  int64_t pause_max_ms = 30000;
  int64_t promote_timeout_ms = 10000;
  // Sync is enabled only when the replica is this close (bytes): commits would wait for it.
  int64_t catch_up_bytes = 16 * 1024 * 1024;
};

enum class ActionKind {
  kNone,
  kEnableSync,      // ALTER SYSTEM SET synchronous_standby_names = '*' on the leader + reload
  kConfirmSync,     // CAS sync: true (the replica shows as 'sync')
  kDowngradeSync,   // CAS sync: false (if set) FIRST, then clear synchronous_standby_names
  kFailover,        // CAS failing_over -> pg_promote on the replica -> CAS the new roles
  kFinishFailover,  // the replica is promoted already: CAS the new roles
  kAbortFailover,   // a stale failing_over with the old leader alive and no promotion: serving
  kFence,           // fence `target` (a fenced node found running as a primary)
};

std::string_view action_name(ActionKind kind);

struct Action {
  ActionKind kind = ActionKind::kNone;
  std::string target;  // kFence: the node
  std::string reason;  // for logs and /v1/status; also set for kNone when something is wrong
};

class FailoverPolicy {
 public:
  explicit FailoverPolicy(PolicyOptions options) : options_(options) {}

  // `steady_ms` for the windows, `wall_ms` to age the record's state_since_ms.
  Action decide(const ShardObservation& obs, const ShardRecord& record, int64_t steady_ms,
                int64_t wall_ms);
  // Forgets the windows (e.g. after losing and regaining the leadership, or after an action
  // changed the roles).
  void reset();

  bool replica_healthy(const ShardObservation& obs) const;

 private:
  PolicyOptions options_;
  int64_t leader_down_since_ = -1;
  int64_t replica_unhealthy_since_ = -1;
};

}  // namespace tally::config_service
