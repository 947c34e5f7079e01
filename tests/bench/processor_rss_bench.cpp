// Processor memory as the number of distinct videos grows (issue 6: "RSS bounded as the number of
// distinct videos grows"). For each of 10k, 100k and 1M distinct videos a fresh `processor`
// (fsync on, 4 partitions, default dedup budget and flush interval, its config as `tallyctl
// cluster up` writes it) takes the same number of events (kEvents, unique event ids, video
// i mod N, view/like/watch_time in turn) from 4 posting threads; its RSS is sampled from
// /proc/<pid>/status every 100 ms until every event is applied, then read once more.
// The cluster proxy is an in-process sink answering counters:marks and counters:apply (`applied`
// for one shard "-") that adds up the applied counts: this measures the processor alone, not
// PostgreSQL; the sink's sum must equal the events sent (checked).
// Label bench (never in CI). Run: ctest --test-dir build -L bench -R processor_rss -V
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/http/http_client.h"
#include "common/http/http_server.h"
#include "common/process/child_process.h"
#include "tests/support/test_env.h"

namespace tally {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kEvents = 2'000'000;
constexpr int kBatch = 1000;
constexpr int kPosters = 4;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// kB from a /proc/<pid>/status line ("VmRSS:	  123456 kB"); -1 when absent.
int64_t status_kb(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  }
  return -1;
}

// A counters:apply sink: every batch `applied` on one shard, counts summed.
class Sink {
 public:
  Sink() {
    HttpServerOptions o;
    o.threads = 1;
    o.max_body_bytes = 512 << 20;
    server_ = std::make_unique<HttpServer>(o);
    server_->route("GET", "/v1/counters:marks", [](HttpRequest&&, Responder respond) {
      respond(HttpResponse::json(200, R"({"shards":[{"shard":"-","marks":{}}]})"));
    });
    server_->route("POST", "/v1/counters:apply", [this](HttpRequest&& req, Responder respond) {
      const std::string& b = req.body;
      auto to = b.find("\"to_offset\":");
      int64_t mark = to == std::string::npos ? -1 : std::stoll(b.substr(to + 12, 24));
      int64_t sum = 0;
      for (size_t p = b.find("\"count\":"); p != std::string::npos; p = b.find("\"count\":", p + 8))
        sum += std::stoll(b.substr(p + 8, 24));
      counted_ += sum;
      rows_max_ = std::max<int64_t>(rows_max_, static_cast<int64_t>(b.size()));
      respond(HttpResponse::json(200,
                                 R"({"shards":[{"shard":"-","outcome":"applied","rows":0,"mark":)" +
                                     std::to_string(mark) + R"(}],"token":""})"));
    });
    if (auto st = server_->start(); !st)
      std::fprintf(stderr, "sink: %s\n", st.error().message.c_str());
  }
  ~Sink() { server_->stop(std::chrono::milliseconds(1000)); }
  uint16_t port() const { return server_->port(); }
  int64_t counted() const { return counted_.load(); }
  void reset() { counted_ = 0; }
  int64_t largest_request() const { return rows_max_.load(); }

 private:
  std::unique_ptr<HttpServer> server_;
  std::atomic<int64_t> counted_{0};
  std::atomic<int64_t> rows_max_{0};
};

struct Phase {
  int videos = 0;
  int64_t sent = 0;
  int64_t counted = 0;
  double post_seconds = 0;
  double drain_seconds = 0;
  int64_t start_rss_kb = 0;  // started, marks read, nothing posted
  int64_t peak_rss_kb = 0;
  int64_t hwm_kb = 0;
  int64_t rss_after_kb = 0;
  int64_t largest_request = 0;
};

double metric(const std::string& text, const std::string& name) {
  auto p = text.find("\n" + name + " ");
  return p == std::string::npos ? -1 : std::stod(text.substr(p + name.size() + 2, 32));
}

