// all_faults_chaos: issue 8's end-to-end chaos test, and its soak mode, on a local cluster.
//
// Chaos (default): a 2-shard cluster of its own (`tallyctl cluster up`); loadgen posts events at a
// steady rate (duplicates and invalid events included, failed batches re-sent with the same event
// ids until acknowledged) for the whole run; a reader polls GET /v1/videos/{id}/stats through the
// cluster proxy; a monitor scrapes the processor's apply counters. One after another, with a
// settle period between, it kill -9s and restarts the processor, a shard proxy, the cluster proxy,
// the leading config_service, a PostgreSQL replica, a PostgreSQL leader (automatic failover, then
// `tallyctl shard rejoin` of the old leader, checked to stream) and ZooKeeper. Per fault it prints
// the longest gap between acknowledged ingest requests, the failed ingest attempts, the read
// errors, the longest pause of the processor's applies and the recovery time (kill until writes
// and reads both succeed again). At the end it stops the load and runs loadgen's exact audit.
// Exits 1 on an audit mismatch, on an invalid event accepted, or when a step misses its bound.
//
// Soak (--soak-minutes [N], default 10): the same load with faults off; every interval it samples
// each service's RSS and open file descriptors from /proc, then prints the table and, per service,
// whether it keeps growing (tests/support/resource_trend.h). Exits 1 on an audit mismatch, 3 when
// a service keeps growing.
//
// High-cardinality soak (--high-cardinality): the soak with the profile of real traffic's long
// tail: 500k videos drawn by Zipf, 5% of batches re-sent, 1% invalid events, and `--readers`
// connections reading the stats of random videos in a closed loop (latency p50/p99, errors). It
// samples every service's RSS and the processor's backlog; after the load it waits for the backlog
// to drain, then audits the pairs the ledger holds. Exits 1 with a FAILED line per reason: a Tally
// service's RSS not flat after the warm-up (last third's median more than 10% above the middle
// third's, or by more than --rss-slack-mib MiB when that is given), the backlog not drained within
// --drain-bound-s, the audit not exact, read errors above --max-read-errors-percent, a log file
// grown by more than --max-log-growth-mib.
//
// Usage: all_faults_chaos [--dir DIR] [--rate EVENTS_PER_S] [--settle-s S]
//                         [--soak-minutes [N]] [--sample-interval-s S]
//                         [--high-cardinality [--videos N] [--zipf S] [--readers N]
//                          [--warm-up-s S] [--drain-bound-s S] [--max-read-errors-percent P]
//                          [--max-log-growth-mib M] [--rss-slack-mib M]]
//   Without --dir a 2-shard cluster is started in a temporary directory and stopped at the end.
#include <libpq-fe.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster/cluster_manifest.h"
#include "common/http/http_client.h"
#include "common/keyspace/ksid.h"
#include "common/process/child_process.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"
#include "tests/support/metrics_text.h"
#include "tests/support/resource_trend.h"
#include "tests/support/test_env.h"
#include "tools/loadgen/src/loadgen.h"

namespace tally {
namespace {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using std::chrono::milliseconds;

double seconds_between(TimePoint a, TimePoint b) {
  return std::chrono::duration<double>(b - a).count();
}

TimePoint after_s(TimePoint t, double s) {
  return t + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(s));
}

int64_t wall_ms() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string fixed(double v, int digits = 2) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

struct Options {
  std::string dir;
  std::optional<double> rate;  // events/s; default 1500, 4000 with --high-cardinality
  double settle_s = 3;
  std::optional<double> soak_minutes;
  double sample_interval_s = 60;
  // --high-cardinality and its knobs.
  bool high_cardinality = false;
  int videos = 500000;
  double zipf = 1.0;
  int readers = 8;
  double warm_up_s = 600;  // the processor's dedup window (10 min) fills by design before
  double drain_bound_s = 120;
  double max_read_errors_percent = 1;
  double max_log_growth_mib = 256;
  double rss_slack_mib = 0;  // a rise up to this is flat whatever its fraction (0: none)
};

// Outcomes of one kind of request (ingest or stats read) in time order, from any thread.
class Timeline {
 public:
  void add(TimePoint at, bool ok) {
    std::lock_guard lock(mu_);
    events_.push_back({at, ok});
  }

  // Healthy over [a, b]: at least one success and no failure.
  bool healthy(TimePoint a, TimePoint b) const {
    std::lock_guard lock(mu_);
    bool any_ok = false;
    for (auto it = events_.rbegin(); it != events_.rend() && it->at >= a; ++it) {
      if (it->at > b) continue;
      if (!it->ok) return false;
      any_ok = true;
    }
    return any_ok;
  }

  int64_t failures(TimePoint a, TimePoint b) const {
    std::lock_guard lock(mu_);
    return std::count_if(events_.begin(), events_.end(),
                         [&](const Event& e) { return !e.ok && e.at >= a && e.at < b; });
  }

  int64_t successes(TimePoint a, TimePoint b) const {
    std::lock_guard lock(mu_);
    return std::count_if(events_.begin(), events_.end(),
                         [&](const Event& e) { return e.ok && e.at >= a && e.at < b; });
  }

  // The longest time in [a, b) without a success: from a to the first, between two, from the
  // last to b.
  double longest_gap(TimePoint a, TimePoint b) const {
    std::lock_guard lock(mu_);
    double worst = 0;
    TimePoint last = a;
    for (const auto& e : events_) {
      if (!e.ok || e.at < a || e.at >= b) continue;
      worst = std::max(worst, seconds_between(last, e.at));
      last = e.at;
    }
    return std::max(worst, seconds_between(last, b));
  }

  // The first success after the last failure in [a, b) (after a when none failed); nullopt when
  // the window ends without one.
  std::optional<TimePoint> recovered_at(TimePoint a, TimePoint b) const {
    std::lock_guard lock(mu_);
    TimePoint from = a;
    for (const auto& e : events_) {
      if (!e.ok && e.at >= a && e.at < b) from = e.at;
    }
    for (const auto& e : events_) {
      if (e.ok && e.at >= from && e.at < b) return e.at;
    }
    return std::nullopt;
  }

 private:
  struct Event {
    TimePoint at;
    bool ok;
  };
  mutable std::mutex mu_;
  std::vector<Event> events_;
};

// The processor's apply progress, scraped from its /metrics.
class ApplyMonitor {
 public:
  struct Sample {
    TimePoint at;
    bool ok = false;  // the processor answered
    int64_t applied_batches = 0;
    int64_t backlog = 0;
    int64_t apply_failures = 0;
    int64_t rows_applied = 0;
    int64_t events_accepted = 0;
  };

  void add(Sample s) {
    std::lock_guard lock(mu_);
    samples_.push_back(s);
  }

  // The last sample the processor answered (nullopt before the first).
  std::optional<Sample> latest() const {
    std::lock_guard lock(mu_);
    for (auto it = samples_.rbegin(); it != samples_.rend(); ++it)
      if (it->ok) return *it;
    return std::nullopt;
  }

  // True when the applied-batches counter went up between two samples taken at or after t.
  bool progressed_after(TimePoint t) const {
    std::lock_guard lock(mu_);
    std::optional<int64_t> first;
    for (const auto& s : samples_) {
      if (s.at < t || !s.ok) continue;
      if (!first) {
        first = s.applied_batches;
      } else if (s.applied_batches > *first) {
        return true;
      }
    }
    return false;
  }

