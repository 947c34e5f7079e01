// Tests of the whole processor in-process: a real ProcessorServer (HTTP ingest, fsync'ed log,
// consumers, writers) against a small FAKE cluster proxy that implements contract 9 (counters:apply
// with per-shard marks and outcomes, counters:marks) in memory over a real HttpServer. They cover
// exactly-once counting with duplicates, a restart after one shard failed part of the batches
// (per-shard replay from the marks), dedup across a restart, backpressure (503 + Retry-After) while
// the cluster proxy is down and recovery after it, the dead-letter directory, log truncation below
// the marks, and the request limits (413, 401, 429). The end-to-end test against the real cluster
// proxy and PostgreSQL belongs with the cluster proxy's integration tests.
#include "processor/src/processor_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <tuple>

#include "common/http/http_client.h"
#include "common/http/http_server.h"
#include "common/keyspace/ksid.h"
#include "processor/src/event.h"
#include "tests/support/test_env.h"

namespace tally::processor {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using CountKey = std::tuple<std::string, std::string, int64_t>;  // video, type, minute
using Counts = std::map<CountKey, std::pair<int64_t, int64_t>>;

std::string shard_of(const std::string& video) {
  return ksid_for(video) < (uint64_t{1} << 63) ? "-80" : "80-";
}

// Contract 9 over a real HttpServer, state in memory, with failure switches.
class FakeClusterProxy {
 public:
  FakeClusterProxy() : server_(options()) {
    server_.route("POST", "/v1/counters:apply",
                  [this](HttpRequest&& r, Responder respond) { respond(apply(r)); });
    server_.route("GET", "/v1/counters:marks",
                  [this](HttpRequest&& r, Responder respond) { respond(marks(r)); });
    auto st = server_.start();
    EXPECT_TRUE(st.ok());
  }
  ~FakeClusterProxy() { server_.stop(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()); }

  std::atomic<bool> down{false};          // every request: 503
  std::atomic<bool> refuse_apply{false};  // counters:apply: 400 (a poison batch)
  void fail_shard(const std::string& shard, bool fail) {
    std::lock_guard lock(mu_);
    if (fail) {
      failing_.insert(shard);
    } else {
      failing_.erase(shard);
    }
  }
  Counts counts() {
    std::lock_guard lock(mu_);
    return counts_;
  }
  Counts counts_of_shard(const std::string& shard) {
    Counts out;
    for (const auto& [k, v] : counts()) {
      if (shard_of(std::get<0>(k)) == shard) out[k] = v;
    }
    return out;
  }
  int overlaps() {
    std::lock_guard lock(mu_);
    return overlaps_;
  }

