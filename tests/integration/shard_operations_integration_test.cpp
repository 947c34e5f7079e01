// Operator-side failover tools against real servers: a one-shard local cluster from `tallyctl
// cluster up` (ZooKeeper, a PostgreSQL leader and replica, the shard proxy). A planned switchover
// (and the switch back) under a write loop through the shard proxy: no write fails, every
// acknowledged write is on the new leader, roles swap in ZooKeeper and cluster.json, the old
// leader streams from the new one. Then a failover made by hand as config_service would make it
// (kill -9 of the leader, pg_promote, the topology CAS): `cluster up` keeps the fenced old leader
// down, and `tallyctl shard rejoin` brings it back, rewound, as the streaming replica.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster/cluster_manifest.h"
#include "common/core/clock.h"
#include "common/core/host_port.h"
#include "common/process/child_process.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"
#include "tests/support/pg_client.h"
#include "tests/support/test_env.h"

namespace tally {
namespace {

using testing::PgClient;
using testing::project_binary;
using testing::run;
using SteadyClock = std::chrono::steady_clock;

class ShardOperationsTest : public ::testing::Test {
 protected:
  static testing::CommandResult tallyctl(std::vector<std::string> args) {
    args.insert(args.begin(), project_binary("tallyctl"));
    args.push_back("--dir");
    args.push_back(dir_->path().string());
    return run(args);
  }

  static void cluster_up() {
    auto up = tallyctl({"cluster", "up", "--shards", "1", "--base-port", std::to_string(base_)});
    ASSERT_EQ(up.exit_code, 0) << up.output;
    last_up_output_ = up.output;
    reload();
  }

  static void reload() {
    auto m = read_manifest(dir_->path() / "cluster.json");
    ASSERT_TRUE(m.ok());
    manifest_ = *m;
  }

  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>("tally-shardops");
    base_ = testing::find_free_port_block(200);
    ASSERT_NO_FATAL_FAILURE(cluster_up());
    ZkOptions options;
    options.hosts = manifest_.zookeeper;
    auto zk = ZkClient::connect(options);
    ASSERT_TRUE(zk.ok());
    zk_ = std::move(*zk);
    PgClient leader(admin_info(record().leader));
    ASSERT_EQ(leader.query("CREATE TABLE ops_probe (id bigint PRIMARY KEY, tag text)"), "OK");
  }

  static void TearDownTestSuite() {
    zk_.reset();
    auto m = read_manifest(dir_->path() / "cluster.json");
    tallyctl({"cluster", "down"});
    if (m) {
      for (const auto& p : m->processes) {
        std::string needle =
            p.role == "pg_leader" || p.role == "pg_replica" ? p.data_dir : p.config;
        if (process_alive(p.pid)) {
          (void)stop_process(p.pid, needle, SIGKILL, std::chrono::seconds(5));
        }
      }
    }
    dir_.reset();
  }

  // For scenarios that play config_service's part by hand: stops cs1/cs2 (cluster up starts them
  // again) and undoes what they manage, synchronous replication on the leader and `sync` in
  // ZooKeeper, as their downgrade would (record first).
  static void stop_config_services() {
    for (const auto* p : manifest_.with_role("config_service")) {
      if (process_alive(p->pid)) {
        ASSERT_TRUE(stop_process(p->pid, p->config, SIGTERM, std::chrono::seconds(10)).ok());
      }
    }
    int32_t version = 0;
    ShardRecord r = record(&version);
    r.sync = false;
    ASSERT_TRUE(zk_->set(topology_paths::shard("-"), encode_shard(r), version).ok());
    PgClient leader(admin_info(r.leader));
    ASSERT_EQ(leader.query("ALTER SYSTEM SET synchronous_standby_names = ''"), "OK");
    ASSERT_EQ(leader.query("SELECT pg_reload_conf()"), "t");
  }

  static ShardRecord record(int32_t* version = nullptr) {
    auto node = zk_->get(topology_paths::shard("-"));
    EXPECT_TRUE(node.ok());
    if (!node.ok()) return {};
    if (version != nullptr) *version = node->version;
    auto r = decode_shard("-", node->data);
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : ShardRecord{};
  }

