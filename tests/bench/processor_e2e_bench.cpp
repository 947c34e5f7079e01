// Processor end to end (issue 6), on a real 2-shard cluster from `tallyctl cluster up`:
//  1. the anchor: each event as its own single-row INSERT (autocommit) into an events_raw table
//     on shard -80's leader through libpq, `kAnchorClients` connections for `kAnchorSeconds`;
//  2. the processor: the loadgen library posting batches as fast as it can (events/s accepted and
//     durable), then the time until every count is applied and readable through the cluster
//     proxy (events/s applied), audited exactly;
//  3. event-to-queryable delay: one event for a fresh video, then GET stats every 10 ms until it
//     shows; p50/p99 over 200 samples (20 at a time).
// Prints a table; label bench (never in CI). Run: ctest --test-dir build -L bench -R processor_e2e
// -V
#include <libpq-fe.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster/cluster_manifest.h"
#include "common/http/http_client.h"
#include "common/process/child_process.h"
#include "tests/support/test_env.h"
#include "tools/loadgen/src/loadgen.h"

namespace tally {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kAnchorClients = 4;
constexpr double kAnchorSeconds = 10;
constexpr int kDelaySamples = 200;
constexpr int kDelayParallel = 20;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct PgDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using PgPtr = std::unique_ptr<PGconn, PgDeleter>;

bool exec(PGconn* c, const std::string& sql) {
  std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(c, sql.c_str()), PQclear);
  auto st = PQresultStatus(r.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::fprintf(stderr, "%s: %s", sql.c_str(), PQerrorMessage(c));
    return false;
  }
  return true;
}

