// FailoverPolicy (config_service, contract 8) driven by a ManualClock: the failure windows, the
// sync licence, paused shards, the order of sync changes and fencing.
#include "config_service/src/failover_policy.h"

#include <gtest/gtest.h>

#include "common/core/clock.h"

namespace tally::config_service {
namespace {

class FailoverPolicyTest : public ::testing::Test {
 protected:
  FailoverPolicyTest() : policy_(options()) {
    record_.leader = "127.0.0.1:1";
    record_.replica = "127.0.0.1:2";
    record_.state = shard_states::kServing;
    record_.sync = true;
    record_.state_since_ms = clock_.wall_ms();
  }
  static PolicyOptions options() {
    PolicyOptions o;
    o.failover_after_ms = 1000;
    o.replica_unhealthy_after_ms = 1000;
    o.pause_max_ms = 30000;
    o.promote_timeout_ms = 10000;
    return o;
  }
  // Both nodes fine, replica streaming as the synchronous standby.
  static ShardObservation healthy() {
    ShardObservation o;
    o.leader = {"127.0.0.1:1", true, false, 100, ""};
    o.leader_sync_names = "*";
    o.replica = {"127.0.0.1:2", true, true, 100, ""};
    o.replica_streaming = true;
    o.replica_sync = true;
    o.lag_bytes = 0;
    o.lag_ms = 0;
    return o;
  }
  static ShardObservation leader_dead() {
    ShardObservation o = healthy();
    o.leader.reachable = false;
    o.leader.error = "connection refused";
    o.leader_sync_names.clear();
    o.replica_streaming = false;
    o.replica_sync = false;
    o.lag_bytes = -1;
    return o;
  }
  Action decide(const ShardObservation& o) {
    return policy_.decide(o, record_, clock_.steady_ms(), clock_.wall_ms());
  }

  ManualClock clock_;
  FailoverPolicy policy_;
  ShardRecord record_;
};

TEST_F(FailoverPolicyTest, HealthyShardNeedsNothing) {
  EXPECT_EQ(decide(healthy()).kind, ActionKind::kNone);
}

TEST_F(FailoverPolicyTest, FailsOverOnlyAfterTheWindow) {
  EXPECT_EQ(decide(healthy()).kind, ActionKind::kNone);
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kNone);  // window starts
  clock_.advance(500);
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kNone);
  clock_.advance(499);
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kNone);
  clock_.advance(1);
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kFailover);
}

TEST_F(FailoverPolicyTest, LeaderBackWithinTheWindowResetsIt) {
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kNone);
  clock_.advance(900);
  EXPECT_EQ(decide(healthy()).kind, ActionKind::kNone);
  clock_.advance(50);
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kNone);
  clock_.advance(900);
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kNone);
  clock_.advance(100);
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kFailover);
}

TEST_F(FailoverPolicyTest, NoFailoverWithoutTheSyncLicence) {
  record_.sync = false;
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kNone);
  clock_.advance(60000);
  Action a = decide(leader_dead());
  EXPECT_EQ(a.kind, ActionKind::kNone);
  EXPECT_NE(a.reason.find("sync is false"), std::string::npos) << a.reason;
}

TEST_F(FailoverPolicyTest, NoFailoverToAnUnreachableReplicaOrOneNotInRecovery) {
  ShardObservation o = leader_dead();
  o.replica.reachable = false;
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
  clock_.advance(5000);
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
  o.replica.reachable = true;
  o.replica.in_recovery = false;
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
  o.replica.in_recovery = true;
  EXPECT_EQ(decide(o).kind, ActionKind::kFailover);
  record_.replica.clear();
  o.replica = {};
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
}

TEST_F(FailoverPolicyTest, PausedShardIsNotFailedOverUntilThePauseIsTooOld) {
  record_.state = shard_states::kPaused;
  record_.state_since_ms = clock_.wall_ms();
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kNone);
  clock_.advance(29000);
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kNone);
  clock_.advance(1000);  // the pause is 30 s old: the switchover that set it is presumed dead
  EXPECT_EQ(decide(leader_dead()).kind, ActionKind::kFailover);
}

TEST_F(FailoverPolicyTest, PausedShardGetsNoSyncChanges) {
  record_.state = shard_states::kPaused;
  record_.state_since_ms = clock_.wall_ms();
  ShardObservation o = healthy();
  o.replica.reachable = false;
  o.replica_streaming = false;
  decide(o);
  clock_.advance(5000);
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
}