  // The longest time in [a, b) without the counter going up (a restart resets it: a value below
  // the previous one is progress only once it is above zero), and the largest backlog seen.
  std::pair<double, int64_t> pause_and_backlog(TimePoint a, TimePoint b) const {
    std::lock_guard lock(mu_);
    std::optional<int64_t> prev;
    TimePoint last = a;
    double worst = 0;
    int64_t backlog = 0;
    for (const auto& s : samples_) {
      if (!s.ok || s.at >= b) continue;
      if (s.at < a) {
        prev = s.applied_batches;
        continue;
      }
      backlog = std::max(backlog, s.backlog);
      bool progress = prev && (s.applied_batches > *prev ||
                               (s.applied_batches < *prev && s.applied_batches > 0));
      if (progress) {
        worst = std::max(worst, seconds_between(last, s.at));
        last = s.at;
      }
      prev = s.applied_batches;
    }
    return {std::max(worst, seconds_between(last, b)), backlog};
  }

 private:
  mutable std::mutex mu_;
  std::vector<Sample> samples_;
};

struct FaultRow {
  std::string name;
  TimePoint kill;
  TimePoint window_end;
  double bound_s = 60;
  std::string notes;
  bool failed = false;
};

// /proc figures of one process (and, for PostgreSQL, its backends).
struct ProcSample {
  bool alive = false;
  int64_t rss_kb = 0;
  int64_t fds = 0;
  int children = 0;
};

int64_t status_field_kb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, field.size() + 1, field + ":") == 0) {
      try {
        return std::stoll(line.substr(field.size() + 1));
      } catch (...) {
        return 0;
      }
    }
  }
  return 0;
}

int64_t count_fds(pid_t pid) {
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec);
  int64_t n = 0;
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) ++n;
  return n;
}

// Parent -> children over every process (one scan of /proc).
std::map<pid_t, std::vector<pid_t>> children_by_parent() {
  std::map<pid_t, std::vector<pid_t>> out;
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc", ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    char* end = nullptr;
    long pid = std::strtol(name.c_str(), &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::ifstream in(it->path() / "stat");
    std::string stat;
    std::getline(in, stat);
    auto close = stat.rfind(')');
    if (close == std::string::npos || close + 2 > stat.size()) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    long ppid = 0;
    if (rest >> state >> ppid) out[static_cast<pid_t>(ppid)].push_back(static_cast<pid_t>(pid));
  }
  return out;
}

class Harness {
 public:
  explicit Harness(Options options) : options_(std::move(options)) {}

  ~Harness() {
    stop_load();
    zk_.reset();  // before ZooKeeper goes: no reconnect noise from the client library
    if (own_cluster_ && temp_) {
      auto down =
          testing::run({testing::project_binary("tallyctl"), "cluster", "down", "--dir", dir_});
      if (down.exit_code != 0) std::cerr << "cluster down failed:\n" << down.output;
    }
  }

  int run() {
    if (!set_up()) return 2;
    if (options_.high_cardinality) return high_cardinality_soak();
    if (options_.soak_minutes) return soak();
    return chaos();
  }

 private:
  // ---- set-up, load and observers -------------------------------------------------------------

  bool set_up() {
    if (options_.dir.empty()) {
      temp_ = std::make_unique<testing::TempDir>("tally-all-faults");
      dir_ = temp_->path().string();
      own_cluster_ = true;
      int base = testing::find_free_port_block(200);
      say("starting a 2-shard cluster in " + dir_ + " (base port " + std::to_string(base) + ")");
      auto up = testing::run({testing::project_binary("tallyctl"), "cluster", "up", "--dir", dir_,
                              "--shards", "2", "--base-port", std::to_string(base)});
      if (up.exit_code != 0) {
        std::cerr << "cluster up failed:\n" << up.output;
        return false;
      }
    } else {
      dir_ = options_.dir;
    }
    if (!reload_manifest()) return false;
    if (manifest_.shards.size() < 2) {
      std::cerr << "the cluster in " << dir_ << " has " << manifest_.shards.size()
                << " shard(s); this test needs 2\n";
      return false;
    }
    for (const char* e : {"ingest", "rest"}) {
      if (endpoint(e).empty()) {
        std::cerr << "cluster.json lists no " << e << " endpoint\n";
        return false;
      }
    }
    return true;
  }

  bool reload_manifest() {
    auto m = read_manifest(std::filesystem::path(dir_) / "cluster.json");
    if (!m) {
      std::cerr << m.error().message << "\n";
      return false;
    }
    manifest_ = *m;
    return true;
  }

  std::string endpoint(const std::string& name) const {
    auto it = manifest_.endpoints.find(name);
    return it != manifest_.endpoints.end() && it->second ? *it->second : "";
  }

  void say(const std::string& line) {
    std::printf("[%7.1f s] %s\n", seconds_between(t0_, SteadyClock::now()), line.c_str());
    std::fflush(stdout);
  }

  bool start_load() {
    LoadgenOptions o;
    o.ingest_url = endpoint("ingest");
    o.rest_url = endpoint("rest");
    o.rest_token = manifest_.users.count("rest") ? manifest_.users.at("rest").password : "";
    o.batch = 50;
    o.producers = 3;
    o.videos = 60;
    o.duplicate_percent = 10;
    o.watch_time_percent = 20;
    o.invalid_percent = 2;
    o.rate = options_.rate.value_or(1500);
    if (options_.high_cardinality) {
      // The workload: `loadgen --videos 500000 --duplicates 5 --invalid 1`, Zipf.
      o.rate = options_.rate.value_or(4000);
      o.batch = 100;
      o.producers = 4;
      o.videos = options_.videos;
      o.zipf = options_.zipf;
      o.duplicate_percent = 5;
      o.watch_time_percent = 10;
      o.invalid_percent = 1;
    }
    o.run_id = "chaos" + std::to_string(wall_ms() % 100000000);
    // The run ends by the stop flag; the duration only bounds a forgotten one.
    o.duration = std::chrono::hours(6);
    o.retry_budget = std::chrono::seconds(90);
    o.request_timeout = std::chrono::seconds(5);
    o.on_response = [this](bool accepted, int, TimePoint at) { writes_.add(at, accepted); };
    auto lg = Loadgen::create(o);
    if (!lg) {
      std::cerr << "loadgen: " << lg.error().message << "\n";
      return false;
    }
    loadgen_ = std::move(*lg);
    load_thread_ = std::thread([this] { loadgen_->run(&stop_load_); });
    // The observers get their URLs now: manifest_ is the main thread's.
    if (options_.high_cardinality) {
      for (int i = 0; i < options_.readers; ++i)
        random_readers_.emplace_back([this, i, url = o.rest_url] { random_read_loop(url, i); });
    } else {
      reader_thread_ = std::thread([this, url = o.rest_url] { read_loop(url); });
    }
    monitor_thread_ = std::thread([this, url = o.ingest_url] { monitor_loop(url); });
    say("load: " + fixed(o.rate, 0) + " events/s in batches of " + std::to_string(o.batch) +
        " over " + std::to_string(o.videos) + " videos" +
        (o.zipf > 0 ? " (Zipf s=" + fixed(o.zipf, 2) + ")" : std::string(" (uniform)")) + " (run " +
        o.run_id + ", " + std::to_string(o.duplicate_percent) + "% batches re-sent, " +
        std::to_string(o.invalid_percent) + "% invalid events)");
    return true;
  }

