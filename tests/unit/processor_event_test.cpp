// Unit tests for processor/src/event: parsing a POST /v1/events body (JSON array and NDJSON),
// validation of every field with the reason naming field, value and expected form, RFC 3339
// timestamps, the ts window, and that one bad event never fails the good ones.
#include <gtest/gtest.h>

#include <string>

#include "processor/src/event.h"

namespace tally::processor {
namespace {

constexpr int64_t kNow = 1763800000000;  // 2025-11-22T08:26:40Z

ParsedEvents parse_ok(std::string_view body, const EventLimits& limits = {}) {
  auto r = parse_events(body, kNow, limits);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : ParsedEvents{};
}

std::string one_reason(std::string_view event_json) {
  auto p = parse_ok("[" + std::string(event_json) + "]");
  EXPECT_EQ(p.events.size(), 0u) << event_json;
  EXPECT_EQ(p.rejected.size(), 1u) << event_json;
  return p.rejected.empty() ? "" : p.rejected[0].reason;
}

TEST(EventParse, JsonArrayOfValidEvents) {
  auto p = parse_ok(R"([
    {"event_id": "e-1", "video_id": "dQw4w9WgXcQ", "event_type": "view", "ts": 1763800000000},
    {"video_id": "abc", "event_type": "watch_time", "ts": "2025-11-22T08:26:00.250Z", "value": 1500},
    {"video_id": "abc", "event_type": "like", "ts": 1763799999000, "value": null, "event_id": null}
  ])");
  ASSERT_EQ(p.events.size(), 3u);
  EXPECT_TRUE(p.rejected.empty());
  EXPECT_EQ(p.total, 3u);
  EXPECT_EQ(p.events[0].event_id, "e-1");
  EXPECT_EQ(p.events[0].video_id, "dQw4w9WgXcQ");
  EXPECT_EQ(p.events[0].type, EventType::kView);
  EXPECT_EQ(p.events[0].value, 0);
  EXPECT_EQ(p.events[1].type, EventType::kWatchTime);
  EXPECT_EQ(p.events[1].ts_ms, 1763799960250);
  EXPECT_EQ(p.events[1].value, 1500);
  EXPECT_EQ(p.events[1].event_id, "");
  EXPECT_EQ(p.events[2].type, EventType::kLike);
}

TEST(EventParse, NdjsonWithBlankLinesAndCrLf) {
  auto p = parse_ok(
      "{\"video_id\":\"a\",\"event_type\":\"share\",\"ts\":1763800000000}\r\n"
      "\n"
      "  {\"video_id\":\"b\",\"event_type\":\"dislike\",\"ts\":1763800000000}  \n");
  ASSERT_EQ(p.events.size(), 2u);
  EXPECT_EQ(p.total, 2u);
  EXPECT_EQ(p.events[0].type, EventType::kShare);
  EXPECT_EQ(p.events[1].video_id, "b");
}

TEST(EventParse, OneBadEventNeverFailsGoodOnes) {
  auto p = parse_ok(R"([
    {"video_id": "good1", "event_type": "view", "ts": 1763800000000},
    {"video_id": "bad id", "event_type": "view", "ts": 1763800000000},
    {"video_id": "good2", "event_type": "view", "ts": 1763800000000},
    42
  ])");
  ASSERT_EQ(p.events.size(), 2u);
  EXPECT_EQ(p.events[0].video_id, "good1");
  EXPECT_EQ(p.events[1].video_id, "good2");
  ASSERT_EQ(p.rejected.size(), 2u);
  EXPECT_EQ(p.rejected[0].index, 1u);
  EXPECT_NE(p.rejected[0].reason.find("\"bad id\""), std::string::npos) << p.rejected[0].reason;
  EXPECT_EQ(p.rejected[1].index, 3u);
  EXPECT_NE(p.rejected[1].reason.find("expected an event object, got a number"), std::string::npos);
}

