// The local cluster end to end, against real servers: `tallyctl cluster up` in a temp dir, data on
// leaders reaching replicas, the topology read back from ZooKeeper by this (separate) process,
// rows routed by ksid landing in their shard's range, migrations re-run as a no-op, the restart
// path, the analyst role read-only, and `cluster down` leaving no process behind.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>

#include <chrono>
#include <memory>
#include <thread>

#include "common/cluster/cluster_manifest.h"
#include "common/keyspace/ksid.h"
#include "common/process/child_process.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"
#include "tests/support/pg_client.h"
#include "tests/support/test_env.h"

namespace tally {
namespace {

using testing::CommandResult;
using testing::project_binary;
using testing::run;

using PgConn = testing::PgClient;

class LocalClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>("tally-cluster");
    base_port_ = testing::find_free_port_block(50);
    auto t0 = std::chrono::steady_clock::now();
    up_ = run({project_binary("tallyctl"), "cluster", "up", "--dir", dir_->path().string(),
               "--shards", "2", "--base-port", std::to_string(base_port_)});
    up_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ measure  ] cluster up (2 shards) took %.1f s\n", up_seconds_);
  }

  static void TearDownTestSuite() {
    // Whatever happened, leave no process behind.
    auto m = read_manifest(dir_->path() / "cluster.json");
    run({project_binary("tallyctl"), "cluster", "down", "--dir", dir_->path().string()});
    if (m) {
      for (const auto& p : m->processes) {
        if (process_alive(p.pid)) {
          (void)stop_process(p.pid, p.role == "zookeeper" ? p.config : p.data_dir, SIGKILL,
                             std::chrono::seconds(5));
        }
      }
    }
    dir_.reset();
  }

  ClusterManifest manifest() {
    auto m = read_manifest(dir_->path() / "cluster.json");
    EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
    return m.ok() ? *m : ClusterManifest{};
  }

  static inline std::unique_ptr<testing::TempDir> dir_;
  static inline int base_port_ = 0;
  static inline CommandResult up_;
  static inline double up_seconds_ = 0;
};

TEST_F(LocalClusterTest, UpStartsEveryProcessAndWritesTheManifest) {
  ASSERT_EQ(up_.exit_code, 0) << up_.output;
  EXPECT_NE(up_.output.find("Tally cluster running (2 shards)"), std::string::npos) << up_.output;
  auto m = manifest();
  EXPECT_EQ(m.database, "tally");
  EXPECT_EQ(m.shards, (std::vector<std::string>{"-80", "80-"}));
  EXPECT_EQ(m.with_role("zookeeper").size(), 1u);
  EXPECT_EQ(m.with_role("pg_leader").size(), 2u);
  EXPECT_EQ(m.with_role("pg_replica").size(), 2u);
  EXPECT_EQ(m.with_role("shard_proxy").size(), 2u);
  EXPECT_EQ(m.with_role("config_service").size(), 2u);
  ASSERT_EQ(m.with_role("cluster_proxy").size(), 1u);
  EXPECT_EQ(m.endpoints["rest"], "http://127.0.0.1:" + std::to_string(base_port_ + 1));
  EXPECT_GE(m.users["rest"].password.size(), 16u);
  ASSERT_EQ(m.with_role("processor").size(), 1u);
  ASSERT_TRUE(m.endpoints.count("ingest") && m.endpoints.at("ingest").has_value());
  EXPECT_EQ(*m.endpoints.at("ingest"),
            "http://127.0.0.1:" + std::to_string(m.with_role("processor")[0]->ports.at("http")));
  for (const auto& p : m.processes) {
    EXPECT_TRUE(process_alive(p.pid)) << p.name << " pid " << p.pid;
    EXPECT_FALSE(p.log.empty()) << p.name;
    EXPECT_FALSE(p.ports.empty()) << p.name;
  }
  ASSERT_TRUE(m.users.count("admin") && m.users.count("analyst"));
  auto status =
      run({project_binary("tallyctl"), "cluster", "status", "--dir", dir_->path().string()});
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("primary"), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("standby"), std::string::npos) << status.output;
}

TEST_F(LocalClusterTest, RowsWrittenOnEachLeaderReachItsReplica) {
  ASSERT_EQ(up_.exit_code, 0) << up_.output;
  auto m = manifest();
  for (const std::string& shard : m.shards) {
    const ManifestProcess* leader = nullptr;
    const ManifestProcess* replica = nullptr;
    for (const auto& p : m.processes) {
      if (p.shard == shard && p.role == "pg_leader") leader = &p;
      if (p.shard == shard && p.role == "pg_replica") replica = &p;
    }
    ASSERT_TRUE(leader && replica) << shard;
    PgConn l(m.conninfo(*leader, "admin"));
    ASSERT_TRUE(l.ok());
    std::string channel = "repl-check-" + std::to_string(leader->ports.at("pg"));
    ASSERT_EQ(l.query("INSERT INTO channels (channel_id, name) VALUES ('" + channel + "', 'x')"),
              "OK");
    PgConn r(m.conninfo(*replica, "admin"));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.query("SELECT pg_is_in_recovery()"), "t");
    std::string seen;
    for (int i = 0; i < 100 && seen != "1"; ++i) {
      seen = r.query("SELECT count(*) FROM channels WHERE channel_id = '" + channel + "'");
      if (seen != "1") std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(seen, "1") << "row on shard " << shard << "'s leader never reached its replica";
    // A replica refuses writes.
    EXPECT_NE(r.query("INSERT INTO channels (channel_id, name) VALUES ('nope', 'x')").find("25006"),
              std::string::npos);
  }
}