// Single-row INSERTs, autocommit, kAnchorClients connections: events/s.
double anchor_inserts(const std::string& conninfo) {
  PgPtr setup(PQconnectdb(conninfo.c_str()));
  if (PQstatus(setup.get()) != CONNECTION_OK) {
    std::fprintf(stderr, "anchor: %s", PQerrorMessage(setup.get()));
    return 0;
  }
  if (!exec(setup.get(),
            "CREATE TABLE IF NOT EXISTS bench_events_raw (event_id text PRIMARY KEY, video_id text "
            "NOT NULL, event_type text NOT NULL, ts timestamptz NOT NULL, value bigint NOT NULL)"))
    return 0;
  PGresult* sync = PQexec(setup.get(), "SHOW synchronous_standby_names");
  std::printf("anchor: shard -80 leader, synchronous_standby_names = '%s', synchronous_commit on\n",
              PQntuples(sync) ? PQgetvalue(sync, 0, 0) : "?");
  PQclear(sync);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> threads;
  auto t0 = Clock::now();
  for (int c = 0; c < kAnchorClients; ++c) {
    threads.emplace_back([&, c] {
      PgPtr conn(PQconnectdb(conninfo.c_str()));
      if (PQstatus(conn.get()) != CONNECTION_OK) return;
      const char* sql =
          "INSERT INTO bench_events_raw (event_id, video_id, event_type, ts, value) "
          "VALUES ($1, $2, 'view', to_timestamp($3::bigint / 1000.0), 0)";
      int64_t n = 0;
      while (seconds_since(t0) < kAnchorSeconds) {
        std::string id = "a" + std::to_string(c) + "-" + std::to_string(n);
        std::string video = "bench_v" + std::to_string(n % 1000);
        std::string ts = std::to_string(now_ms());
        const char* values[] = {id.c_str(), video.c_str(), ts.c_str()};
        std::unique_ptr<PGresult, decltype(&PQclear)> r(
            PQexecParams(conn.get(), sql, 3, nullptr, values, nullptr, nullptr, 0), PQclear);
        if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
          std::fprintf(stderr, "anchor insert: %s", PQerrorMessage(conn.get()));
          return;
        }
        ++n;
      }
      total += n;
    });
  }
  for (auto& t : threads) t.join();
  double s = seconds_since(t0);
  std::printf("anchor: %lld single-row INSERTs in %.1f s with %d connections\n",
              static_cast<long long>(total.load()), s, kAnchorClients);
  return static_cast<double>(total.load()) / s;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int run_bench() {
  testing::TempDir dir("tally-proc-bench");
  const int base = testing::find_free_port_block(50);
  auto up =
      testing::run({testing::project_binary("tallyctl"), "cluster", "up", "--dir",
                    dir.path().string(), "--shards", "2", "--base-port", std::to_string(base)});
  auto down = [&] {
    testing::run(
        {testing::project_binary("tallyctl"), "cluster", "down", "--dir", dir.path().string()});
  };
  if (up.exit_code != 0) {
    std::fprintf(stderr, "cluster up failed:\n%s\n", up.output.c_str());
    down();
    return 1;
  }
  auto m = *read_manifest(dir.path() / "cluster.json");
  const ManifestProcess* leader = nullptr;
  for (const auto& p : m.processes)
    if (p.role == "pg_leader" && p.shard == "-80") leader = &p;

  // 1. The anchor.
  double anchor = anchor_inserts(m.conninfo(*leader, "admin"));

  // 2. The processor, as fast as the loader goes.
  LoadgenOptions o;
  o.ingest_url = *m.endpoints.at("ingest");
  o.rest_url = *m.endpoints.at("rest");
  o.rest_token = m.users.at("rest").password;
  o.run_id = "bench";
  o.rate = 1e9;  // no pacing
  o.duration = std::chrono::seconds(15);
  o.videos = 1000;
  o.batch = 1000;
  o.producers = 8;
  o.duplicate_percent = 0;
  o.watch_time_percent = 10;
  auto lg = Loadgen::create(o);
  if (!lg) {
    std::fprintf(stderr, "%s\n", lg.error().message.c_str());
    down();
    return 1;
  }
  auto t0 = Clock::now();
  (*lg)->run();
  auto s = (*lg)->stats();
  double accepted_per_s = static_cast<double>(s.events_accepted) / s.seconds;
  auto report = (*lg)->audit(std::chrono::seconds(300));
  double applied_s = seconds_since(t0);
  bool audit_ok = report && report->ok();
  std::printf("%s", report ? format_audit(s, *report).c_str() : report.error().message.c_str());
  double applied_per_s = static_cast<double>(s.events_accepted) / applied_s;

  // 3. Event-to-queryable delay.
  std::vector<double> delays;
  std::mutex mu;
  auto rest = *parse_http_url(o.rest_url);
  auto ingest = *parse_http_url(o.ingest_url);
  std::vector<std::thread> threads;
  for (int t = 0; t < kDelayParallel; ++t) {
    threads.emplace_back([&, t] {
      HttpClient in(ingest.host, ingest.port, std::chrono::seconds(10));
      HttpClient out(rest.host, rest.port, std::chrono::seconds(10));
      for (int i = 0; i < kDelaySamples / kDelayParallel; ++i) {
        std::string video =
            "delay_" + std::to_string(now_ms()) + "_" + std::to_string(t) + "_" + std::to_string(i);
        int64_t ts = now_ms();
        std::string body = R"([{"event_id":"d1","video_id":")" + video +
                           R"(","event_type":"view","ts":)" + std::to_string(ts) + "}]";
        auto sent = Clock::now();
        auto r = in.request("POST", "/v1/events", body);
        if (!r || r->status != 200) continue;
        std::string target = "/v1/videos/" + video +
                             "/stats?event_type=view&start=" + std::to_string(ts - 3600000) +
                             "&end=" + std::to_string(ts + 3600000);
        while (seconds_since(sent) < 30) {
          auto q = out.request("GET", target);
          if (q && q->status == 200 &&
              nlohmann::json::parse(q->body, nullptr, false).value("count", 0) == 1) {
            std::lock_guard lock(mu);
            delays.push_back(seconds_since(sent) * 1000);
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  down();

  std::printf("\n| measure | value |\n| --- | --- |\n");
  std::printf("| anchor: single-row INSERT, autocommit, %d connections | %.0f events/s |\n",
              kAnchorClients, anchor);
  std::printf(
      "| processor: accepted and durable (%d producers x %d events/request, %.0f s) | "
      "%.0f events/s |\n",
      o.producers, o.batch, s.seconds, accepted_per_s);
  std::printf(
      "| processor: applied and readable through the cluster proxy (audit %s) | %.0f "
      "events/s |\n",
      audit_ok ? "exact" : "FAILED", applied_per_s);
  std::printf("| ratio accepted / anchor | %.0fx |\n| ratio applied / anchor | %.0fx |\n",
              anchor > 0 ? accepted_per_s / anchor : 0, anchor > 0 ? applied_per_s / anchor : 0);
  std::printf("| event to queryable, %zu samples | p50 %.0f ms, p99 %.0f ms, max %.0f ms |\n",
              delays.size(), percentile(delays, 0.5), percentile(delays, 0.99),
              percentile(delays, 1.0));
  return audit_ok && delays.size() == static_cast<size_t>(kDelaySamples) ? 0 : 1;
}

}  // namespace
}  // namespace tally

int main() {
  return tally::run_bench();
}
