// The shard proxy against real servers: a one-shard local cluster (ZooKeeper, a PostgreSQL
// leader and replica, the shard proxy `tallyctl cluster up` starts), plus a second proxy this
// test starts with a short statement timeout. Covers read/write routing, transactions, both query
// protocols with prepared statements across the pool, lag fallback, min_lsn, replica down, the
// result cache, statement timeout, a leader change through ZooKeeper, authentication, and bad
// protocol input.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <pqxx/pqxx>
#include <set>
#include <sstream>
#include <thread>

#include "common/cluster/cluster_manifest.h"
#include "common/core/clock.h"
#include "common/pgclient/backend_connection.h"
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

// A shard proxy a test starts itself, beside the cluster's.
struct ExtraProxy {
  pid_t pid = 0;
  std::string config;
};

class ShardProxyTest : public ::testing::Test {
 protected:
  // `tallyctl cluster up` on the suite's directory (creates it, or restarts what is down) and
  // reloads cluster.json.
  static void cluster_up() {
    auto up = run({project_binary("tallyctl"), "cluster", "up", "--dir", dir_->path().string(),
                   "--shards", "1", "--base-port", std::to_string(base_)});
    ASSERT_EQ(up.exit_code, 0) << up.output;
    auto m = read_manifest(dir_->path() / "cluster.json");
    ASSERT_TRUE(m.ok());
    manifest_ = *m;
  }

  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>("tally-proxy");
    base_ = testing::find_free_port_block(200);
    ASSERT_NO_FATAL_FAILURE(cluster_up());
    // A second proxy with a short statement timeout and a small pool, started by this test.
    timeout_proxy_port_ = base_ + 150;
    ASSERT_NO_FATAL_FAILURE(start_extra_proxy(
        "timeout-proxy", timeout_proxy_port_, "pool_size: 2",
        "  limits: {statement_timeout_ms: 500, pool_wait_timeout_ms: 300}\n", timeout_proxy_));
    // A third, with one worker and one pipelined connection, so every concurrent read of the
    // pipelining tests meets the others on the same worker and the same server connection.
    pipeline_proxy_port_ = base_ + 152;
    ASSERT_NO_FATAL_FAILURE(start_extra_proxy("pipeline-proxy", pipeline_proxy_port_,
                                              "pool_size: 4, pipelined_connections: 1", "",
                                              pipeline_proxy_));
  }

  // Starts a shard proxy for the leader only, one worker, md5, on `pg_port` (HTTP on pg_port + 1).
  static void start_extra_proxy(const std::string& id, int pg_port, const std::string& backend,
                                const std::string& more_yaml, ExtraProxy& out) {
    const auto& admin = manifest_.users.at("admin");
    std::string config = (dir_->path() / (id + ".yaml")).string();
    std::ofstream(config) << "shard_proxy:\n"
                          << "  id: " << id << "\n  shard: \"-\"\n"
                          << "  listen: {address: 127.0.0.1, pg_port: " << pg_port
                          << ", http_port: " << pg_port + 1 << "}\n"
                          << "  worker_threads: 1\n"
                          << "  backend: {leader: \"127.0.0.1:" << leader().ports.at("pg") << "\", "
                          << backend << "}\n"
                          << more_yaml << "  auth: {method: md5, users: {" << admin.name
                          << ": {password: \"" << admin.password << "\"}}}\n";
    SpawnOptions spawn;
    spawn.argv = {project_binary("shard_proxy"), "--config", config};
    spawn.log_file = dir_->path() / (id + ".log");
    auto pid = spawn_daemon(spawn);
    ASSERT_TRUE(pid.ok()) << pid.error().message;
    out.pid = *pid;
    out.config = config;
    for (int i = 0; i < 100; ++i) {
      PgClient probe(proxy_info(pg_port));
      if (probe.ok()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // A counter's value from a proxy's /metrics (0 when absent).
  static double metric(int http_port, const std::string& name) {
    auto out = run({"curl", "-s", "http://127.0.0.1:" + std::to_string(http_port) + "/metrics"});
    std::istringstream lines(out.output);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
    }
    return 0;
  }

  static void TearDownTestSuite() {
    for (const ExtraProxy* p : {&timeout_proxy_, &pipeline_proxy_}) {
      if (p->pid > 0) (void)stop_process(p->pid, p->config, SIGTERM, std::chrono::seconds(5));
    }
    run({project_binary("tallyctl"), "cluster", "down", "--dir", dir_->path().string()});
    for (const auto& p : manifest_.processes) {
      std::string needle = p.role == "pg_leader" || p.role == "pg_replica" ? p.data_dir : p.config;
      if (process_alive(p.pid)) (void)stop_process(p.pid, needle, SIGKILL, std::chrono::seconds(5));
    }
    dir_.reset();
  }

  static const ManifestProcess& role(const std::string& r) { return *manifest_.with_role(r)[0]; }
  static const ManifestProcess& leader() { return role("pg_leader"); }
  static const ManifestProcess& replica() { return role("pg_replica"); }
  static int proxy_port() { return role("shard_proxy").ports.at("pg"); }
  static std::string proxy_info(int port, const std::string& user = "admin",
                                const std::string& password = "") {
    const auto& u = manifest_.users.at(user);
    return "host=127.0.0.1 port=" + std::to_string(port) + " dbname=tally user=" + u.name +
           " password=" + (password.empty() ? u.password : password) + " connect_timeout=5";
  }
  static std::string proxy() { return proxy_info(proxy_port()); }

  // Waits until `sql` through a fresh connection to the proxy returns `want`.
  static bool eventually(const std::string& sql, const std::string& want, int tries = 100) {
    for (int i = 0; i < tries; ++i) {
      PgClient c(proxy());
      if (c.ok() && c.query(sql) == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  static inline std::unique_ptr<testing::TempDir> dir_;
  static inline int base_ = 0;
  static inline ClusterManifest manifest_;
  static inline int timeout_proxy_port_ = 0;
  static inline ExtraProxy timeout_proxy_;
  static inline int pipeline_proxy_port_ = 0;
  static inline ExtraProxy pipeline_proxy_;
};

TEST_F(ShardProxyTest, ReadsGoToTheReplicaWritesToTheLeader) {
  ASSERT_TRUE(eventually("SELECT pg_is_in_recovery()", "t")) << "reads never reached the replica";
  PgClient c(proxy());
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c.query("INSERT INTO channels (channel_id, name) VALUES ('rw-1', 'x')"), "OK");
  // A SELECT calling a function not known to be read-only is a write: it runs on the leader.
  EXPECT_EQ(c.query("SELECT pg_is_in_recovery() FROM (SELECT txid_current()) t"), "f");
  EXPECT_EQ(c.query("/*tally: route=leader*/ SELECT pg_is_in_recovery()"), "f");
  EXPECT_EQ(c.query("/*tally: route=sideways*/ SELECT 1").substr(0, 11), "ERROR 22023");
}

TEST_F(ShardProxyTest, TransactionsStayOnTheLeaderConnection) {
  PgClient c(proxy());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.query("BEGIN"), "OK");
  EXPECT_EQ(c.query("SELECT pg_is_in_recovery()"), "f");  // inside a transaction: the leader
  std::string pid = c.query("SELECT pg_backend_pid()");
  EXPECT_EQ(c.query("INSERT INTO channels (channel_id, name) VALUES ('tx-1', 'x')"), "OK");
  EXPECT_EQ(c.query("SELECT pg_backend_pid()"), pid);  // the same server connection throughout
  EXPECT_EQ(c.query("SELECT count(*) FROM channels WHERE channel_id = 'tx-1'"), "1");
  EXPECT_EQ(c.query("ROLLBACK"), "OK");
  EXPECT_EQ(
      c.query("/*tally: route=leader*/ SELECT count(*) FROM channels WHERE channel_id = 'tx-1'"),
      "0");
  // A failed transaction reports its state until it ends.
  EXPECT_EQ(c.query("BEGIN"), "OK");
  EXPECT_EQ(c.query("SELECT 1/0").substr(0, 11), "ERROR 22012");
  EXPECT_EQ(c.query("SELECT 1").substr(0, 11), "ERROR 25P02");
  EXPECT_EQ(c.query("ROLLBACK"), "OK");
  EXPECT_EQ(c.query("SELECT 42"), "42");
  // Session state outside a transaction would leak to other clients of the pool.
  EXPECT_EQ(c.query("SET work_mem = '8MB'").substr(0, 11), "ERROR 0A000");
}

TEST_F(ShardProxyTest, ExtendedProtocolAndPreparedStatementsAcrossThePool) {
  // Many clients so transactions of one client land on different server connections: the
  // named statement must be re-prepared wherever it runs.
  std::vector<std::unique_ptr<PgClient>> clients;
  for (int i = 0; i < 6; ++i) {
    clients.push_back(std::make_unique<PgClient>(proxy()));
    ASSERT_TRUE(clients.back()->ok());
    ASSERT_EQ(clients.back()->prepare("s", "SELECT $1::int + $2::int", 2), "OK");
  }
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 6; ++i) {
      EXPECT_EQ(clients[static_cast<size_t>(i)]->exec_prepared(
                    "s", {std::to_string(round), std::to_string(i)}),
                std::to_string(round + i));
    }
  }
  PgClient c(proxy());
  EXPECT_EQ(c.query_params("SELECT $1::text || '-' || $2::text", {"a", "b"}), "a-b");
  EXPECT_EQ(c.query_params("SELECT upper($1)", {"x"}), "X");
  // Errors in the extended protocol: a syntax error at Parse, then the session still works.
  EXPECT_EQ(c.prepare("bad", "SELEC 1", 0).substr(0, 11), "ERROR 42601");
  EXPECT_EQ(c.exec_prepared("bad", {}).substr(0, 11), "ERROR 26000");
  EXPECT_EQ(c.prepare("good", "SELECT 7", 0), "OK");
  EXPECT_EQ(c.exec_prepared("good", {}), "7");
  // Statements belong to the client session that prepared them, not to server connections.
  std::unique_ptr<PGresult, decltype(&PQclear)> d(PQdescribePrepared(c.raw(), "s"), &PQclear);
  ASSERT_EQ(PQresultStatus(d.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(d.get(), PG_DIAG_SQLSTATE), "26000");
  std::unique_ptr<PGresult, decltype(&PQclear)> g(PQdescribePrepared(clients[0]->raw(), "s"),
                                                  &PQclear);
  ASSERT_EQ(PQresultStatus(g.get()), PGRES_COMMAND_OK);
  EXPECT_EQ(PQnparams(g.get()), 2);
  EXPECT_EQ(PQnfields(g.get()), 1);
}

TEST_F(ShardProxyTest, LibpqxxClientWorksThroughTheProxy) {
  pqxx::connection c(proxy());
  c.prepare("add", "SELECT $1::int + $2::int");
  {
    pqxx::work w(c);
    EXPECT_EQ(w.exec_params("SELECT $1::text || $2::text", "pq", "xx")[0][0].as<std::string>(),
              "pqxx");
    EXPECT_EQ(w.exec_prepared("add", 40, 2)[0][0].as<int>(), 42);
    w.exec("INSERT INTO channels (channel_id, name) VALUES ('pqxx-1', 'x')");
    w.commit();
  }
  pqxx::work w(c);
  EXPECT_EQ(w.exec_prepared("add", 1, 2)[0][0].as<int>(), 3);
  EXPECT_EQ(w.exec("SELECT count(*) FROM channels WHERE channel_id = 'pqxx-1'")[0][0].as<int>(), 1);
  EXPECT_THROW(w.exec("SELECT * FROM no_such_table"), pqxx::sql_error);
}

TEST_F(ShardProxyTest, PipelinedRequestsAreAnsweredInOrder) {
  PgClient c(proxy());
  ASSERT_TRUE(c.ok());
  PGconn* pg = c.raw();
  ASSERT_EQ(PQenterPipelineMode(pg), 1);
  for (int i = 0; i < 5; ++i) {
    std::string v = std::to_string(i);
    const char* values[] = {v.c_str()};
    ASSERT_EQ(PQsendQueryParams(pg, "SELECT $1::int * 10", 1, nullptr, values, nullptr, nullptr, 0),
              1);
    ASSERT_EQ(PQpipelineSync(pg), 1);
  }
  for (int i = 0; i < 5; ++i) {
    std::unique_ptr<PGresult, decltype(&PQclear)> r(PQgetResult(pg), &PQclear);
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(pg);
    EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), std::to_string(i * 10));
    std::unique_ptr<PGresult, decltype(&PQclear)> end(PQgetResult(pg), &PQclear);
    EXPECT_EQ(end.get(), nullptr);
    std::unique_ptr<PGresult, decltype(&PQclear)> sync(PQgetResult(pg), &PQclear);
    EXPECT_EQ(PQresultStatus(sync.get()), PGRES_PIPELINE_SYNC);
  }
  ASSERT_EQ(PQexitPipelineMode(pg), 1);
}

