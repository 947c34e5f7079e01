// The cluster proxy's pure parts: instants and rounding (contract 2), range tiling, request
// validation (400s naming parameter, value and expected form), read tokens, statement parameters
// and the circuit breaker.
#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <set>

#include "cluster_proxy/src/api_request.h"
#include "cluster_proxy/src/shard_statements.h"
#include "cluster_proxy/src/time_range.h"
#include "common/core/circuit_breaker.h"
#include "common/core/clock.h"

namespace tally::cluster_proxy {
namespace {

using Query = std::vector<std::pair<std::string, std::string>>;

constexpr int64_t k2025_11_22 = 1763769600000;  // 2025-11-22T00:00:00Z

TEST(TimeRangeTest, ParsesRfc3339AndEpochMilliseconds) {
  auto t = parse_instant("2025-11-22T00:00:00Z");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->ms, k2025_11_22);
  EXPECT_EQ(parse_instant("1763769600000")->ms, k2025_11_22);
  EXPECT_EQ(parse_instant("2025-11-22T01:30:00+01:30")->ms, k2025_11_22);
  EXPECT_EQ(parse_instant("2025-11-21T23:00:00-01:00")->ms, k2025_11_22);
  EXPECT_EQ(parse_instant("2025-11-22T00:00:00.250Z")->ms, k2025_11_22 + 250);
  EXPECT_EQ(parse_instant("2025-11-22T00:00:00.5Z")->ms, k2025_11_22 + 500);
  auto fine = parse_instant("2025-11-22T00:00:00.0001Z");
  EXPECT_EQ(fine->ms, k2025_11_22);
  EXPECT_TRUE(fine->sub_ms);
  EXPECT_EQ(parse_instant("1970-01-01T00:00:00Z")->ms, 0);
  EXPECT_EQ(parse_instant("2024-02-29T00:00:00Z")->ms, 1709164800000);
  EXPECT_EQ(parse_instant("9999-12-31T23:59:59.999Z")->ms, kMaxInstantMs);
  for (const char* bad :
       {"", "abc", "2025-11-22", "2025-11-22T00:00:00", "2025-13-01T00:00:00Z",
        "2025-02-29T00:00:00Z", "2025-11-22T24:00:00Z", "2025-11-22T00:60:00Z",
        "2025-11-22 00:00:00Z", "1969-12-31T23:59:59Z", "-5", "1e12", "2025-11-22T00:00:00.Z",
        "2025-11-22T00:00:00+0100", "253402300800000", "2025-11-22T00:00:00Zjunk"}) {
    SCOPED_TRACE(bad);
    auto r = parse_instant(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("RFC 3339"), std::string::npos);
  }
  EXPECT_EQ(format_rfc3339(k2025_11_22), "2025-11-22T00:00:00Z");
  EXPECT_EQ(format_rfc3339(k2025_11_22 + 61250), "2025-11-22T00:01:01.250Z");
  EXPECT_EQ(format_sql_timestamptz(k2025_11_22 + 3600000), "2025-11-22 01:00:00.000+00");
  EXPECT_EQ(format_rfc3339(kMaxInstantMs), "9999-12-31T23:59:59.999Z");
}

TEST(TimeRangeTest, StartRoundsDownEndRoundsUpToWholeMinutes) {
  Span s = round_to_minutes({k2025_11_22 + 59999, false}, {k2025_11_22 + 60001, false});
  EXPECT_EQ(s.start_ms, k2025_11_22);
  EXPECT_EQ(s.end_ms, k2025_11_22 + 120000);
  s = round_to_minutes({k2025_11_22, false}, {k2025_11_22 + 60000, false});
  EXPECT_EQ(s.end_ms, k2025_11_22 + 60000);  // already whole: unchanged
  s = round_to_minutes({k2025_11_22, false}, {k2025_11_22 + 60000, true});
  EXPECT_EQ(s.end_ms, k2025_11_22 + 120000);  // a hair past the minute rounds up
}

// Checks that a tiling covers `span` exactly, in order, each part aligned to its granularity, and
// that no coarser bucket would have fit where a finer one is used.
void expect_exact_tiling(Span span, Granularity coarsest) {
  Tiling t = tile(span, coarsest);
  const Span parts[] = {t.minute_lo, t.hour_lo, t.day, t.hour_hi, t.minute_hi};
  const int64_t units[] = {kMinuteMs, kHourMs, kDayMs, kHourMs, kMinuteMs};
  int64_t at = span.start_ms;
  for (int i = 0; i < 5; ++i) {
    if (parts[i].empty()) continue;
    ASSERT_EQ(parts[i].start_ms, at) << "part " << i << " not adjacent";
    ASSERT_EQ(parts[i].start_ms % units[i], 0) << "part " << i;
    ASSERT_EQ(parts[i].end_ms % units[i], 0) << "part " << i;
    at = parts[i].end_ms;
  }
  ASSERT_EQ(at, span.end_ms) << "tiling does not reach the end";
  if (coarsest == Granularity::kMinute) {
    EXPECT_TRUE(t.hour_lo.empty() && t.day.empty() && t.hour_hi.empty());
    return;
  }
  // Minutes only at the ends, shorter than an hour; hours shorter than a day on each side.
  auto no_whole = [](const Span& s, int64_t unit) {
    int64_t b = (s.start_ms + unit - 1) / unit * unit;
    EXPECT_GT(b + unit, s.end_ms) << "a whole bucket of " << unit << " ms fits in a finer part";
  };
  no_whole(t.minute_lo, kHourMs);
  no_whole(t.minute_hi, kHourMs);
  if (coarsest == Granularity::kDay) {
    // No whole UTC day fits inside an hour part.
    no_whole(t.hour_lo, kDayMs);
    no_whole(t.hour_hi, kDayMs);
    // A whole UTC day inside the span is read as a day row.
    int64_t first_day = (span.start_ms + kDayMs - 1) / kDayMs * kDayMs;
    if (first_day + kDayMs <= span.end_ms) {
      EXPECT_EQ(t.day.start_ms, first_day);
    }
  } else {
    EXPECT_TRUE(t.day.empty());
  }
}

TEST(TimeRangeTest, TilingIsExactAndCoarsest) {
  // 2025-11-22T08:27 .. 2025-11-25T10:03: minutes, hours, two days, hours, minutes.
  Span span{k2025_11_22 + 8 * kHourMs + 27 * kMinuteMs,
            k2025_11_22 + 3 * kDayMs + 10 * kHourMs + 3 * kMinuteMs};
  Tiling t = tile(span, Granularity::kDay);
  EXPECT_EQ(t.minute_lo, (Span{span.start_ms, k2025_11_22 + 9 * kHourMs}));
  EXPECT_EQ(t.hour_lo, (Span{k2025_11_22 + 9 * kHourMs, k2025_11_22 + kDayMs}));
  EXPECT_EQ(t.day, (Span{k2025_11_22 + kDayMs, k2025_11_22 + 3 * kDayMs}));
  EXPECT_EQ(t.hour_hi, (Span{k2025_11_22 + 3 * kDayMs, k2025_11_22 + 3 * kDayMs + 10 * kHourMs}));
  EXPECT_EQ(t.minute_hi, (Span{k2025_11_22 + 3 * kDayMs + 10 * kHourMs, span.end_ms}));
  // A range inside one hour is minutes only; whole days are one day part.
  Tiling small = tile({k2025_11_22 + kMinuteMs, k2025_11_22 + 5 * kMinuteMs}, Granularity::kDay);
  EXPECT_EQ(small.minute_lo, (Span{k2025_11_22 + kMinuteMs, k2025_11_22 + 5 * kMinuteMs}));
  EXPECT_TRUE(small.hour_lo.empty() && small.day.empty());
  Tiling days = tile({k2025_11_22, k2025_11_22 + 365 * kDayMs}, Granularity::kDay);
  EXPECT_EQ(days.day, (Span{k2025_11_22, k2025_11_22 + 365 * kDayMs}));
  EXPECT_TRUE(days.minute_lo.empty() && days.hour_lo.empty() && days.hour_hi.empty());

  std::mt19937_64 rng(42);
  for (int i = 0; i < 20000; ++i) {
    int64_t start = k2025_11_22 + static_cast<int64_t>(rng() % (5 * 1440)) * kMinuteMs;
    int64_t len = static_cast<int64_t>(1 + rng() % (4 * 1440)) * kMinuteMs;
    for (auto g : {Granularity::kMinute, Granularity::kHour, Granularity::kDay}) {
      ASSERT_NO_FATAL_FAILURE(expect_exact_tiling({start, start + len}, g))
          << "start " << start << " len " << len << " g " << granularity_name(g);
    }
  }
}

TEST(ApiRequestTest, StatsQueryValidAndRounded) {
  ApiLimits limits;
  auto q = parse_stats_query("dQw4w9WgXcQ",
                             Query{{"event_type", "watch_time"},
                                   {"function", "avg"},
                                   {"start", "2025-11-22T00:00:30Z"},
                                   {"end", "2025-11-22T01:00:01Z"},
                                   {"granularity", "minute"}},
                             limits);
  ASSERT_TRUE(q.ok()) << q.error().message;
  EXPECT_EQ(q->request.video_id, "dQw4w9WgXcQ");
  EXPECT_EQ(q->request.function, StatFunction::kAvg);
  EXPECT_EQ(q->request.range.start_ms, k2025_11_22);
  EXPECT_EQ(q->request.range.end_ms, k2025_11_22 + 61 * kMinuteMs);
  EXPECT_EQ(q->request.granularity, Granularity::kMinute);
  EXPECT_FALSE(q->token.has_value());
}

// A bad request's error: 400, naming the parameter and the expected form.
void expect_bad(const ApiError& e, const std::string& parameter, const std::string& expected_part) {
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.parameter, parameter) << e.message;
  EXPECT_NE(e.expected.find(expected_part), std::string::npos) << e.expected;
  EXPECT_NE(e.message.find(parameter), std::string::npos) << e.message;
}

