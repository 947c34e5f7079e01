// Loadgen's audit against a small FAKE ingest and stats endpoint: a pair whose read failed is read
// again (its count is unknown, not wrong) even after the wait is over, up to a bounded number of
// passes; a wrong count is reported after one pass once the wait is over.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "common/http/http_server.h"
#include "tools/loadgen/src/loadgen.h"

namespace tally {
namespace {

using json = nlohmann::json;

// POST /v1/events counts what it gets; POST /v1/stats:batchGet answers those counts, after
// `failing_reads` whole requests answered 504 and with `extra` added to one video's likes.
class FakeTally {
 public:
  FakeTally() : server_(HttpServerOptions{}) {
    server_.route("POST", "/v1/events", [this](HttpRequest&& r, Responder respond) {
      json events = json::parse(r.body);
      std::lock_guard lock(mu_);
      for (const auto& e : events) ++counts_[{e["video_id"], e["event_type"]}];
      respond(HttpResponse::json(
          200, R"({"accepted":)" + std::to_string(events.size()) + R"(,"rejected":[]})"));
    });
    server_.route("POST", "/v1/stats:batchGet", [this](HttpRequest&& r, Responder respond) {
      ++batch_gets;
      if (failing_reads > 0) {
        --failing_reads;
        return respond(HttpResponse::error(504, "shard 80- did not answer within 2000 ms"));
      }
      json answer = {{"results", json::array()}};
      std::lock_guard lock(mu_);
      const json request = json::parse(r.body);
      for (const auto& q : request["requests"]) {
        std::pair<std::string, std::string> key{q["video_id"], q["event_type"]};
        int64_t count = counts_.count(key) ? counts_[key] : 0;
        if (key.first == extra_video && key.second == "like") count += extra;
        answer["results"].push_back({{"count", count}, {"sum", 0}});
      }
      respond(HttpResponse::json(200, answer.dump()));
    });
    EXPECT_TRUE(server_.start().ok());
  }
  ~FakeTally() { server_.stop(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()); }

  std::atomic<int> failing_reads{0};
  std::atomic<int> batch_gets{0};
  std::string extra_video;
  int64_t extra = 0;

 private:
  HttpServer server_;
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, int64_t> counts_;
};

std::unique_ptr<Loadgen> ran_loadgen(const FakeTally& tally) {
  LoadgenOptions o;
  o.ingest_url = tally.url();
  o.rest_url = tally.url();
  o.rate = 2000;
  o.duration = std::chrono::milliseconds(300);
  o.videos = 20;
  o.duplicate_percent = 0;
  o.watch_time_percent = 0;
  auto lg = Loadgen::create(o);
  EXPECT_TRUE(lg.ok()) << lg.error().message;
  (*lg)->run();
  EXPECT_GT((*lg)->stats().events_accepted, 0);
  return std::move(*lg);
}

TEST(LoadgenAuditTest, AFailedReadIsReadAgainAfterTheWait) {
  FakeTally tally;
  auto lg = ran_loadgen(tally);
  tally.failing_reads = 2;  // the first pass and the second fail, the third reads
  auto report = lg->audit(std::chrono::milliseconds(0));
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_TRUE(report->ok()) << format_audit(lg->stats(), *report);
  EXPECT_EQ(tally.batch_gets, 3);
  EXPECT_EQ(report->reread_pairs, 2 * report->keys);
  EXPECT_EQ(report->got_events, report->expected_events);
  EXPECT_NE(format_audit(lg->stats(), *report).find("pair reads repeated"), std::string::npos);
}

TEST(LoadgenAuditTest, ReadsThatKeepFailingEndAsMismatchesNamingTheError) {
  FakeTally tally;
  auto lg = ran_loadgen(tally);
  tally.failing_reads = 1000;
  auto report = lg->audit(std::chrono::milliseconds(0));
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_FALSE(report->ok());
  EXPECT_EQ(tally.batch_gets, 5);  // a bounded number of passes
  ASSERT_EQ(report->mismatches.size(), report->keys);
  EXPECT_NE(report->mismatches[0].error.find("504"), std::string::npos);
}

TEST(LoadgenAuditTest, AWrongCountIsReportedAfterOnePassOnceTheWaitIsOver) {
  FakeTally tally;
  auto lg = ran_loadgen(tally);
  tally.extra_video = lg->video_id(0);
  tally.extra = 1;
  auto report = lg->audit(std::chrono::milliseconds(0));
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(tally.batch_gets, 1);
  ASSERT_EQ(report->mismatches.size(), 1u) << format_audit(lg->stats(), *report);
  EXPECT_EQ(report->mismatches[0].key.video_id, lg->video_id(0));
  EXPECT_EQ(report->mismatches[0].got.count, report->mismatches[0].expected.count + 1);
  EXPECT_TRUE(report->mismatches[0].error.empty());
}

}  // namespace
}  // namespace tally