TEST_F(ShardProxyTest, ConcurrentReadsShareAPipelinedConnectionAndKeepTheirOwnAnswers) {
  // Eight clients on one worker: their autocommit reads ride one pipelined server connection.
  // Each must get its own answer, in all three ways of asking, and one client's errors (a
  // division by zero every eighth read) must not touch anyone's next read.
  const int http = pipeline_proxy_port_ + 1;
  double pipelined_before = metric(http, "tally_shard_proxy_pipelined_requests_total");
  double behind_before = metric(http, "tally_shard_proxy_pipelined_behind_total");
  constexpr int kClients = 8;
  constexpr int kRounds = 300;
  std::vector<std::string> failures(kClients);
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      PgClient c(proxy_info(pipeline_proxy_port_));
      if (!c.ok()) {
        failures[t] = "connect: " + c.error();
        return;
      }
      if (std::string r = c.prepare("times", "SELECT $1::int * 7", 1); r != "OK") {
        failures[t] = "prepare: " + r;
        return;
      }
      for (int i = 0; i < kRounds; ++i) {
        int v = t * 100000 + i;
        std::string got, want;
        switch (i % 4) {
          case 0:
            got = c.exec_prepared("times", {std::to_string(v)});
            want = std::to_string(v * 7);
            break;
          case 1:
            got = c.query("SELECT " + std::to_string(v) + " + 1");
            want = std::to_string(v + 1);
            break;
          case 2:
            got = c.query_params("SELECT $1::text || 'x'", {std::to_string(v)});
            want = std::to_string(v) + "x";
            break;
          default:
            got = c.query("SELECT 100 / (" + std::to_string(i % 8) + " - 3)");
            want = i % 8 == 3 ? "ERROR 22012" : std::to_string(100 / (i % 8 - 3));
            got = got.substr(0, want.size());
            break;
        }
        if (got != want) {
          failures[t] = "client " + std::to_string(t) + " round " + std::to_string(i) + ": got '" +
                        got + "', want '" + want + "'";
          return;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& f : failures) EXPECT_EQ(f, "");
  EXPECT_GT(metric(http, "tally_shard_proxy_pipelined_requests_total"), pipelined_before);
  // Some reads were sent while others were in flight on the same connection: pipelining happened.
  EXPECT_GT(metric(http, "tally_shard_proxy_pipelined_behind_total"), behind_before);
}

TEST_F(ShardProxyTest, ASlowPipelinedReadDoesNotHoldUpTheReadsAfterIt) {
  PgClient locker(manifest_.conninfo(leader(), "admin"));
  PgClient watcher(manifest_.conninfo(leader(), "admin"));
  ASSERT_TRUE(locker.ok() && watcher.ok());
  ASSERT_EQ(locker.query("CREATE TABLE IF NOT EXISTS pipeline_lock_probe (x int)"), "OK");
  {
    // Two reads in a row: the second finds the first's idle connection and makes it the shared one.
    PgClient warm(proxy_info(pipeline_proxy_port_));
    ASSERT_EQ(warm.query("SELECT 1"), "1");
    ASSERT_EQ(warm.query("SELECT 2"), "2");
  }
  const int http = pipeline_proxy_port_ + 1;
  double pipelined_before = metric(http, "tally_shard_proxy_pipelined_requests_total");
  ASSERT_EQ(locker.query("BEGIN"), "OK");
  ASSERT_EQ(locker.query("LOCK TABLE pipeline_lock_probe IN ACCESS EXCLUSIVE MODE"), "OK");
  std::atomic<bool> slow_done{false};
  std::string slow_result;
  std::thread slow([&] {
    PgClient c(proxy_info(pipeline_proxy_port_));
    slow_result = c.query("SELECT count(*) FROM pipeline_lock_probe");
    slow_done = true;
  });
  bool blocked = false;
  for (int i = 0; i < 200 && !blocked; ++i) {
    blocked = watcher.query(
                  "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
                  "query LIKE '%pipeline_lock_probe%'") == "1";
    if (!blocked) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(blocked) << "the slow read never waited for the lock";
  // The slow read went out on the shared connection, and sits first in its line.
  EXPECT_EQ(metric(http, "tally_shard_proxy_pipelined_requests_total"), pipelined_before + 1);
  // Reads after it, on the same worker: answered while it still waits, not queued behind it.
  PgClient quick(proxy_info(pipeline_proxy_port_));
  ASSERT_TRUE(quick.ok());
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(quick.query("SELECT " + std::to_string(i)), std::to_string(i));
  }
  EXPECT_FALSE(slow_done.load());
  ASSERT_EQ(locker.query("COMMIT"), "OK");
  slow.join();
  EXPECT_EQ(slow_result, "0");
}

TEST_F(ShardProxyTest, TransactionsGetThePipelinedConnectionBackWhenThePoolIsFull) {
  {
    PgClient warm(proxy_info(pipeline_proxy_port_));
    ASSERT_EQ(warm.query("SELECT 1"), "1");
    ASSERT_EQ(warm.query("SELECT 2"), "2");
  }
  // Pool size 4 on one worker, one of them shared: four open transactions need all four.
  std::vector<std::unique_ptr<PgClient>> holders;
  for (int i = 0; i < 4; ++i) {
    holders.push_back(std::make_unique<PgClient>(proxy_info(pipeline_proxy_port_)));
    ASSERT_TRUE(holders.back()->ok());
    EXPECT_EQ(holders.back()->query("BEGIN"), "OK");
    EXPECT_EQ(holders.back()->query("SELECT 10 + " + std::to_string(i)), std::to_string(10 + i));
  }
  for (auto& h : holders) EXPECT_EQ(h->query("COMMIT"), "OK");
  PgClient after(proxy_info(pipeline_proxy_port_));
  EXPECT_EQ(after.query("SELECT 3"), "3");
}

TEST_F(ShardProxyTest, CancelRequestStopsTheRunningStatement) {
  PgClient c(proxy());
  ASSERT_TRUE(c.ok());
  std::unique_ptr<PGcancel, decltype(&PQfreeCancel)> cancel(PQgetCancel(c.raw()), &PQfreeCancel);
  ASSERT_NE(cancel.get(), nullptr);
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    char err[256];
    PQcancel(cancel.get(), err, sizeof(err));
  });
  auto t0 = std::chrono::steady_clock::now();
  std::string r = c.query("/*tally: route=leader*/ SELECT pg_sleep(10)");
  canceller.join();
  EXPECT_EQ(r.substr(0, 11), "ERROR 57014") << r;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(c.query("SELECT 1"), "1");
}