TEST(ApiRequestTest, StatsQueryErrorsNameTheParameter) {
  ApiLimits limits;
  limits.max_range_ms = 10 * kDayMs;
  limits.max_series_points = 100;
  const Query good{
      {"event_type", "view"}, {"start", "2025-11-22T00:00:00Z"}, {"end", "2025-11-23T00:00:00Z"}};
  auto with = [&](const std::string& k, const std::string& v) {
    Query q;
    for (const auto& [a, b] : good) {
      if (a != k) q.emplace_back(a, b);
    }
    if (!v.empty()) q.emplace_back(k, v);
    return q;
  };
  auto bad = [&](std::string_view id, const Query& q) {
    auto r = parse_stats_query(id, q, limits);
    EXPECT_FALSE(r.ok());
    return r.ok() ? ApiError{} : r.error();
  };
  expect_bad(bad("a b", good), "video_id", "[A-Za-z0-9_-]");
  expect_bad(bad("a%2Fb", good), "video_id", "[A-Za-z0-9_-]");
  expect_bad(bad(std::string(65, 'x'), good), "video_id", "1-64");
  expect_bad(bad("ok", with("event_type", "vue")), "event_type", "watch_time");
  expect_bad(bad("ok", with("event_type", "")), "event_type", "missing");
  expect_bad(bad("ok", with("function", "median")), "function", "count, sum, avg");
  expect_bad(bad("ok", with("start", "yesterday")), "start", "RFC 3339");
  expect_bad(bad("ok", with("end", "2025-11-21T00:00:00Z")), "end", "after start");
  expect_bad(bad("ok", with("end", "2025-11-22T00:00:00Z")), "end", "after start");
  expect_bad(bad("ok", with("end", "2026-11-22T00:00:00Z")), "end", "at most 10 days");
  expect_bad(bad("ok", with("granularity", "week")), "granularity", "minute, hour, day");
  expect_bad(bad("ok", with("granularity", "minute")), "granularity", "at most 100 points");
  expect_bad(bad("ok", with("token", "garbage")), "token", "read-your-writes token");
  Query typo = good;
  typo.emplace_back("evnt_type", "view");
  expect_bad(bad("ok", typo), "evnt_type", "one of the parameters");
  Query twice = good;
  twice.emplace_back("start", "2025-11-22T00:00:00Z");
  expect_bad(bad("ok", twice), "start", "at most once");
}