  void stop_load() {
    stop_producers();
    stop_observers_ = true;
    if (reader_thread_.joinable()) reader_thread_.join();
    for (auto& t : random_readers_)
      if (t.joinable()) t.join();
    if (monitor_thread_.joinable()) monitor_thread_.join();
  }

  // Ends the load; returns once loadgen has re-sent what was unacknowledged. Readers and the
  // monitor go on.
  void stop_producers() {
    stop_load_ = true;
    if (load_thread_.joinable()) load_thread_.join();
  }

  // Polls the stats of four of the run's videos, two on each half of the keyspace (so on both
  // shards of a 2-shard cluster), through the cluster proxy every 30 ms.
  void read_loop(const std::string& rest_url) {
    std::vector<std::string> videos;
    int low = 0;
    int high = 0;
    for (int k = 0; k < loadgen_->options().videos && videos.size() < 4; ++k) {
      bool is_low = ksid_for(loadgen_->video_id(k)) < (uint64_t{1} << 63);
      int& n = is_low ? low : high;
      if (n < 2) {
        ++n;
        videos.push_back(loadgen_->video_id(k));
      }
    }
    auto url = *parse_http_url(rest_url);
    HttpClient client(url.host, url.port, milliseconds(2000));
    std::vector<std::pair<std::string, std::string>> headers;
    if (!loadgen_->options().rest_token.empty())
      headers.emplace_back("Authorization", "Bearer " + loadgen_->options().rest_token);
    for (int i = 0; !stop_observers_; ++i) {
      int64_t now = wall_ms();
      std::string target =
          url.base_path + "/v1/videos/" + videos[i % videos.size()] +
          "/stats?event_type=view&function=sum&start=" + std::to_string(now - 3600000) +
          "&end=" + std::to_string(now + 3600000);
      auto r = client.request("GET", target, {}, headers);
      bool ok = r && r->status == 200 && r->body.find("\"count\"") != std::string::npos;
      reads_.add(SteadyClock::now(), ok);
      if (!ok) {
        std::lock_guard lock(mu_);
        last_read_error_ = r ? "HTTP " + std::to_string(r->status) + " " + r->body.substr(0, 200)
                             : r.error().message;
      }
      std::this_thread::sleep_for(milliseconds(30));
    }
  }

  // One of --readers connections reading the stats of a random video of the run's (most never
  // written: the long tail a cache cannot hold) back to back until the observers stop.
  void random_read_loop(const std::string& rest_url, int reader) {
    auto url = *parse_http_url(rest_url);
    HttpClient client(url.host, url.port, milliseconds(5000));
    std::vector<std::pair<std::string, std::string>> headers;
    if (!loadgen_->options().rest_token.empty())
      headers.emplace_back("Authorization", "Bearer " + loadgen_->options().rest_token);
    std::mt19937_64 rng(static_cast<uint64_t>(wall_ms()) + static_cast<uint64_t>(reader));
    std::uniform_int_distribution<int> video(0, loadgen_->options().videos - 1);
    std::vector<float> latencies_ms;
    int64_t errors = 0;
    while (!stop_observers_) {
      int64_t now = wall_ms();
      std::string target =
          url.base_path + "/v1/videos/" + loadgen_->video_id(video(rng)) +
          "/stats?event_type=view&function=sum&start=" + std::to_string(now - 3600000) +
          "&end=" + std::to_string(now + 3600000);
      auto sent = SteadyClock::now();
      auto r = client.request("GET", target, {}, headers);
      auto at = SteadyClock::now();
      bool ok = r && r->status == 200 && r->body.find("\"count\"") != std::string::npos;
      reads_.add(at, ok);
      if (ok) {
        latencies_ms.push_back(static_cast<float>(seconds_between(sent, at) * 1000));
      } else {
        ++errors;
        std::lock_guard lock(mu_);
        last_read_error_ = r ? "HTTP " + std::to_string(r->status) + " " + r->body.substr(0, 200)
                             : r.error().message;
      }
    }
    std::lock_guard lock(mu_);
    read_latencies_ms_.insert(read_latencies_ms_.end(), latencies_ms.begin(), latencies_ms.end());
    read_errors_ += errors;
  }

  // Scrapes the processor's apply counter and backlog every 200 ms.
  void monitor_loop(const std::string& ingest_url) {
    auto url = *parse_http_url(ingest_url);
    HttpClient client(url.host, url.port, milliseconds(2000));
    while (!stop_observers_) {
      ApplyMonitor::Sample s;
      auto r = client.request("GET", "/metrics");
      s.at = SteadyClock::now();
      if (r && r->status == 200) {
        auto applied = testing::metric_value(r->body, "tally_processor_apply_batches_total");
        auto backlog = testing::metric_value(r->body, "tally_processor_backlog_events");
        s.ok = applied.has_value();
        s.applied_batches = applied.value_or(0);
        s.backlog = backlog.value_or(0);
        s.apply_failures =
            testing::metric_value(r->body, "tally_processor_apply_failures_total").value_or(0);
        s.rows_applied =
            testing::metric_value(r->body, "tally_processor_apply_rows_total").value_or(0);
        s.events_accepted =
            testing::metric_value(r->body, "tally_processor_events_accepted_total").value_or(0);
      }
      apply_.add(s);
      std::this_thread::sleep_for(milliseconds(200));
    }
  }

  // Until writes and reads have both succeeded without a failure for the last second and the
  // processor applied a batch after `since`; false after `bound_s` from `since` (but checking for
  // at least 10 s: a fault's own steps may have used up the bound).
  bool wait_healthy(TimePoint since, double bound_s, const std::string& what) {
    auto deadline = std::max(after_s(since, bound_s), after_s(SteadyClock::now(), 10));
    bool w = false;
    bool r = false;
    bool a = false;
    while (SteadyClock::now() < deadline) {
      auto now = SteadyClock::now();
      w = writes_.healthy(now - std::chrono::seconds(1), now);
      r = reads_.healthy(now - std::chrono::seconds(1), now);
      a = apply_.progressed_after(since);
      if (w && r && a) return true;
      std::this_thread::sleep_for(milliseconds(100));
    }
    std::string last_read;
    {
      std::lock_guard lock(mu_);
      last_read = last_read_error_;
    }
    std::cerr << what << ": not healthy within " << bound_s << " s: writes "
              << (w ? "ok" : "failing") << ", reads " << (r ? "ok" : "failing")
              << " (last read error: " << last_read << "), processor applies "
              << (a ? "progressing" : "stalled") << "\n";
    return false;
  }

  // ---- processes --------------------------------------------------------------------------------

  static bool is_postgres(const ManifestProcess& p) {
    return p.role == "pg_leader" || p.role == "pg_replica";
  }

  // The PID to signal: the postmaster for PostgreSQL (cluster.json may hold an older one after a
  // rejoin), the recorded one otherwise; checked against the command line.
  static std::optional<pid_t> live_pid(const ManifestProcess& p) {
    pid_t pid = p.pid;
    if (is_postgres(p)) {
      std::ifstream in(std::filesystem::path(p.data_dir) / "postmaster.pid");
      long v = 0;
      if (!(in >> v) || v <= 0) return std::nullopt;
      pid = static_cast<pid_t>(v);
    }
    const std::string needle = is_postgres(p) ? p.data_dir : p.config;
    if (pid <= 0 || !process_matches(pid, needle)) return std::nullopt;
    return pid;
  }

  const ManifestProcess* by_name(const std::string& name) const { return manifest_.find(name); }