TEST(EventParse, NdjsonMalformedLineRejectsOnlyThatLine) {
  auto p = parse_ok(
      "{\"video_id\":\"a\",\"event_type\":\"view\",\"ts\":1763800000000}\n"
      "{\"video_id\":\"b\",\"event_type\":\n"
      "{\"video_id\":\"c\",\"event_type\":\"view\",\"ts\":1763800000000}\n");
  ASSERT_EQ(p.events.size(), 2u);
  ASSERT_EQ(p.rejected.size(), 1u);
  EXPECT_EQ(p.rejected[0].index, 1u);
  EXPECT_NE(p.rejected[0].reason.find("not a valid JSON object"), std::string::npos);
  EXPECT_EQ(p.total, 3u);
}

TEST(EventParse, WholeBodyErrors) {
  auto empty = parse_events("  \n ", kNow, {});
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message.find("empty body"), std::string::npos);
  auto broken = parse_events("[{\"video_id\": \"a\"", kNow, {});
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(broken.error().message.find("not a valid JSON array"), std::string::npos);
  EventLimits small;
  small.max_events = 2;
  auto many = parse_events(R"([1,2,3])", kNow, small);
  ASSERT_FALSE(many.ok());
  EXPECT_NE(many.error().message.find("at most 2"), std::string::npos);
  auto many_nd = parse_events("{}\n{}\n{}\n", kNow, small);
  ASSERT_FALSE(many_nd.ok());
}

TEST(EventParse, ReasonsNameFieldValueAndExpectedForm) {
  EXPECT_EQ(one_reason(R"({"event_type": "view", "ts": 1763800000000})"),
            "video_id: missing (a string of 1-64 characters of [A-Za-z0-9_-])");
  EXPECT_NE(one_reason(R"({"video_id": 7, "event_type": "view", "ts": 1763800000000})")
                .find("video_id: expected a string of 1-64 characters of [A-Za-z0-9_-], got 7"),
            std::string::npos);
  EXPECT_EQ(one_reason(R"({"video_id": "a", "event_type": "click", "ts": 1763800000000})"),
            "event_type: expected one of view, like, dislike, share, watch_time, got \"click\"");
  EXPECT_EQ(one_reason(R"({"video_id": "a", "ts": 1763800000000})"),
            "event_type: missing (one of view, like, dislike, share, watch_time)");
  EXPECT_NE(one_reason(R"({"video_id": "a", "event_type": "view", "ts": "yesterday"})")
                .find("ts: expected epoch milliseconds as an integer or an RFC 3339 date-time"),
            std::string::npos);
  EXPECT_NE(one_reason(R"({"video_id": "a", "event_type": "view", "ts": 1.5})").find("got 1.5"),
            std::string::npos);
  EXPECT_EQ(one_reason(R"({"video_id": "a", "event_type": "view"})"),
            "ts: missing (epoch milliseconds or an RFC 3339 date-time)");
  EXPECT_EQ(
      one_reason(R"({"video_id": "a", "event_type": "view", "ts": 1763800000000, "value": -1})"),
      "value: expected an integer from 0 to 86400000 (watch_time in ms), got -1");
  EXPECT_NE(
      one_reason(R"({"video_id": "a", "event_type": "view", "ts": 1763800000000, "value": 2.5})")
          .find("got 2.5"),
      std::string::npos);
  EXPECT_NE(one_reason(R"({"video_id": "a", "event_type": "view", "ts": 1763800000000,
                           "value": 86400001})")
                .find("got 86400001"),
            std::string::npos);
  EXPECT_EQ(
      one_reason(R"({"video_id": "a", "event_type": "view", "ts": 1763800000000, "valeu": 3})"),
      "unknown field \"valeu\": expected only event_id, video_id, event_type, ts, value");
  EXPECT_NE(one_reason(R"({"event_id": "has space", "video_id": "a", "event_type": "view",
                           "ts": 1763800000000})")
                .find("event_id \"has space\": expected 1-128 characters of [A-Za-z0-9._:-], "
                      "found ' ' at position 3"),
            std::string::npos);
  EXPECT_NE(one_reason(R"({"event_id": 12, "video_id": "a", "event_type": "view",
                           "ts": 1763800000000})")
                .find("event_id: expected a string"),
            std::string::npos);
}

