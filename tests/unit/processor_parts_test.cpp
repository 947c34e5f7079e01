// Unit tests for the processor's parts below the server: the dedup cache (window, budget and the
// effective window, decisions that replay identically from a snapshot), the aggregator, the
// contract 9 request/response codec, the token bucket and the YAML config's errors.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>

#include "common/config/yaml_reader.h"
#include "processor/src/aggregator.h"
#include "processor/src/counter_writer.h"
#include "processor/src/dedup_cache.h"
#include "processor/src/processor_config.h"
#include "processor/src/rate_limiter.h"
#include "tests/support/test_env.h"

namespace tally::processor {
namespace {

DedupKey key(int i) {
  return dedup_key("video", "id-" + std::to_string(i));
}

TEST(Dedup, RepeatsWithinTheWindowAreDuplicates) {
  DedupCache d(1000, 100);
  EXPECT_FALSE(d.check(key(1), 0, 10'000));
  EXPECT_TRUE(d.check(key(1), 1, 10'500));   // a later offset, within the window
  EXPECT_FALSE(d.check(key(2), 1, 10'500));  // another id in the same record
  EXPECT_TRUE(d.check(key(1), 2, 11'000));   // exactly at the window's edge: still held
  EXPECT_FALSE(d.check(key(1), 3, 11'001));  // expired: counts again (and is remembered anew)
  EXPECT_TRUE(d.check(key(1), 4, 11'002));
  EXPECT_EQ(d.effective_window_ms(), 1000);
  // The same id for another video is another key.
  EXPECT_NE(dedup_key("a", "x"), dedup_key("b", "x"));
  EXPECT_NE(dedup_key("ab", "c"), dedup_key("a", "bc"));
}

TEST(Dedup, ReplayOfTheFirstOccurrenceCountsAgain) {
  DedupCache d(60'000, 100);
  EXPECT_FALSE(d.check(key(1), 5, 1000));
  EXPECT_TRUE(d.check(key(1), 7, 1000));
  // Replaying offsets 5..7 against the same state (after a restart from a newer snapshot):
  EXPECT_FALSE(d.check(key(1), 5, 1000));  // the first occurrence still counts
  EXPECT_TRUE(d.check(key(1), 7, 1000));   // the repeat is still dropped
}

TEST(Dedup, BudgetShrinksTheEffectiveWindow) {
  DedupCache d(600'000, 10);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(d.check(key(i), i, 1000 + i * 100));
  EXPECT_EQ(d.size(), 10u);
  EXPECT_EQ(d.effective_window_ms(), 900);   // full: the oldest id is 900 ms old
  EXPECT_FALSE(d.check(key(10), 10, 2000));  // forces out key(0)
  EXPECT_EQ(d.size(), 10u);
  EXPECT_EQ(d.evicted_early(), 1u);
  EXPECT_EQ(d.effective_window_ms(), 900);  // now - ts of key(1)
  EXPECT_FALSE(d.check(key(0), 11, 2000));  // forgotten early: counted again
  EXPECT_TRUE(d.check(key(9), 12, 2000));   // young ids are still held
  EXPECT_EQ(DedupCache::capacity_for(static_cast<int64_t>(DedupCache::kBytesPerEntry * 1000) + 1),
            1000u);
}

TEST(Dedup, ManyIdsWithEvictionKeepProbeChainsIntact) {
  // Backward-shift deletion: after many evictions every held id must still be found.
  DedupCache d(1'000'000, 5000);
  for (int i = 0; i < 50'000; ++i) ASSERT_FALSE(d.check(key(i), i, i)) << i;
  for (int i = 45'000; i < 50'000; ++i) ASSERT_TRUE(d.check(key(i), 60'000, 50'000)) << i;
  for (int i = 0; i < 45'000; i += 997) ASSERT_FALSE(d.check(key(i), 60'001, 50'000)) << i;
}

TEST(Dedup, SnapshotRoundTripAndDamage) {
  testing::TempDir dir("proc-dedup");
  auto file = dir.path() / "dedup.snapshot";
  DedupCache a(60'000, 1000);
  for (int i = 0; i < 100; ++i) a.check(key(i), i, 1000 + i);
  ASSERT_TRUE(a.save(file, 99).ok());
  DedupCache b(60'000, 1000);
  auto covered = b.load(file);
  ASSERT_TRUE(covered.ok()) << covered.error().message;
  EXPECT_EQ(*covered, 99);
  EXPECT_EQ(b.size(), 100u);
  EXPECT_TRUE(b.check(key(50), 100, 2000));  // held, first seen at 50
  EXPECT_FALSE(b.check(key(50), 50, 2000));  // the first occurrence itself
  EXPECT_FALSE(b.check(key(1000), 100, 2000));
  // A smaller cache keeps the newest entries.
  DedupCache small(60'000, 10);
  ASSERT_TRUE(small.load(file).ok());
  EXPECT_EQ(small.size(), 10u);
  EXPECT_TRUE(small.check(key(99), 100, 2000));
  EXPECT_FALSE(small.check(key(0), 100, 2000));
  // Missing and damaged files.
  DedupCache c(60'000, 10);
  EXPECT_EQ(c.load(dir.path() / "nope").error().code, ErrorCode::kNotFound);
  {
    std::string bytes;
    std::ifstream in(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
    bytes[40] ^= 1;
    std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
  }
  auto damaged = c.load(file);
  ASSERT_FALSE(damaged.ok());
  EXPECT_NE(damaged.error().message.find("checksum mismatch"), std::string::npos);
}

TEST(Aggregator, CountsAndSumsPerVideoTypeMinute) {
  Aggregator agg;
  agg.add("a", EventType::kView, 60'000, 0);
  agg.add("a", EventType::kView, 119'999, 0);
  agg.add("a", EventType::kView, 120'000, 0);
  agg.add("a", EventType::kWatchTime, 61'000, 1500);
  agg.add("a", EventType::kWatchTime, 62'000, 500);
  agg.add("b", EventType::kView, 60'000, 0);
  EXPECT_EQ(agg.rows(), 4u);
  auto rows = agg.take();
  EXPECT_EQ(agg.rows(), 0u);
  std::map<std::tuple<std::string, int, int64_t>, std::pair<int64_t, int64_t>> got;
  for (const auto& r : rows) {
    got[{r.video_id, static_cast<int>(r.type), r.minute_ms}] = {r.count, r.sum};
  }
  EXPECT_EQ((got[{"a", 0, 60'000}]), std::make_pair(int64_t{2}, int64_t{0}));
  EXPECT_EQ((got[{"a", 0, 120'000}]), std::make_pair(int64_t{1}, int64_t{0}));
  EXPECT_EQ((got[{"a", 4, 60'000}]), std::make_pair(int64_t{2}, int64_t{2000}));
  EXPECT_EQ((got[{"b", 0, 60'000}]), std::make_pair(int64_t{1}, int64_t{0}));
}

TEST(ApplyCodec, RequestIsContract9Json) {
  FlushBatch b;
  b.partition = 3;
  b.from_offset = 100;
  b.to_offset = 250;
  b.rows.push_back(CounterRow{"dQw4w9WgXcQ", EventType::kView, 1763800000000 - 40000, 5, 0});
  b.rows.push_back(CounterRow{"x", EventType::kWatchTime, 60000, 2, 3000});
  auto j = nlohmann::json::parse(encode_apply_request("p1", b));
  EXPECT_EQ(j["processor_id"], "p1");
  EXPECT_EQ(j["partition"], 3);
  EXPECT_EQ(j["from_offset"], 100);
  EXPECT_EQ(j["to_offset"], 250);
  ASSERT_EQ(j["rows"].size(), 2u);
  EXPECT_EQ(j["rows"][0]["video_id"], "dQw4w9WgXcQ");
  EXPECT_EQ(j["rows"][0]["event_type"], "view");
  EXPECT_EQ(j["rows"][0]["minute"], 1763799960000);
  EXPECT_EQ(j["rows"][0]["count"], 5);
  EXPECT_EQ(j["rows"][1]["event_type"], "watch_time");
  EXPECT_EQ(j["rows"][1]["sum"], 3000);
  FlushBatch empty;
  EXPECT_EQ(nlohmann::json::parse(encode_apply_request("p1", empty))["rows"].size(), 0u);
}

TEST(ApplyCodec, ResponsesAndMarks) {
  auto r = parse_apply_response(
      R"({"shards":[{"shard":"-80","outcome":"applied","mark":250},
                    {"shard":"80-","outcome":"failed","error":"connection refused"}],
          "token":"t"})");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].mark, 250);
  EXPECT_EQ((*r)[1].outcome, "failed");
  EXPECT_EQ((*r)[1].mark, -1);
  EXPECT_EQ((*r)[1].error, "connection refused");
  EXPECT_FALSE(parse_apply_response("{}").ok());
  EXPECT_FALSE(parse_apply_response(R"({"shards":[{"shard":"-80","outcome":"maybe"}]})").ok());

  auto m = parse_marks_response(
      R"({"shards":[{"shard":"-80","marks":{"0":250,"3":17}},{"shard":"80-","marks":{}}]})");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(partition_marks(*m, 0), (std::vector<int64_t>{250, -1}));
  EXPECT_EQ(partition_marks(*m, 3), (std::vector<int64_t>{17, -1}));
  EXPECT_EQ(partition_marks(*m, 1), (std::vector<int64_t>{-1, -1}));
  EXPECT_EQ(partition_marks(ShardMarks{}, 1), (std::vector<int64_t>{-1}));
  EXPECT_FALSE(parse_marks_response(R"({"shards":[{"shard":"-80","marks":{"x":1}}]})").ok());
}

TEST(TokenBucket, RateBurstAndRetryAfter) {
  ManualClock clock;
  TokenBucket b(100, 200, clock);  // 100 events/s, burst 200
  EXPECT_EQ(b.take(150), 0);
  EXPECT_EQ(b.take(50), 0);
  EXPECT_EQ(b.take(10), 100);  // empty: 10 tokens take 100 ms
  clock.advance(100);
  EXPECT_EQ(b.take(10), 0);
  clock.advance(10'000);      // refills to the burst, not beyond
  EXPECT_EQ(b.take(500), 0);  // larger than the burst: allowed when full, into debt
  EXPECT_GT(b.take(1), 3000);
}

TEST(ProcessorConfig, ReadsEveryKeyAndNamesMistakes) {
  auto c = parse_processor_config(R"(
processor:
  id: p-1
  data_dir: /tmp/x
  partitions: 8
  http: {port: 16006, threads: 3, max_body_bytes: 2048}
  log: {segment_bytes: 8388608, fsync: false}
  limits: {max_events_per_request: 10, max_event_age_ms: 5, max_event_future_ms: 6,
           max_value: 7, max_backlog_events: 8, retry_after_s: 2}
  dedup: {window_ms: 1000, memory_bytes: 1048576, snapshot_interval_ms: 500}
  flush: {interval_ms: 100, max_batch_rows: 9}
  cluster_proxy: {url: "http://127.0.0.1:16001", token: t, timeout_ms: 100, max_backoff_ms: 200}
  api_keys:
    gw: {key: abcdefgh, events_per_second: 10, burst: 20}
)",
                                  "test.yaml");
  EXPECT_EQ(c.id, "p-1");
  EXPECT_EQ(c.partitions, 8);
  EXPECT_EQ(c.http_threads, 3);
  EXPECT_FALSE(c.fsync);
  EXPECT_EQ(c.event_limits.max_events, 10u);
  EXPECT_EQ(c.event_limits.max_value, 7);
  EXPECT_EQ(c.max_backlog_events, 8);
  EXPECT_EQ(c.dedup_window_ms, 1000);
  EXPECT_EQ(c.flush_interval_ms, 100);
  EXPECT_EQ(c.cluster_proxy_url, "http://127.0.0.1:16001");
  ASSERT_EQ(c.api_keys.size(), 1u);
  EXPECT_EQ(c.api_keys[0].burst, 20);

  auto error_of = [](const std::string& text) {
    try {
      parse_processor_config(text, "bad.yaml");
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string base = "processor:\n  id: p1\n  data_dir: /tmp/x\n  http: {port: 1}\n";
  EXPECT_NE(error_of(base + "  partitons: 4\n").find("partitons"), std::string::npos);
  EXPECT_NE(error_of("processor:\n  id: \"p 1\"\n  data_dir: /x\n  http: {port: 1}\n")
                .find("expected 1-64 characters of [A-Za-z0-9_-]"),
            std::string::npos);
  EXPECT_NE(error_of(base + "  cluster_proxy: {url: \"https://x:1\"}\n").find("http://"),
            std::string::npos);
  EXPECT_NE(error_of(base + "  api_keys: {a: {key: short}}\n").find("at least 8"),
            std::string::npos);
  EXPECT_NE(error_of(base + "  partitions: 0\n").find("bad.yaml"), std::string::npos);
}

}  // namespace
}  // namespace tally::processor
