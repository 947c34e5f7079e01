#include "common/cluster/cluster_manifest.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "tests/support/test_env.h"

namespace tally {
namespace {

ClusterManifest sample() {
  ClusterManifest m;
  m.users["admin"] = {"tally", "secret"};
  m.users["analyst"] = {"tally_analyst", "s2"};
  m.endpoints["rest"] = std::nullopt;
  m.endpoints["zookeeper"] = "127.0.0.1:16000";
  m.zookeeper = "127.0.0.1:16000";
  m.base_port = 16000;
  m.shards = {"-80", "80-"};
  ManifestProcess zk{"zookeeper",     "zookeeper", std::nullopt, 42,
                     {{"zk", 16000}}, "/d/zk",     "/d/zk.log",  "/d/zoo.cfg"};
  ManifestProcess pg{"pg-shard0-leader", "pg_leader", "-80",      43,
                     {{"pg", 16010}},    "/d/l",      "/d/l.log", "/d/l/tally.conf"};
  m.processes = {zk, pg};
  return m;
}

TEST(ClusterManifestTest, JsonRoundTripKeepsEveryField) {
  auto m = sample();
  auto back = manifest_from_json(manifest_to_json(m));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->users.at("admin").password, "secret");
  EXPECT_FALSE(back->endpoints.at("rest").has_value());
  EXPECT_EQ(*back->endpoints.at("zookeeper"), "127.0.0.1:16000");
  ASSERT_EQ(back->processes.size(), 2u);
  EXPECT_FALSE(back->processes[0].shard.has_value());
  EXPECT_EQ(*back->processes[1].shard, "-80");
  EXPECT_EQ(back->processes[1].pid, 43);
  EXPECT_EQ(back->processes[1].ports.at("pg"), 16010);
  EXPECT_EQ(back->shards, m.shards);
}

TEST(ClusterManifestTest, ContractShape) {
  // Design brief, contract 6: these keys are what other tools read.
  auto j = manifest_to_json(sample());
  for (const char* key :
       {"\"database\"", "\"users\"", "\"endpoints\"", "\"processes\"", "\"role\"", "\"shard\"",
        "\"pid\"", "\"ports\"", "\"data_dir\"", "\"log\"", "\"config\""}) {
    EXPECT_NE(j.find(key), std::string::npos) << key;
  }
}

// cluster.json may name any password; it used to be written into the conninfo bare, so a space or
// a quote in it broke the string (tallyctl migrate did the same).
TEST(ClusterManifestTest, ConninfoQuotesAPasswordLibpqWouldMisread) {
  auto m = sample();
  m.users["admin"] = {"tally", "s3cret with 'quote'"};
  EXPECT_EQ(
      m.conninfo(*m.find("pg-shard0-leader"), "admin"),
      R"(host=127.0.0.1 port=16010 dbname=tally user=tally password='s3cret with \'quote\'')");
}

TEST(ClusterManifestTest, ConninfoForUser) {
  auto m = sample();
  EXPECT_EQ(m.conninfo(*m.find("pg-shard0-leader"), "admin"),
            "host=127.0.0.1 port=16010 dbname=tally user=tally password=secret");
  EXPECT_EQ(m.with_role("pg_leader").size(), 1u);
  EXPECT_EQ(m.find("nope"), nullptr);
}

TEST(ClusterManifestTest, BadJsonIsAnError) {
  EXPECT_FALSE(manifest_from_json("not json").ok());
  auto missing = manifest_from_json("{\"database\":\"tally\"}");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("cluster.json"), std::string::npos);
}

TEST(ClusterManifestTest, FileIsPrivateAndReadable) {
  testing::TempDir dir;
  auto file = dir.path() / "cluster.json";
  ASSERT_TRUE(write_manifest(file, sample()).ok());
  struct stat st {};
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // it holds passwords
  auto back = read_manifest(file);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->processes.size(), 2u);
  auto none = read_manifest(dir.path() / "missing.json");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace tally