TEST(ApiRequestTest, BatchGetAndTop) {
  ApiLimits limits;
  limits.max_batch_items = 2;
  auto b = parse_batch_get(
      R"({"requests":[{"video_id":"a","event_type":"view","start":"1763769600000","end":"1763773200000"},
                      {"video_id":"b","event_type":"like","function":"sum","start":"2025-11-22T00:00:00Z","end":"2025-11-22T00:01:00Z","granularity":"minute"}],
          "token":"-80@0/16B3748"})",
      limits);
  ASSERT_TRUE(b.ok()) << b.error().message;
  ASSERT_EQ(b->requests.size(), 2u);
  EXPECT_EQ(b->requests[1].function, StatFunction::kSum);
  EXPECT_EQ(b->token->lsn_by_shard.at("-80"), 0x16B3748u);
  auto err = [&](std::string_view body) {
    auto r = parse_batch_get(body, limits);
    EXPECT_FALSE(r.ok()) << body;
    return r.ok() ? ApiError{} : r.error();
  };
  expect_bad(err("{"), "body", "JSON object");
  expect_bad(err("[]"), "body", "JSON object");
  expect_bad(err(R"({"requests":[]})"), "requests", "non-empty");
  expect_bad(err(R"({"requests":[1,2,3]})"), "requests", "at most 2");
  expect_bad(err(R"({"requests":[{"video_id":"a","event_type":"view","start":"1","end":5}]})"),
             "requests[0].end", "string");
  expect_bad(
      err(R"({"requests":[{"video_id":"a","event_type":"view","start":"1","end":"2","x":1}]})"),
      "requests[0].x", "one of the fields");

  auto t = parse_top_query(Query{{"event_type", "view"},
                                 {"start", "2025-11-22T00:00:00Z"},
                                 {"end", "2025-11-23T00:00:00Z"},
                                 {"limit", "7"},
                                 {"function", "sum"}},
                           limits);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->limit, 7);
  EXPECT_EQ(t->function, StatFunction::kSum);
  for (const char* bad : {"0", "-1", "abc", "1001", ""}) {
    auto r = parse_top_query(Query{{"event_type", "view"},
                                   {"start", "2025-11-22T00:00:00Z"},
                                   {"end", "2025-11-23T00:00:00Z"},
                                   {"limit", bad}},
                             ApiLimits{});
    ASSERT_FALSE(r.ok()) << bad;
    expect_bad(r.error(), "limit", "1 to 1000");
  }
  auto avg = parse_top_query(Query{{"event_type", "view"},
                                   {"start", "2025-11-22T00:00:00Z"},
                                   {"end", "2025-11-23T00:00:00Z"},
                                   {"function", "avg"}},
                             limits);
  ASSERT_FALSE(avg.ok());
  expect_bad(avg.error(), "function", "count, sum");
}