  const ManifestProcess* pg_at(const std::string& address) const {
    for (const auto& p : manifest_.processes) {
      if (is_postgres(p) && "127.0.0.1:" + std::to_string(p.ports.at("pg")) == address) return &p;
    }
    return nullptr;
  }

  // SIGKILL; returns when the kill was sent, once the process is gone.
  std::optional<TimePoint> kill_nine(const ManifestProcess& p, std::string* error) {
    auto pid = live_pid(p);
    if (!pid) {
      *error = p.name + " is not running (no live PID to kill)";
      return std::nullopt;
    }
    auto at = SteadyClock::now();
    if (::kill(*pid, SIGKILL) != 0) {
      *error = "kill -9 " + std::to_string(*pid) + " failed";
      return std::nullopt;
    }
    for (int i = 0; i < 200 && process_alive(*pid); ++i)
      std::this_thread::sleep_for(milliseconds(25));
    if (process_alive(*pid)) {
      *error = p.name + " (pid " + std::to_string(*pid) + ") survived SIGKILL for 5 s";
      return std::nullopt;
    }
    say("kill -9 " + p.name + " (pid " + std::to_string(*pid) + ")");
    return at;
  }

  // `tallyctl cluster up` on the existing cluster: starts exactly what is not running.
  bool cluster_up_again(std::string* error) {
    auto t = SteadyClock::now();
    auto up = testing::run({testing::project_binary("tallyctl"), "cluster", "up", "--dir", dir_,
                            "--shards", std::to_string(manifest_.shards.size()), "--base-port",
                            std::to_string(manifest_.base_port)});
    if (up.exit_code != 0) {
      *error = "cluster up (restart) failed:\n" + up.output;
      return false;
    }
    say("cluster up restarted what was down in " +
        fixed(seconds_between(t, SteadyClock::now()), 1) + " s");
    return reload_manifest();
  }

