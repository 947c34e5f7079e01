#include "config_service/src/failover_policy.h"

namespace tally::config_service {

std::string_view action_name(ActionKind kind) {
  switch (kind) {
    case ActionKind::kNone:
      return "none";
    case ActionKind::kEnableSync:
      return "enable_sync";
    case ActionKind::kConfirmSync:
      return "confirm_sync";
    case ActionKind::kDowngradeSync:
      return "downgrade_sync";
    case ActionKind::kFailover:
      return "failover";
    case ActionKind::kFinishFailover:
      return "finish_failover";
    case ActionKind::kAbortFailover:
      return "abort_failover";
    case ActionKind::kFence:
      return "fence";
  }
  return "?";
}

namespace {
Action act(ActionKind kind, std::string reason, std::string target = {}) {
  Action a;
  a.kind = kind;
  a.reason = std::move(reason);
  a.target = std::move(target);
  return a;
}
}  // namespace

void FailoverPolicy::reset() {
  leader_down_since_ = -1;
  replica_unhealthy_since_ = -1;
}

bool FailoverPolicy::replica_healthy(const ShardObservation& obs) const {
  return !obs.replica.address.empty() && obs.replica.reachable && obs.replica.in_recovery &&
         obs.replica_streaming;
}

Action FailoverPolicy::decide(const ShardObservation& obs, const ShardRecord& record,
                              int64_t steady_ms, int64_t wall_ms) {
  // The windows first, so they run whatever the decision below.
  if (obs.leader.reachable) {
    leader_down_since_ = -1;
  } else if (leader_down_since_ < 0) {
    leader_down_since_ = steady_ms;
  }
  // Only judged while the leader answers: with the leader down nobody streams, and the replica
  // is exactly what a failover needs.
  const bool replica_ok = replica_healthy(obs);
  if (replica_ok || !obs.leader.reachable) {
    replica_unhealthy_since_ = -1;
  } else if (replica_unhealthy_since_ < 0) {
    replica_unhealthy_since_ = steady_ms;
  }

  // 1. Safety first: a fenced former leader running as a primary is fenced now.
  for (const auto& f : obs.fenced) {
    if (f.node.reachable && !f.node.in_recovery && !f.already_fenced) {
      return act(ActionKind::kFence, "fenced node " + f.node.address + " is up as a primary",
                 f.node.address);
    }
  }

  const int64_t state_age = wall_ms - record.state_since_ms;

  // 2. A failover that did not finish (its promoter died or the promotion was slow).
  if (record.state == shard_states::kFailingOver) {
    if (!obs.replica.address.empty() && obs.replica.reachable && !obs.replica.in_recovery) {
      return act(ActionKind::kFinishFailover,
                 "replica " + obs.replica.address + " is promoted; recording the new roles");
    }
    if (state_age < options_.promote_timeout_ms) {
      return act(ActionKind::kNone, "failing over (promotion in progress)");
    }
    if (obs.leader.reachable && !obs.leader.in_recovery) {
      return act(ActionKind::kAbortFailover, "failing_over for " + std::to_string(state_age) +
                                                 " ms but the replica was not promoted and the "
                                                 "leader answers; back to serving");
    }
    if (record.sync && obs.replica.reachable && obs.replica.in_recovery) {
      return act(ActionKind::kFailover,
                 "failing_over for " + std::to_string(state_age) + " ms: promoting again");
    }
    return act(ActionKind::kNone, "failing_over and stuck: neither node can take over");
  }

  const bool paused = record.state == shard_states::kPaused;
  if (paused && state_age < options_.pause_max_ms) {
    // A planned switchover owns the shard: no failover, no sync changes.
    return act(ActionKind::kNone, "paused (switchover) for " + std::to_string(state_age) + " ms");
  }

  // 3. Leader down.
  if (!obs.leader.reachable) {
    int64_t down_for = steady_ms - leader_down_since_;
    if (down_for < options_.failover_after_ms) {
      return act(ActionKind::kNone, "leader " + obs.leader.address + " down for " +
                                        std::to_string(down_for) + " ms: " + obs.leader.error);
    }
    if (!record.sync) {
      return act(ActionKind::kNone,
                 "leader " + obs.leader.address + " down for " + std::to_string(down_for) +
                     " ms; no failover: sync is false, the replica may miss acknowledged commits");
    }
    if (obs.replica.address.empty()) {
      return act(ActionKind::kNone, "leader down; no failover: the shard has no replica");
    }
    if (!obs.replica.reachable) {
      return act(ActionKind::kNone, "leader down; no failover: replica " + obs.replica.address +
                                        " is unreachable too: " + obs.replica.error);
    }
    if (!obs.replica.in_recovery) {
      return act(ActionKind::kNone, "leader down; no failover: replica " + obs.replica.address +
                                        " is not in recovery");
    }
    return act(ActionKind::kFailover, "leader " + obs.leader.address + " down for " +
                                          std::to_string(down_for) + " ms: " + obs.leader.error);
  }
  if (obs.leader.in_recovery) {
    // Somebody demoted it (a switchover that outlived its pause?): nothing safe to do here.
    return act(ActionKind::kNone, "leader " + obs.leader.address + " is in recovery");
  }

  // 4. Synchronous replication, with the leader up.
  const bool names_set = obs.leader_sync_names == "*";
  const bool unhealthy_long =
      replica_unhealthy_since_ >= 0 &&
      steady_ms - replica_unhealthy_since_ >= options_.replica_unhealthy_after_ms;
  if (record.sync) {
    if (unhealthy_long) {
      return act(
          ActionKind::kDowngradeSync,
          "replica unhealthy for " + std::to_string(steady_ms - replica_unhealthy_since_) + " ms");
    }
    if (!names_set) {
      return act(ActionKind::kDowngradeSync,
                 "sync is true but the leader's synchronous_standby_names is '" +
                     obs.leader_sync_names + "'");
    }
    return act(ActionKind::kNone, {});
  }
  if (!replica_ok) {
    if (names_set && obs.replica.address.empty()) {
      return act(ActionKind::kDowngradeSync,
                 "no replica: clearing synchronous_standby_names so commits go on");
    }
    if (names_set && unhealthy_long) {
      return act(ActionKind::kDowngradeSync,
                 "replica unhealthy: clearing synchronous_standby_names so commits go on");
    }
    return act(ActionKind::kNone, "replica not streaming; sync stays false");
  }
  if (obs.lag_bytes < 0 || obs.lag_bytes > options_.catch_up_bytes) {
    return act(ActionKind::kNone,
               "replica catching up (" + std::to_string(obs.lag_bytes) + " bytes behind)");
  }
  if (!names_set) return act(ActionKind::kEnableSync, "replica streaming and caught up");
  if (obs.replica_sync) return act(ActionKind::kConfirmSync, "replica shows as sync");
  return act(ActionKind::kNone, "waiting for the replica to show as sync");
}

}  // namespace tally::config_service