TEST_F(ShardProxyTest, LaggingReplicaSendsReadsToTheLeaderAndMinLsnIsHonoured) {
  ASSERT_TRUE(eventually("SELECT pg_is_in_recovery()", "t"));
  PgClient replica_admin(manifest_.conninfo(replica(), "admin"));
  PgClient leader_admin(manifest_.conninfo(leader(), "admin"));
  ASSERT_TRUE(replica_admin.ok() && leader_admin.ok());
  ASSERT_EQ(replica_admin.query("SELECT pg_wal_replay_pause()"), "");
  // Writes the replica does not replay: its lag grows past max_replica_lag_ms (1 s).
  bool moved = false;
  for (int i = 0; i < 60 && !moved; ++i) {
    leader_admin.query("INSERT INTO channels (channel_id, name) VALUES ('lag-" + std::to_string(i) +
                       "', 'x')");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    PgClient c(proxy());
    moved = c.query("SELECT pg_is_in_recovery()") == "f";
  }
  EXPECT_TRUE(moved) << "reads stayed on a replica that stopped replaying";
  // A read that must see the leader's latest LSN never goes to a replica that has not replayed it.
  std::string lsn = leader_admin.query("SELECT pg_current_wal_lsn()");
  PgClient c(proxy());
  EXPECT_EQ(c.query("/*tally: min_lsn=" + lsn + "*/ SELECT pg_is_in_recovery()"), "f");
  ASSERT_EQ(replica_admin.query("SELECT pg_wal_replay_resume()"), "");
  EXPECT_TRUE(eventually("SELECT pg_is_in_recovery()", "t")) << "reads never came back";
}