TEST_F(LocalClusterTest, TopologyFromZooKeeperRoutesRowsToTheOwningLeader) {
  ASSERT_EQ(up_.exit_code, 0) << up_.output;
  auto m = manifest();
  ZkOptions options;
  options.hosts = m.zookeeper;
  auto zk = ZkClient::connect(options);
  ASSERT_TRUE(zk.ok()) << zk.error().message;
  auto topo = read_topology(**zk);
  ASSERT_TRUE(topo.ok()) << topo.error().message;
  ASSERT_EQ(topo->shards.size(), 2u);
  EXPECT_EQ(topo->shards[0].range.name(), "-80");
  EXPECT_EQ(topo->shards[1].range.name(), "80-");

  // Each shard's leader address in ZooKeeper is the process cluster.json lists as its leader.
  std::map<std::string, std::string> leader_info;
  for (const auto& s : topo->shards) {
    const ManifestProcess* found = nullptr;
    for (const auto& p : m.processes) {
      if (p.role == "pg_leader" &&
          "127.0.0.1:" + std::to_string(p.ports.at("pg")) == s.record.leader) {
        found = &p;
      }
    }
    ASSERT_NE(found, nullptr) << s.record.leader;
    EXPECT_EQ(found->shard, s.range.name());
    leader_info[s.range.name()] = m.conninfo(*found, "admin");
  }

  // Route 400 videos by ksid through the topology and insert each on the leader it names.
  std::map<std::string, int> expected;
  std::map<std::string, std::unique_ptr<PgConn>> conns;
  for (const auto& [range, info] : leader_info) {
    conns[range] = std::make_unique<PgConn>(info);
    ASSERT_TRUE(conns[range]->ok());
    ASSERT_EQ(conns[range]->query("BEGIN"), "OK");
  }
  for (int i = 0; i < 400; ++i) {
    std::string id = "route_" + std::to_string(i * 7919);
    KeyspaceId ksid = ksid_for(id);
    const auto* shard = topo->shard_for(ksid);
    ++expected[shard->range.name()];
    ASSERT_EQ(conns[shard->range.name()]->query(
                  "INSERT INTO videos (video_id, title, ksid) VALUES ('" + id + "', 't', " +
                  std::to_string(ksid_to_sql(ksid)) + ")"),
              "OK");
  }
  for (auto& [range, c] : conns) ASSERT_EQ(c->query("COMMIT"), "OK");
  EXPECT_GT(expected["-80"], 100);  // both shards got a fair share
  EXPECT_GT(expected["80-"], 100);

  // Every row a leader holds lies in its range, by the SQL form of the range the shards use.
  for (const auto& s : topo->shards) {
    auto& c = *conns[s.range.name()];
    EXPECT_EQ(c.query("SELECT count(*) FROM videos WHERE video_id LIKE 'route\\_%'"),
              std::to_string(expected[s.range.name()]));
    EXPECT_EQ(c.query("SELECT count(*) FROM videos WHERE video_id LIKE 'route\\_%' AND NOT (" +
                      s.range.sql_condition("ksid") + ")"),
              "0");
  }
}

TEST_F(LocalClusterTest, MigrationsReRunAsNoOp) {
  ASSERT_EQ(up_.exit_code, 0) << up_.output;
  auto again = run({project_binary("tallyctl"), "migrate", "--dir", dir_->path().string()});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("shard -80: 0 applied"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("shard 80-: 0 applied"), std::string::npos) << again.output;
}

TEST_F(LocalClusterTest, AnalystCanReadButNotWrite) {
  ASSERT_EQ(up_.exit_code, 0) << up_.output;
  auto m = manifest();
  PgConn a(m.conninfo(*m.with_role("pg_leader")[0], "analyst"));
  ASSERT_TRUE(a.ok()) << a.error();
  EXPECT_EQ(a.query("SELECT count(*) >= 0 FROM video_totals"), "t");
  EXPECT_NE(a.query("INSERT INTO channels (channel_id, name) VALUES ('a', 'b')").find("42501"),
            std::string::npos);
}