Phase run_phase(int videos, Sink& sink) {
  Phase ph;
  ph.videos = videos;
  sink.reset();
  testing::TempDir dir("tally-rss");
  const int port = testing::find_free_port_block(1);
  const auto config = dir.path() / "processor.yaml";
  {
    std::ofstream f(config);
    f << "processor:\n  id: rss\n  data_dir: \"" << (dir.path() / "data").string()
      << "\"\n  partitions: 4\n  http: {address: 127.0.0.1, port: " << port
      << ", threads: 2}\n  flush: {interval_ms: 1000}\n"
      << "  cluster_proxy: {url: \"http://127.0.0.1:" << sink.port() << "\", token: \"t\"}\n";
  }
  SpawnOptions so;
  so.argv = {testing::project_binary("processor"), "--config", config.string()};
  so.log_file = dir.path() / "processor.log";
  auto pid = spawn_daemon(so);
  if (!pid) {
    std::fprintf(stderr, "spawn: %s\n", pid.error().message.c_str());
    return ph;
  }
  HttpClient probe("127.0.0.1", static_cast<uint16_t>(port), std::chrono::seconds(5));
  for (int i = 0; i < 100; ++i) {
    auto r = probe.request("GET", "/readyz");
    if (r && r->status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

  std::this_thread::sleep_for(std::chrono::seconds(1));
  ph.start_rss_kb = status_kb(*pid, "VmRSS");
  std::atomic<bool> sampling{true};
  std::atomic<int64_t> peak{0};
  std::thread sampler([&] {
    while (sampling) {
      int64_t kb = status_kb(*pid, "VmRSS");
      if (kb > peak) peak = kb;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });

  const auto t0 = Clock::now();
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> sent{0};
  std::vector<std::thread> posters;
  static const char* kTypes[] = {"view", "like", "watch_time"};
  for (int t = 0; t < kPosters; ++t) {
    posters.emplace_back([&, t] {
      HttpClient client("127.0.0.1", static_cast<uint16_t>(port), std::chrono::seconds(30));
      std::string body;
      for (;;) {
        int64_t first = next.fetch_add(kBatch);
        if (first >= kEvents) return;
        int64_t last = std::min(kEvents, first + kBatch);
        const int64_t ts = now_ms();
        body = "[";
        for (int64_t i = first; i < last; ++i) {
          if (i > first) body += ',';
          body += R"({"event_id":"e)" + std::to_string(i) + R"(","video_id":"rss_v)" +
                  std::to_string(i % videos) + R"(","event_type":")" + kTypes[(i / videos) % 3] +
                  R"(","ts":)" + std::to_string(ts) + R"(,"value":1})";
        }
        body += "]";
        for (int attempt = 0; attempt < 100; ++attempt) {
          auto r = client.request("POST", "/v1/events", body);
          if (r && r->status == 200) {
            sent += last - first;
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
      (void)t;
    });
  }
  for (auto& p : posters) p.join();
  ph.post_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  ph.sent = sent.load();
  const auto t1 = Clock::now();
  while (sink.counted() < ph.sent &&
         std::chrono::duration<double>(Clock::now() - t1).count() < 300) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ph.drain_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  std::this_thread::sleep_for(std::chrono::seconds(3));  // a few idle flush intervals
  sampling = false;
  sampler.join();
  ph.counted = sink.counted();
  ph.peak_rss_kb = peak.load();
  ph.hwm_kb = status_kb(*pid, "VmHWM");
  ph.rss_after_kb = status_kb(*pid, "VmRSS");
  ph.largest_request = sink.largest_request();
  auto m = probe.request("GET", "/metrics");
  if (m) {
    std::printf("  %d videos: dedup entries of partition 0 %.0f, backlog %.0f, duplicates %.0f\n",
                videos, metric(m->body, "tally_processor_dedup_entries{partition=\"0\"}"),
                metric(m->body, "tally_processor_backlog_events"),
                metric(m->body, "tally_processor_duplicate_events_total"));
  }
  (void)stop_process(*pid, config.string(), SIGTERM, std::chrono::seconds(20));
  return ph;
}

}  // namespace
}  // namespace tally

int main() {
  using namespace tally;
  Sink sink;
  std::vector<Phase> phases;
  for (int videos : {10'000, 100'000, 1'000'000}) {
    std::printf("phase: %d distinct videos, %lld events\n", videos,
                static_cast<long long>(kEvents));
    std::fflush(stdout);
    phases.push_back(run_phase(videos, sink));
  }
  bool ok = true;
  std::printf(
      "\n| distinct videos | events | posted in | events/s accepted | drained after | "
      "RSS at start | peak RSS | VmHWM | RSS after drain | largest apply request |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const auto& p : phases) {
    std::printf(
        "| %d | %lld | %.1f s | %.0f | %.1f s | %.0f MB | %.0f MB | %.0f MB | %.0f MB | %.1f MB "
        "|\n",
        p.videos, static_cast<long long>(p.sent), p.post_seconds,
        p.post_seconds > 0 ? static_cast<double>(p.sent) / p.post_seconds : 0, p.drain_seconds,
        static_cast<double>(p.start_rss_kb) / 1024.0, static_cast<double>(p.peak_rss_kb) / 1024.0,
        static_cast<double>(p.hwm_kb) / 1024.0, static_cast<double>(p.rss_after_kb) / 1024.0,
        static_cast<double>(p.largest_request) / 1048576.0);
    if (p.sent != tally::kEvents || p.counted != p.sent) {
      std::printf("MISMATCH: %d videos: sent %lld, the sink counted %lld\n", p.videos,
                  static_cast<long long>(p.sent), static_cast<long long>(p.counted));
      ok = false;
    }
  }
  return ok ? 0 : 1;
}