  std::optional<ShardRecord> record(const std::string& range) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (!zk_ || zk_->state() != ZkSessionState::kConnected) {
        ZkOptions o;
        o.hosts = manifest_.zookeeper;
        o.connect_timeout = std::chrono::seconds(3);
        auto zk = ZkClient::connect(o);
        if (!zk) return std::nullopt;
        zk_ = std::move(*zk);
      }
      auto node = zk_->get(topology_paths::shard(range));
      if (node) {
        auto r = decode_shard(range, node->data);
        if (r) return *r;
        return std::nullopt;
      }
      zk_.reset();
    }
    return std::nullopt;
  }

  // The shard serves with a synchronous, streaming replica (the failover licence).
  bool wait_for_sync(const std::string& range, double bound_s, double* took = nullptr) {
    auto t = SteadyClock::now();
    while (seconds_between(t, SteadyClock::now()) < bound_s) {
      auto r = record(range);
      if (r && r->sync && !r->replica.empty() && r->state == shard_states::kServing) {
        if (took) *took = seconds_between(t, SteadyClock::now());
        return true;
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    auto r = record(range);
    std::cerr << "shard " << range << " did not reach sync:true within " << bound_s
              << " s; record: " << (r ? encode_shard(*r) : std::string("unreadable")) << "\n";
    return false;
  }

  json config_service_status(const ManifestProcess& p) {
    HttpClient client("127.0.0.1", static_cast<uint16_t>(p.ports.at("http")), milliseconds(1000));
    auto r = client.request("GET", "/v1/status");
    if (!r || r->status != 200) return json();
    return json::parse(r->body, nullptr, false);
  }

  // What the config_service instances say about themselves.
  struct ConfigServiceView {
    std::vector<std::string> leaders;  // names of those that say they lead
    size_t connected = 0;              // ZooKeeper session connected
    size_t instances = 0;
    std::string text;  // "cs1 leader (zookeeper connected), cs2 follower (...)"
    std::optional<std::string> leader() const {
      return leaders.size() == 1 ? std::optional<std::string>(leaders[0]) : std::nullopt;
    }
  };

  ConfigServiceView config_services() {
    ConfigServiceView v;
    for (const auto* p : manifest_.with_role("config_service")) {
      ++v.instances;
      auto s = config_service_status(*p);
      std::string role = s.is_object() ? s.value("role", "?") : "no answer";
      std::string zk = s.is_object() ? s.value("zookeeper", "?") : "?";
      v.text += (v.text.empty() ? "" : ", ") + p->name + " " + role + " (zookeeper " + zk + ")";
      if (role == "leader") v.leaders.push_back(p->name);
      if (zk == "connected") ++v.connected;
    }
    return v;
  }

  // ---- the faults
  // --------------------------------------------------------------------------------

  // Kills the named process, restarts it with `cluster up`, checks the new PID.
  bool kill_and_restart(const std::string& name, FaultRow& row, std::string* error) {
    if (!reload_manifest()) return false;
    const auto* p = by_name(name);
    if (!p) {
      *error = "cluster.json lists no process " + name;
      return false;
    }
    const ManifestProcess before = *p;
    auto killed = kill_nine(before, error);
    if (!killed) return false;
    row.kill = *killed;
    if (!cluster_up_again(error)) return false;
    const auto* again = by_name(name);
    if (!again || !live_pid(*again)) {
      *error = name + " is not running after cluster up";
      return false;
    }
    row.notes = "restarted as pid " + std::to_string(*live_pid(*again)) + " " +
                fixed(seconds_between(row.kill, SteadyClock::now()), 1) + " s after the kill";
    return true;
  }

  bool fault_config_service_leader(FaultRow& row, std::string* error) {
    if (!reload_manifest()) return false;
    ConfigServiceView view;
    for (int i = 0; i < 100 && !(view = config_services()).leader(); ++i)
      std::this_thread::sleep_for(milliseconds(100));
    if (!view.leader()) {
      *error = "no single leading config_service: " + view.text;
      return false;
    }
    const ManifestProcess before = *by_name(*view.leader());
    auto killed = kill_nine(before, error);
    if (!killed) return false;
    row.kill = *killed;
    std::optional<std::string> successor;
    while (!successor && seconds_between(row.kill, SteadyClock::now()) < 30) {
      view = config_services();
      if (view.leader() && *view.leader() != before.name) {
        successor = view.leader();
      } else {
        std::this_thread::sleep_for(milliseconds(100));
      }
    }
    if (!successor) {
      *error = "no other config_service took the lead within 30 s: " + view.text;
      return false;
    }
    double takeover = seconds_between(row.kill, SteadyClock::now());
    say(*successor + " leads " + fixed(takeover) + " s after the kill");
    if (!cluster_up_again(error)) return false;
    // The restarted instance joins as a follower: the successor keeps the lead, both connected.
    for (int i = 0; i < 100; ++i) {
      view = config_services();
      if (view.leader() == successor && view.connected == view.instances) break;
      std::this_thread::sleep_for(milliseconds(100));
    }
    if (view.leader() != successor || view.connected != view.instances) {
      *error = "after restarting " + before.name + ": " + view.text;
      return false;
    }
    row.notes = before.name + " led; " + *successor + " took over after " + fixed(takeover, 1) +
                " s; " + before.name + " back as follower";
    return true;
  }

  bool fault_pg_replica(const std::string& range, FaultRow& row, std::string* error) {
    if (!reload_manifest() || !wait_for_sync(range, 60)) {
      *error = "shard " + range + " has no synchronous replica to kill";
      return false;
    }
    auto rec = record(range);
    const auto* p = rec ? pg_at(rec->replica) : nullptr;
    if (!p) {
      *error = "no process listens at the replica address of " + range;
      return false;
    }
    const ManifestProcess before = *p;
    auto killed = kill_nine(before, error);
    if (!killed) return false;
    row.kill = *killed;
    if (!cluster_up_again(error)) return false;
    double sync_s = 0;
    if (!wait_for_sync(range, 60, &sync_s)) {
      *error = "the restarted replica " + before.name + " was not synchronous again within 60 s";
      return false;
    }
    row.notes = before.name + " (" + rec->replica + ") restarted; sync:true again " +
                fixed(seconds_between(row.kill, SteadyClock::now()), 1) + " s after the kill";
    return true;
  }

  bool fault_pg_leader(const std::string& range, FaultRow& row, std::string* error) {
    if (!reload_manifest() || !wait_for_sync(range, 60)) {
      *error = "shard " + range + " has no synchronous replica: no failover licence";
      return false;
    }
    auto before = record(range);
    const auto* p = before ? pg_at(before->leader) : nullptr;
    if (!p) {
      *error = "no process listens at the leader address of " + range;
      return false;
    }
    const ManifestProcess old_leader = *p;
    auto killed = kill_nine(old_leader, error);
    if (!killed) return false;
    row.kill = *killed;
    std::optional<ShardRecord> after;
    while (seconds_between(row.kill, SteadyClock::now()) < 30) {
      after = record(range);
      if (after && after->leader != before->leader && after->state == shard_states::kServing) break;
      after.reset();
      std::this_thread::sleep_for(milliseconds(50));
    }
    if (!after) {
      *error = "no new leader serving in ZooKeeper within 30 s of the kill";
      return false;
    }
    double promoted = seconds_between(row.kill, SteadyClock::now());
    say("shard " + range + ": " + after->leader + " leads " + fixed(promoted) +
        " s after the kill");
    if (!wait_healthy(row.kill, row.bound_s, "after the failover")) {
      *error = "writes/reads not back after the failover";
      return false;
    }
    auto t = SteadyClock::now();
    auto rejoin = testing::run(
        {testing::project_binary("tallyctl"), "shard", "rejoin", range, "--dir", dir_});
    if (rejoin.exit_code != 0) {
      *error = "tallyctl shard rejoin failed:\n" + rejoin.output;
      return false;
    }
    double rejoin_s = seconds_between(t, SteadyClock::now());
    say("rejoined " + old_leader.name + " as a replica in " + fixed(rejoin_s, 1) + " s:");
    std::printf("%s", rejoin.output.c_str());
    if (!wait_for_sync(range, 60)) {
      *error = "the rejoined " + old_leader.name + " did not become the synchronous replica";
      return false;
    }
    auto rec = record(range);
    if (!rec || rec->replica != before->leader) {
      *error = "the replica of " + range + " is not the rejoined " + before->leader;
      return false;
    }
    // And the new leader sees it streaming, synchronously.
    if (!reload_manifest()) return false;
    const auto* leader = pg_at(rec->leader);
    std::string streaming;
    if (leader) {
      std::string conninfo = manifest_.conninfo(*leader, "admin") + " connect_timeout=3";
      std::unique_ptr<PGconn, decltype(&PQfinish)> c(PQconnectdb(conninfo.c_str()), &PQfinish);
      std::unique_ptr<PGresult, decltype(&PQclear)> r(
          PQexec(c.get(), "SELECT state || '/' || sync_state FROM pg_stat_replication"), &PQclear);
      if (PQresultStatus(r.get()) == PGRES_TUPLES_OK && PQntuples(r.get()) == 1)
        streaming = PQgetvalue(r.get(), 0, 0);
    }
    if (streaming != "streaming/sync") {
      *error = "the new leader's pg_stat_replication shows '" + streaming +
               "', not one streaming/sync standby";
      return false;
    }
    row.notes = "new leader " + after->leader + " in ZooKeeper after " + fixed(promoted) +
                " s; old leader rejoined (" + fixed(rejoin_s, 1) + " s), streaming/sync";
    return true;
  }

  bool fault_zookeeper(FaultRow& row, std::string* error) {
    if (!reload_manifest()) return false;
    const ManifestProcess zk = *manifest_.with_role("zookeeper").at(0);
    auto killed = kill_nine(zk, error);
    if (!killed) return false;
    row.kill = *killed;
    zk_.reset();
    if (!cluster_up_again(error)) return false;
    // Back on ZooKeeper: one config_service leads, every instance connected.
    ConfigServiceView view;
    while (seconds_between(row.kill, SteadyClock::now()) < 45) {
      view = config_services();
      if (view.leader() && view.connected == view.instances) break;
      std::this_thread::sleep_for(milliseconds(200));
    }
    if (!view.leader() || view.connected != view.instances) {
      *error = "config_service not back on ZooKeeper with one leader within 45 s: " + view.text;
      return false;
    }
    for (const auto& range : manifest_.shards) {
      if (!wait_for_sync(range, 30)) {
        *error = "shard " + range + " not serving with sync:true after the ZooKeeper restart";
        return false;
      }
    }
    row.notes = "ZooKeeper restarted " + fixed(seconds_between(row.kill, SteadyClock::now()), 1) +
                " s after the kill; " + *view.leader() + " leads, topology serving with sync:true";
    return true;
  }

  // ---- chaos
  // -------------------------------------------------------------------------------------

  int chaos() {
    if (!start_load()) return 2;
    if (!wait_healthy(SteadyClock::now(), 60, "warm-up")) return 1;
    std::this_thread::sleep_for(std::chrono::duration<double>(options_.settle_s));
    const std::string low = manifest_.shards[0];
    const std::string high = manifest_.shards[1];
    struct Fault {
      std::string name;
      double bound_s;
      std::function<bool(FaultRow&, std::string*)> inject;
    };
    std::vector<Fault> faults = {
        {"processor", 60,
         [this](FaultRow& r, std::string* e) { return kill_and_restart("processor", r, e); }},
        {"shard proxy " + low, 60,
         [this](FaultRow& r, std::string* e) {
           return kill_and_restart("shard-proxy-shard0", r, e);
         }},
        {"cluster proxy", 60,
         [this](FaultRow& r, std::string* e) { return kill_and_restart("cluster-proxy", r, e); }},
        {"leading config_service", 60,
         [this](FaultRow& r, std::string* e) { return fault_config_service_leader(r, e); }},
        {"PostgreSQL replica " + high, 60,
         [this, high](FaultRow& r, std::string* e) { return fault_pg_replica(high, r, e); }},
        {"PostgreSQL leader " + low, 60,
         [this, low](FaultRow& r, std::string* e) { return fault_pg_leader(low, r, e); }},
        {"ZooKeeper", 90, [this](FaultRow& r, std::string* e) { return fault_zookeeper(r, e); }},
    };
    std::vector<FaultRow> rows;
    bool failed = false;
    for (const auto& f : faults) {
      FaultRow row;
      row.name = f.name;
      row.bound_s = f.bound_s;
      row.kill = SteadyClock::now();
      say("--- fault: " + f.name);
      std::string error;
      bool ok = f.inject(row, &error) && wait_healthy(row.kill, f.bound_s, f.name);
      if (ok) std::this_thread::sleep_for(std::chrono::duration<double>(options_.settle_s));
      row.window_end = SteadyClock::now();
      if (!ok) {
        std::cerr << "FAULT STEP FAILED: " << f.name << ": " << error << "\n";
        row.failed = true;
        failed = true;
      }
      rows.push_back(row);
      if (failed) break;
    }
    say("stopping the load; batches still unacknowledged are re-sent until acknowledged");
    stop_load();
    if (!rows.empty()) rows.back().window_end = SteadyClock::now();
    bool bounds_ok = print_fault_table(rows);
    bool audit_ok = audit();
    if (!failed && bounds_ok && audit_ok) {
      say("all faults injected, every step within its bound, audit exact");
      return 0;
    }
    std::cerr << "FAILED:" << (failed ? " a fault step failed;" : "")
              << (bounds_ok ? "" : " a step exceeded its bound;")
              << (audit_ok ? "" : " the audit is not exact;") << "\n";
    return 1;
  }

  // The per-fault table; false when a recovery is missing or above its bound.
  bool print_fault_table(const std::vector<FaultRow>& rows) {
    bool ok = true;
    std::printf(
        "\n| fault | longest gap between acknowledged ingest requests (s) | failed ingest attempts "
        "| read errors | longest pause of the processor's applies (s) | max backlog (events) | "
        "recovery: kill to writes and reads succeeding (s) | notes |\n"
        "|---|---|---|---|---|---|---|---|\n");
    for (const auto& r : rows) {
      double gap = writes_.longest_gap(r.kill, r.window_end);
      auto w = writes_.recovered_at(r.kill, r.window_end);
      auto rd = reads_.recovered_at(r.kill, r.window_end);
      auto [pause, backlog] = apply_.pause_and_backlog(r.kill, r.window_end);
      std::string recovery = "not recovered";
      if (w && rd) {
        double s = seconds_between(r.kill, std::max(*w, *rd));
        recovery = fixed(s);
        if (s > r.bound_s) {
          recovery += " (bound " + fixed(r.bound_s, 0) + " s EXCEEDED)";
          ok = false;
        }
      } else {
        ok = false;
      }
      std::printf("| %s | %.2f | %lld | %lld | %.2f | %lld | %s | %s%s |\n", r.name.c_str(), gap,
                  static_cast<long long>(writes_.failures(r.kill, r.window_end)),
                  static_cast<long long>(reads_.failures(r.kill, r.window_end)), pause,
                  static_cast<long long>(backlog), recovery.c_str(), r.failed ? "FAILED; " : "",
                  r.notes.c_str());
    }
    std::printf("\n");
    std::fflush(stdout);
    return ok;
  }

  // Loadgen's exact audit plus the invalid-event and uncertainty checks.
  bool audit(Loadgen::AuditScope scope = Loadgen::AuditScope::kEveryPair,
             std::chrono::seconds wait = std::chrono::seconds(120)) {
    auto s = loadgen_->stats();
    say("audit: waiting for the counts to settle");
    auto report = loadgen_->audit(wait, scope);
    if (!report) {
      std::cerr << "audit: " << report.error().message << "\n";
      return false;
    }
    std::printf("%s", format_audit(s, *report).c_str());
    bool ok = report->ok();
    if (s.events_uncertain != 0) {
      std::printf("FAILED: %lld events were never acknowledged within the retry budget\n",
                  static_cast<long long>(s.events_uncertain));
      ok = false;
    }
    if (s.invalid_accepted != 0 || s.events_rejected != s.invalid_sent) {
      std::printf("FAILED: %lld invalid events sent, %lld rejected, %lld invalid accepted\n",
                  static_cast<long long>(s.invalid_sent), static_cast<long long>(s.events_rejected),
                  static_cast<long long>(s.invalid_accepted));
      ok = false;
    }
    if (report->expected_events != s.events_accepted || report->got_events != s.events_accepted) {
      std::printf(
          "FAILED: %lld events acknowledged, the ledger expects %lld, the cluster has %lld\n",
          static_cast<long long>(s.events_accepted),
          static_cast<long long>(report->expected_events),
          static_cast<long long>(report->got_events));
      ok = false;
    }
    if (s.events_accepted == 0) {
      std::printf("FAILED: no event was acknowledged at all\n");
      ok = false;
    }
    return ok;
  }

  // ---- soak
  // --------------------------------------------------------------------------------------

  ProcSample sample_process(const ManifestProcess& p,
                            const std::map<pid_t, std::vector<pid_t>>& children) {
    ProcSample s;
    auto pid = live_pid(p);
    if (!pid) return s;
    s.alive = true;
    s.rss_kb = status_field_kb(*pid, "VmRSS");
    s.fds = count_fds(*pid);
    if (is_postgres(p)) {
      // Backends: their private memory (shared buffers are in the postmaster's RSS already).
      auto it = children.find(*pid);
      if (it != children.end()) {
        for (pid_t c : it->second) {
          s.rss_kb += status_field_kb(c, "RssAnon");
          s.fds += count_fds(c);
          ++s.children;
        }
      }
    }
    return s;
  }

  int soak() {
    if (!start_load()) return 2;
    if (!wait_healthy(SteadyClock::now(), 60, "warm-up")) return 1;
    const double total_s = *options_.soak_minutes * 60;
    const double interval = options_.sample_interval_s;
    say("soak: " + fixed(*options_.soak_minutes, 1) + " min, a sample every " + fixed(interval, 0) +
        " s, no faults");
    std::vector<std::string> names;
    for (const auto& p : manifest_.processes) names.push_back(p.name);
    std::map<std::string, std::vector<ProcSample>> samples;
    std::vector<double> at_s;
    auto start = SteadyClock::now();
    for (int i = 0;; ++i) {
      auto due = after_s(start, i * interval);
      std::this_thread::sleep_until(due);
      auto children = children_by_parent();
      if (!reload_manifest()) return 2;
      std::string line;
      for (const auto& name : names) {
        const auto* p = by_name(name);
        auto s = p ? sample_process(*p, children) : ProcSample{};
        samples[name].push_back(s);
        line += " " + name + "=" +
                (s.alive ? std::to_string(s.rss_kb / 1024) + "MiB/" + std::to_string(s.fds) + "fd"
                         : std::string("DOWN"));
      }
      at_s.push_back(seconds_between(start, SteadyClock::now()));
      say("sample " + std::to_string(i) + ":" + line);
      if (i * interval >= total_s) break;
    }
    auto end = SteadyClock::now();
    stop_load();

    std::printf(
        "\n| service | RSS MiB per sample | open FDs per sample | RSS | FDs |\n"
        "|---|---|---|---|---|\n");
    bool growing = false;
    bool died = false;
    for (const auto& name : names) {
      std::vector<double> rss;
      std::vector<double> fds;
      std::string rss_text;
      std::string fd_text;
      std::string label = name;
      for (const auto& s : samples[name]) {
        if (!s.alive) died = true;
        rss.push_back(static_cast<double>(s.rss_kb));
        fds.push_back(static_cast<double>(s.fds));
        rss_text += (rss_text.empty() ? "" : " ") + fixed(s.rss_kb / 1024.0, 1);
        fd_text += (fd_text.empty() ? "" : " ") + std::to_string(s.fds);
      }
      const auto* p = by_name(name);
      if (p && is_postgres(*p)) label += " (postmaster RSS + backends' RssAnon, FDs of all)";
      auto rv = testing::judge_trend(rss, {2048, 0.05});
      auto fv = testing::judge_trend(fds, {3, 0.1});
      growing =
          growing || rv.trend == testing::Trend::kGrowing || fv.trend == testing::Trend::kGrowing;
      std::printf("| %s | %s | %s | %s: %s | %s: %s |\n", label.c_str(), rss_text.c_str(),
                  fd_text.c_str(), std::string(testing::trend_name(rv.trend)).c_str(),
                  rv.reason.c_str(), std::string(testing::trend_name(fv.trend)).c_str(),
                  fv.reason.c_str());
    }
    std::string at_text;
    for (double t : at_s) at_text += (at_text.empty() ? "" : ", ") + fixed(t, 0);
    std::printf(
        "\nsamples taken at %s s; over the soak: %lld ingest requests acknowledged, %lld "
        "failed; %lld stats reads, %lld failed\n\n",
        at_text.c_str(), static_cast<long long>(writes_.successes(start, end)),
        static_cast<long long>(writes_.failures(start, end)),
        static_cast<long long>(reads_.successes(start, end) + reads_.failures(start, end)),
        static_cast<long long>(reads_.failures(start, end)));
    bool audit_ok = audit();
    if (died) std::printf("FAILED: a service was not running at some sample\n");
    if (!audit_ok || died) return 1;
    if (growing) {
      std::printf("verdict: at least one service KEEPS GROWING (exit 3)\n");
      return 3;
    }
    std::printf("verdict: no service keeps growing\n");
    return 0;
  }

  // ---- high-cardinality soak
  // ---------------------------------------------------------------------

  // Sizes of the log files (names containing ".log", so rotated ones too) in the directories
  // where cluster.json puts the processes' logs, and in their `*-log` subdirectories (where a
  // PostgreSQL node's collector writes its hourly files).
  std::map<std::string, int64_t> log_sizes() const {
    std::set<std::filesystem::path> dirs;
    for (const auto& p : manifest_.processes)
      if (!p.log.empty()) dirs.insert(std::filesystem::path(p.log).parent_path());
    for (const auto& d : std::set<std::filesystem::path>(dirs)) {
      std::error_code ec;
      std::filesystem::directory_iterator it(d, ec);
      for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        const std::string name = it->path().filename().string();
        std::error_code fe;
        if (it->is_directory(fe) && name.size() > 4 && name.ends_with("-log"))
          dirs.insert(it->path());
      }
    }
    std::map<std::string, int64_t> out;
    for (const auto& d : dirs) {
      std::error_code ec;
      std::filesystem::directory_iterator it(d, ec);
      for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        std::error_code fe;
        if (!it->is_regular_file(fe) ||
            it->path().filename().string().find(".log") == std::string::npos)
          continue;
        auto size = it->file_size(fe);
        if (!fe) out[it->path().string()] = static_cast<int64_t>(size);
      }
    }
    return out;
  }

  static bool is_tally_service(const ManifestProcess& p) {
    return p.role == "cluster_proxy" || p.role == "shard_proxy" || p.role == "processor" ||
           p.role == "config_service";
  }

  static std::string backlog_line(const ApplyMonitor::Sample& m) {
    return "backlog " + std::to_string(m.backlog) + " events, applied batches " +
           std::to_string(m.applied_batches) + ", apply failures " +
           std::to_string(m.apply_failures) + ", rows applied " + std::to_string(m.rows_applied) +
           ", events accepted " + std::to_string(m.events_accepted);
  }

  int high_cardinality_soak() {
    const double total_s = options_.soak_minutes.value_or(30) * 60;
    const double interval = options_.sample_interval_s;
    const auto logs_before = log_sizes();
    if (!start_load()) return 2;
    auto load_start = SteadyClock::now();
    if (!wait_healthy(load_start, 60, "start of the load")) return 1;
    say("high-cardinality soak: " + fixed(total_s / 60, 1) + " min of load, " +
        std::to_string(options_.readers) + " random readers, a sample every " + fixed(interval, 0) +
        " s, RSS judged after a " + fixed(options_.warm_up_s, 0) +
        " s warm-up; then the backlog must drain within " + fixed(options_.drain_bound_s, 0) +
        " s");
    std::vector<std::string> names;
    for (const auto& p : manifest_.processes) names.push_back(p.name);
    std::map<std::string, std::vector<double>> rss_mib;  // per service, after the warm-up
    std::map<std::string, std::string> rss_text;         // every sample, warm-up in brackets
    bool died = false;
    int64_t max_backlog = 0;
    for (int i = 0;; ++i) {
      std::this_thread::sleep_until(after_s(load_start, i * interval));
      const double at = seconds_between(load_start, SteadyClock::now());
      const bool warm = at >= options_.warm_up_s;
      auto children = children_by_parent();
      if (!reload_manifest()) return 2;
      std::string line;
      for (const auto& name : names) {
        const auto* p = by_name(name);
        auto ps = p ? sample_process(*p, children) : ProcSample{};
        if (!ps.alive) died = true;
        double mib = static_cast<double>(ps.rss_kb) / 1024;
        if (warm) rss_mib[name].push_back(mib);
        std::string v = ps.alive ? fixed(mib, 0) : std::string("DOWN");
        rss_text[name] += (rss_text[name].empty() ? "" : " ") + (warm ? v : "(" + v + ")");
        if (p && is_tally_service(*p)) line += " " + name + "=" + v;
      }
      auto m = apply_.latest();
      if (m) max_backlog = std::max(max_backlog, m->backlog);
      say("t=" + fixed(at, 0) + " s: " + (m ? backlog_line(*m) : "processor /metrics unanswered") +
          "; RSS MiB" + line);
      if (at >= total_s) break;
    }

    // The load stops; the backlog must drain.
    const auto stop_at = SteadyClock::now();
    say("stopping the load; the backlog must reach 0 within " + fixed(options_.drain_bound_s, 0) +
        " s");
    stop_producers();
    std::optional<double> drained_s;
    auto next_report = after_s(stop_at, 10);
    while (seconds_between(stop_at, SteadyClock::now()) < options_.drain_bound_s) {
      auto m = apply_.latest();
      if (m && m->at > stop_at && m->backlog == 0) {
        drained_s = seconds_between(stop_at, m->at);
        break;
      }
      if (m && SteadyClock::now() >= next_report) {
        say("draining: " + backlog_line(*m));
        next_report = after_s(next_report, 10);
      }
      std::this_thread::sleep_for(milliseconds(200));
    }
    auto last = apply_.latest();
    stop_load();
    if (drained_s) {
      say("backlog drained to 0 " + fixed(*drained_s, 1) + " s after the load stopped");
    } else {
      say("backlog NOT drained " + fixed(options_.drain_bound_s, 0) +
          " s after the load stopped: " + (last ? backlog_line(*last) : "no /metrics answer"));
    }

    // Reads.
    std::vector<float> lat;
    int64_t read_errors = 0;
    std::string last_read_error;
    {
      std::lock_guard lock(mu_);
      lat = read_latencies_ms_;
      read_errors = read_errors_;
      last_read_error = last_read_error_;
    }
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double q) {
      return lat.empty()
                 ? 0.0
                 : static_cast<double>(
                       lat[std::min(lat.size() - 1,
                                    static_cast<size_t>(q * static_cast<double>(lat.size() - 1)))]);
    };
    const int64_t reads = static_cast<int64_t>(lat.size()) + read_errors;
    const double read_s = seconds_between(load_start, SteadyClock::now());
    const double error_percent =
        reads > 0 ? 100.0 * static_cast<double>(read_errors) / static_cast<double>(reads) : 100.0;
    std::printf(
        "\nrandom reads: %lld in %.0f s (%.0f/s) over %d connections, p50 %.1f ms, p99 %.1f ms, "
        "max %.1f ms, %lld errors (%.2f%%)%s%s\n",
        static_cast<long long>(reads), read_s, static_cast<double>(reads) / read_s,
        options_.readers, pct(0.5), pct(0.99), pct(1.0), static_cast<long long>(read_errors),
        error_percent, read_errors ? "; last error: " : "",
        read_errors ? last_read_error.c_str() : "");

    // RSS.
    std::printf(
        "\n| service | RSS MiB per sample (warm-up in brackets) | after the warm-up |\n"
        "|---|---|---|\n");
    std::vector<std::string> rising;
    for (const auto& name : names) {
      const auto* p = by_name(name);
      const bool judged = p && is_tally_service(*p);
      auto v = testing::judge_flat_after_warm_up(rss_mib[name], 0.10, options_.rss_slack_mib);
      std::string verdict = v.flat ? "flat: " + v.reason : "NOT FLAT: " + v.reason;
      if (!judged) verdict = "reported only; " + verdict;
      if (judged && !v.flat) rising.push_back(name + " (" + v.reason + ")");
      std::printf("| %s | %s | %s |\n", name.c_str(), rss_text[name].c_str(), verdict.c_str());
    }

    // Logs.
    std::string largest_log;
    int64_t largest_growth = 0;
    int64_t total_growth = 0;
    for (const auto& [path, size] : log_sizes()) {
      auto before = logs_before.find(path);
      int64_t growth = size - (before == logs_before.end() ? 0 : before->second);
      total_growth += std::max<int64_t>(growth, 0);
      if (growth > largest_growth) {
        largest_growth = growth;
        largest_log = path;
      }
    }
    const double largest_mib = static_cast<double>(largest_growth) / (1024.0 * 1024.0);
    std::printf("\nlogs: the largest growth %.1f MiB (%s), all log files together %.1f MiB\n",
                largest_mib, largest_log.empty() ? "none" : largest_log.c_str(),
                static_cast<double>(total_growth) / (1024.0 * 1024.0));
    std::printf("backlog: at most %lld events at a sample during the load\n\n",
                static_cast<long long>(max_backlog));

    bool audit_ok = false;
    if (drained_s) {
      // The backlog is 0: every count is applied, so a mismatch will not heal by waiting long.
      audit_ok = audit(Loadgen::AuditScope::kLedgerPairs, std::chrono::seconds(30));
    } else {
      std::printf("%saudit skipped: the backlog did not drain, the counts cannot be exact\n",
                  format_stats(loadgen_->stats()).c_str());
    }

    std::vector<std::string> failures;
    if (died) failures.push_back("a service was not running at some sample");
    for (const auto& r : rising) failures.push_back("RSS still rising after the warm-up: " + r);
    if (!drained_s)
      failures.push_back("the backlog did not drain within " + fixed(options_.drain_bound_s, 0) +
                         " s of the load stopping (" +
                         (last ? std::to_string(last->backlog) : std::string("?")) +
                         " events left)");
    if (drained_s && !audit_ok) failures.push_back("the audit is not exact");
    if (error_percent > options_.max_read_errors_percent)
      failures.push_back("random reads failed: " + std::to_string(read_errors) + " of " +
                         std::to_string(reads) + " (" + fixed(error_percent) + "%, bound " +
                         fixed(options_.max_read_errors_percent) + "%)");
    if (largest_mib > options_.max_log_growth_mib)
      failures.push_back("log " + largest_log + " grew by " + fixed(largest_mib, 1) +
                         " MiB (bound " + fixed(options_.max_log_growth_mib, 0) + " MiB)");
    say("high-cardinality soak finished");
    for (const auto& f : failures) std::printf("FAILED: %s\n", f.c_str());
    if (!failures.empty()) return 1;
    std::printf(
        "verdict: every Tally service's RSS flat after the warm-up, backlog drained in %.1f s, "
        "audit exact, reads p99 %.1f ms with %.2f%% errors, largest log growth %.1f MiB\n",
        *drained_s, pct(0.99), error_percent, largest_mib);
    return 0;
  }

  Options options_;
  TimePoint t0_ = SteadyClock::now();
  std::unique_ptr<testing::TempDir> temp_;
  bool own_cluster_ = false;
  std::string dir_;
  ClusterManifest manifest_;
  std::unique_ptr<ZkClient> zk_;

  std::unique_ptr<Loadgen> loadgen_;
  std::atomic<bool> stop_load_{false};
  std::atomic<bool> stop_observers_{false};
  std::thread load_thread_;
  std::thread reader_thread_;
  std::vector<std::thread> random_readers_;
  std::thread monitor_thread_;
  std::vector<float> read_latencies_ms_;  // successful random reads, under mu_
  int64_t read_errors_ = 0;               // failed random reads, under mu_
  Timeline writes_;
  Timeline reads_;
  ApplyMonitor apply_;
  std::mutex mu_;
  std::string last_read_error_;
};

}  // namespace
}  // namespace tally

