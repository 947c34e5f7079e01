// config_service against real servers: a one-shard local cluster started with `tallyctl cluster
// up` (ZooKeeper, a PostgreSQL leader and replica, the shard proxy, config_service cs1 and cs2).
// The scenarios run in order on that one cluster, each bounded in time:
//   election takeover (kill -9 the leading instance), ZooKeeper restart and session expiry
//   (SIGSTOP the leader past its session timeout), replica death and return, failover with zero
//   acknowledged writes lost (kill -9 the leader's postmaster under a write loop), and the
//   returning old leader kept out (started by hand as a primary: it is fenced).
// The measured figures are printed as "MEASURED ..." lines.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster/cluster_manifest.h"
#include "common/process/child_process.h"
#include "common/process/system_user.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"
#include "tallyctl/src/http_probe.h"
#include "tests/support/pg_client.h"
#include "tests/support/test_env.h"
#include "tests/support/write_loop.h"

namespace tally {
namespace {

using testing::PgClient;
using testing::project_binary;
using testing::run;
using testing::WriteLoop;
using Steady = std::chrono::steady_clock;

constexpr const char* kShard = "-";

double seconds_between(Steady::time_point a, Steady::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

class ConfigServiceTest : public ::testing::Test {
 protected:
  static void cluster_up() {
    auto up = run({project_binary("tallyctl"), "cluster", "up", "--dir", dir_->path().string(),
                   "--shards", "1", "--base-port", std::to_string(base_)});
    ASSERT_EQ(up.exit_code, 0) << up.output;
    last_up_output_ = up.output;
    auto m = read_manifest(dir_->path() / "cluster.json");
    ASSERT_TRUE(m.ok());
    manifest_ = *m;
  }

  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>("tally-cs");
    base_ = testing::find_free_port_block(200);
    ASSERT_NO_FATAL_FAILURE(cluster_up());
    ZkOptions options;
    options.hosts = manifest_.zookeeper;
    auto zk = ZkClient::connect(options);
    ASSERT_TRUE(zk.ok()) << zk.error().message;
    zk_ = std::move(*zk);
    // The table the write loops fill, created on the leader (the replica gets it by WAL).
    PgClient admin(manifest_.conninfo(*manifest_.with_role("pg_leader")[0], "admin"));
    ASSERT_TRUE(admin.ok()) << admin.error();
    ASSERT_EQ(admin.query("CREATE TABLE cs_writes (id bigint PRIMARY KEY)"), "OK");
  }

  static void TearDownTestSuite() {
    zk_.reset();
    for (pid_t pid : extra_pids_) {
      if (process_alive(pid)) (void)stop_process(pid, "postgres", SIGINT, std::chrono::seconds(10));
    }
    for (pid_t pid : stopped_pids_) kill(pid, SIGCONT);
    run({project_binary("tallyctl"), "cluster", "down", "--dir", dir_->path().string()});
    if (auto m = read_manifest(dir_->path() / "cluster.json")) manifest_ = *m;
    for (const auto& p : manifest_.processes) {
      std::string needle = p.role == "pg_leader" || p.role == "pg_replica" ? p.data_dir : p.config;
      if (process_alive(p.pid)) (void)stop_process(p.pid, needle, SIGKILL, std::chrono::seconds(5));
    }
    dir_.reset();
  }

  static ShardRecord record(int32_t* version = nullptr) {
    auto node = zk_->get(topology_paths::shard(kShard));
    EXPECT_TRUE(node.ok());
    if (!node) return {};
    if (version) *version = node->version;
    auto r = decode_shard(kShard, node->data);
    EXPECT_TRUE(r.ok());
    return r ? *r : ShardRecord{};
  }
  static std::optional<HealthRecord> health() {
    auto node = zk_->get(topology_paths::health(kShard));
    if (!node) return std::nullopt;
    auto h = decode_health(kShard, node->data);
    if (!h) return std::nullopt;
    return *h;
  }
  static bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds limit) {
    auto deadline = Steady::now() + limit;
    while (Steady::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return done();
  }

  static nlohmann::json status(int port) {
    std::string reply = loopback_exchange(
        port, "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        std::chrono::milliseconds(1000));
    auto body = reply.find("\r\n\r\n");
    if (body == std::string::npos) return nlohmann::json();
    auto j = nlohmann::json::parse(reply.substr(body + 4), nullptr, false);
    return j.is_discarded() ? nlohmann::json() : j;
  }
  static std::vector<const ManifestProcess*> config_services() {
    return manifest_.with_role("config_service");
  }
  // The last lines of every config_service's log, for failure messages: its decisions say why a
  // failover did or did not happen (a test that fails under load must say what the service saw).
  static std::string config_service_log_tails(size_t lines = 15) {
    std::string out;
    for (const auto* p : config_services()) {
      std::ifstream in(p->log);
      std::deque<std::string> tail;
      for (std::string line; std::getline(in, line);) {
        tail.push_back(line);
        if (tail.size() > lines) tail.pop_front();
      }
      out += "\n--- " + p->name + " (" + p->log + "), last lines:\n";
      for (const auto& l : tail) out += l + "\n";
    }
    return out;
  }
  // The config_service instances that say they lead right now.
  static std::vector<const ManifestProcess*> leaders() {
    std::vector<const ManifestProcess*> out;
    for (const auto* p : config_services()) {
      auto s = status(p->ports.at("http"));
      if (s.is_object() && s.value("role", "") == "leader") out.push_back(p);
    }
    return out;
  }
  static const ManifestProcess* the_leader(std::chrono::milliseconds limit) {
    const ManifestProcess* found = nullptr;
    wait_for(
        [&] {
          auto l = leaders();
          found = l.size() == 1 ? l[0] : nullptr;
          return found != nullptr;
        },
        limit);
    return found;
  }
  static const ManifestProcess* pg_at(const std::string& address) {
    for (const auto& p : manifest_.processes) {
      if ((p.role == "pg_leader" || p.role == "pg_replica") &&
          address == "127.0.0.1:" + std::to_string(p.ports.at("pg"))) {
        return &p;
      }
    }
    return nullptr;
  }
  static pid_t postmaster_pid(const ManifestProcess& pg) {
    std::ifstream in(std::filesystem::path(pg.data_dir) / "postmaster.pid");
    pid_t pid = 0;
    in >> pid;
    return pid;
  }
  static std::string proxy() {
    const auto& u = manifest_.users.at("admin");
    return "host=127.0.0.1 port=" +
           std::to_string(manifest_.with_role("shard_proxy")[0]->ports.at("pg")) +
           " dbname=tally user=" + u.name + " password=" + u.password + " connect_timeout=3";
  }

  static inline std::unique_ptr<testing::TempDir> dir_;
  static inline int base_ = 0;
  static inline ClusterManifest manifest_;
  static inline std::unique_ptr<ZkClient> zk_;
  static inline std::string last_up_output_;
  static inline std::vector<pid_t> extra_pids_;    // started by hand: stopped in teardown
  static inline std::vector<pid_t> stopped_pids_;  // SIGSTOPped: continued in teardown
};

TEST_F(ConfigServiceTest, A_ClusterUpConfirmsSynchronousReplication) {
  EXPECT_NE(last_up_output_.find("synchronous replication confirmed"), std::string::npos)
      << last_up_output_;
  EXPECT_TRUE(record().sync);
  ASSERT_EQ(config_services().size(), 2u);
  ASSERT_NE(the_leader(std::chrono::seconds(10)), nullptr);
  auto h = health();
  ASSERT_TRUE(h.has_value());
  EXPECT_TRUE(h->leader.ok);
  EXPECT_TRUE(h->replica.ok);
  EXPECT_TRUE(h->replica.in_recovery);
  EXPECT_TRUE(h->replica_streaming);
  EXPECT_TRUE(h->replica_sync);
  EXPECT_GE(h->replica_lag_bytes, 0);
  // The follower answers too, and names the leader.
  for (const auto* p : config_services()) {
    auto s = status(p->ports.at("http"));
    ASSERT_TRUE(s.is_object()) << p->name;
    EXPECT_EQ(s["leader"], the_leader(std::chrono::seconds(1))->name);
    EXPECT_EQ(http_get_status(p->ports.at("http"), "/readyz"), 200);
  }
  // Generated configs hold the admin password: owner-only.
  struct stat st {};
  ASSERT_EQ(::stat(config_services()[0]->config.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(ConfigServiceTest, B_ElectionTakeoverAfterKill9) {
  const ManifestProcess* leader = the_leader(std::chrono::seconds(10));
  ASSERT_NE(leader, nullptr);
  const std::string old_name = leader->name;
  auto t0 = Steady::now();
  ASSERT_EQ(kill(leader->pid, SIGKILL), 0);
  const ManifestProcess* next = nullptr;
  ASSERT_TRUE(wait_for(
      [&] {
        auto l = leaders();
        next = l.size() == 1 ? l[0] : nullptr;
        return next != nullptr && next->name != old_name;
      },
      std::chrono::seconds(15)))
      << "no other instance took over";
  double took = seconds_between(t0, Steady::now());
  std::printf("MEASURED election takeover after kill -9: %.2f s\n", took);
  EXPECT_LT(took, 10.0);
  // The new leader writes the health node.
  ASSERT_TRUE(wait_for(
      [&] {
        auto h = health();
        return h && h->checked_by == next->name;
      },
      std::chrono::seconds(5)));
  // The restart path brings the killed one back as a follower.
  ASSERT_NO_FATAL_FAILURE(cluster_up());
  ASSERT_TRUE(wait_for([&] { return leaders().size() == 1; }, std::chrono::seconds(5)));
  EXPECT_EQ(leaders()[0]->name, next->name);
}

TEST_F(ConfigServiceTest, C_ZooKeeperRestartAndSessionExpiry) {
  const ManifestProcess* leader = the_leader(std::chrono::seconds(10));
  ASSERT_NE(leader, nullptr);
  const std::string leading = leader->name;
  // ZooKeeper stopped and started again (the restart path of cluster up).
  const ManifestProcess& zk = *manifest_.with_role("zookeeper")[0];
  ASSERT_TRUE(stop_process(zk.pid, zk.config, SIGTERM, std::chrono::seconds(10)).ok());
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ASSERT_NO_FATAL_FAILURE(cluster_up());
  ASSERT_TRUE(wait_for([&] { return zk_->state() == ZkSessionState::kConnected; },
                       std::chrono::seconds(15)));
  ASSERT_TRUE(wait_for([&] { return leaders().size() == 1; }, std::chrono::seconds(15)));
  EXPECT_EQ(leaders()[0]->name, leading) << "the session survived the restart: same leader";
  auto h1 = health();
  ASSERT_TRUE(h1.has_value());
  ASSERT_TRUE(wait_for(
      [&] {
        auto h2 = health();
        return h2 && h2->at_ms > h1->at_ms + 500;
      },
      std::chrono::seconds(5)))
      << "health node not updated after the ZooKeeper restart";
  EXPECT_TRUE(record().sync);

  // Session expiry: stop the leader for longer than its session timeout (4 s).
  const ManifestProcess* now_leading = the_leader(std::chrono::seconds(5));
  ASSERT_NE(now_leading, nullptr);
  const std::string stopped_name = now_leading->name;
  const pid_t stopped = now_leading->pid;
  ASSERT_EQ(kill(stopped, SIGSTOP), 0);
  stopped_pids_.push_back(stopped);
  auto t0 = Steady::now();
  const ManifestProcess* other = nullptr;
  ASSERT_TRUE(wait_for(
      [&] {
        for (const auto* p : config_services()) {
          if (p->name == stopped_name) continue;
          auto s = status(p->ports.at("http"));
          if (s.is_object() && s.value("role", "") == "leader") other = p;
        }
        return other != nullptr;
      },
      std::chrono::seconds(20)))
      << "no takeover while the leader was stopped";
  std::printf("MEASURED takeover from a SIGSTOPped leader (session 4 s): %.2f s\n",
              seconds_between(t0, Steady::now()));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ASSERT_EQ(kill(stopped, SIGCONT), 0);
  stopped_pids_.clear();
  // The resumed instance must not act: every health record from now on is the other's.
  auto resumed = Steady::now();
  int samples = 0;
  while (Steady::now() - resumed < std::chrono::seconds(4)) {
    if (auto h = health()) {
      EXPECT_EQ(h->checked_by, other->name) << "the expired leader wrote a health record";
      ++samples;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GT(samples, 10);
  ASSERT_TRUE(wait_for(
      [&] {
        auto s = status(now_leading->ports.at("http"));
        return s.is_object() && s.value("role", "") == "follower" &&
               s.value("leader", "") == other->name;
      },
      std::chrono::seconds(10)))
      << "the resumed instance did not step down";
  auto l = leaders();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0]->name, other->name);
}

TEST_F(ConfigServiceTest, D_ReplicaDeathDowngradesAndItsReturnRestoresSync) {
  ASSERT_TRUE(wait_for([&] { return record().sync; }, std::chrono::seconds(20)));
  ShardRecord r = record();
  const ManifestProcess* replica = pg_at(r.replica);
  ASSERT_NE(replica, nullptr);
  WriteLoop writes(proxy());
  ASSERT_TRUE(wait_for([&] { return writes.acked_count() > 20; }, std::chrono::seconds(10)))
      << writes.last_error();
  auto t_kill = Steady::now();
  ASSERT_EQ(kill(postmaster_pid(*replica), SIGKILL), 0);
  ASSERT_TRUE(wait_for([&] { return !record().sync; }, std::chrono::seconds(10)))
      << "sync not downgraded after the replica died";
  double downgraded = seconds_between(t_kill, Steady::now());
  size_t before = writes.acked_count();
  ASSERT_TRUE(
      wait_for([&] { return writes.acked_count() > before + 20; }, std::chrono::seconds(10)))
      << "writes did not continue: " << writes.last_error();
  double gap = writes.longest_gap_after(t_kill);
  std::printf("MEASURED replica death: sync:false after %.2f s, longest write pause %.2f s\n",
              downgraded, gap);
  EXPECT_LT(gap, 5.0);
  auto h = health();
  ASSERT_TRUE(h.has_value());
  EXPECT_FALSE(h->replica.ok);
  // Its return: the restart path starts it; it catches up and sync comes back.
  ASSERT_NO_FATAL_FAILURE(cluster_up());
  ASSERT_TRUE(wait_for([&] { return record().sync; }, std::chrono::seconds(30)))
      << "sync not restored after the replica returned";
  writes.stop();
  EXPECT_GT(writes.acked_count(), before);
}

// A frozen replica (SIGSTOP on the postmaster and every child, as a paused VM looks): it accepts
// bytes but never answers, and its own statement_timeout cannot fire. The health round must not
// block on it: the replica is reported down within seconds, the leader keeps being checked, sync
// is downgraded so writes go on, and after SIGCONT everything comes back.
TEST_F(ConfigServiceTest, D2_FrozenReplicaIsDownWithinSecondsAndComesBack) {
  ASSERT_TRUE(wait_for([&] { return record().sync; }, std::chrono::seconds(30)));
  ShardRecord r = record();
  const ManifestProcess* replica = pg_at(r.replica);
  ASSERT_NE(replica, nullptr);
  const pid_t postmaster = postmaster_pid(*replica);
  std::vector<pid_t> frozen = {postmaster};
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string state;
    pid_t parent = 0;
    rest >> state >> parent;
    if (parent == postmaster) frozen.push_back(std::stoi(name));
  }
  WriteLoop writes(proxy());
  ASSERT_TRUE(wait_for([&] { return writes.acked_count() > 20; }, std::chrono::seconds(10)))
      << writes.last_error();
  const auto t_freeze = Steady::now();
  for (pid_t pid : frozen) {
    ASSERT_EQ(kill(pid, SIGSTOP), 0);
    stopped_pids_.push_back(pid);
  }
  ASSERT_TRUE(wait_for(
      [&] {
        auto h = health();
        return h && !h->replica.ok;
      },
      std::chrono::seconds(10)))
      << "a frozen replica was still reported healthy (is the health round blocked on it?)";
  const double down_after = seconds_between(t_freeze, Steady::now());
  // The rounds go on: the health node keeps being rewritten with the leader checked.
  const int64_t at1 = health()->at_ms;
  ASSERT_TRUE(wait_for([&] { return health() && health()->at_ms > at1; }, std::chrono::seconds(5)))
      << "the health round stopped";
  EXPECT_TRUE(health()->leader.ok);
  ASSERT_TRUE(wait_for([&] { return !record().sync; }, std::chrono::seconds(10)))
      << "sync not downgraded while the replica is frozen";
  size_t before = writes.acked_count();
  ASSERT_TRUE(
      wait_for([&] { return writes.acked_count() > before + 20; }, std::chrono::seconds(10)))
      << "writes did not continue: " << writes.last_error();
  std::printf("MEASURED frozen replica: reported down after %.2f s, longest write pause %.2f s\n",
              down_after, writes.longest_gap_after(t_freeze));
  for (pid_t pid : frozen) kill(pid, SIGCONT);
  stopped_pids_.clear();
  ASSERT_TRUE(wait_for([&] { return record().sync; }, std::chrono::seconds(30)))
      << "sync not restored after the replica was continued";
  writes.stop();
}

TEST_F(ConfigServiceTest, E_FailoverLosesNoAcknowledgedWrite) {
  // Start from a steady shard: after D2's frozen replica, sync may come back while the replica is
  // still settling. Both nodes healthy and sync on for a whole second, twice in a row.
  auto steady = [&] {
    auto h = health();
    return record().sync && h && h->leader.ok && h->replica.ok;
  };
  bool settled = false;
  for (int i = 0; i < 20 && !settled; ++i) {
    ASSERT_TRUE(wait_for(steady, std::chrono::seconds(20))) << config_service_log_tails();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    settled = steady();
  }
  ASSERT_TRUE(settled) << "the shard never stayed healthy with sync on for a second"
                       << config_service_log_tails();
  ShardRecord before = record();
  const ManifestProcess* old_leader = pg_at(before.leader);
  ASSERT_NE(old_leader, nullptr);
  WriteLoop writes(proxy(), "cs_writes", 1000000);  // ids apart from the replica scenario's
  ASSERT_TRUE(wait_for([&] { return writes.acked_count() > 50; }, std::chrono::seconds(10)))
      << writes.last_error();
  auto t_kill = Steady::now();
  ASSERT_EQ(kill(postmaster_pid(*old_leader), SIGKILL), 0);
  ASSERT_TRUE(wait_for([&] { return writes.first_ok_started_after(t_kill).has_value(); },
                       std::chrono::seconds(30)))
      << "writes never came back: " << writes.last_error() << "\nshard record: sync "
      << record().sync << ", leader " << record().leader << config_service_log_tails();
  double unavailable = seconds_between(t_kill, *writes.first_ok_started_after(t_kill));
  std::printf("MEASURED failover: writes accepted again %.2f s after kill -9 of the leader\n",
              unavailable);
  EXPECT_LT(unavailable, 10.0);
  size_t after = writes.acked_count();
  ASSERT_TRUE(
      wait_for([&] { return writes.acked_count() > after + 20; }, std::chrono::seconds(10)));
  writes.stop();

  ShardRecord now = record();
  EXPECT_EQ(now.leader, before.replica);
  EXPECT_EQ(now.replica, "");
  EXPECT_EQ(now.state, shard_states::kServing);
  EXPECT_FALSE(now.sync);
  EXPECT_EQ(now.fenced, std::vector<std::string>{before.leader});

  // Every acknowledged id is on the new leader.
  const ManifestProcess* new_leader = pg_at(now.leader);
  ASSERT_NE(new_leader, nullptr);
  PgClient c(manifest_.conninfo(*new_leader, "admin"));
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c.query("SELECT pg_is_in_recovery()"), "f");
  auto acked = writes.acked();
  std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(c.raw(), "SELECT id FROM cs_writes"),
                                                    &PQclear);
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK);
  std::set<int64_t> present;
  for (int i = 0; i < PQntuples(res.get()); ++i)
    present.insert(std::atoll(PQgetvalue(res.get(), i, 0)));
  size_t lost = 0;
  for (int64_t id : acked) lost += present.count(id) == 0 ? 1 : 0;
  std::printf("MEASURED failover: %zu acknowledged writes, %zu lost\n", acked.size(), lost);
  EXPECT_EQ(lost, 0u);
}

TEST_F(ConfigServiceTest, F_ReturningOldLeaderIsFenced) {
  ShardRecord r = record();
  ASSERT_EQ(r.fenced.size(), 1u) << "needs the failover scenario first";
  const ManifestProcess* old = pg_at(r.fenced[0]);
  ASSERT_NE(old, nullptr);
  // Started by hand as a primary, the way postgres_node starts it.
  SpawnOptions spawn;
  spawn.argv = {"/usr/lib/postgresql/15/bin/postgres", "-D", old->data_dir};
  spawn.log_file = old->log;
  spawn.working_dir = old->data_dir;
  if (running_as_root()) {
    auto user = lookup_user("tally");
    ASSERT_TRUE(user.ok());
    spawn.run_as = *user;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // orphans of the kill -9 exit
  auto t0 = Steady::now();
  pid_t pid = 0;
  for (int attempt = 0; attempt < 20 && pid == 0; ++attempt) {
    auto started = spawn_daemon(spawn);
    ASSERT_TRUE(started.ok()) << started.error().message;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if (process_alive(*started)) pid = *started;
  }
  ASSERT_NE(pid, 0) << "the old leader did not start; log " << old->log;
  extra_pids_.push_back(pid);
  const std::string info = manifest_.conninfo(*old, "admin");
  ASSERT_TRUE(wait_for(
      [&] {
        auto h = health();
        return h && h->fenced_running == std::vector<std::string>{r.fenced[0]};
      },
      std::chrono::seconds(15)))
      << "health never listed the running fenced node";
  ASSERT_TRUE(wait_for(
      [&] {
        PgClient c(info);
        return c.ok() && c.query("SHOW default_transaction_read_only") == "on";
      },
      std::chrono::seconds(10)))
      << "the old leader was not fenced";
  std::printf("MEASURED returning old leader fenced %.2f s after its start\n",
              seconds_between(t0, Steady::now()));
  PgClient c(info);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.query("SELECT pg_is_in_recovery()"), "f");  // a primary, but it cannot take writes
  EXPECT_EQ(c.query("INSERT INTO cs_writes (id) VALUES (-1)").substr(0, 11), "ERROR 25006");
  EXPECT_EQ(c.query("SHOW synchronous_standby_names"), "tally_fenced");
  // The topology did not move.
  EXPECT_EQ(record().leader, r.leader);
  (void)stop_process(pid, "postgres", SIGINT, std::chrono::seconds(10));
}

}  // namespace
}  // namespace tally