TEST(EventParse, TimestampWindow) {
  EventLimits limits;
  limits.max_age_ms = 3600000;
  limits.max_future_ms = 60000;
  auto p = parse_ok(R"([
    {"video_id": "a", "event_type": "view", "ts": 1763796400000},
    {"video_id": "a", "event_type": "view", "ts": 1763796399999},
    {"video_id": "a", "event_type": "view", "ts": 1763800060000},
    {"video_id": "a", "event_type": "view", "ts": 1763800060001},
    {"video_id": "a", "event_type": "view", "ts": "2020-01-01T00:00:00Z"}
  ])",
                    limits);
  ASSERT_EQ(p.events.size(), 2u);
  ASSERT_EQ(p.rejected.size(), 3u);
  EXPECT_EQ(p.rejected[0].index, 1u);
  EXPECT_EQ(p.rejected[1].index, 3u);
  EXPECT_EQ(p.rejected[2].index, 4u);
  EXPECT_NE(p.rejected[0].reason.find("ts: 1763796399999 (2025-11-22T07:26:39.999Z) is outside "
                                      "the accepted window: expected between now - 3600000 ms "
                                      "and now + 60000 ms (now is 2025-11-22T08:26:40.000Z)"),
            std::string::npos)
      << p.rejected[0].reason;
  EXPECT_NE(p.rejected[2].reason.find("\"2020-01-01T00:00:00Z\" (2020-01-01T00:00:00.000Z)"),
            std::string::npos)
      << p.rejected[2].reason;
}

TEST(EventParse, Rfc3339) {
  EXPECT_EQ(parse_rfc3339_ms("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339_ms("2025-11-22T08:26:40Z"), kNow);
  EXPECT_EQ(parse_rfc3339_ms("2025-11-22t08:26:40.5z"), kNow + 500);
  EXPECT_EQ(parse_rfc3339_ms("2025-11-22 08:26:40.123456Z"), kNow + 123);
  EXPECT_EQ(parse_rfc3339_ms("2025-11-22T09:26:40+01:00"), kNow);
  EXPECT_EQ(parse_rfc3339_ms("2025-11-22T03:56:40-04:30"), kNow);
  EXPECT_EQ(parse_rfc3339_ms("2024-02-29T00:00:00Z"), 1709164800000);
  EXPECT_EQ(parse_rfc3339_ms("1969-12-31T23:59:59Z"), -1000);
  for (const char* bad :
       {"2025-11-22T08:26:40", "2025-11-22", "2023-02-29T00:00:00Z", "2025-13-01T00:00:00Z",
        "2025-11-22T24:00:00Z", "2025-11-22T08:26:60Z", "2025-11-22T08:26:40.Z",
        "2025-11-22T08:26:40+0100", "2025-11-22T08:26:40Zx", "x025-11-22T08:26:40Z", ""}) {
    EXPECT_FALSE(parse_rfc3339_ms(bad).has_value()) << bad;
  }
}

TEST(EventParse, MinuteOf) {
  EXPECT_EQ(minute_of(kNow), 1763799960000);
  EXPECT_EQ(minute_of(1763799960000), 1763799960000);
  EXPECT_EQ(minute_of(-1), -60000);
  EXPECT_EQ(minute_of(0), 0);
}

TEST(EventParse, EventTypeNames) {
  for (int i = 0; i < kEventTypeCount; ++i) {
    auto t = static_cast<EventType>(i);
    EXPECT_EQ(parse_event_type(event_type_name(t)), t);
  }
  EXPECT_FALSE(parse_event_type("View").has_value());
}

}  // namespace
}  // namespace tally::processor
