// Unit tests for the processor's CounterWriter failure handling against a fake cluster proxy (the
// ApplyTransport seam) and a ManualClock: per-shard retries address only the failed shards; a
// shard refusing the data (SQLSTATE 23514) dead-letters exactly that shard's part with a readable
// file and the writer moves on; an unwritable dead-letter directory keeps the batch (nothing is
// dropped); the circuit breaker opens after consecutive connection errors, sends nothing while
// open, and one probe closes it. Also the dead-letter file format and the replay request.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/core/circuit_breaker.h"
#include "common/core/clock.h"
#include "common/metrics/metrics_registry.h"
#include "processor/src/counter_writer.h"
#include "processor/src/dead_letter.h"
#include "tests/support/test_env.h"

namespace tally::processor {
namespace {

using json = nlohmann::json;

// Answers counters:apply from a script; records every request body.
class FakeProxy {
 public:
  using Reply = std::function<Result<HttpClientResponse>(const json& request)>;
  void then(Reply r) {
    std::lock_guard lock(mu_);
    script_.push_back(std::move(r));
  }
  ApplyTransport transport() {
    return [this](const std::string&, const std::string& body,
                  std::chrono::milliseconds timeout) -> Result<HttpClientResponse> {
      {
        std::unique_lock lock(mu_);
        // A held proxy answers nothing until release(): the writer's queue fills meanwhile.
        released_cv_.wait(lock, [&] { return !held_; });
      }
      std::lock_guard lock(mu_);
      json request = json::parse(body);
      requests_.push_back(request);
      timeouts_.push_back(timeout);
      if (script_.empty()) return make_error(ErrorCode::kUnavailable, "script ended");
      Reply r = script_.front();
      if (script_.size() > 1) script_.pop_front();  // the last reply repeats
      return r(request);
    };
  }
  std::vector<json> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  size_t calls() const {
    std::lock_guard lock(mu_);
    return requests_.size();
  }
  std::vector<std::chrono::milliseconds> timeouts() const {
    std::lock_guard lock(mu_);
    return timeouts_;
  }
  void hold() {
    std::lock_guard lock(mu_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard lock(mu_);
      held_ = false;
    }
    released_cv_.notify_all();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable released_cv_;
  bool held_ = false;
  std::vector<std::chrono::milliseconds> timeouts_;
  std::deque<Reply> script_;
  std::vector<json> requests_;
};

HttpClientResponse ok(json shards) {
  HttpClientResponse r;
  r.status = 200;
  r.body = json{{"shards", shards}, {"token", ""}}.dump();
  return r;
}

json shard(const std::string& name, const std::string& outcome, int64_t mark,
           const std::string& sqlstate = "") {
  json j = {{"shard", name}, {"outcome", outcome}, {"rows", 1}};
  if (outcome == "failed") {
    j["error"] = "shard " + name + " refused the statement: boom";
    if (!sqlstate.empty()) j["sqlstate"] = sqlstate;
  } else {
    j["mark"] = mark;
  }
  return j;
}

FlushBatch batch_of(int64_t from, int64_t to, size_t rows) {
  FlushBatch b;
  b.partition = 0;
  b.from_offset = from;
  b.to_offset = to;
  b.events = rows;
  for (size_t i = 0; i < rows; ++i) {
    b.rows.push_back({"vid_" + std::to_string(to) + "_" + std::to_string(i), EventType::kView,
                      1763800020000, 1, 0});
  }
  return b;
}

FlushBatch batch(int64_t from, int64_t to) {
  FlushBatch b;
  b.partition = 0;
  b.from_offset = from;
  b.to_offset = to;
  b.events = 3;
  b.rows.push_back({"vid_a", EventType::kView, 1763800020000, 2, 0});
  b.rows.push_back({"vid_b", EventType::kWatchTime, 1763800020000, 1, 500});
  return b;
}

struct Harness {
  explicit Harness(const std::filesystem::path& dlq, CircuitBreaker* with_breaker = nullptr,
                   const Clock* with_clock = nullptr) {
    metrics.batches_applied = &registry.counter("applied", "h");
    metrics.requests_failed = &registry.counter("failed", "h");
    metrics.dead_lettered = &registry.counter("dead", "h");
    metrics.overlaps = &registry.counter("overlaps", "h");
    metrics.rows_sent = &registry.counter("rows", "h");
    metrics.shard_retries = &registry.counter("shard_retries", "h");
    metrics.breaker_opened = &registry.counter("opened", "h");
    metrics.breaker_waits = &registry.counter("waits", "h");
    options.processor_id = "p1";
    options.url = HttpUrl{"127.0.0.1", 1, ""};
    options.min_backoff = std::chrono::milliseconds(1);
    options.max_backoff = std::chrono::milliseconds(5);
    options.dead_letter_dir = dlq;
    breaker = with_breaker;
    clock = with_clock;
  }
  std::unique_ptr<CounterWriter> start(FakeProxy& proxy) {
    return std::make_unique<CounterWriter>(0, options, metrics, backlog, -1, breaker,
                                           proxy.transport(), clock);
  }
  MetricsRegistry registry;
  WriterMetrics metrics;
  ClusterProxyOptions options;
  std::atomic<int64_t> backlog{0};
  CircuitBreaker* breaker = nullptr;
  const Clock* clock = nullptr;
};

using testing::wait_until;

TEST(CounterWriterTest, RetriesOnlyTheShardsThatFailed) {
  testing::TempDir dir("writer-retry");
  FakeProxy proxy;
  proxy.then([](const json&) {
    return ok(json::array({shard("-80", "applied", 10), shard("80-", "failed", -1)}));
  });
  proxy.then([](const json&) { return ok(json::array({shard("80-", "failed", -1, "57P01")})); });
  proxy.then([](const json&) { return ok(json::array({shard("80-", "applied", 10)})); });
  Harness h(dir.path() / "dlq");
  auto w = h.start(proxy);
  w->enqueue(batch(-1, 10));
  ASSERT_TRUE(wait_until([&] { return w->applied_through() == 10; }));
  w->stop();
  auto requests = proxy.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_FALSE(requests[0].contains("shards"));  // the first attempt goes to every shard
  EXPECT_EQ(requests[1]["shards"], json::array({"80-"}));
  EXPECT_EQ(requests[2]["shards"], json::array({"80-"}));
  EXPECT_EQ(requests[2]["from_offset"], -1);
  EXPECT_EQ(requests[2]["to_offset"], 10);
  EXPECT_EQ(requests[2]["rows"].size(), 2u);  // the proxy picks that shard's rows
  EXPECT_EQ(h.metrics.shard_retries->value(), 2u);
  EXPECT_EQ(h.metrics.batches_applied->value(), 1u);
  EXPECT_EQ(h.metrics.dead_lettered->value(), 0u);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "dlq"));
}

TEST(CounterWriterTest, A409ForTheNamedShardsResendsTheWholeBatch) {
  testing::TempDir dir("writer-409");
  FakeProxy proxy;
  proxy.then([](const json&) {
    return ok(json::array({shard("-80", "applied", 10), shard("80-", "failed", -1)}));
  });
  proxy.then([](const json&) {
    HttpClientResponse r;
    r.status = 409;
    r.body = R"({"code":409,"message":"shards: 80- is not a shard of the current keyspace"})";
    return Result<HttpClientResponse>(r);
  });
  proxy.then([](const json&) {
    return ok(json::array({shard("-80", "already_applied", 10), shard("80-c0", "applied", 10),
                           shard("c0-", "applied", 10)}));
  });
  Harness h(dir.path() / "dlq");
  auto w = h.start(proxy);
  w->enqueue(batch(-1, 10));
  ASSERT_TRUE(wait_until([&] { return w->applied_through() == 10; }));
  w->stop();
  auto requests = proxy.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[1]["shards"], json::array({"80-"}));
  EXPECT_FALSE(requests[2].contains("shards"));
  EXPECT_EQ(h.metrics.dead_lettered->value(), 0u);  // a 409 for "shards" is not a poison batch
}