TEST_F(LocalClusterTest, UpOnARunningClusterRestartsOnlyWhatStopped) {
  ASSERT_EQ(up_.exit_code, 0) << up_.output;
  auto before = manifest();
  const ManifestProcess* replica = before.with_role("pg_replica")[1];
  pid_t old_pid = replica->pid;
  std::string name = replica->name;
  ASSERT_TRUE(stop_process(old_pid, replica->data_dir, SIGKILL, std::chrono::seconds(5)).ok());
  auto again = run({project_binary("tallyctl"), "cluster", "up", "--dir", dir_->path().string(),
                    "--shards", "2", "--base-port", std::to_string(base_port_)});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("1 started, " + std::to_string(before.processes.size() - 1) +
                              " already running"),
            std::string::npos)
      << again.output;
  auto after = manifest();
  EXPECT_NE(after.find(name)->pid, old_pid);
  EXPECT_TRUE(process_alive(after.find(name)->pid));
  for (const auto& p : before.processes) {
    if (p.name != name) {
      EXPECT_EQ(after.find(p.name)->pid, p.pid) << p.name << " was restarted";
    }
  }
  PgConn r(after.conninfo(*after.find(name), "admin"));
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.query("SELECT pg_is_in_recovery()"), "t");
}

// `tallyctl bootstrap` (docker compose's init service) against this cluster's real servers: the
// migrations on the given leaders are a no-op (cluster up applied them), the topology goes to a
// ZooKeeper chroot where none exists yet, and a second run keeps it. Passwords via the environment.
TEST_F(LocalClusterTest, BootstrapMigratesLeadersAndWritesTheTopologyOnce) {
  ASSERT_EQ(up_.exit_code, 0) << up_.output;
  auto m = manifest();
  std::string shards;
  for (const std::string& shard : m.shards) {
    std::string leader;
    std::string replica;
    for (const auto& p : m.processes) {
      if (p.shard != shard) continue;
      if (p.role == "pg_leader") leader = "127.0.0.1:" + std::to_string(p.ports.at("pg"));
      if (p.role == "pg_replica") replica = "127.0.0.1:" + std::to_string(p.ports.at("pg"));
    }
    shards += (shards.empty() ? "" : ",") + shard + "=" + leader + "/" + replica;
  }
  ZkOptions zo;
  zo.hosts = m.zookeeper;
  auto zk = ZkClient::connect(zo);
  ASSERT_TRUE(zk) << zk.error().message;
  ASSERT_TRUE((*zk)->ensure_path("/bootstrap-test"));
  const std::string chroot = m.zookeeper + "/bootstrap-test";
  auto bootstrap = [&](bool with_password) {
    std::vector<std::string> argv = {"env"};
    if (with_password) {
      argv.push_back("TALLY_ADMIN_PASSWORD=" + m.users["admin"].password);
      argv.push_back("TALLY_ANALYST_PASSWORD=" + m.users["analyst"].password);
    }
    for (const std::string& a :
         {project_binary("tallyctl"), std::string("bootstrap"), std::string("--zookeeper"), chroot,
          std::string("--shards"), shards, std::string("--wait-s"), std::string("10")}) {
      argv.push_back(a);
    }
    return run(argv);
  };

  auto no_password = bootstrap(false);
  EXPECT_EQ(no_password.exit_code, 1) << no_password.output;
  EXPECT_NE(no_password.output.find("TALLY_ADMIN_PASSWORD"), std::string::npos)
      << no_password.output;

  auto first = bootstrap(true);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("shard -80: 0 applied"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("topology written to ZooKeeper"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("tally_analyst may log in"), std::string::npos) << first.output;

  ZkOptions chroot_options;
  chroot_options.hosts = chroot;
  auto zk_chroot = ZkClient::connect(chroot_options);
  ASSERT_TRUE(zk_chroot) << zk_chroot.error().message;
  auto topo = read_topology(**zk_chroot);
  ASSERT_TRUE(topo) << topo.error().message;
  ASSERT_EQ(topo->shards.size(), 2u);
  EXPECT_EQ(topo->shards[0].range.name(), "-80");
  EXPECT_EQ(shards.substr(0, shards.find(',')),
            "-80=" + topo->shards[0].record.leader + "/" + topo->shards[0].record.replica);

  auto second = bootstrap(true);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("topology already in ZooKeeper"), std::string::npos)
      << second.output;
  EXPECT_EQ(second.output.find("topology written"), std::string::npos) << second.output;

  // The analyst's password was set to the one it had: it still logs in.
  PgConn analyst(m.conninfo(*m.with_role("pg_leader")[0], "analyst"));
  EXPECT_TRUE(analyst.ok());
}

// Runs last (gtest keeps declaration order): down stops everything it started.
TEST_F(LocalClusterTest, ZDownLeavesNoProcessBehind) {
  ASSERT_EQ(up_.exit_code, 0) << up_.output;
  auto m = manifest();
  auto down = run({project_binary("tallyctl"), "cluster", "down", "--dir", dir_->path().string()});
  ASSERT_EQ(down.exit_code, 0) << down.output;
  for (const auto& p : m.processes) EXPECT_FALSE(process_alive(p.pid)) << p.name;
  auto status =
      run({project_binary("tallyctl"), "cluster", "status", "--dir", dir_->path().string()});
  EXPECT_NE(status.exit_code, 0);
  EXPECT_NE(status.output.find("stopped"), std::string::npos) << status.output;
}

}  // namespace
}  // namespace tally
