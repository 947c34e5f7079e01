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
  ShardRecord r{"127.0.0.1:5432", "127.0.0.1:5433", "serving"};
  auto back = decode_shard("-80", encode_shard(r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->leader, r.leader);
  EXPECT_EQ(back->replica, r.replica);
  EXPECT_EQ(back->state, "serving");
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