  static std::string admin_info(const std::string& address) {
    const auto& u = manifest_.users.at("admin");
    return "host=127.0.0.1 port=" + std::string(split_host_port(address).port) +
           " dbname=tally user=" + u.name + " password=" + u.password + " connect_timeout=5";
  }
  static std::string proxy_info() {
    const auto& u = manifest_.users.at("admin");
    return "host=127.0.0.1 port=" +
           std::to_string(manifest_.with_role("shard_proxy")[0]->ports.at("pg")) +
           " dbname=tally user=" + u.name + " password=" + u.password + " connect_timeout=5";
  }
  static const ManifestProcess* process_at(const std::string& address) {
    for (const auto& p : manifest_.processes) {
      if (p.ports.count("pg") && "127.0.0.1:" + std::to_string(p.ports.at("pg")) == address &&
          p.role != "shard_proxy") {
        return &p;
      }
    }
    return nullptr;
  }

  static bool eventually(const std::string& info, const std::string& sql, const std::string& want,
                         int tries = 200) {
    for (int i = 0; i < tries; ++i) {
      PgClient c(info);
      if (c.ok() && c.query(sql) == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  static inline std::unique_ptr<testing::TempDir> dir_;
  static inline int base_ = 0;
  static inline ClusterManifest manifest_;
  static inline std::unique_ptr<ZkClient> zk_;
  static inline std::string last_up_output_;
  static inline int64_t next_id_ = 1;
};

// Inserts rows through the shard proxy, one autocommit statement at a time, recording every id
// the proxy acknowledged and every failure, until stopped.
class WriteLoop {
 public:
  WriteLoop(std::string conninfo, int64_t first_id)
      : conninfo_(std::move(conninfo)), next_(first_id) {
    thread_ = std::thread([this] { run(); });
  }
  ~WriteLoop() { stop(); }
  void stop() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const std::vector<int64_t>& acked() const { return acked_; }
  const std::vector<std::string>& failures() const { return failures_; }
  int64_t next_id() const { return next_; }
  std::chrono::milliseconds slowest() const { return slowest_; }

 private:
  void run() {
    auto conn = std::make_unique<PgClient>(conninfo_);
    while (!stopping_) {
      int64_t id = next_++;
      auto t0 = SteadyClock::now();
      std::string r = conn->query("INSERT INTO ops_probe (id, tag) VALUES (" + std::to_string(id) +
                                  ", 'loop')");
      auto took = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0);
      slowest_ = std::max(slowest_, took);
      if (r == "OK") {
        acked_.push_back(id);
      } else {
        failures_.push_back("id " + std::to_string(id) + ": " + r + conn->error());
        conn = std::make_unique<PgClient>(conninfo_);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  std::string conninfo_;
  std::atomic<int64_t> next_;
  std::atomic<bool> stopping_{false};
  std::vector<int64_t> acked_;
  std::vector<std::string> failures_;
  std::chrono::milliseconds slowest_{0};
  std::thread thread_;
};

int64_t parse_pause_ms(const std::string& output) {
  auto pos = output.find("write pause ");
  if (pos == std::string::npos) return -1;
  return std::atoll(output.c_str() + pos + 12);
}

TEST_F(ShardOperationsTest, SwitchoverUnderWritesLosesNothingAndSwitchesBack) {
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("switchover " + std::to_string(round + 1));
    ShardRecord before = record();
    ASSERT_EQ(before.state, "serving");
    ASSERT_FALSE(before.replica.empty());
    // The replica streams (switchover's precondition) once it has caught up with the leader.
    PgClient old_leader(admin_info(before.leader));
    ASSERT_TRUE(old_leader.ok());
    ASSERT_TRUE(eventually(admin_info(before.leader),
                           "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                           "1"));

    WriteLoop writes(proxy_info(), next_id_);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    auto so = tallyctl({"shard", "switchover", "-"});
    std::this_thread::sleep_for(std::chrono::seconds(1));
    writes.stop();
    next_id_ = writes.next_id();
    ASSERT_EQ(so.exit_code, 0) << so.output;
    int64_t pause = parse_pause_ms(so.output);
    std::printf(
        "[ measure  ] switchover %d: write pause %lld ms (tallyctl), slowest write "
        "through the proxy %lld ms, %zu writes acknowledged\n",
        round + 1, static_cast<long long>(pause), static_cast<long long>(writes.slowest().count()),
        writes.acked().size());
    std::printf("%s", so.output.c_str());
    EXPECT_GT(pause, 0) << so.output;
    EXPECT_LT(pause, 5000) << so.output;

    // No write failed, and all of them went through the pause.
    EXPECT_TRUE(writes.failures().empty())
        << writes.failures().size() << " writes failed; first: " << writes.failures().front();
    ASSERT_GT(writes.acked().size(), 50u);

    // Roles swapped in ZooKeeper.
    ShardRecord after = record();
    EXPECT_EQ(after.leader, before.replica);
    EXPECT_EQ(after.replica, before.leader);
    EXPECT_EQ(after.state, "serving");
    EXPECT_TRUE(after.fenced.empty());
    // Switchover leaves sync false; config_service confirms synchronous replication again.
    bool sync_back = false;
    for (int i = 0; i < 100 && !sync_back; ++i) {
      sync_back = record().sync;
      if (!sync_back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_TRUE(sync_back) << "config_service did not restore sync after the switchover";

    // Every acknowledged id is on the new leader.
    std::string ids;
    for (int64_t id : writes.acked()) ids += (ids.empty() ? "" : ",") + std::to_string(id);
    PgClient new_leader(admin_info(after.leader));
    ASSERT_TRUE(new_leader.ok());
    EXPECT_EQ(new_leader.query("SELECT pg_is_in_recovery()"), "f");
    EXPECT_EQ(new_leader.query("SELECT count(*) FROM ops_probe WHERE id IN (" + ids + ")"),
              std::to_string(writes.acked().size()));

    // The old leader is a standby streaming from the new one, and has the rows too.
    EXPECT_TRUE(eventually(admin_info(after.replica), "SELECT pg_is_in_recovery()", "t"));
    EXPECT_TRUE(eventually(admin_info(after.leader),
                           "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                           "1"));
    EXPECT_TRUE(eventually(admin_info(after.replica),
                           "SELECT count(*) FROM ops_probe WHERE id IN (" + ids + ")",
                           std::to_string(writes.acked().size())));

    // cluster.json follows.
    ASSERT_NO_FATAL_FAILURE(reload());
    ASSERT_NE(process_at(after.leader), nullptr);
    EXPECT_EQ(process_at(after.leader)->role, "pg_leader");
    EXPECT_EQ(process_at(after.replica)->role, "pg_replica");
    EXPECT_TRUE(
        process_matches(process_at(after.replica)->pid, process_at(after.replica)->data_dir));
  }
}

TEST_F(ShardOperationsTest, SwitchoverRefusesWithoutAStreamingReplica) {
  ShardRecord before = record();
  const ManifestProcess* replica = process_at(before.replica);
  ASSERT_NE(replica, nullptr);
  PgClient r(admin_info(before.replica));
  ASSERT_TRUE(r.ok());
  // Stop the replica: the leader then lists no streaming replica.
  ASSERT_TRUE(stop_process(replica->pid, replica->data_dir, SIGINT, std::chrono::seconds(20)).ok());
  auto so = tallyctl({"shard", "switchover", "-"});
  EXPECT_EQ(so.exit_code, 1) << so.output;
  EXPECT_NE(so.output.find("a switchover needs a streaming replica"), std::string::npos)
      << so.output;
  ShardRecord after = record();
  EXPECT_EQ(after.leader, before.leader);
  EXPECT_EQ(after.state, "serving");      // never paused
  ASSERT_NO_FATAL_FAILURE(cluster_up());  // the restart path brings the replica back
  EXPECT_TRUE(eventually(admin_info(before.leader),
                         "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                         "1"));
  auto bad = tallyctl({"shard", "switchover", "80-"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("no shard '80-'"), std::string::npos) << bad.output;
}

TEST_F(ShardOperationsTest, RejoinAfterAHandMadeFailover) {
  // This scenario makes the failover itself (to get a diverged old leader for pg_rewind);
  // config_service's own failovers are covered by config_service_integration_test and
  // failover_chaos.
  ASSERT_NO_FATAL_FAILURE(stop_config_services());
  int32_t version = 0;
  ShardRecord before = record(&version);
  ASSERT_EQ(before.state, "serving");
  const ManifestProcess* old_leader = process_at(before.leader);
  ASSERT_NE(old_leader, nullptr);
  const std::string old_leader_name = old_leader->name;
  PgClient l(admin_info(before.leader));
  ASSERT_EQ(l.query("INSERT INTO ops_probe (id, tag) VALUES (" + std::to_string(next_id_++) +
                    ", 'before failover')"),
            "OK");
  ASSERT_TRUE(eventually(admin_info(before.replica),
                         "SELECT count(*) FROM ops_probe WHERE tag = 'before failover'", "1"));
  auto nothing = tallyctl({"shard", "rejoin", "-"});
  EXPECT_EQ(nothing.exit_code, 1);
  EXPECT_NE(nothing.output.find("no fenced node"), std::string::npos) << nothing.output;

  // The failover config_service makes, by hand: promote the replica while the old leader still
  // runs and takes one more (unreplicated, never synchronously acknowledged) write, so the old
  // leader diverges and must be rewound; then kill -9 its postmaster.
  PgClient r(admin_info(before.replica));
  ASSERT_EQ(r.query("SELECT pg_promote(true, 30)"), "t");
  ASSERT_EQ(l.query("INSERT INTO ops_probe (id, tag) VALUES (" + std::to_string(next_id_++) +
                    ", 'diverged')"),
            "OK");
  ASSERT_TRUE(
      stop_process(old_leader->pid, old_leader->data_dir, SIGKILL, std::chrono::seconds(5)).ok());
  ShardRecord failed_over = before;
  failed_over.leader = before.replica;
  failed_over.replica = "";
  failed_over.fenced = {before.leader};
  failed_over.sync = false;
  failed_over.state = "serving";
  failed_over.state_since_ms = wall_clock_ms();
  ASSERT_TRUE(zk_->set(topology_paths::shard("-"), encode_shard(failed_over), version).ok());
  ASSERT_EQ(r.query("INSERT INTO ops_probe (id, tag) VALUES (" + std::to_string(next_id_++) +
                    ", 'after failover')"),
            "OK");

  // As config_service would once the new leader has a replica again: synchronous replication in
  // its postgresql.auto.conf (not reloaded here). pg_rewind copies that file to the old leader,
  // which must not start with it (a later promotion would wait for a standby it lacks).
  ASSERT_EQ(r.query("ALTER SYSTEM SET synchronous_standby_names = '*'"), "OK");

  // cluster up starts nothing fenced, and says how to rejoin.
  ASSERT_NO_FATAL_FAILURE(cluster_up());
  EXPECT_NE(last_up_output_.find("fenced after failover: run tallyctl shard rejoin - --dir"),
            std::string::npos)
      << last_up_output_;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::string ping = admin_info(before.leader);
  EXPECT_NE(PQping(ping.c_str()), PQPING_OK) << "cluster up started the fenced old leader";
  EXPECT_EQ(manifest_.find(old_leader_name)->role, "pg_replica");  // roles follow ZooKeeper

  // Rejoin.
  auto t0 = SteadyClock::now();
  auto rejoin = tallyctl({"shard", "rejoin", "-"});
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0);
  ASSERT_EQ(rejoin.exit_code, 0) << rejoin.output;
  std::printf("[ measure  ] rejoin took %lld ms\n%s", static_cast<long long>(took.count()),
              rejoin.output.c_str());
  EXPECT_NE(rejoin.output.find("(pg_rewind)"), std::string::npos) << rejoin.output;

  ShardRecord after = record();
  EXPECT_EQ(after.leader, before.replica);
  EXPECT_EQ(after.replica, before.leader);
  EXPECT_TRUE(after.fenced.empty());
  PgClient rejoined(admin_info(before.leader));
  ASSERT_TRUE(rejoined.ok()) << rejoined.error();
  EXPECT_EQ(rejoined.query("SELECT pg_is_in_recovery()"), "t");
  EXPECT_EQ(rejoined.query("SELECT status || ' ' || sender_port FROM pg_stat_wal_receiver"),
            "streaming " + std::string(split_host_port(before.replica).port));
  EXPECT_EQ(r.query("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"), "1");
  EXPECT_EQ(rejoined.query("SHOW synchronous_standby_names"), "");
  ASSERT_EQ(r.query("ALTER SYSTEM RESET synchronous_standby_names"), "OK");
  // The rewound node follows the new leader's history: its divergent write is gone.
  EXPECT_EQ(rejoined.query("SELECT count(*) FROM ops_probe WHERE tag = 'diverged'"), "0");
  EXPECT_EQ(rejoined.query("SELECT count(*) FROM ops_probe WHERE tag = 'after failover'"), "1");
  ASSERT_EQ(r.query("INSERT INTO ops_probe (id, tag) VALUES (" + std::to_string(next_id_++) +
                    ", 'after rejoin')"),
            "OK");
  EXPECT_TRUE(eventually(admin_info(before.leader),
                         "SELECT count(*) FROM ops_probe WHERE tag = 'after rejoin'", "1"));
  ASSERT_NO_FATAL_FAILURE(reload());
  EXPECT_EQ(manifest_.find(old_leader_name)->role, "pg_replica");
  EXPECT_TRUE(process_matches(manifest_.find(old_leader_name)->pid,
                              manifest_.find(old_leader_name)->data_dir));

  // topology show reports it.
  auto show = tallyctl({"topology", "show"});
  EXPECT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("replica  " + before.leader), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("fenced   none"), std::string::npos) << show.output;

  // A switchover works on the rejoined pair too.
  auto so = tallyctl({"shard", "switchover", "-"});
  EXPECT_EQ(so.exit_code, 0) << so.output;
  EXPECT_EQ(record().leader, before.leader);
}

TEST_F(ShardOperationsTest, TopologyShowReportsHealthAndItsAge) {
  // The health records below are written by hand; a running config_service would overwrite them.
  ASSERT_NO_FATAL_FAILURE(stop_config_services());
  (void)zk_->remove(topology_paths::health("-"));  // the one the config services left
  ShardRecord r = record();
  auto show = tallyctl({"topology", "show"});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("health   unknown (no health record"), std::string::npos)
      << show.output;

  // A health record as the leading config_service writes it.
  HealthRecord h;
  h.leader.address = r.leader;
  h.leader.ok = true;
  h.replica.address = r.replica;
  h.replica.ok = true;
  h.replica.in_recovery = true;
  h.replica_streaming = true;
  h.replica_lag_ms = 12;
  h.replica_lag_bytes = 3456;
  h.at_ms = wall_clock_ms();
  h.checked_by = "cs-test";
  const std::string path = topology_paths::health("-");
  ASSERT_TRUE(zk_->ensure_path(path).ok());
  ASSERT_TRUE(zk_->set(path, encode_health(h), -1).ok());
  show = tallyctl({"topology", "show"});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  std::printf("%s", show.output.c_str());
  for (const char* want :
       {"checked ", "by cs-test", "leader_ok   ok (primary)", "replica_ok  ok (standby)",
        "streaming   yes", "lag         12 ms, 3456 bytes"}) {
    EXPECT_NE(show.output.find(want), std::string::npos) << want << "\n" << show.output;
  }
  // Older than the bound: unknown, with its age.
  h.at_ms = wall_clock_ms() - 60000;
  h.leader.ok = false;
  ASSERT_TRUE(zk_->set(path, encode_health(h), -1).ok());
  show = tallyctl({"topology", "show", "--health-stale-ms", "2000"});
  EXPECT_NE(show.output.find("health   unknown (last record 60 s ago by cs-test"),
            std::string::npos)
      << show.output;
  EXPECT_EQ(show.output.find("leader_ok"), std::string::npos) << show.output;
  ASSERT_TRUE(zk_->remove(path).ok());
}

}  // namespace
}  // namespace tally