TEST(CounterWriterTest, AShardRefusingTheDataDeadLettersItsPartAndMovesOn) {
  testing::TempDir dir("writer-poison");
  FakeProxy proxy;
  proxy.then([](const json& req) {
    if (req["to_offset"] == 10) {
      return ok(json::array({shard("-80", "applied", 10), shard("80-", "failed", -1, "23514")}));
    }
    return ok(json::array({shard("-80", "applied", 20), shard("80-", "applied", 20)}));
  });
  ManualClock clock(1763800000000);
  Harness h(dir.path() / "dlq", nullptr, &clock);
  auto w = h.start(proxy);
  w->enqueue(batch(-1, 10));
  ASSERT_TRUE(wait_until([&] { return w->applied_through() == 10; }));
  w->enqueue(batch(10, 20));  // the writer moved on: the next batch goes out as usual
  ASSERT_TRUE(wait_until([&] { return w->applied_through() == 20; }));
  w->stop();
  // Not retried: exactly one request per batch.
  ASSERT_EQ(proxy.calls(), 2u);
  for (const auto& r : proxy.requests()) EXPECT_FALSE(r.contains("shards")) << r.dump();
  EXPECT_EQ(h.metrics.dead_lettered->value(), 1u);
  EXPECT_EQ(h.metrics.requests_failed->value(), 0u);

  auto letters = list_dead_letters(dir.path() / "dlq");
  ASSERT_TRUE(letters.ok()) << letters.error().message;
  ASSERT_EQ(letters->size(), 1u);
  const DeadLetter& l = (*letters)[0];
  EXPECT_EQ(l.kind, dead_letter_kinds::kRejected);
  EXPECT_EQ(l.processor_id, "p1");
  EXPECT_EQ(l.partition, 0);
  EXPECT_EQ(l.from_offset, -1);
  EXPECT_EQ(l.to_offset, 10);
  EXPECT_EQ(l.shards, std::vector<std::string>{"80-"});
  EXPECT_EQ(l.rows, 2u);
  EXPECT_EQ(l.events, 3);
  EXPECT_EQ(l.at_ms, 1763800000000);
  EXPECT_NE(l.reason.find("80-"), std::string::npos) << l.reason;
  EXPECT_NE(l.reason.find("invalid data"), std::string::npos) << l.reason;

  // The replay body: the same rows, as p1-dlq, addressed to the shard that lacks them.
  auto body = replay_request_body(l);
  ASSERT_TRUE(body.ok());
  json replay = json::parse(*body);
  EXPECT_EQ(replay["processor_id"], "p1-dlq");
  EXPECT_EQ(replay["shards"], json::array({"80-"}));
  EXPECT_EQ(replay["from_offset"], -1);
  EXPECT_EQ(replay["to_offset"], 10);
  EXPECT_EQ(replay["rows"], json::parse(encode_apply_request("p1", batch(-1, 10)))["rows"]);
}