 private:
  static HttpServerOptions options() {
    HttpServerOptions o;
    o.max_body_bytes = 64 << 20;
    return o;
  }
  bool authorized(const HttpRequest& r) {
    auto a = r.header("Authorization");
    return a && *a == "Bearer tok";
  }
  HttpResponse apply(const HttpRequest& r) {
    if (down) return HttpResponse::error(503, "down");
    if (!authorized(r)) return HttpResponse::error(401, "bad token");
    if (refuse_apply) return HttpResponse::error(400, "rows[0].video_id: poison");
    json j = json::parse(r.body, nullptr, false);
    if (!j.is_object()) return HttpResponse::error(400, "not json");
    std::string pid = j["processor_id"];
    int partition = j["partition"];
    int64_t from = j["from_offset"], to = j["to_offset"];
    if (from >= to) return HttpResponse::error(400, "from >= to");
    std::lock_guard lock(mu_);
    json out;
    out["shards"] = json::array();
    for (std::string shard : {"-80", "80-"}) {
      if (failing_.count(shard)) {
        out["shards"].push_back({{"shard", shard}, {"outcome", "failed"}, {"error", "injected"}});
        continue;
      }
      auto& mark = marks_.try_emplace({pid, partition, shard}, -1).first->second;
      if (to <= mark) {
        out["shards"].push_back({{"shard", shard}, {"outcome", "already_applied"}, {"mark", mark}});
      } else if (from < mark) {
        ++overlaps_;
        out["shards"].push_back({{"shard", shard}, {"outcome", "overlap"}, {"mark", mark}});
      } else {
        for (const auto& row : j["rows"]) {
          std::string video = row["video_id"];
          if (shard_of(video) != shard) continue;
          auto& c = counts_[{video, row["event_type"], row["minute"].get<int64_t>()}];
          c.first += row["count"].get<int64_t>();
          c.second += row["sum"].get<int64_t>();
        }
        mark = to;
        out["shards"].push_back({{"shard", shard}, {"outcome", "applied"}, {"mark", mark}});
      }
    }
    out["token"] = "t";
    return HttpResponse::json(200, out.dump());
  }
  HttpResponse marks(const HttpRequest& r) {
    if (down) return HttpResponse::error(503, "shards -80, 80- could not answer");
    if (!authorized(r)) return HttpResponse::error(401, "bad token");
    std::string pid(r.query_param("processor_id").value_or(""));
    std::lock_guard lock(mu_);
    json out;
    out["shards"] = json::array();
    for (std::string shard : {"-80", "80-"}) {
      json m = json::object();
      for (const auto& [k, v] : marks_) {
        if (std::get<0>(k) == pid && std::get<2>(k) == shard) {
          m[std::to_string(std::get<1>(k))] = v;
        }
      }
      out["shards"].push_back({{"shard", shard}, {"marks", m}});
    }
    return HttpResponse::json(200, out.dump());
  }

  HttpServer server_;
  std::mutex mu_;
  std::set<std::string> failing_;
  std::map<std::tuple<std::string, int, std::string>, int64_t> marks_;
  Counts counts_;
  int overlaps_ = 0;
};

using testing::wait_until;

// Builds request bodies and the counts they must produce.
class Events {
 public:
  explicit Events(int64_t now) : now_(now) {}
  // A new event (a fresh id unless with_id is false).
  json make(const std::string& video, const std::string& type, int64_t value, bool with_id = true) {
    json e = {{"video_id", video}, {"event_type", type}, {"ts", now_ - (seq_ % 5) * 60000}};
    if (value) e["value"] = value;
    if (with_id) e["event_id"] = "ev-" + std::to_string(seq_);
    ++seq_;
    auto& c = expected_[{video, type, minute_of(e["ts"].get<int64_t>())}];
    c.first += 1;
    c.second += value;
    return e;
  }
  // A batch of n new events over `videos` videos.
  json batch(int n, int videos, const std::string& prefix = "vid") {
    json a = json::array();
    for (int i = 0; i < n; ++i) {
      int k = (seq_ * 7 + i) % videos;
      bool watch = i % 5 == 0;
      a.push_back(
          make(prefix + std::to_string(k), watch ? "watch_time" : "view", watch ? 1000 + i : 0));
    }
    return a;
  }
  const Counts& expected() const { return expected_; }
  Counts expected_of_shard(const std::string& shard) const {
    Counts out;
    for (const auto& [k, v] : expected_) {
      if (shard_of(std::get<0>(k)) == shard) out[k] = v;
    }
    return out;
  }