TEST(ApiRequestTest, ApplyBodyAddsKsidAndValidatesRows) {
  ApiLimits limits;
  auto a = parse_apply(R"({"processor_id":"p1","partition":3,"from_offset":100,"to_offset":250,
      "rows":[{"video_id":"dQw4w9WgXcQ","event_type":"view","minute":1763800020000,"count":5,"sum":0},
              {"video_id":"a","event_type":"watch_time","minute":1763800020000,"count":1,"sum":-7}]})",
                       limits);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->partition, 3);
  ASSERT_EQ(a->rows.size(), 2u);
  EXPECT_EQ(a->rows[0].ksid, 0x914f4969781d043aULL);  // contract 1's golden vector
  EXPECT_EQ(a->rows[1].sum, -7);
  std::string rows = apply_rows_json(*a, {1});
  EXPECT_EQ(rows,
            "[{\"video_id\":\"a\",\"event_type\":\"watch_time\",\"minute\":1763800020000,"
            "\"count\":1,\"sum\":-7,\"ksid\":" +
                std::to_string(ksid_to_sql(0xd24ec4f1a98c6e5bULL)) + "}]");
  EXPECT_EQ(apply_rows_json(*a, {}), "[]");

  auto err = [&](std::string_view body) {
    auto r = parse_apply(body, limits);
    EXPECT_FALSE(r.ok()) << body;
    return r.ok() ? ApiError{} : r.error();
  };
  const std::string head = R"({"processor_id":"p1","partition":0,"from_offset":-1,"to_offset":5,)";
  expect_bad(
      err(head +
          R"("rows":[{"video_id":"a","event_type":"view","minute":1763800020001,"count":1}]})"),
      "rows[0].minute", "multiple of 60000");
  expect_bad(
      err(head +
          R"("rows":[{"video_id":"a","event_type":"view","minute":1763800020000,"count":-1}]})"),
      "rows[0].count", ">= 0");
  expect_bad(
      err(head +
          R"("rows":[{"video_id":"a","event_type":"view","minute":1763800020000,"count":1.5}]})"),
      "rows[0].count", ">= 0");
  expect_bad(
      err(head +
          R"("rows":[{"video_id":"a b","event_type":"view","minute":1763800020000,"count":1}]})"),
      "rows[0].video_id", "[A-Za-z0-9_-]");
  expect_bad(
      err(head +
          R"("rows":[{"video_id":"a","event_type":"views","minute":1763800020000,"count":1}]})"),
      "rows[0].event_type", "watch_time");
  expect_bad(
      err(head +
          R"("rows":[{"video_id":"a","event_type":"view","minute":1763800020000,"count":1,"ksid":5}]})"),
      "rows[0].ksid", "one of the fields");
  expect_bad(err(head + R"("rows":{}})"), "rows", "array");
  expect_bad(err(R"({"processor_id":"p1","partition":0,"from_offset":5,"to_offset":5,"rows":[]})"),
             "to_offset", "> from_offset");
  expect_bad(err(R"({"processor_id":"p1","partition":0,"from_offset":-2,"to_offset":5,"rows":[]})"),
             "from_offset", ">= -1");
  expect_bad(err(R"({"processor_id":"","partition":0,"from_offset":1,"to_offset":5,"rows":[]})"),
             "processor_id", "processor id");
  expect_bad(err(R"({"processor_id":"p","partition":-1,"from_offset":1,"to_offset":5,"rows":[]})"),
             "partition", "0 to 2147483647");
  expect_bad(err(R"({"processor_id":"p","from_offset":1,"to_offset":5,"rows":[]})"), "partition",
             "missing");
  // A repeated field is refused rather than silently resolved either way.
  expect_bad(
      err(head +
          R"("rows":[{"video_id":"a","event_type":"view","minute":1763800020000,"count":1,"count":2}]})"),
      "rows[0].count", "at most once");
  expect_bad(err(head + R"("rows":[],"rows":[]})"), "rows", "at most once");
  expect_bad(
      err(head +
          R"("rows":[{"video_id":"a","event_type":"view","minute":1763800020000,"count":9223372036854775808}]})"),
      "rows[0].count", ">= 0");
  expect_bad(err(head + R"("rows":[{"video_id":"a","event_type":"view","count":1}]})"),
             "rows[0].minute", "missing");
  expect_bad(err(head + R"("rows":[7]})"), "rows[0]", "JSON object");
  expect_bad(err(R"([1,2])"), "body", "JSON object");
  expect_bad(err(R"({"processor_id":"p1",)"), "body", "not valid JSON");
}