int main(int argc, char** argv) {
  constexpr const char* kUsage =
      "usage: all_faults_chaos [--dir DIR] [--rate EVENTS_PER_S] [--settle-s S]\n"
      "                        [--soak-minutes [N]] [--sample-interval-s S]\n"
      "                        [--high-cardinality [--videos N] [--zipf S] [--readers N]\n"
      "                         [--warm-up-s S] [--drain-bound-s S] [--max-read-errors-percent P]\n"
      "                         [--max-log-growth-mib M] [--rss-slack-mib M]]\n";
  tally::Options options;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto number = [&](double min, std::optional<double> fallback = std::nullopt) -> double {
      if (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0) {
        if (fallback) return *fallback;
        std::cerr << a << " needs a value\n" << kUsage;
        std::exit(2);
      }
      const std::string& v = args[++i];
      try {
        size_t used = 0;
        double n = std::stod(v, &used);
        if (used == v.size() && n >= min) return n;
      } catch (...) {
      }
      std::cerr << a << ": expected a number >= " << min << ", got '" << v << "'\n";
      std::exit(2);
    };
    if (a == "--dir" && i + 1 < args.size()) {
      options.dir = args[++i];
    } else if (a == "--rate") {
      options.rate = number(1);
    } else if (a == "--high-cardinality") {
      options.high_cardinality = true;
    } else if (a == "--videos") {
      options.videos = static_cast<int>(number(1));
    } else if (a == "--zipf") {
      options.zipf = number(0);
    } else if (a == "--readers") {
      options.readers = static_cast<int>(number(1));
    } else if (a == "--warm-up-s") {
      options.warm_up_s = number(0);
    } else if (a == "--drain-bound-s") {
      options.drain_bound_s = number(1);
    } else if (a == "--max-read-errors-percent") {
      options.max_read_errors_percent = number(0);
    } else if (a == "--rss-slack-mib") {
      options.rss_slack_mib = number(0);
    } else if (a == "--max-log-growth-mib") {
      options.max_log_growth_mib = number(0);
    } else if (a == "--settle-s") {
      options.settle_s = number(0);
    } else if (a == "--soak-minutes") {
      options.soak_minutes = number(0.1, 10.0);
    } else if (a == "--sample-interval-s") {
      options.sample_interval_s = number(1);
    } else if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else {
      std::cerr << "unknown or incomplete argument '" << a << "'\n" << kUsage;
      return 2;
    }
  }
  return tally::Harness(std::move(options)).run();
}