 private:
  int64_t now_;
  int seq_ = 0;
  Counts expected_;
};

class ProcessorServerTest : public ::testing::Test {
 protected:
  ProcessorConfig config() {
    ProcessorConfig c;
    c.id = "p1";
    c.data_dir = dir_.path();
    c.partitions = 4;
    c.http_port = 0;
    c.segment_bytes = 8 << 20;
    c.dedup_memory_bytes = 4 << 20;
    c.dedup_snapshot_interval_ms = 100;
    c.flush_interval_ms = 50;
    c.cluster_proxy_url = proxy_.url();
    c.cluster_proxy_token = "tok";
    c.cluster_proxy_timeout_ms = 2000;
    c.max_backoff_ms = 100;
    return c;
  }
  void start(ProcessorConfig c) {
    server_ = std::make_unique<ProcessorServer>(std::move(c));
    auto st = server_->start();
    ASSERT_TRUE(st.ok()) << st.error().message;
    client_ = std::make_unique<HttpClient>("127.0.0.1", server_->http_port(), 10s);
  }
  void restart(ProcessorConfig c) {
    client_.reset();
    server_->stop();
    server_.reset();
    start(std::move(c));
  }
  HttpClientResponse post(const std::string& body,
                          std::vector<std::pair<std::string, std::string>> headers = {}) {
    auto r = client_->request("POST", "/v1/events", body, headers);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? *r : HttpClientResponse{};
  }
  json post_ok(const json& events) {
    auto r = post(events.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body, nullptr, false);
  }
  std::string metrics() {
    auto r = client_->request("GET", "/metrics");
    return r.ok() ? r->body : "";
  }
  double metric(const std::string& series) {
    auto text = metrics();
    auto pos = text.find("\n" + series + " ");
    if (pos == std::string::npos) return -1;
    return std::stod(text.substr(pos + series.size() + 2));
  }

