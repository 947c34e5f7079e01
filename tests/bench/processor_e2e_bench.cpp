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
//
// --high-cardinality [--rate EVENTS_PER_S] [--seconds S] [--drain-bound-s S]: step 2 with 500k
// videos drawn by Zipf (s=1) at a paced rate (0: as fast as the loader goes), the processor's
// backlog and applied rows sampled every second; applied events/s and distinct rows applied/s run
// from the start of the load until the backlog is back to 0; the event-to-queryable delay is
// sampled during the load (where a backlog delays it), not after; the audit reads the pairs the
// ledger holds. Exits 1 when the backlog does not drain within the bound or the audit fails.
#include <libpq-fe.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster/cluster_manifest.h"
#include "common/http/http_client.h"
#include "common/process/child_process.h"
#include "tests/support/metrics_text.h"
#include "tests/support/test_env.h"
#include "tools/loadgen/src/loadgen.h"

namespace tally {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kAnchorClients = 4;
constexpr double kAnchorSeconds = 10;
constexpr int kDelaySamples = 200;
constexpr int kDelayParallel = 20;

struct BenchOptions {
  bool high_cardinality = false;
  double rate = 10000;  // --high-cardinality only; 0: no pacing
  double seconds = 60;  // --high-cardinality only
  double drain_bound_s = 300;
};

// The processor's counters this bench follows, from one /metrics scrape.
struct ProcessorCounters {
  double at_s = 0;  // since the load started
  int64_t backlog = 0;
  int64_t rows_applied = 0;
  int64_t events_accepted = 0;
  int64_t apply_failures = 0;
};

std::optional<ProcessorCounters> scrape(HttpClient& client) {
  auto r = client.request("GET", "/metrics");
  if (!r || r->status != 200) return std::nullopt;
  auto backlog = testing::metric_value(r->body, "tally_processor_backlog_events");
  if (!backlog) return std::nullopt;
  ProcessorCounters c;
  c.backlog = *backlog;
  c.rows_applied = testing::metric_value(r->body, "tally_processor_apply_rows_total").value_or(0);
  c.events_accepted =
      testing::metric_value(r->body, "tally_processor_events_accepted_total").value_or(0);
  c.apply_failures =
      testing::metric_value(r->body, "tally_processor_apply_failures_total").value_or(0);
  return c;
}

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

struct Delays {
  std::vector<double> ms;  // event posted to its count readable
  int missed = 0;          // not readable within 30 s (or the post failed)
};

// Event-to-queryable delays: `parallel` threads, each posting one event for a fresh video and
// polling its stats every 10 ms, until `samples` are taken or `keep_going` turns false (when set).
Delays event_to_queryable(const std::string& ingest_url, const std::string& rest_url, int samples,
                          int parallel, const std::atomic<bool>* keep_going = nullptr) {
  Delays delays;
  std::mutex mu;
  auto rest = *parse_http_url(rest_url);
  auto ingest = *parse_http_url(ingest_url);
  std::vector<std::thread> threads;
  for (int t = 0; t < parallel; ++t) {
    threads.emplace_back([&, t] {
      HttpClient in(ingest.host, ingest.port, std::chrono::seconds(10));
      HttpClient out(rest.host, rest.port, std::chrono::seconds(10));
      for (int i = 0; keep_going ? keep_going->load() : i < samples / parallel; ++i) {
        std::string video =
            "delay_" + std::to_string(now_ms()) + "_" + std::to_string(t) + "_" + std::to_string(i);
        int64_t ts = now_ms();
        std::string body = R"([{"event_id":"d1","video_id":")" + video +
                           R"(","event_type":"view","ts":)" + std::to_string(ts) + "}]";
        auto sent = Clock::now();
        auto r = in.request("POST", "/v1/events", body);
        bool seen = false;
        if (!r || r->status != 200) {
          std::lock_guard lock(mu);
          ++delays.missed;
          continue;
        }
        std::string target = "/v1/videos/" + video +
                             "/stats?event_type=view&start=" + std::to_string(ts - 3600000) +
                             "&end=" + std::to_string(ts + 3600000);
        while (seconds_since(sent) < 30) {
          auto q = out.request("GET", target);
          if (q && q->status == 200 &&
              nlohmann::json::parse(q->body, nullptr, false).value("count", 0) == 1) {
            std::lock_guard lock(mu);
            delays.ms.push_back(seconds_since(sent) * 1000);
            seen = true;
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (!seen) {
          std::lock_guard lock(mu);
          ++delays.missed;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  return delays;
}

// Step 2 at high cardinality; prints its rows of the table. False when the backlog does not
// drain within the bound or the audit fails.
bool high_cardinality(const ClusterManifest& m, const BenchOptions& b, double anchor) {
  LoadgenOptions o;
  o.ingest_url = *m.endpoints.at("ingest");
  o.rest_url = *m.endpoints.at("rest");
  o.rest_token = m.users.at("rest").password;
  o.run_id = "hc" + std::to_string(now_ms() % 100000000);
  o.rate = b.rate > 0 ? b.rate : 1e9;
  o.duration = std::chrono::milliseconds(static_cast<int64_t>(b.seconds * 1000));
  o.videos = 500000;
  o.zipf = 1.0;
  o.batch = b.rate > 0 ? 100 : 1000;
  o.producers = b.rate > 0 ? 4 : 8;
  o.duplicate_percent = 0;
  o.watch_time_percent = 10;
  auto lg = Loadgen::create(o);
  if (!lg) {
    std::fprintf(stderr, "%s\n", lg.error().message.c_str());
    return false;
  }
  auto ingest = *parse_http_url(o.ingest_url);
  HttpClient metrics(ingest.host, ingest.port, std::chrono::seconds(5));
  auto before = scrape(metrics);
  if (!before) {
    std::fprintf(stderr, "the processor's /metrics did not answer\n");
    return false;
  }
  const std::string pace = b.rate > 0 ? std::to_string(static_cast<int64_t>(b.rate)) + " events/s"
                                      : std::string("as fast as the loader goes");
  std::printf("high cardinality: 500000 videos (Zipf s=1), %s for %.0f s\n", pace.c_str(),
              b.seconds);
  std::fflush(stdout);

  // The monitor scrapes every second until the backlog is 0 after the load (or the bound).
  std::atomic<bool> loading{true};
  std::vector<ProcessorCounters> series;
  std::atomic<double> load_s{-1};  // when the load ended, set by this thread
  std::optional<double> drained_s;
  auto t0 = Clock::now();
  std::thread monitor([&] {
    while (load_s < 0 || seconds_since(t0) < load_s + b.drain_bound_s) {
      auto c = scrape(metrics);
      if (c) {
        c->at_s = seconds_since(t0);
        series.push_back(*c);
        if (series.size() % 5 == 0)
          std::printf("  t=%.0f s: backlog %lld events, rows applied %lld, apply failures %lld\n",
                      c->at_s, static_cast<long long>(c->backlog),
                      static_cast<long long>(c->rows_applied - before->rows_applied),
                      static_cast<long long>(c->apply_failures - before->apply_failures));
        std::fflush(stdout);
        if (!loading && c->backlog == 0) {
          drained_s = c->at_s;
          return;
        }
      }
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  });
  Delays delays;
  std::thread sampler(
      [&] { delays = event_to_queryable(o.ingest_url, o.rest_url, 0, kDelayParallel, &loading); });
  (*lg)->run();
  load_s = seconds_since(t0);
  loading = false;
  sampler.join();
  monitor.join();
  auto s = (*lg)->stats();
  const double accepted_per_s = static_cast<double>(s.events_accepted) / s.seconds;
  bool audit_ok = false;
  if (drained_s) {
    auto report = (*lg)->audit(std::chrono::seconds(120), Loadgen::AuditScope::kLedgerPairs);
    audit_ok = report && report->ok();
    std::printf("%s", report ? format_audit(s, *report).c_str() : report.error().message.c_str());
  } else {
    std::printf("%sthe backlog did not drain within %.0f s of the load ending: no audit\n",
                format_stats(s).c_str(), b.drain_bound_s);
  }
  const ProcessorCounters& last = series.empty() ? *before : series.back();
  const double apply_window = drained_s.value_or(last.at_s);
  const double applied_events =
      static_cast<double>(last.events_accepted - before->events_accepted - last.backlog);
  const double applied_per_s = apply_window > 0 ? applied_events / apply_window : 0;
  const double rows_per_s =
      apply_window > 0
          ? static_cast<double>(last.rows_applied - before->rows_applied) / apply_window
          : 0;
  int64_t max_backlog = 0;
  std::string backlog_series;
  for (const auto& c : series) {
    max_backlog = std::max(max_backlog, c.backlog);
    if ((&c - series.data()) % 10 == 0 || &c == &series.back())
      backlog_series += (backlog_series.empty() ? "" : ", ") +
                        std::to_string(static_cast<int>(c.at_s)) +
                        " s: " + std::to_string(c.backlog);
  }

  std::printf("\n| measure | value |\n| --- | --- |\n");
  std::printf("| anchor: single-row INSERT, autocommit, %d connections | %.0f events/s |\n",
              kAnchorClients, anchor);
  std::printf(
      "| high cardinality, 500000 videos Zipf s=1: accepted and durable (%s, %d producers x %d "
      "events/request, %.0f s) | %.0f events/s |\n",
      pace.c_str(), o.producers, o.batch, s.seconds, accepted_per_s);
  std::printf(
      "| ... applied (events accepted minus backlog, from the load's start until the backlog is "
      "%s, %.0f s; audit %s) | %.0f events/s |\n",
      drained_s ? "0" : "NOT back to 0", apply_window,
      audit_ok ? "exact" : (drained_s ? "FAILED" : "not run"), applied_per_s);
  std::printf(
      "| ... distinct counter rows applied (tally_processor_apply_rows_total) | %.0f rows/s |\n",
      rows_per_s);
  std::printf("| ... apply failures (tally_processor_apply_failures_total) | %lld |\n",
              static_cast<long long>(last.apply_failures - before->apply_failures));
  std::printf("| ... backlog (events) every 10 s, max %lld | %s |\n",
              static_cast<long long>(max_backlog), backlog_series.c_str());
  std::printf("| ratio accepted / anchor | %.1fx |\n| ratio applied / anchor | %.1fx |\n",
              anchor > 0 ? accepted_per_s / anchor : 0, anchor > 0 ? applied_per_s / anchor : 0);
  std::printf(
      "| event to queryable during the load, %zu samples (%d more not readable within 30 s) | "
      "p50 %.0f ms, p99 %.0f ms, max %.0f ms |\n",
      delays.ms.size(), delays.missed, percentile(delays.ms, 0.5), percentile(delays.ms, 0.99),
      percentile(delays.ms, 1.0));
  return drained_s && audit_ok && !delays.ms.empty() && delays.missed == 0;
}

int run_bench(const BenchOptions& b) {
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
  if (b.high_cardinality) {
    bool ok = high_cardinality(m, b, anchor);
    down();
    return ok ? 0 : 1;
  }

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
  Delays delays = event_to_queryable(o.ingest_url, o.rest_url, kDelaySamples, kDelayParallel);
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
              delays.ms.size(), percentile(delays.ms, 0.5), percentile(delays.ms, 0.99),
              percentile(delays.ms, 1.0));
  return audit_ok && delays.ms.size() == static_cast<size_t>(kDelaySamples) ? 0 : 1;
}

}  // namespace
}  // namespace tally

int main(int argc, char** argv) {
  constexpr const char* kUsage =
      "usage: processor_e2e_bench [--high-cardinality [--rate EVENTS_PER_S (0: unpaced)] "
      "[--seconds S] [--drain-bound-s S]]\n";
  tally::BenchOptions b;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto number = [&](double min) {
      if (i + 1 < argc) {
        try {
          size_t used = 0;
          const std::string v = argv[++i];
          double n = std::stod(v, &used);
          if (used == v.size() && n >= min) return n;
        } catch (...) {
        }
      }
      std::cerr << a << ": expected a number >= " << min << "\n" << kUsage;
      std::exit(2);
    };
    if (a == "--high-cardinality") {
      b.high_cardinality = true;
    } else if (a == "--rate") {
      b.rate = number(0);
    } else if (a == "--seconds") {
      b.seconds = number(1);
    } else if (a == "--drain-bound-s") {
      b.drain_bound_s = number(1);
    } else {
      std::cerr << "unknown argument '" << a << "'\n" << kUsage;
      return 2;
    }
  }
  return tally::run_bench(b);
}
