#include "common/topology/topology.h"

#include <gtest/gtest.h>

namespace tally {
namespace {

TEST(TopologyTest, KeyspaceRoundTrip) {
  KeyspaceRecord r{7, {"-80", "80-"}};
  auto back = decode_keyspace(encode_keyspace(r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->version, 7);
  EXPECT_EQ(back->shards, r.shards);
  EXPECT_EQ(encode_keyspace(r), R"({"shards":["-80","80-"],"version":7})");
}

TEST(TopologyTest, ShardRoundTrip) {
  ShardRecord r;
  r.leader = "127.0.0.1:5432";
  r.replica = "127.0.0.1:5433";
  auto back = decode_shard("-80", encode_shard(r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->leader, r.leader);
  EXPECT_EQ(back->replica, r.replica);
  EXPECT_EQ(back->state, "serving");
}

TEST(TopologyTest, ShardFailoverFieldsRoundTripAndOldNodesDecode) {
  ShardRecord r{"127.0.0.1:5433", "", "failing_over", true, {"127.0.0.1:5432"}, 1700000000000};
  auto back = decode_shard("-80", encode_shard(r));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->sync);
  EXPECT_EQ(back->fenced, std::vector<std::string>{"127.0.0.1:5432"});
  EXPECT_EQ(back->state_since_ms, 1700000000000);
  // Nodes written before these fields existed: not synchronous (no failover), nothing fenced.
  auto old = decode_shard("-80", R"({"leader":"a:1","replica":"b:2","state":"serving"})");
  ASSERT_TRUE(old.ok());
  EXPECT_FALSE(old->sync);
  EXPECT_TRUE(old->fenced.empty());
  EXPECT_FALSE(decode_shard("-80", R"({"leader":"a:1","fenced":[1]})").ok());
}

TEST(TopologyTest, HealthRoundTripAndBadTypes) {
  HealthRecord h;
  h.leader = {"127.0.0.1:1", true, false, ""};
  h.replica = {"127.0.0.1:2", false, false, "connection refused"};
  h.replica_lag_ms = 12;
  h.replica_lag_bytes = 4096;
  h.replica_streaming = true;
  h.fenced_running = {"127.0.0.1:3"};
  h.at_ms = 42;
  h.checked_by = "cs1";
  auto back = decode_health("-80", encode_health(h));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->leader.ok);
  EXPECT_FALSE(back->replica.ok);
  EXPECT_EQ(back->replica.error, "connection refused");
  EXPECT_EQ(back->replica_lag_ms, 12);
  EXPECT_EQ(back->replica_lag_bytes, 4096);
  EXPECT_TRUE(back->replica_streaming);
  EXPECT_EQ(back->fenced_running, h.fenced_running);
  EXPECT_EQ(back->checked_by, "cs1");
  auto bad = decode_health("-80", R"({"leader_ok":"yes"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("/tally/health/-80"), std::string::npos);
}

TEST(TopologyTest, DecodeErrorsNameThePath) {
  auto bad = decode_shard("80-", R"({"replica":"x"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("/tally/shards/80-"), std::string::npos);
  EXPECT_NE(bad.error().message.find("leader"), std::string::npos);
  auto ks = decode_keyspace(R"({"version":1,"shards":"-80"})");
  ASSERT_FALSE(ks.ok());
  EXPECT_NE(ks.error().message.find("/tally/keyspace"), std::string::npos);
  EXPECT_FALSE(decode_keyspace("garbage").ok());
}

TEST(TopologyTest, Paths) {
  EXPECT_EQ(topology_paths::shard("-80"), "/tally/shards/-80");
  EXPECT_EQ(topology_paths::health("80-"), "/tally/health/80-");
  EXPECT_EQ(topology_paths::shard_proxies("80-"), "/tally/shard_proxies/80-");
}

}  // namespace
}  // namespace tally