  testing::TempDir dir_{"proc-server"};
  FakeClusterProxy proxy_;
  std::unique_ptr<ProcessorServer> server_;
  std::unique_ptr<HttpClient> client_;
  Events events_{wall_clock_ms()};
};

TEST_F(ProcessorServerTest, CountsEveryEventExactlyOnceAndDropsRepeatedIds) {
  start(config());
  ASSERT_TRUE(wait_until([&] { return server_->pipeline_running(); }));
  json first = events_.batch(300, 20);
  auto res = post_ok(first);
  EXPECT_EQ(res["accepted"], 300);
  EXPECT_TRUE(res["rejected"].empty());
  // Repeats: the same events again (a producer retry), and within one request.
  json again = json::array();
  for (int i = 0; i < 100; ++i) again.push_back(first[static_cast<size_t>(i)]);
  json mixed = events_.batch(50, 20);
  mixed.push_back(mixed[0]);
  mixed.push_back(json{{"video_id", "bad video"}, {"event_type", "view"}, {"ts", 1}});
  for (int i = 0; i < 20; ++i) mixed.push_back(events_.make("noid", "like", 0, false));
  EXPECT_EQ(post_ok(again)["accepted"], 100);  // accepted (durable), then dropped as repeats
  auto r = post_ok(mixed);
  EXPECT_EQ(r["accepted"], 71);
  ASSERT_EQ(r["rejected"].size(), 1u);
  EXPECT_EQ(r["rejected"][0]["index"], 51);

  ASSERT_TRUE(wait_until([&] { return proxy_.counts() == events_.expected(); }))
      << "counts never matched";
  std::this_thread::sleep_for(300ms);  // and nothing more arrives
  EXPECT_EQ(proxy_.counts(), events_.expected());
  EXPECT_EQ(metric("tally_processor_duplicate_events_total"), 101);
  EXPECT_EQ(metric("tally_processor_events_accepted_total"), 471);
  EXPECT_EQ(metric("tally_processor_events_rejected_total"), 1);
  EXPECT_TRUE(wait_until([&] { return server_->backlog_events() == 0; }));
  EXPECT_EQ(proxy_.overlaps(), 0);
}

TEST_F(ProcessorServerTest, RestartReplaysPerShardFromTheMarksWithoutDoubleCounting) {
  start(config());
  ASSERT_TRUE(wait_until([&] { return server_->pipeline_running(); }));
  post_ok(events_.batch(200, 40));
  ASSERT_TRUE(wait_until([&] { return proxy_.counts() == events_.expected(); }));
  // Shard 80- fails from now on: -80 applies the next batches, 80- does not.
  proxy_.fail_shard("80-", true);
  json second = events_.batch(300, 40);
  post_ok(second);
  ASSERT_TRUE(wait_until(
      [&] { return proxy_.counts_of_shard("-80") == events_.expected_of_shard("-80"); }));
  EXPECT_NE(proxy_.counts_of_shard("80-"), events_.expected_of_shard("80-"));
  // The processor stops with -80 ahead of 80- in every partition; 80- recovers meanwhile.
  proxy_.fail_shard("80-", false);
  restart(config());
  ASSERT_TRUE(wait_until([&] { return proxy_.counts() == events_.expected(); }))
      << "counts never matched after the restart";
  EXPECT_EQ(proxy_.overlaps(), 0);
  // Dedup survives the restart: repeats of acknowledged ids are dropped, new events count.
  json repeats = json::array();
  for (int i = 0; i < 50; ++i) repeats.push_back(second[static_cast<size_t>(i)]);
  post_ok(repeats);
  post_ok(events_.batch(100, 40));
  ASSERT_TRUE(wait_until([&] {
    return metric("tally_processor_duplicate_events_total") >= 50 &&
           proxy_.counts() == events_.expected();
  }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(proxy_.counts(), events_.expected());
  EXPECT_EQ(metric("tally_processor_dead_letter_batches_total"), 0);
}

TEST_F(ProcessorServerTest, BackpressureWhileTheClusterProxyIsDownThenRecovers) {
  proxy_.down = true;
  auto c = config();
  c.max_backlog_events = 100;
  c.retry_after_s = 2;
  start(c);
  // Ingest is open although the marks cannot be read yet; events wait in the log.
  EXPECT_EQ(post_ok(events_.batch(60, 10))["accepted"], 60);
  EXPECT_EQ(post_ok(events_.batch(40, 10))["accepted"], 40);
  EXPECT_EQ(server_->backlog_events(), 100);
  auto refused = post(events_.batch(1, 10).dump());
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(refused.header("Retry-After"), "2");
  EXPECT_NE(refused.body.find("backlog"), std::string::npos);
  auto ready = client_->request("GET", "/readyz");
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(ready->status, 503);
  EXPECT_EQ(metric("tally_processor_requests_total{outcome=\"backpressure\"}"), 1);
  // The refused event was never stored: forget it in the expectation by posting a fresh batch
  // later. The proxy comes back: the backlog drains and ingest accepts again.
  Events after(wall_clock_ms());
  proxy_.down = false;
  ASSERT_TRUE(wait_until([&] { return server_->backlog_events() == 0; }));
  auto expected = events_.expected();
  // The last event of events_ (the refused one) must not be counted.
  Counts counted = proxy_.counts();
  int64_t total_expected = 0, total_counted = 0;
  for (const auto& [k, v] : expected) total_expected += v.first;
  for (const auto& [k, v] : counted) total_counted += v.first;
  EXPECT_EQ(total_counted, total_expected - 1);
  EXPECT_EQ(post(events_.batch(10, 10).dump()).status, 200);
}

TEST_F(ProcessorServerTest, PoisonBatchGoesToTheDeadLetterDirectoryAndTheWriterMovesOn) {
  start(config());
  ASSERT_TRUE(wait_until([&] { return server_->pipeline_running(); }));
  proxy_.refuse_apply = true;
  post_ok(events_.batch(20, 5, "poison"));
  auto dlq = dir_.path() / "dead_letter";
  // A file counts once it is renamed into place (a .tmp may be there before) and counted.
  auto first_letter = [&]() -> std::filesystem::path {
    if (!std::filesystem::exists(dlq)) return {};
    for (const auto& e : std::filesystem::directory_iterator(dlq)) {
      if (e.path().extension() == ".json") return e.path();
    }
    return {};
  };
  ASSERT_TRUE(wait_until([&] {
    return !first_letter().empty() && metric("tally_processor_dead_letter_batches_total") >= 1;
  }));
  proxy_.refuse_apply = false;
  auto file = first_letter();
  std::ifstream in(file);
  json dead = json::parse(in, nullptr, false);
  EXPECT_NE(dead["reason"].get<std::string>().find("HTTP 400"), std::string::npos);
  EXPECT_EQ(dead["request"]["processor_id"], "p1");
  EXPECT_GE(metric("tally_processor_dead_letter_batches_total"), 1);
  // Later events are applied normally.
  Events later(wall_clock_ms());
  post_ok(later.batch(30, 5, "fine"));
  ASSERT_TRUE(wait_until([&] {
    Counts fine;
    for (const auto& [k, v] : proxy_.counts()) {
      if (std::get<0>(k).rfind("fine", 0) == 0) fine[k] = v;
    }
    return fine == later.expected();
  }));
}

TEST_F(ProcessorServerTest, LogIsTruncatedOnlyBelowTheMarksAndRestartStaysExact) {
  auto c = config();
  c.segment_bytes = 64 << 10;
  c.partitions = 2;
  start(c);
  ASSERT_TRUE(wait_until([&] { return server_->pipeline_running(); }));
  for (int i = 0; i < 20; ++i) post_ok(events_.batch(250, 50));
  ASSERT_TRUE(wait_until([&] { return proxy_.counts() == events_.expected(); }));
  ASSERT_TRUE(wait_until([&] { return metric("tally_processor_log_segments_deleted_total") > 0; }));
  for (int p = 0; p < 2; ++p) {
    auto start_offset = static_cast<int64_t>(server_->log(p).start_offset());
    EXPECT_LE(start_offset, server_->applied_through(p) + 1) << "partition " << p;
  }
  restart(c);
  post_ok(events_.batch(100, 50));
  ASSERT_TRUE(wait_until([&] { return proxy_.counts() == events_.expected(); }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(proxy_.counts(), events_.expected());
  EXPECT_EQ(proxy_.overlaps(), 0);
}

TEST_F(ProcessorServerTest, RequestLimits) {
  auto c = config();
  c.max_body_bytes = 4096;
  // 1 event/s refill: the over-the-rate request below stays over it even if the machine is slow
  // enough for seconds to pass between the requests (10/s let it refill and pass under load).
  c.api_keys.push_back(ApiKey{"gw", "secret-key-1", 1, 100});
  start(c);
  auto no_key = post(events_.batch(1, 1).dump());
  EXPECT_EQ(no_key.status, 401);
  auto bad_key = post(events_.batch(1, 1).dump(), {{"X-Api-Key", "nope-nope"}});
  EXPECT_EQ(bad_key.status, 401);
  auto ok = post(events_.batch(20, 3).dump(), {{"X-Api-Key", "secret-key-1"}});
  EXPECT_EQ(ok.status, 200) << ok.body;
  auto bearer = post(events_.batch(20, 3).dump(), {{"Authorization", "Bearer secret-key-1"}});
  EXPECT_EQ(bearer.status, 200) << bearer.body;
  // 100 burst - 40 used; 70 more is over the rate unless 10 s passed.
  json big = json::array();
  for (int i = 0; i < 70; ++i)
    big.push_back({{"video_id", "v"}, {"event_type", "view"}, {"ts", 1}});
  std::string body = big.dump();
  ASSERT_LT(body.size(), 4096u);
  auto limited = post(body, {{"X-Api-Key", "secret-key-1"}});
  EXPECT_EQ(limited.status, 429) << limited.body;
  EXPECT_FALSE(limited.header("Retry-After").empty());
  // Too large a body: 413 from the server, before any parsing.
  client_ = std::make_unique<HttpClient>("127.0.0.1", server_->http_port(), 10s);
  auto huge = post(std::string(5000, ' '), {{"X-Api-Key", "secret-key-1"}});
  EXPECT_EQ(huge.status, 413);
  client_ = std::make_unique<HttpClient>("127.0.0.1", server_->http_port(), 10s);
  auto bad = post("[{\"video_id\":", {{"X-Api-Key", "secret-key-1"}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("not a valid JSON array"), std::string::npos);
}

}  // namespace
}  // namespace tally::processor