TEST(ApiRequestTest, ApplyParsesALargeBatchRowByRow) {
  ApiLimits limits;
  std::string body =
      R"({"processor_id":"p1","partition":0,"from_offset":-1,"to_offset":5,"rows":[)";
  constexpr int kRows = 50000;
  for (int i = 0; i < kRows; ++i) {
    body += (i ? "," : "");
    body += R"({"video_id":"v)" + std::to_string(i) +
            R"(","event_type":"like","minute":1763800020000,"count":)" + std::to_string(i + 1) +
            "}";
  }
  body += "]}";
  auto a = parse_apply(body, limits);
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_EQ(a->rows.size(), static_cast<size_t>(kRows));
  EXPECT_EQ(a->rows[kRows - 1].video_id, "v" + std::to_string(kRows - 1));
  EXPECT_EQ(a->rows[kRows - 1].count, kRows);
  EXPECT_EQ(a->rows[kRows - 1].sum, 0);
  limits.max_apply_rows = kRows - 1;
  auto over = parse_apply(body, limits);
  ASSERT_FALSE(over.ok());
  expect_bad(over.error(), "rows", "at most 49999 rows");
}

TEST(ApiRequestTest, ApplyShardsAddressARetryToSomeShards) {
  ApiLimits limits;
  const std::string head =
      R"({"processor_id":"p1","partition":0,"from_offset":-1,"to_offset":5,"rows":[])";
  auto all = parse_apply(head + "}", limits);
  ASSERT_TRUE(all.ok()) << all.error().message;
  EXPECT_FALSE(all->shards.has_value());  // old requests: every shard
  auto some = parse_apply(head + R"(,"shards":["80-","-80"]})", limits);
  ASSERT_TRUE(some.ok()) << some.error().message;
  EXPECT_EQ(*some->shards, (std::vector<std::string>{"80-", "-80"}));

  auto err = [&](std::string_view tail) {
    auto r = parse_apply(head + std::string(tail), limits);
    EXPECT_FALSE(r.ok()) << tail;
    return r.ok() ? ApiError{} : r.error();
  };
  expect_bad(err(R"(,"shards":[]})"), "shards", "non-empty JSON array");
  expect_bad(err(R"(,"shards":"-80"})"), "shards", "non-empty JSON array");
  expect_bad(err(R"(,"shards":["-80",7]})"), "shards[1]", "shard range");
  expect_bad(err(R"(,"shards":["north"]})"), "shards[0]", "shard range");
  expect_bad(err(R"(,"shards":["0-80"]})"), "shards[0]", "shard range");  // names are canonical
  expect_bad(err(R"(,"shards":["-80","-80"]})"), "shards[1]", "distinct");
}