TEST(CounterWriterTest, AnUnwritableDeadLetterDirectoryKeepsTheBatch) {
  testing::TempDir dir("writer-nodlq");
  {
    std::ofstream f(dir.path() / "not-a-dir");
    f << "x";
  }
  FakeProxy proxy;
  proxy.then([](const json&) {
    HttpClientResponse r;
    r.status = 400;
    r.body = R"({"code":400,"message":"rows[0].count: expected >= 0"})";
    return Result<HttpClientResponse>(r);
  });
  Harness h(dir.path() / "not-a-dir" / "dlq");
  auto w = h.start(proxy);
  w->enqueue(batch(-1, 10));
  ASSERT_TRUE(wait_until([&] { return proxy.calls() >= 3; }));
  EXPECT_EQ(w->applied_through(), -1);  // not dropped: the log still holds it
  EXPECT_EQ(h.metrics.dead_lettered->value(), 0u);
  EXPECT_GE(w->failing(), 1);
  w->stop();
}

TEST(CounterWriterTest, CircuitOpensHoldsRequestsAndOneProbeClosesIt) {
  testing::TempDir dir("writer-breaker");
  ManualClock clock;
  CircuitBreaker breaker(CircuitOptions{3, 1000}, clock);
  FakeProxy proxy;
  std::atomic<bool> proxy_up{false};
  proxy.then([&](const json&) -> Result<HttpClientResponse> {
    if (!proxy_up) return make_error(ErrorCode::kUnavailable, "connection refused");
    return ok(json::array({shard("-80", "applied", 10), shard("80-", "applied", 10)}));
  });
  Harness h(dir.path() / "dlq", &breaker, &clock);
  auto w = h.start(proxy);
  w->enqueue(batch(-1, 10));
  ASSERT_TRUE(wait_until([&] { return proxy.calls() == 3; }));
  ASSERT_TRUE(wait_until([&] { return h.metrics.breaker_waits->value() >= 5; }));
  // Open: the (manual) clock does not move, so no request goes out however long we wait.
  EXPECT_EQ(proxy.calls(), 3u);
  EXPECT_STREQ(breaker.state(), "open");
  EXPECT_EQ(h.metrics.breaker_opened->value(), 1u);
  EXPECT_EQ(w->applied_through(), -1);

  // The window passes while the proxy is still down: exactly one probe, which opens it again.
  clock.advance(1000);
  ASSERT_TRUE(wait_until([&] { return proxy.calls() == 4; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(proxy.calls(), 4u);
  EXPECT_STREQ(breaker.state(), "open");
  EXPECT_EQ(h.metrics.breaker_opened->value(), 2u);

  // Back up: the next probe succeeds and closes the circuit; the batch is applied.
  proxy_up = true;
  clock.advance(1000);
  ASSERT_TRUE(wait_until([&] { return w->applied_through() == 10; }));
  EXPECT_STREQ(breaker.state(), "closed");
  EXPECT_EQ(proxy.calls(), 5u);
  w->stop();
}

TEST(DeadLetterTest, OlderFilesWithOnlyReasonAndRequestAreRead) {
  testing::TempDir dir("dlq-old");
  const std::string request = encode_apply_request("p7", batch(4, 9));
  {
    std::ofstream f(dir.path() / "p2-00000000000000000004-00000000000000000009.json");
    f << "{\"reason\":\"refused with HTTP 400: bad\",\"request\":" << request << "}\n";
  }
  {
    std::ofstream f(dir.path() / "garbage.json");
    f << "{not json";
  }
  auto letters = list_dead_letters(dir.path());
  ASSERT_TRUE(letters.ok());
  ASSERT_EQ(letters->size(), 2u);
  const DeadLetter* old = nullptr;
  const DeadLetter* bad = nullptr;
  for (const auto& l : *letters) (l.kind == "unreadable" ? bad : old) = &l;
  ASSERT_NE(old, nullptr);
  ASSERT_NE(bad, nullptr);
  EXPECT_EQ(old->processor_id, "p7");
  EXPECT_EQ(old->from_offset, 4);
  EXPECT_EQ(old->to_offset, 9);
  EXPECT_EQ(old->rows, 2u);
  EXPECT_TRUE(old->shards.empty());
  EXPECT_EQ(old->kind, dead_letter_kinds::kRejected);
  EXPECT_EQ(bad->file, "garbage.json");
  auto body = replay_request_body(*old);
  ASSERT_TRUE(body.ok());
  EXPECT_FALSE(json::parse(*body).contains("shards"));
  EXPECT_EQ(json::parse(*body)["processor_id"], "p7-dlq");
}

TEST(DeadLetterTest, ASecondLetterForTheSameRangeGetsItsOwnFile) {
  testing::TempDir dir("dlq-twice");
  DeadLetter l;
  l.kind = dead_letter_kinds::kOverlap;
  l.processor_id = "p1";
  l.from_offset = 1;
  l.to_offset = 2;
  l.request = encode_apply_request("p1", batch(1, 2));
  auto a = write_dead_letter(dir.path(), l);
  auto b = write_dead_letter(dir.path(), l);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  auto letters = list_dead_letters(dir.path());
  ASSERT_TRUE(letters.ok());
  EXPECT_EQ(letters->size(), 2u);
  EXPECT_EQ((*letters)[0].kind, dead_letter_kinds::kOverlap);
}

TEST(ApplyCodecTest, PermanentFailuresAndShardAddressing) {
  ShardOutcome o;
  o.outcome = "failed";
  o.sqlstate = "23514";
  EXPECT_TRUE(permanent_shard_failure(o));
  o.sqlstate = "22003";
  EXPECT_TRUE(permanent_shard_failure(o));
  for (const char* transient : {"57P01", "40001", "08006", "25006", "53300", ""}) {
    o.sqlstate = transient;
    EXPECT_FALSE(permanent_shard_failure(o)) << transient;
  }
  o.outcome = "applied";
  o.sqlstate = "23514";
  EXPECT_FALSE(permanent_shard_failure(o));
  auto outcomes = parse_apply_response(
      R"({"shards":[{"shard":"-80","outcome":"failed","error":"x","sqlstate":"23514"}]})");
  ASSERT_TRUE(outcomes.ok());
  EXPECT_EQ((*outcomes)[0].sqlstate, "23514");
  json j = json::parse(with_shards(encode_apply_request("p1", batch(-1, 3)), {"-80", "80-"}));
  EXPECT_EQ(j["shards"], json::array({"-80", "80-"}));
  EXPECT_EQ(j["rows"].size(), 2u);
}

}  // namespace
}  // namespace tally::processor

namespace tally::processor {
namespace {

// The proxy's reply when shard -80 applies whatever batch it is sent.
FakeProxy::Reply applies_each_batch() {
  return [](const json& req) {
    return ok(json::array({shard("-80", "applied", req["to_offset"].get<int64_t>())}));
  };
}

TEST(CounterWriterTest, ATimedOutAttemptGetsTwiceTheTimeAndTheNormalTimeComesBackAfterSuccess) {
  testing::TempDir dir("writer-timeout");
  FakeProxy proxy;
  // The cluster proxy cancelled the statement on time twice (57014), then the shard applies it.
  proxy.then([](const json&) { return ok(json::array({shard("-80", "failed", -1, "57014")})); });
  proxy.then([](const json&) { return ok(json::array({shard("-80", "failed", -1, "57014")})); });
  proxy.then(applies_each_batch());
  Harness h(dir.path() / "dlq");
  h.options.timeout = std::chrono::milliseconds(1000);
  h.options.max_timeout = std::chrono::milliseconds(3000);
  h.metrics.timeouts = &h.registry.counter("timeouts", "h");
  auto w = h.start(proxy);
  w->enqueue(batch(-1, 10));
  ASSERT_TRUE(wait_until([&] { return w->applied_through() == 10; }));
  w->enqueue(batch(10, 20));
  ASSERT_TRUE(wait_until([&] { return w->applied_through() == 20; }));
  w->stop();
  using ms = std::chrono::milliseconds;
  // Doubled after each timeout, capped at max_timeout; back to normal after a quick success.
  EXPECT_EQ(proxy.timeouts(), (std::vector<ms>{ms(1000), ms(2000), ms(3000), ms(1000)}));
  EXPECT_EQ(h.metrics.timeouts->value(), 2u);
  EXPECT_EQ(h.metrics.dead_lettered->value(), 0u);
}

TEST(CounterWriterTest, ATimeoutHalvesTheRowsOfARequestAndSuccessesGrowThemBack) {
  testing::TempDir dir("writer-target-rows");
  FakeProxy proxy;
  proxy.then([](const json&) { return ok(json::array({shard("-80", "failed", -1, "57014")})); });
  proxy.then([](const json&) { return ok(json::array({shard("-80", "failed", -1, "57014")})); });
  proxy.then(applies_each_batch());
  Harness h(dir.path() / "dlq");
  h.options.max_request_rows = 100;
  auto w = h.start(proxy);
  EXPECT_EQ(w->target_rows(), 100u);
  w->enqueue(batch(-1, 10));
  ASSERT_TRUE(wait_until([&] { return w->applied_through() == 10; }));
  // Two timeouts (100 -> 50 -> 25), then a success (+ a quarter).
  EXPECT_EQ(w->target_rows(), 31u);
  for (int64_t i = 1; i <= 8; ++i) {  // one request each: 31 38 47 58 72 90 100 100
    w->enqueue(batch(i * 10, i * 10 + 10));
    ASSERT_TRUE(wait_until([&] { return w->applied_through() == i * 10 + 10; }));
  }
  EXPECT_EQ(w->target_rows(), 100u);  // back to the bound, never above it
  w->stop();
}

TEST(CounterWriterTest, QueuedBatchesMergeOnlyUpToMaxRequestRows) {
  testing::TempDir dir("writer-merge-bound");
  FakeProxy proxy;
  proxy.then(applies_each_batch());
  Harness h(dir.path() / "dlq");
  h.options.max_request_rows = 5;
  h.options.max_queued_rows = 1000;
  proxy.hold();
  auto w = h.start(proxy);
  // The first batch is taken at once and waits at the held proxy; the next five queue up.
  w->enqueue(batch_of(-1, 10, 2));
  ASSERT_TRUE(wait_until([&] { return w->queued() == 0; }));
  for (int64_t i = 1; i <= 5; ++i) ASSERT_TRUE(w->enqueue(batch_of(i * 10, i * 10 + 10, 2)));
  proxy.release();
  ASSERT_TRUE(wait_until([&] { return w->applied_through() == 60; }));
  w->stop();
  auto requests = proxy.requests();
  // (-1,10] alone; then (10,30] and (30,50] with 4 rows each (a third batch would make 6), then
  // (50,60].
  ASSERT_EQ(requests.size(), 4u);
  for (const auto& r : requests) EXPECT_LE(r["rows"].size(), 5u) << r.dump();
  EXPECT_EQ(requests[1]["from_offset"], 10);
  EXPECT_EQ(requests[1]["to_offset"], 30);
  EXPECT_EQ(requests[3]["to_offset"], 60);
}

TEST(CounterWriterTest, EnqueueWaitsWhileMaxQueuedRowsWaitAndGoesOnOnceTheyAreSent) {
  testing::TempDir dir("writer-queue-bound");
  FakeProxy proxy;
  proxy.then(applies_each_batch());
  Harness h(dir.path() / "dlq");
  h.options.max_request_rows = 2;
  h.options.max_queued_rows = 4;
  proxy.hold();
  auto w = h.start(proxy);
  w->enqueue(batch_of(-1, 10, 2));
  ASSERT_TRUE(wait_until([&] { return w->queued() == 0; }));  // in flight, at the held proxy
  ASSERT_TRUE(w->enqueue(batch_of(10, 20, 2)));
  ASSERT_TRUE(w->enqueue(batch_of(20, 30, 2)));
  EXPECT_EQ(w->queued_rows(), 4u);
  std::atomic<bool> entered{false}, returned{false};
  std::thread consumer([&] {
    entered = true;
    returned = w->enqueue(batch_of(30, 40, 2));
  });
  ASSERT_TRUE(wait_until([&] { return entered.load(); }));
  // The queue is full: the fifth batch must not get in while the proxy holds.
  EXPECT_FALSE(wait_until([&] { return w->queued_rows() > 4 || returned.load(); },
                          std::chrono::milliseconds(300)));
  proxy.release();
  consumer.join();
  EXPECT_TRUE(returned.load());
  ASSERT_TRUE(wait_until([&] { return w->applied_through() == 40; }));
  w->stop();
}

TEST(CounterWriterTest, StopEndsAnEnqueueWaitingForRoom) {
  testing::TempDir dir("writer-queue-stop");
  FakeProxy proxy;
  proxy.then([](const json&) { return ok(json::array({shard("-80", "applied", 10)})); });
  Harness h(dir.path() / "dlq");
  h.options.max_queued_rows = 2;
  proxy.hold();
  auto w = h.start(proxy);
  w->enqueue(batch_of(-1, 10, 2));
  ASSERT_TRUE(wait_until([&] { return w->queued() == 0; }));
  ASSERT_TRUE(w->enqueue(batch_of(10, 20, 2)));
  std::atomic<int> result{-1};
  std::thread consumer([&] { result = w->enqueue(batch_of(20, 30, 2)) ? 1 : 0; });
  std::thread stopper([&] { w->stop(); });
  ASSERT_TRUE(wait_until([&] { return result.load() >= 0; }));
  EXPECT_EQ(result.load(), 0);  // refused: the log replays it after a restart
  proxy.release();
  consumer.join();
  stopper.join();
}

}  // namespace
}  // namespace tally::processor