TEST_F(ShardProxyTest, ResultCacheServesRepeatsWithoutThePrimary) {
  PgClient c(proxy());
  ASSERT_TRUE(c.ok());
  const std::string q =
      "/*tally: cache_ttl_ms=60000*/ SELECT count(*) FROM channels WHERE channel_id = 'cache-1'";
  ASSERT_EQ(c.query(q), "0");
  ASSERT_EQ(c.query("INSERT INTO channels (channel_id, name) VALUES ('cache-1', 'x')"), "OK");
  ASSERT_TRUE(eventually("SELECT count(*) FROM channels WHERE channel_id = 'cache-1'", "1"));
  // Within the TTL the cached answer comes back: the query never reached PostgreSQL.
  EXPECT_EQ(c.query(q), "0");
  // min_lsn bypasses the cache.
  EXPECT_EQ(c.query("/*tally: cache_ttl_ms=60000, min_lsn=0/1*/ SELECT count(*) FROM channels "
                    "WHERE channel_id = 'cache-1'"),
            "1");
  // The extended protocol caches too, keyed by the parameters.
  const std::string p =
      "/*tally: cache_ttl_ms=60000*/ SELECT count(*) FROM channels WHERE channel_id = $1";
  EXPECT_EQ(c.query_params(p, {"cache-2"}), "0");
  ASSERT_EQ(c.query("INSERT INTO channels (channel_id, name) VALUES ('cache-2', 'x')"), "OK");
  ASSERT_TRUE(eventually("SELECT count(*) FROM channels WHERE channel_id = 'cache-2'", "1"));
  EXPECT_EQ(c.query_params(p, {"cache-2"}), "0");
  EXPECT_EQ(c.query_params(p, {"cache-1"}), "1");
}

TEST_F(ShardProxyTest, StatementTimeoutCancelsAndTheConnectionStaysUsable) {
  PgClient c(proxy_info(timeout_proxy_port_));
  ASSERT_TRUE(c.ok()) << c.error();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(c.query("SELECT pg_sleep(5)").substr(0, 11), "ERROR 57014");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  // The pool has 2 connections: several statements after the timeout prove they were reused.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(c.query("SELECT " + std::to_string(i)), std::to_string(i));
}

TEST_F(ShardProxyTest, PoolExhaustionEndsInAClearErrorNotAPileUp) {
  // The timeout proxy has one worker with 2 server connections and waits 300 ms for one.
  std::vector<std::unique_ptr<PgClient>> holders;
  for (int i = 0; i < 4; ++i) {
    holders.push_back(std::make_unique<PgClient>(proxy_info(timeout_proxy_port_)));
    ASSERT_TRUE(holders.back()->ok());
    holders.back()->query("BEGIN");  // holds a server connection until COMMIT
  }
  int refused = 0;
  for (int i = 0; i < 2; ++i) {
    PgClient extra(proxy_info(timeout_proxy_port_));
    std::string r = extra.query("SELECT 1");
    if (r.rfind("ERROR 53300", 0) == 0) ++refused;
  }
  EXPECT_GT(refused, 0);
  for (auto& h : holders) h->query("COMMIT");
  PgClient after(proxy_info(timeout_proxy_port_));
  EXPECT_EQ(after.query("SELECT 1"), "1");
}