TEST(ApiRequestTest, TimeoutHeaderBoundsTheShardCallsWithAMargin) {
  auto none = parse_timeout_header(std::nullopt);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto given = parse_timeout_header("20000");
  ASSERT_TRUE(given.ok());
  EXPECT_EQ(**given, 20000);
  for (std::string_view bad : {"", "0", "-5", "600001", "1.5", "20s", " 20"}) {
    auto r = parse_timeout_header(bad);
    ASSERT_FALSE(r.ok()) << bad;
    expect_bad(r.error(), "Tally-Timeout-Ms", "1 to 600000");
  }
  // A fifth is kept for the request's way in and the answer's way back, at least 250 ms.
  EXPECT_EQ(shard_budget_ms(20000), 16000);
  EXPECT_EQ(shard_budget_ms(1000), 750);
  EXPECT_EQ(shard_budget_ms(100), 1);
}

TEST(ApiRequestTest, ReadTokensRoundTrip) {
  ReadToken t;
  t.lsn_by_shard["-80"] = 0x16B3748;
  t.lsn_by_shard["80-"] = (uint64_t{0x1A} << 32) | 0x2B3C0;
  std::string text = format_token(t);
  EXPECT_EQ(text, "-80@0/16B3748,80-@1A/2B3C0");
  auto back = parse_token(text);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->lsn_by_shard, t.lsn_by_shard);
  for (const char* bad :
       {"", "-80", "-80@", "-80@0", "-80@0/xyz", "zz@0/1", "-80@0/1,", "-80@123456789/1"}) {
    EXPECT_FALSE(parse_token(bad).ok()) << bad;
  }
  EXPECT_EQ(*parse_lsn("0/0"), 0u);
  EXPECT_EQ(format_lsn(0xFFFFFFFFFFFFFFFFULL), "FFFFFFFF/FFFFFFFF");
}

// Highest $N in a statement's text.
int max_placeholder(const std::string& sql) {
  int max = 0;
  std::regex re("\\$([0-9]+)");
  for (auto it = std::sregex_iterator(sql.begin(), sql.end(), re); it != std::sregex_iterator();
       ++it) {
    max = std::max(max, std::stoi((*it)[1]));
  }
  return max;
}