TEST_F(FailoverPolicyTest, ReplicaDeathDowngradesAfterTheWindow) {
  ShardObservation o = healthy();
  o.replica.reachable = false;
  o.replica_streaming = false;
  o.replica_sync = false;
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
  clock_.advance(999);
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
  clock_.advance(1);
  // The supervisor writes sync:false first, then clears the setting (one action, that order).
  EXPECT_EQ(decide(o).kind, ActionKind::kDowngradeSync);
  // Record already false, setting still '*': only the clearing remains; still a downgrade.
  record_.sync = false;
  EXPECT_EQ(decide(o).kind, ActionKind::kDowngradeSync);
  o.leader_sync_names = "";
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
}

TEST_F(FailoverPolicyTest, ReplicaUnhealthyWhileLeaderDownNeverDowngrades) {
  // Without the leader nobody streams: that must not cost the failover its licence.
  ShardObservation o = leader_dead();
  o.replica.reachable = false;
  for (int i = 0; i < 10; ++i) {
    EXPECT_NE(decide(o).kind, ActionKind::kDowngradeSync);
    clock_.advance(500);
  }
}

TEST_F(FailoverPolicyTest, SyncTrueWithoutTheSettingIsDowngraded) {
  ShardObservation o = healthy();
  o.leader_sync_names = "";
  EXPECT_EQ(decide(o).kind, ActionKind::kDowngradeSync);
}

TEST_F(FailoverPolicyTest, EnableThenConfirm) {
  record_.sync = false;
  ShardObservation o = healthy();
  o.leader_sync_names = "";
  o.replica_sync = false;
  o.lag_bytes = 64 * 1024 * 1024;  // far behind: commits would stall, wait
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
  o.lag_bytes = 100;
  EXPECT_EQ(decide(o).kind, ActionKind::kEnableSync);
  o.leader_sync_names = "*";  // set, but the walsender is not 'sync' yet
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
  o.replica_sync = true;
  EXPECT_EQ(decide(o).kind, ActionKind::kConfirmSync);
  record_.sync = true;
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
}

TEST_F(FailoverPolicyTest, WithoutAReplicaTheSettingIsClearedAtOnce) {
  // After a failover the new leader has no standby: a leftover '*' would hold every commit.
  record_.sync = false;
  record_.replica.clear();
  ShardObservation o = healthy();
  o.replica = {};
  o.replica_streaming = false;
  o.replica_sync = false;
  EXPECT_EQ(decide(o).kind, ActionKind::kDowngradeSync);
  o.leader_sync_names = "";
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
}

TEST_F(FailoverPolicyTest, NoEnableWhenTheReplicaIsNotStreaming) {
  record_.sync = false;
  ShardObservation o = healthy();
  o.leader_sync_names = "";
  o.replica_streaming = false;
  o.replica_sync = false;
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);
}

TEST_F(FailoverPolicyTest, FencesAFencedNodeRunningAsPrimaryBeforeAnythingElse) {
  record_.fenced = {"127.0.0.1:9"};
  ShardObservation o = leader_dead();
  FencedObservation f;
  f.node = {"127.0.0.1:9", true, false, 0, ""};
  o.fenced.push_back(f);
  decide(o);  // the leader's failure window starts
  clock_.advance(5000);
  Action a = decide(o);
  EXPECT_EQ(a.kind, ActionKind::kFence);
  EXPECT_EQ(a.target, "127.0.0.1:9");
  o.fenced[0].already_fenced = true;
  EXPECT_EQ(decide(o).kind, ActionKind::kFailover);
  o.fenced[0].already_fenced = false;
  o.fenced[0].node.in_recovery = true;  // rejoined as a standby: not a threat
  EXPECT_EQ(decide(o).kind, ActionKind::kFailover);
  o.fenced[0].node.in_recovery = false;
  o.fenced[0].node.reachable = false;
  EXPECT_EQ(decide(o).kind, ActionKind::kFailover);
}

TEST_F(FailoverPolicyTest, StaleFailingOverIsFinishedAbandonedOrRetried) {
  record_.state = shard_states::kFailingOver;
  record_.state_since_ms = clock_.wall_ms();
  ShardObservation o = leader_dead();
  EXPECT_EQ(decide(o).kind, ActionKind::kNone);  // the promoter still has time
  o.replica.in_recovery = false;                 // promoted meanwhile
  EXPECT_EQ(decide(o).kind, ActionKind::kFinishFailover);
  o.replica.in_recovery = true;
  clock_.advance(10000);
  EXPECT_EQ(decide(o).kind, ActionKind::kFailover);  // promoter gone: promote again
  ShardObservation back = healthy();
  EXPECT_EQ(decide(back).kind, ActionKind::kAbortFailover);
}

}  // namespace
}  // namespace tally::config_service