TEST_F(ShardProxyTest, ReplicaDownReadsGoToTheLeaderWithoutErrors) {
  const ManifestProcess& r = replica();
  ASSERT_TRUE(eventually("SELECT pg_is_in_recovery()", "t"));
  // Readers on kept connections, busy while the replica's server connections break under them
  // and then while the replica dies: several of their reads are in flight on the same pipelined
  // replica connection when it breaks, and each must be replayed on the leader, not answered with
  // an error.
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0};
  std::vector<std::string> reader_errors(6);
  std::vector<std::thread> readers;
  for (size_t t = 0; t < reader_errors.size(); ++t) {
    readers.emplace_back([&, t] {
      PgClient c(proxy());
      if (c.prepare("probe", "SELECT count(*) >= $1 FROM channels", 1) != "OK") {
        reader_errors[t] = "prepare failed: " + c.error();
        return;
      }
      for (int i = 0; !stop; ++i) {
        std::string v = i % 2 == 0 ? c.exec_prepared("probe", {"0"})
                                   : c.query("SELECT count(*) >= 0 FROM channels");
        if (v != "t") {
          reader_errors[t] = "read " + std::to_string(i) + ": " + v;
          return;
        }
        ++reads;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // Orphaned backends of a killed postmaster keep serving a busy connection for a while, so the
  // kill alone rarely breaks a connection mid-pipeline: terminate the proxy's backends first.
  PgClient replica_admin(manifest_.conninfo(r, "admin"));
  ASSERT_TRUE(replica_admin.ok()) << replica_admin.error();
  const int before_terminate = reads.load();
  EXPECT_NE(replica_admin.query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE backend_type = 'client backend' AND "
                                "pid <> pg_backend_pid()"),
            "0");
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const int before_kill = reads.load();
  ASSERT_TRUE(stop_process(r.pid, r.data_dir, SIGKILL, std::chrono::seconds(5)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  stop = true;
  for (auto& th : readers) th.join();
  for (const auto& e : reader_errors) EXPECT_EQ(e, "");
  EXPECT_GT(before_terminate, 0);
  EXPECT_GT(before_kill, before_terminate) << "no read was answered after the terminations";
  EXPECT_GT(reads.load(), before_kill) << "no read was answered after the replica died";
  // And fresh connections, one read each, while it stays down.
  int errors = 0;
  std::string first_error;
  for (int i = 0; i < 30; ++i) {
    PgClient c(proxy());
    std::string v = c.query("SELECT count(*) >= 0 FROM channels");
    if (v != "t" && errors++ == 0) first_error = v + c.error();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(errors, 0) << first_error;
  PgClient c(proxy());
  EXPECT_EQ(c.query("SELECT pg_is_in_recovery()"), "f");
  ASSERT_NO_FATAL_FAILURE(cluster_up());  // the restart path: starts the replica again
  EXPECT_TRUE(eventually("SELECT pg_is_in_recovery()", "t", 150)) << "reads never returned";
}

// Records how one exchange on a BackendConnection ended.
class RecordingSink : public ResultSink {
 public:
  void on_result(const PGresult* /*result*/) override {}
  void on_exchange_done(Status status) override {
    done = true;
    ok = status.ok();
  }
  bool done = false;
  bool ok = false;
};

// When a server ends a connection, libpq closes its socket on its own, and the kernel hands that
// descriptor number to the next socket opened, typically a replacement connection opened at once
// (a read replayed on the leader). Letting go of the broken connection afterwards must not touch
// the new socket's registration in the event loop: it did (the stale number was deregistered), and
// the new connection then never heard from its server and timed out. Seen in CI as "connecting to
// leader ... timed out after 2000 ms" right after the replica-down test.
TEST_F(ShardProxyTest, ADroppedServerConnectionLeavesTheSocketThatReusesItsNumberAlone) {
  boost::asio::io_context io;
  auto run_until = [&io](const bool& flag) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!flag && std::chrono::steady_clock::now() < deadline) {
      io.restart();
      io.run_one_for(std::chrono::milliseconds(20));
    }
  };
  struct Connecting {
    std::shared_ptr<BackendConnection> conn;
    bool done = false;
    Status status = ok_status();
  };
  const std::string info = manifest_.conninfo(leader(), "admin");
  auto start_connect = [&](Connecting& c, std::chrono::milliseconds timeout) {
    c.conn = std::make_shared<BackendConnection>(io, info, "leader");
    c.conn->connect(timeout, [&c](Status s) {
      c.status = std::move(s);
      c.done = true;
    });
  };
  Connecting first;
  start_connect(first, std::chrono::seconds(5));
  run_until(first.done);
  ASSERT_TRUE(first.done && first.status.ok())
      << (first.status.ok() ? "no answer" : first.status.error().message);
  auto dropped = std::move(first.conn);
  const int old_fd = PQsocket(dropped->pg());
  PgClient admin(info);
  ASSERT_EQ(
      admin.query("SELECT pg_terminate_backend(" + std::to_string(dropped->backend_pid()) + ")"),
      "t");
  // The next exchange finds the connection gone; libpq closes its socket.
  ASSERT_EQ(PQsendQuery(dropped->pg(), "SELECT 1"), 1);
  RecordingSink sink;
  dropped->run_exchange(sink);
  run_until(sink.done);
  ASSERT_TRUE(sink.done);
  EXPECT_FALSE(sink.ok);
  ASSERT_EQ(PQsocket(dropped->pg()), -1) << "libpq kept its socket: the case is not exercised";

  // A replacement connects on the freed number; the broken one is let go while it connects.
  Connecting replacement;
  start_connect(replacement, std::chrono::seconds(3));
  EXPECT_EQ(PQsocket(replacement.conn->pg()), old_fd) << "the kernel gave another number";
  dropped.reset();
  run_until(replacement.done);
  ASSERT_TRUE(replacement.done);
  EXPECT_TRUE(replacement.status.ok()) << replacement.status.error().message;
}

TEST_F(ShardProxyTest, LeaderChangeThroughZooKeeperTakesEffectWithoutRestart) {
  ZkOptions options;
  options.hosts = manifest_.zookeeper;
  auto zk = ZkClient::connect(options);
  ASSERT_TRUE(zk.ok());
  auto node = (*zk)->get(topology_paths::shard("-"));
  ASSERT_TRUE(node.ok());
  auto record = decode_shard("-", node->data);
  ASSERT_TRUE(record.ok());
  // Name the replica as the leader: writes through the proxy must then reach the replica (and
  // fail there as read-only), which proves the proxy followed the node without a restart.
  ShardRecord moved = *record;
  moved.leader = record->replica;
  ASSERT_TRUE((*zk)->set(topology_paths::shard("-"), encode_shard(moved), node->version).ok());
  bool followed = false;
  for (int i = 0; i < 100 && !followed; ++i) {
    PgClient c(proxy());
    followed = c.query("INSERT INTO channels (channel_id, name) VALUES ('zk-1', 'x')")
                   .rfind("ERROR 25006", 0) == 0;
    if (!followed) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(followed);
  auto now = (*zk)->get(topology_paths::shard("-"));
  ASSERT_TRUE((*zk)->set(topology_paths::shard("-"), encode_shard(*record), now->version).ok());
  bool back = false;
  for (int i = 0; i < 100 && !back; ++i) {
    PgClient c(proxy());
    back = c.query("INSERT INTO channels (channel_id, name) VALUES ('zk-2', 'x')") == "OK";
    if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(back);
  // The proxy registered itself.
  auto proxies = (*zk)->children(topology_paths::shard_proxies("-"));
  ASSERT_TRUE(proxies.ok());
  EXPECT_EQ(proxies->size(), 1u);
}

TEST_F(ShardProxyTest, AuthenticationAndTheAnalystRole) {
  PgClient wrong(proxy_info(proxy_port(), "admin", "not-the-password"));
  EXPECT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().find("password authentication failed"), std::string::npos)
      << wrong.error();
  PgClient analyst(proxy_info(proxy_port(), "analyst"));
  ASSERT_TRUE(analyst.ok()) << analyst.error();
  EXPECT_EQ(analyst.query("SELECT count(*) >= 0 FROM video_totals"), "t");
  EXPECT_EQ(
      analyst.query("INSERT INTO channels (channel_id, name) VALUES ('a', 'b')").substr(0, 11),
      "ERROR 42501");
  PgClient nodb("host=127.0.0.1 port=" + std::to_string(proxy_port()) +
                " dbname=other user=tally password=x");
  EXPECT_NE(nodb.error().find("does not exist"), std::string::npos) << nodb.error();
}

int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

std::string send_and_read(int port, const std::string& bytes) {
  int fd = raw_connect(port);
  if (fd < 0) return "<no connection>";
  (void)send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  std::string reply;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) reply.append(buf, static_cast<size_t>(n));
  close(fd);
  return reply;
}

TEST_F(ShardProxyTest, BadProtocolInputEndsOnlyThatClient) {
  PgClient bystander(proxy());
  ASSERT_TRUE(bystander.ok());
  // A startup packet declaring 2 GB, an unknown protocol version, garbage, a truncated packet.
  std::string huge("\x7f\xff\xff\xff\x00\x03\x00\x00", 8);
  std::string version("\x00\x00\x00\x08\x00\x02\x00\x00", 8);
  std::string garbage = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  for (const auto& bad : {huge, version, garbage}) {
    std::string reply = send_and_read(proxy_port(), bad);
    ASSERT_FALSE(reply.empty());
    EXPECT_EQ(reply[0], 'E') << "expected an ErrorResponse";
  }
  int fd = raw_connect(proxy_port());
  std::string truncated("\x00\x00\x00\x30\x00\x03", 6);
  (void)send(fd, truncated.data(), truncated.size(), MSG_NOSIGNAL);
  close(fd);  // hang up mid-packet
  // Everyone else is unaffected, and new clients still get in.
  EXPECT_EQ(bystander.query("SELECT 1"), "1");
  PgClient fresh(proxy());
  EXPECT_EQ(fresh.query("SELECT 2"), "2");
}

TEST_F(ShardProxyTest, ClientHangingUpMidStatementLeavesTheProxyHealthy) {
  for (int i = 0; i < 5; ++i) {
    PGconn* c = PQconnectdb(proxy().c_str());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK);
    ASSERT_EQ(PQsendQuery(c, "/*tally: route=leader*/ SELECT pg_sleep(0.3)"), 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    PQfinish(c);  // gone while the statement runs; its answer arrives for nobody
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  PgClient c(proxy());
  EXPECT_EQ(c.query("SELECT 5"), "5");
  EXPECT_EQ(c.query("/*tally: route=leader*/ SELECT 6"), "6");
}

TEST_F(ShardProxyTest, CopyIsRefusedClearlyAndTheSessionGoesOn) {
  PgClient c(proxy());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.query("COPY (SELECT 1) TO STDOUT").substr(0, 11), "ERROR 0A000");
  EXPECT_EQ(c.query_params("COPY (SELECT $1::int) TO STDOUT", {"1"}).substr(0, 11), "ERROR 0A000");
  EXPECT_EQ(c.query("SELECT 3"), "3");
}

TEST_F(ShardProxyTest, SessionSettingsInsideATransactionDoNotReachOtherClients) {
  PgClient c(proxy());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.query("BEGIN"), "OK");
  EXPECT_EQ(c.query("SET search_path TO pg_catalog, public"), "OK");
  EXPECT_EQ(c.query("COMMIT"), "OK");
  for (int i = 0; i < 10; ++i) {
    PgClient other(proxy());
    ASSERT_EQ(other.query("BEGIN"), "OK");
    EXPECT_EQ(other.query("SHOW search_path").find("pg_catalog"), std::string::npos);
    ASSERT_EQ(other.query("COMMIT"), "OK");
  }
}

TEST_F(ShardProxyTest, ClientLeavingWhileWaitingForAConnectionIsForgotten) {
  // The timeout proxy: one worker, two server connections, 300 ms wait.
  std::vector<std::unique_ptr<PgClient>> holders;
  for (int i = 0; i < 2; ++i) {
    holders.push_back(std::make_unique<PgClient>(proxy_info(timeout_proxy_port_)));
    ASSERT_EQ(holders.back()->query("BEGIN"), "OK");
  }
  for (int i = 0; i < 3; ++i) {
    PGconn* w = PQconnectdb(proxy_info(timeout_proxy_port_).c_str());
    ASSERT_EQ(PQstatus(w), CONNECTION_OK);
    ASSERT_EQ(PQsendQuery(w, "SELECT 1"), 1);
    PQfinish(w);  // gone while waiting for a server connection
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  for (auto& h : holders) EXPECT_EQ(h->query("COMMIT"), "OK");
  holders.clear();
  std::string clients;
  for (int i = 0; i < 50; ++i) {
    auto m = run({"curl", "-s", "http://127.0.0.1:" + std::to_string(base_ + 151) + "/metrics"});
    auto pos = m.output.find("\ntally_shard_proxy_clients ");
    clients = pos == std::string::npos
                  ? "?"
                  : m.output.substr(pos + 27, m.output.find('\n', pos + 1) - pos - 27);
    if (clients == "0") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(clients, "0") << "sessions of departed clients were never freed";
}

TEST_F(ShardProxyTest, MetricsAndHealthEndpoints) {
  auto metrics = run(
      {"curl", "-s",
       "http://127.0.0.1:" + std::to_string(role("shard_proxy").ports.at("http")) + "/metrics"});
  EXPECT_NE(metrics.output.find("tally_shard_proxy_queries_total{route=\"replica\"}"),
            std::string::npos)
      << metrics.output.substr(0, 500);
  EXPECT_NE(metrics.output.find("tally_shard_proxy_pool_open"), std::string::npos);
  EXPECT_NE(metrics.output.find("tally_shard_proxy_errors_total{sqlstate="), std::string::npos);
  auto ready =
      run({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
           "http://127.0.0.1:" + std::to_string(role("shard_proxy").ports.at("http")) + "/readyz"});
  EXPECT_EQ(ready.output, "200");
}

// Compare-and-set of the shard's topology node through `change`; true when written.
bool update_shard_node(const ClusterManifest& m, const std::function<void(ShardRecord&)>& change) {
  ZkOptions options;
  options.hosts = m.zookeeper;
  auto zk = ZkClient::connect(options);
  if (!zk.ok()) return false;
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto node = (*zk)->get(topology_paths::shard("-"));
    if (!node.ok()) return false;
    auto record = decode_shard("-", node->data);
    if (!record.ok()) return false;
    change(*record);
    if ((*zk)->set(topology_paths::shard("-"), encode_shard(*record), node->version).ok()) {
      return true;
    }
  }
  return false;
}

bool set_shard_state(const ClusterManifest& m, const std::string& state) {
  return update_shard_node(m, [&](ShardRecord& r) {
    r.state = state;
    r.state_since_ms = wall_clock_ms();
  });
}

TEST_F(ShardProxyTest, PausedShardHoldsLeaderWorkUntilItServesAgain) {
  PgClient in_txn(proxy());
  ASSERT_TRUE(in_txn.ok());
  ASSERT_EQ(in_txn.query("BEGIN"), "OK");
  ASSERT_EQ(in_txn.query("INSERT INTO channels (channel_id, name) VALUES ('pause-0', 'x')"), "OK");
  ASSERT_TRUE(set_shard_state(manifest_, shard_states::kPaused));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the proxy's watch fires

  // A new write waits for the shard to serve again...
  std::atomic<bool> done{false};
  std::string result;
  auto t0 = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration waited{};
  std::thread writer([&] {
    PgClient c(proxy());
    result = c.query("INSERT INTO channels (channel_id, name) VALUES ('pause-1', 'x')");
    waited = std::chrono::steady_clock::now() - t0;
    done = true;
  });
  // ... while reads the replica may serve, and a transaction already under way, go on.
  ASSERT_TRUE(eventually("SELECT pg_is_in_recovery()", "t"));
  EXPECT_EQ(in_txn.query("INSERT INTO channels (channel_id, name) VALUES ('pause-2', 'x')"), "OK");
  EXPECT_EQ(in_txn.query("COMMIT"), "OK");
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  EXPECT_FALSE(done.load()) << "the write was not held: " << result;
  ASSERT_TRUE(set_shard_state(manifest_, shard_states::kServing));
  writer.join();
  EXPECT_EQ(result, "OK");
  EXPECT_GE(waited, std::chrono::milliseconds(650));  // held at least the 700 ms sleep
  EXPECT_LT(waited, std::chrono::seconds(5));
  PgClient leader_admin(manifest_.conninfo(leader(), "admin"));
  EXPECT_EQ(leader_admin.query("SELECT count(*) FROM channels WHERE channel_id LIKE 'pause-%'"),
            "3");
}

TEST_F(ShardProxyTest, PauseLongerThanPauseHoldMsFailsWith57P03) {
  // A third proxy, following ZooKeeper, that holds leader work for 300 ms only.
  const auto& admin = manifest_.users.at("admin");
  const int port = base_ + 160;
  std::string config = (dir_->path() / "hold-proxy.yaml").string();
  std::ofstream(config) << "shard_proxy:\n"
                        << "  id: hold-proxy\n  shard: \"-\"\n"
                        << "  listen: {address: 127.0.0.1, pg_port: " << port
                        << ", http_port: " << base_ + 161 << "}\n"
                        << "  worker_threads: 1\n"
                        << "  zookeeper: {hosts: \"" << manifest_.zookeeper << "\"}\n"
                        << "  backend: {leader: \"127.0.0.1:" << leader().ports.at("pg")
                        << "\", replica: \"127.0.0.1:" << replica().ports.at("pg") << "\"}\n"
                        << "  limits: {pause_hold_ms: 300}\n"
                        << "  auth: {method: md5, users: {" << admin.name << ": {password: \""
                        << admin.password << "\"}}}\n";
  SpawnOptions spawn;
  spawn.argv = {project_binary("shard_proxy"), "--config", config};
  spawn.log_file = dir_->path() / "hold-proxy.log";
  auto pid = spawn_daemon(spawn);
  ASSERT_TRUE(pid.ok()) << pid.error().message;
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    PgClient probe(proxy_info(port));
    up = probe.ok();
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(up);

  ASSERT_TRUE(set_shard_state(manifest_, shard_states::kFailingOver));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  PgClient c(proxy_info(port));
  auto t0 = std::chrono::steady_clock::now();
  std::string r = c.query("INSERT INTO channels (channel_id, name) VALUES ('hold-1', 'x')");
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.substr(0, 11), "ERROR 57P03") << r;
  EXPECT_NE(r.find("shard - is failing_over"), std::string::npos) << r;
  EXPECT_GE(took, std::chrono::milliseconds(250));
  EXPECT_LT(took, std::chrono::seconds(3));
  // The extended protocol is held the same way.
  EXPECT_EQ(c.query_params("INSERT INTO channels (channel_id, name) VALUES ($1, 'x')", {"hold-2"})
                .substr(0, 11),
            "ERROR 57P03");
  ASSERT_TRUE(set_shard_state(manifest_, shard_states::kServing));
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    served = c.query("INSERT INTO channels (channel_id, name) VALUES ('hold-3', 'x')") == "OK";
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(served);
  PgClient leader_admin(manifest_.conninfo(leader(), "admin"));
  EXPECT_EQ(leader_admin.query("SELECT count(*) FROM channels WHERE channel_id IN ('hold-1', "
                               "'hold-2', 'hold-3')"),
            "1");
  (void)stop_process(*pid, config, SIGTERM, std::chrono::seconds(5));
}

// The local TCP ports of a process's sockets (from /proc), to tell its server connections apart
// from other clients' in pg_stat_activity.
std::set<int> local_ports_of(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& fd :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    auto target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::set<int> ports;
  std::ifstream tcp("/proc/net/tcp");
  std::string line;
  std::getline(tcp, line);  // header
  while (std::getline(tcp, line)) {
    std::istringstream f(line);
    std::string slot, local, remote, st, queues, timer, retr, uid, timeout, inode;
    f >> slot >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode;
    if (inodes.count(inode))
      ports.insert(std::stoi(local.substr(local.find(':') + 1), nullptr, 16));
  }
  return ports;
}

TEST_F(ShardProxyTest, LeaderChangeClosesEveryConnectionToTheOldAddress) {
  const ManifestProcess& l = leader();
  PgClient leader_admin(manifest_.conninfo(l, "admin"));
  ASSERT_TRUE(leader_admin.ok());
  // Pooled connections to the leader, and one held inside a transaction.
  for (int i = 0; i < 3; ++i) {
    PgClient c(proxy());
    ASSERT_EQ(c.query("/*tally: route=leader*/ SELECT 1"), "1");
  }
  PgClient in_txn(proxy());
  ASSERT_EQ(in_txn.query("BEGIN"), "OK");
  std::string txn_pid = in_txn.query("SELECT pg_backend_pid()");
  // The server connections of the proxy `cluster up` started (not those of the test's others).
  auto proxy_pids = [&] {
    std::string ports;
    for (int p : local_ports_of(role("shard_proxy").pid)) {
      ports += (ports.empty() ? "" : ",") + std::to_string(p);
    }
    return leader_admin.query(
        "SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '') FROM pg_stat_activity "
        "WHERE client_port IN (" +
        (ports.empty() ? std::string("0") : ports) + ")");
  };
  std::string before = proxy_pids();
  ASSERT_NE(before.find(txn_pid), std::string::npos) << before;

  // The same server under another address: for the proxy, a new leader.
  ShardRecord original;
  ASSERT_TRUE(update_shard_node(manifest_, [&](ShardRecord& r) {
    original = r;
    r.leader = "localhost:" + std::to_string(l.ports.at("pg"));
  }));
  // Idle connections to the old address close at once; the transaction's at its next statement,
  // which fails instead of running (let alone committing) on the old leader.
  std::string r = in_txn.query("INSERT INTO channels (channel_id, name) VALUES ('moved-1', 'x')");
  for (int i = 0; i < 20 && r.rfind("ERROR 57P01", 0) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the watch had not fired yet
    r = in_txn.query("INSERT INTO channels (channel_id, name) VALUES ('moved-1', 'x')");
  }
  EXPECT_EQ(r.substr(0, 11), "ERROR 57P01") << r;
  EXPECT_EQ(PQtransactionStatus(in_txn.raw()), PQTRANS_IDLE);
  bool old_gone = false;
  for (int i = 0; i < 50 && !old_gone; ++i) {
    std::string now = proxy_pids();
    old_gone = true;
    size_t start = 0;
    while (start < before.size()) {
      size_t comma = before.find(',', start);
      std::string pid = before.substr(start, comma == std::string::npos ? comma : comma - start);
      if (("," + now + ",").find("," + pid + ",") != std::string::npos) old_gone = false;
      start = comma == std::string::npos ? before.size() : comma + 1;
    }
    if (!old_gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(old_gone) << "connections to the old address stayed open: " << before << " -> "
                        << proxy_pids();
  EXPECT_EQ(in_txn.query("INSERT INTO channels (channel_id, name) VALUES ('moved-2', 'x')"), "OK");
  EXPECT_EQ(leader_admin.query("SELECT count(*) FROM channels WHERE channel_id LIKE 'moved-%'"),
            "1");
  ASSERT_TRUE(update_shard_node(manifest_, [&](ShardRecord& rec) { rec = original; }));
}

// A kill -9 leaves the dead proxy's registration in ZooKeeper until its session expires
// (session_timeout_ms 10000 in the config `cluster up` writes). The restarted proxy must serve its
// clients at once, not only once it could register (it used to block in the registration before
// accepting: ~10 s of refused work after every crash), and still register once the old node goes.
TEST_F(ShardProxyTest, RestartAfterKillNineServesBeforeThePredecessorsSessionExpires) {
  const ManifestProcess p = role("shard_proxy");
  ZkOptions options;
  options.hosts = manifest_.zookeeper;
  auto zk = ZkClient::connect(options);
  ASSERT_TRUE(zk.ok());
  const std::string node = topology_paths::shard_proxies("-") + "/" + p.name;
  auto before = (*zk)->get(node);
  ASSERT_TRUE(before.ok()) << node;
  ASSERT_NE(before->ephemeral_owner, 0);

  ASSERT_EQ(::kill(p.pid, SIGKILL), 0);
  for (int i = 0; i < 100 && process_alive(p.pid); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(cluster_up());
  ASSERT_NE(role("shard_proxy").pid, p.pid);
  bool served = false;
  std::string last;
  while (!served && std::chrono::steady_clock::now() - killed < std::chrono::seconds(6)) {
    PgClient c(proxy() + " connect_timeout=2");
    last = c.ok() ? c.query("SELECT 1") : c.error();
    served = last == "1";
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(served) << "not serving 6 s after the kill (the old session lives 10 s): " << last;
  // Once the old session has expired the new proxy holds the registration.
  bool registered = false;
  while (!registered && std::chrono::steady_clock::now() - killed < std::chrono::seconds(30)) {
    auto now = (*zk)->get(node);
    registered =
        now.ok() && now->ephemeral_owner != 0 && now->ephemeral_owner != before->ephemeral_owner;
    if (!registered) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(registered) << "the restarted proxy never registered under " << node;
}

}  // namespace
}  // namespace tally