TEST(ShardStatementsTest, EveryValueIsABindParameter) {
  StatsRequest r;
  r.video_id = "x'; DROP TABLE videos; --";
  r.event_type = "view";
  r.range = {k2025_11_22 + 5 * kMinuteMs, k2025_11_22 + 3 * kDayMs};
  auto st = stats_statement(r, read_hint(500, std::nullopt));
  EXPECT_EQ(st.text.find("DROP"), std::string::npos);
  EXPECT_EQ(max_placeholder(st.text), static_cast<int>(st.params.size()));
  EXPECT_TRUE(st.prepare);
  EXPECT_EQ(st.text.rfind("/*tally: cache_ttl_ms=500*/ ", 0), 0u);
  EXPECT_EQ(st.params[0], r.video_id);
  r.granularity = Granularity::kHour;
  auto series = stats_statement(r, read_hint(500, 0x16B3748));
  EXPECT_EQ(max_placeholder(series.text), static_cast<int>(series.params.size()));
  EXPECT_EQ(series.text.rfind("/*tally: min_lsn=0/16B3748*/ ", 0), 0u);
  EXPECT_FALSE(series.prepare);  // the hint varies: the unnamed statement
  EXPECT_EQ(series.params.back(), "hour");
  // With granularity hour, no day rows may be read (an hour bucket cannot be cut out of a day).
  EXPECT_EQ(series.params[6], series.params[7]);
  TopRequest top;
  top.event_type = "view";
  top.range = r.range;
  top.limit = 5;
  auto t = top_statement(top, "");
  EXPECT_EQ(max_placeholder(t.text), static_cast<int>(t.params.size()));
  ApplyRequest apply;
  apply.processor_id = "p";
  auto a = apply_statement(apply, "[]");
  EXPECT_EQ(max_placeholder(a.text), static_cast<int>(a.params.size()));
  EXPECT_EQ(read_hint(0, std::nullopt), "");
}

TEST(CircuitBreakerTest, OpensAfterThresholdAndLetsOneProbeThrough) {
  ManualClock clock;
  CircuitBreaker b(CircuitOptions{3, 1000}, clock);
  EXPECT_TRUE(b.allow());
  b.record_failure();
  b.record_failure();
  EXPECT_TRUE(b.allow());
  EXPECT_STREQ(b.state(), "closed");
  b.record_failure();
  EXPECT_FALSE(b.allow());
  EXPECT_STREQ(b.state(), "open");
  EXPECT_EQ(b.retry_after_ms(), 1000);
  clock.advance(999);
  EXPECT_FALSE(b.allow());
  clock.advance(1);
  EXPECT_TRUE(b.allow());   // the probe
  EXPECT_FALSE(b.allow());  // everyone else still fails fast
  b.record_failure();       // the probe failed: open again
  EXPECT_FALSE(b.allow());
  clock.advance(1000);
  EXPECT_TRUE(b.allow());
  b.record_success();
  EXPECT_STREQ(b.state(), "closed");
  EXPECT_TRUE(b.allow());
  EXPECT_TRUE(b.allow());
  // A success in between resets the count.
  b.record_failure();
  b.record_failure();
  b.record_success();
  b.record_failure();
  EXPECT_TRUE(b.allow());
  // A probe that never reports holds the circuit for one more window only.
  for (int i = 0; i < 3; ++i) b.record_failure();
  clock.advance(1000);
  EXPECT_TRUE(b.allow());  // probe 1 vanishes
  EXPECT_STREQ(b.state(), "half_open");
  EXPECT_FALSE(b.allow());
  clock.advance(1000);
  EXPECT_TRUE(b.allow());  // probe 2
  b.record_success();
  EXPECT_STREQ(b.state(), "closed");
  CircuitBreaker off(CircuitOptions{0, 1000}, clock);
  for (int i = 0; i < 10; ++i) off.record_failure();
  EXPECT_TRUE(off.allow());
}

}  // namespace
}  // namespace tally::cluster_proxy
