// Repeated failover under a write loop (issue 4, "Measure"): for each repetition a fresh one-shard
// cluster (`tallyctl cluster up`, with config_service cs1/cs2), a write loop through the shard
// proxy, kill -9 of the leader's postmaster, then: the time until writes are accepted again, and
// every acknowledged write on the new leader. TALLY_FAILOVER_REPS sets the count (default 5).
// Prints one "MEASURED" line per repetition and a summary (median, max).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>

#include "common/cluster/cluster_manifest.h"
#include "common/process/child_process.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"
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

struct Outcome {
  double unavailable_s = -1;
  size_t acked = 0;
  size_t lost = 0;
};

// One repetition on a fresh cluster; fails the test (and returns what it has) on any problem.
void one_failover(Outcome* out) {
  testing::TempDir dir("tally-failover");
  int base = testing::find_free_port_block(200);
  struct Down {
    std::filesystem::path dir;
    ~Down() {
      run({project_binary("tallyctl"), "cluster", "down", "--dir", dir.string()});
      if (auto m = read_manifest(dir / "cluster.json")) {
        for (const auto& p : m->processes) {
          std::string needle =
              p.role == "pg_leader" || p.role == "pg_replica" ? p.data_dir : p.config;
          if (process_alive(p.pid))
            (void)stop_process(p.pid, needle, SIGKILL, std::chrono::seconds(5));
        }
      }
    }
  } down{dir.path()};
  auto up = run({project_binary("tallyctl"), "cluster", "up", "--dir", dir.path().string(),
                 "--shards", "1", "--base-port", std::to_string(base)});
  ASSERT_EQ(up.exit_code, 0) << up.output;
  ASSERT_NE(up.output.find("synchronous replication confirmed"), std::string::npos) << up.output;
  auto m = read_manifest(dir.path() / "cluster.json");
  ASSERT_TRUE(m.ok());
  const ManifestProcess& leader = *m->with_role("pg_leader")[0];
  const ManifestProcess& replica = *m->with_role("pg_replica")[0];
  {
    PgClient admin(m->conninfo(leader, "admin"));
    ASSERT_TRUE(admin.ok()) << admin.error();
    ASSERT_EQ(admin.query("CREATE TABLE cs_writes (id bigint PRIMARY KEY)"), "OK");
  }
  const auto& u = m->users.at("admin");
  WriteLoop writes(
      "host=127.0.0.1 port=" + std::to_string(m->with_role("shard_proxy")[0]->ports.at("pg")) +
      " dbname=tally user=" + u.name + " password=" + u.password + " connect_timeout=3");
  auto deadline = Steady::now() + std::chrono::seconds(10);
  while (writes.acked_count() < 50 && Steady::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(writes.acked_count(), 50u) << writes.last_error();
  pid_t postmaster = 0;
  std::ifstream(std::filesystem::path(leader.data_dir) / "postmaster.pid") >> postmaster;
  ASSERT_GT(postmaster, 0);
  auto t_kill = Steady::now();
  ASSERT_EQ(kill(postmaster, SIGKILL), 0);
  deadline = Steady::now() + std::chrono::seconds(30);
  while (!writes.first_ok_started_after(t_kill) && Steady::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto back = writes.first_ok_started_after(t_kill);
  ASSERT_TRUE(back.has_value()) << "writes never came back: " << writes.last_error();
  out->unavailable_s = std::chrono::duration<double>(*back - t_kill).count();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  writes.stop();

  PgClient c(m->conninfo(replica, "admin"));
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c.query("SELECT pg_is_in_recovery()"), "f");
  std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(c.raw(), "SELECT id FROM cs_writes"),
                                                    &PQclear);
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK);
  std::set<int64_t> present;
  for (int i = 0; i < PQntuples(res.get()); ++i) {
    present.insert(std::atoll(PQgetvalue(res.get(), i, 0)));
  }
  auto acked = writes.acked();
  out->acked = acked.size();
  for (int64_t id : acked) out->lost += present.count(id) == 0 ? 1 : 0;
}

TEST(ConfigServiceFailoverChaos, RepeatedKill9OfTheLeaderUnderWrites) {
  int reps = 5;
  if (const char* env = std::getenv("TALLY_FAILOVER_REPS")) reps = std::max(1, std::atoi(env));
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    Outcome o;
    one_failover(&o);
    ASSERT_FALSE(HasFatalFailure()) << "repetition " << i + 1;
    std::printf(
        "MEASURED failover %d/%d: writes accepted again after %.2f s; %zu acknowledged, "
        "%zu lost\n",
        i + 1, reps, o.unavailable_s, o.acked, o.lost);
    std::fflush(stdout);
    EXPECT_EQ(o.lost, 0u);
    EXPECT_LT(o.unavailable_s, 5.0);
    times.push_back(o.unavailable_s);
  }
  std::sort(times.begin(), times.end());
  std::string all;
  for (double t : times) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "%.2f", t);
    all += (all.empty() ? "" : " ") + std::string(buf);
  }
  std::printf("MEASURED failover summary over %d: median %.2f s, max %.2f s (sorted: %s)\n", reps,
              times[times.size() / 2], times.back(), all.c_str());
}

}  // namespace
}  // namespace tally
