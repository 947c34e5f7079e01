// Unit tests for common/keyspace: the ksid hash (pinned by golden vectors), its SQL encoding,
// video id validation, shard ranges in Vitess notation and shard maps that tile the keyspace.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/keyspace/ksid.h"
#include "common/keyspace/shard_map.h"
#include "common/keyspace/shard_range.h"

namespace tally {
namespace {

constexpr uint64_t kTop = uint64_t{1} << 63;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// Leading byte b as a 64-bit bound: byte(0x80) == 0x8000000000000000.
constexpr uint64_t byte(uint64_t b) {
  return b << 56;
}

ShardRange range(std::string_view text) {
  Result<ShardRange> parsed = ShardRange::parse(text);
  EXPECT_TRUE(parsed.ok()) << text << ": " << (parsed.ok() ? "" : parsed.error().message);
  return parsed.ok() ? *parsed : ShardRange::whole();
}

ShardMap map_of(const std::vector<std::string>& names) {
  Result<ShardMap> map = ShardMap::from_names(names);
  EXPECT_TRUE(map.ok()) << (map.ok() ? "" : map.error().message);
  return map.ok() ? *map : *ShardMap::uniform(1);
}

// ---------------------------------------------------------------------------------------------
// ksid_for golden vectors. Computed once, outside this code base, by two independent
// implementations that agreed on every value: a pure-Python XXH64 written from the xxHash spec,
// and Debian's `xxhsum -H1` 0.8.1 (printf '%s' ID | xxhsum -H1 -). These must never change: a
// different hash would move rows to other shards.
struct Golden {
  std::string_view id;
  uint64_t ksid;
};

constexpr Golden kGolden[] = {
    {"", 0xef46db3751d8e999ULL},  // not a valid video id, but the raw hash is defined
    {"a", 0xd24ec4f1a98c6e5bULL},
    {"dQw4w9WgXcQ", 0x914f4969781d043aULL},
    {"jNQXAC9IVRw", 0x0a52a0924dde9e81ULL},
    {"9bZkp7q19f0", 0xd4c1b82b5b11d4b2ULL},
    {"-", 0x7a162ebe4ce6fc55ULL},
    {"_", 0xf3956634dfceb1b6ULL},
    {"video_123-abc", 0x2ad1404fea9034f0ULL},
    {"--__--__", 0xdee777cc10748fabULL},
    {"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", 0xc942cfd773db3d8aULL},
    {"0123456789abcdef0123456789abcde", 0x1fdfc63febacfde7ULL},    // 31 bytes: short path
    {"0123456789abcdef0123456789abcdef", 0x642a94958e71e6c5ULL},   // 32 bytes: 4-lane path
    {"0123456789abcdef0123456789abcdef0", 0xe87684f08d6d0816ULL},  // 33 bytes: lanes + tail
};

TEST(KsidTest, GoldenVectors) {
  for (const Golden& golden : kGolden) {
    EXPECT_EQ(ksid_for(golden.id), golden.ksid) << "video_id \"" << golden.id << "\"";
  }
}

TEST(KsidTest, GoldenSqlValues) {
  // The bigint PostgreSQL stores for some golden ids (same independent computation).
  EXPECT_EQ(ksid_to_sql(ksid_for("dQw4w9WgXcQ")), INT64_C(1247296339140478010));
  EXPECT_EQ(ksid_to_sql(ksid_for("jNQXAC9IVRw")), INT64_C(-8479538598153118079));
  EXPECT_EQ(ksid_to_sql(ksid_for("video_123-abc")), INT64_C(-6138054105147362064));
}

TEST(KsidTest, HashIsOfTheBytesOnly) {
  const std::string with_nul("ab\0cd", 5);
  EXPECT_NE(ksid_for(with_nul), ksid_for("ab"));
  EXPECT_EQ(ksid_for(std::string("dQw4w9WgXcQ")), ksid_for("dQw4w9WgXcQ"));
}

// ---------------------------------------------------------------------------------------------
// SQL encoding.
static_assert(ksid_to_sql(0) == std::numeric_limits<int64_t>::min());
static_assert(ksid_to_sql(kTop - 1) == -1);
static_assert(ksid_to_sql(kTop) == 0);
static_assert(ksid_to_sql(kMax) == std::numeric_limits<int64_t>::max());
static_assert(ksid_from_sql(std::numeric_limits<int64_t>::min()) == 0);
static_assert(ksid_from_sql(0) == kTop);

TEST(KsidSqlTest, OrderIsPreservedBothWays) {
  std::vector<uint64_t> values = {0,        1,    kTop - 1,   kTop,      kTop + 1,
                                  kMax - 1, kMax, byte(0x40), byte(0xc0)};
  std::mt19937_64 rng(42);
  for (int i = 0; i < 2000; ++i) values.push_back(rng());
  for (const Golden& golden : kGolden) values.push_back(golden.ksid);

  std::vector<uint64_t> by_unsigned = values;
  std::sort(by_unsigned.begin(), by_unsigned.end());

  std::vector<int64_t> sql;
  sql.reserve(values.size());
  for (const uint64_t v : values) sql.push_back(ksid_to_sql(v));
  std::sort(sql.begin(), sql.end());

  ASSERT_EQ(sql.size(), by_unsigned.size());
  for (std::size_t i = 0; i < sql.size(); ++i) {
    EXPECT_EQ(ksid_to_sql(by_unsigned[i]), sql[i]) << "at " << i;    // unsigned order -> signed
    EXPECT_EQ(ksid_from_sql(sql[i]), by_unsigned[i]) << "at " << i;  // signed order -> unsigned
  }
  for (std::size_t i = 1; i < by_unsigned.size(); ++i) {
    EXPECT_EQ(by_unsigned[i - 1] < by_unsigned[i],
              ksid_to_sql(by_unsigned[i - 1]) < ksid_to_sql(by_unsigned[i]));
  }
}

TEST(KsidSqlTest, RoundTrips) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    const uint64_t v = rng();
    EXPECT_EQ(ksid_from_sql(ksid_to_sql(v)), v);
    const auto s = static_cast<int64_t>(rng() >> 1) - static_cast<int64_t>(rng() >> 1);
    EXPECT_EQ(ksid_to_sql(ksid_from_sql(s)), s);
  }
}

// ---------------------------------------------------------------------------------------------
// Video id validation.
TEST(VideoIdTest, AcceptsValidIds) {
  for (const std::string_view id :
       {"dQw4w9WgXcQ", "a", "Z", "0", "-", "_", "video_123-abc", "--__--__",
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"}) {
    EXPECT_TRUE(validate_video_id(id).ok()) << id;
  }
  EXPECT_TRUE(validate_video_id(std::string(64, 'x')).ok());
}

TEST(VideoIdTest, RejectsEmpty) {
  const Status status = validate_video_id("");
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(status.error().message.find("video_id \"\""), std::string::npos);
  EXPECT_NE(status.error().message.find("expected 1-64 characters of [A-Za-z0-9_-]"),
            std::string::npos)
      << status.error().message;
}

TEST(VideoIdTest, RejectsTooLong) {
  const std::string id(65, 'x');
  const Status status = validate_video_id(id);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(status.error().message.find("\"" + id + "\""), std::string::npos)
      << status.error().message;
  EXPECT_NE(status.error().message.find("65"), std::string::npos) << status.error().message;
}

TEST(VideoIdTest, RejectsSpaceWithExactMessage) {
  const Status status = validate_video_id("ab c");
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(status.error().message,
            "video_id \"ab c\": expected 1-64 characters of [A-Za-z0-9_-], found ' ' at "
            "position 2");
}

TEST(VideoIdTest, RejectsUnicodeBytes) {
  const Status status = validate_video_id("vid\xc3\xa9o");  // "vidéo" in UTF-8
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(status.error().message.find("\"vid\\xc3\\xa9o\""), std::string::npos)
      << status.error().message;
  EXPECT_NE(status.error().message.find("found byte 0xc3 at position 3"), std::string::npos)
      << status.error().message;
}

TEST(VideoIdTest, RejectsControlCharsAndEscapesThem) {
  const std::string id("ab\ncd\0e", 7);
  const Status status = validate_video_id(id);
  ASSERT_FALSE(status.ok());
  const std::string& message = status.error().message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_EQ(message.find('\0'), std::string::npos) << message;
  EXPECT_NE(message.find("\"ab\\x0acd\\x00e\""), std::string::npos) << message;
  EXPECT_NE(message.find("found byte 0x0a at position 2"), std::string::npos) << message;
}

TEST(VideoIdTest, RejectsOtherPunctuation) {
  for (const std::string_view id : {"a.b", "a/b", "a+b", "a\"b", "a'b", "a\\b", "a=b", "%41"}) {
    const Status status = validate_video_id(id);
    EXPECT_FALSE(status.ok()) << id;
  }
  const Status quote = validate_video_id("a\"b");
  ASSERT_FALSE(quote.ok());
  EXPECT_NE(quote.error().message.find("video_id \"a\\\"b\""), std::string::npos)
      << quote.error().message;
}

TEST(VideoIdTest, HugeIdGivesBoundedMessage) {
  const std::string id(100000, 'q');
  const Status status = validate_video_id(id);
  ASSERT_FALSE(status.ok());
  EXPECT_LT(status.error().message.size(), 300u) << status.error().message;
  EXPECT_NE(status.error().message.find("(100000 bytes)"), std::string::npos)
      << status.error().message;
}

TEST(QuoteForMessageTest, EscapesAndTruncates) {
  EXPECT_EQ(quote_for_message("abc"), "\"abc\"");
  EXPECT_EQ(quote_for_message(""), "\"\"");
  EXPECT_EQ(quote_for_message("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(quote_for_message("\x01\x7f\xff"), "\"\\x01\\x7f\\xff\"");
  EXPECT_EQ(quote_for_message(std::string(80, 'z')), "\"" + std::string(80, 'z') + "\"");
  EXPECT_EQ(quote_for_message(std::string(81, 'z')),
            "\"" + std::string(80, 'z') + "\"... (81 bytes)");
  EXPECT_EQ(quote_for_message("abcdef", 3), "\"abc\"... (6 bytes)");
}

// ---------------------------------------------------------------------------------------------
// ShardRange.
TEST(ShardRangeTest, ParsesVitessNotation) {
  struct Case {
    std::string_view text;
    uint64_t start;
    std::optional<uint64_t> end;
    std::string_view name;
  };
  const Case cases[] = {
      {"-", 0, std::nullopt, "-"},
      {"-80", 0, byte(0x80), "-80"},
      {"80-", byte(0x80), std::nullopt, "80-"},
      {"40-80", byte(0x40), byte(0x80), "40-80"},
      {"4000-8000", byte(0x40), byte(0x80), "40-80"},
      {"-4080", 0, 0x4080000000000000ULL, "-4080"},
      {"4080-80", 0x4080000000000000ULL, byte(0x80), "4080-80"},
      {"C0-", byte(0xc0), std::nullopt, "c0-"},
      {"aB-Cd", byte(0xab), byte(0xcd), "ab-cd"},
      {"00-", 0, std::nullopt, "-"},
      {"0000000000000000-80", 0, byte(0x80), "-80"},
      {"0001-", 0x0001000000000000ULL, std::nullopt, "0001-"},
      {"0102030405060708-ffffffffffffffff", 0x0102030405060708ULL, kMax,
       "0102030405060708-ffffffffffffffff"},
      {"-0000000000000001", 0, 1, "-0000000000000001"},
  };
  for (const Case& c : cases) {
    Result<ShardRange> parsed = ShardRange::parse(c.text);
    ASSERT_TRUE(parsed.ok()) << c.text << ": " << parsed.error().message;
    EXPECT_EQ(parsed->start(), c.start) << c.text;
    EXPECT_EQ(parsed->end(), c.end) << c.text;
    EXPECT_EQ(parsed->name(), c.name) << c.text;
    Result<ShardRange> reparsed = ShardRange::parse(parsed->name());
    ASSERT_TRUE(reparsed.ok()) << parsed->name();
    EXPECT_EQ(*reparsed, *parsed) << c.text;
  }
  EXPECT_TRUE(range("-").is_whole());
  EXPECT_EQ(range("-"), ShardRange::whole());
  EXPECT_FALSE(range("-80").is_whole());
}

void expect_parse_error(std::string_view text, std::string_view needle) {
  Result<ShardRange> parsed = ShardRange::parse(text);
  ASSERT_FALSE(parsed.ok()) << "parse(\"" << text << "\") should fail, got " << parsed->name();
  const std::string& message = parsed.error().message;
  EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(message.find("shard range " + quote_for_message(text)), std::string::npos) << message;
  EXPECT_NE(message.find("expected <start>-<end> in Vitess notation"), std::string::npos)
      << message;
  EXPECT_NE(message.find(needle), std::string::npos)
      << "missing \"" << needle << "\" in " << message;
}

TEST(ShardRangeTest, RejectsMalformedText) {
  expect_parse_error("", "missing '-'");
  expect_parse_error("80", "missing '-'");
  expect_parse_error("0", "missing '-'");
  expect_parse_error("40-80-c0", "more than one '-'");
  expect_parse_error("4-80", "start \"4\" has an odd number of hex digits");
  expect_parse_error("-8", "end \"8\" has an odd number of hex digits");
  expect_parse_error("4g-80", "start \"4g\" has a non-hex character at position 1");
  expect_parse_error("40-8x", "end \"8x\" has a non-hex character at position 1");
  expect_parse_error(" -80", "non-hex character at position 0");
  expect_parse_error("0x40-80", "non-hex character");
  expect_parse_error("80-40", "start \"80\" is not below end \"40\"");
  expect_parse_error("80-80", "is not below end");
  expect_parse_error("8000-80", "is not below end");
  expect_parse_error("-00", "is not below end");
  expect_parse_error("001122334455667788-", "start has 18 hex digits, more than 16");
  expect_parse_error("-001122334455667788", "end has 18 hex digits, more than 16");
}

TEST(ShardRangeTest, ParseErrorEscapesHostileText) {
  const std::string text = "\x01\n-" + std::string(500, 'f');
  Result<ShardRange> parsed = ShardRange::parse(text);
  ASSERT_FALSE(parsed.ok());
  const std::string& message = parsed.error().message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_NE(message.find("\\x01\\x0a-fff"), std::string::npos) << message;
  EXPECT_NE(message.find("(503 bytes)"), std::string::npos) << message;
  EXPECT_LT(message.size(), 600u) << message;
}

TEST(ShardRangeTest, NameRoundTripsForArbitraryBounds) {
  std::mt19937_64 rng(1234);
  for (int i = 0; i < 2000; ++i) {
    uint64_t a = rng();
    uint64_t b = rng();
    // Mix in bounds with trailing zero bytes, the common case.
    if (i % 3 == 0) a &= ~((uint64_t{1} << (8 * (i % 8))) - 1);
    if (i % 5 == 0) b &= ~((uint64_t{1} << (8 * (i % 8))) - 1);
    if (a == b) continue;
    if (a > b) std::swap(a, b);
    const std::optional<uint64_t> end = i % 7 == 0 ? std::nullopt : std::optional<uint64_t>(b);
    Result<ShardRange> built = ShardRange::from_bounds(a, end);
    ASSERT_TRUE(built.ok());
    Result<ShardRange> reparsed = ShardRange::parse(built->name());
    ASSERT_TRUE(reparsed.ok()) << built->name() << ": " << reparsed.error().message;
    EXPECT_EQ(*reparsed, *built) << built->name();
  }
}

TEST(ShardRangeTest, BoundHex) {
  EXPECT_EQ(keyspace_bound_hex(0), "");
  EXPECT_EQ(keyspace_bound_hex(byte(0x80)), "80");
  EXPECT_EQ(keyspace_bound_hex(0x4080000000000000ULL), "4080");
  EXPECT_EQ(keyspace_bound_hex(0x0000000100000000ULL), "00000001");
  EXPECT_EQ(keyspace_bound_hex(1), "0000000000000001");
  EXPECT_EQ(keyspace_bound_hex(kMax), "ffffffffffffffff");
}

TEST(ShardRangeTest, FromBoundsRejectsEmptyRanges) {
  EXPECT_FALSE(ShardRange::from_bounds(5, 5).ok());
  EXPECT_FALSE(ShardRange::from_bounds(6, 5).ok());
  EXPECT_TRUE(ShardRange::from_bounds(5, 6).ok());
  EXPECT_TRUE(ShardRange::from_bounds(kMax, std::nullopt).ok());
  Result<ShardRange> bad = ShardRange::from_bounds(byte(0x80), byte(0x40));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.error().message.find("0x80"), std::string::npos) << bad.error().message;
}

TEST(ShardRangeTest, ContainsAtBoundaries) {
  const ShardRange mid = range("40-80");
  EXPECT_FALSE(mid.contains(0));
  EXPECT_FALSE(mid.contains(byte(0x40) - 1));
  EXPECT_TRUE(mid.contains(byte(0x40)));
  EXPECT_TRUE(mid.contains(byte(0x80) - 1));
  EXPECT_FALSE(mid.contains(byte(0x80)));
  EXPECT_FALSE(mid.contains(kMax));

  const ShardRange low = range("-80");
  EXPECT_TRUE(low.contains(0));
  EXPECT_TRUE(low.contains(kTop - 1));
  EXPECT_FALSE(low.contains(kTop));

  const ShardRange high = range("80-");
  EXPECT_FALSE(high.contains(kTop - 1));
  EXPECT_TRUE(high.contains(kTop));
  EXPECT_TRUE(high.contains(kMax));

  const ShardRange whole = range("-");
  EXPECT_TRUE(whole.contains(0));
  EXPECT_TRUE(whole.contains(kTop));
  EXPECT_TRUE(whole.contains(kMax));

  const ShardRange uneven = range("4080-80");
  EXPECT_FALSE(uneven.contains(0x407fffffffffffffULL));
  EXPECT_TRUE(uneven.contains(0x4080000000000000ULL));
}

TEST(ShardRangeTest, SqlBoundsMatchContains) {
  const ShardRange r = range("80-c0");
  EXPECT_EQ(r.sql_lower_bound(), 0);
  EXPECT_EQ(r.sql_upper_bound(), std::optional<int64_t>(INT64_C(0x4000000000000000)));
  EXPECT_EQ(r.sql_condition(), "ksid >= 0 AND ksid < 4611686018427387904");
  EXPECT_EQ(range("-").sql_condition(), "TRUE");
  EXPECT_EQ(range("-80").sql_condition("s.ksid"), "s.ksid < 0");
  EXPECT_EQ(range("80-").sql_condition(), "ksid >= 0");
  EXPECT_EQ(range("-").sql_lower_bound(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(range("-").sql_upper_bound(), std::nullopt);

  // The SQL predicate, evaluated on the stored bigint, agrees with contains().
  std::mt19937_64 rng(99);
  const ShardRange ranges[] = {range("-"),     range("-80"),     range("80-"),
                               range("40-80"), range("4080-80"), range("-0000000000000001"),
                               range("ff-"),   range("7f-81")};
  for (int i = 0; i < 3000; ++i) {
    const uint64_t k = i < 4 ? std::vector<uint64_t>{0, kTop - 1, kTop, kMax}[i] : rng();
    const int64_t stored = ksid_to_sql(k);
    for (const ShardRange& candidate : ranges) {
      const bool in_sql = stored >= candidate.sql_lower_bound() &&
                          (!candidate.sql_upper_bound() || stored < *candidate.sql_upper_bound());
      EXPECT_EQ(in_sql, candidate.contains(k)) << candidate << " " << k;
    }
  }
}

TEST(ShardRangeTest, OrdersByStartThenEnd) {
  std::vector<ShardRange> ranges = {range("80-"), range("-"),     range("40-80"),  range("-80"),
                                    range("-40"), range("80-c0"), range("4080-80")};
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::string> names;
  names.reserve(ranges.size());
  for (const ShardRange& r : ranges) names.push_back(r.name());
  EXPECT_EQ(names,
            (std::vector<std::string>{"-40", "-80", "-", "40-80", "4080-80", "80-c0", "80-"}));
  EXPECT_LT(range("-80"), range("80-"));
  EXPECT_GT(range("-"), range("-80"));
  EXPECT_EQ(range("4000-8000"), range("40-80"));
  EXPECT_NE(range("40-80"), range("40-"));
}

TEST(ShardRangeTest, Overlaps) {
  EXPECT_TRUE(range("-").overlaps(range("40-80")));
  EXPECT_TRUE(range("-80").overlaps(range("40-")));
  EXPECT_TRUE(range("40-").overlaps(range("-80")));
  EXPECT_FALSE(range("-80").overlaps(range("80-")));
  EXPECT_FALSE(range("80-").overlaps(range("-80")));
  EXPECT_FALSE(range("40-80").overlaps(range("c0-")));
  EXPECT_TRUE(range("c0-").overlaps(range("ff-")));
}

TEST(ShardRangeTest, SplitsInHalves) {
  const auto expect_split = [](std::string_view text, std::string_view left,
                               std::string_view right) {
    Result<std::pair<ShardRange, ShardRange>> halves = range(text).split();
    ASSERT_TRUE(halves.ok()) << text << ": " << halves.error().message;
    EXPECT_EQ(halves->first.name(), left) << text;
    EXPECT_EQ(halves->second.name(), right) << text;
  };
  expect_split("-", "-80", "80-");
  expect_split("-80", "-40", "40-80");
  expect_split("80-", "80-c0", "c0-");
  expect_split("40-80", "40-60", "60-80");
  expect_split("c0-", "c0-e0", "e0-");
  expect_split("fffffffffffffffe-", "fffffffffffffffe-ffffffffffffffff", "ffffffffffffffff-");

  Result<std::pair<ShardRange, ShardRange>> single = range("ffffffffffffffff-").split();
  ASSERT_FALSE(single.ok());
  EXPECT_NE(single.error().message.find("ffffffffffffffff-"), std::string::npos);
  EXPECT_FALSE(ShardRange::from_bounds(5, 6)->split().ok());

  // Splitting twice from "-" gives uniform(4).
  const auto [low, high] = *range("-").split();
  std::vector<ShardRange> quarters = {low.split()->first, low.split()->second, high.split()->first,
                                      high.split()->second};
  EXPECT_EQ(quarters, ShardMap::uniform(4)->ranges());
}

// ---------------------------------------------------------------------------------------------
// ShardMap.
std::string tiling_error(const std::vector<std::string>& names) {
  Result<ShardMap> map = ShardMap::from_names(names);
  EXPECT_FALSE(map.ok());
  if (map.ok()) return "";
  EXPECT_EQ(map.error().code, ErrorCode::kInvalidArgument);
  return map.error().message;
}

TEST(ShardMapTest, AcceptsTilingsInAnyOrder) {
  EXPECT_EQ(map_of({"-"}).names(), (std::vector<std::string>{"-"}));
  EXPECT_EQ(map_of({"80-", "-80"}).names(), (std::vector<std::string>{"-80", "80-"}));
  EXPECT_EQ(map_of({"80-", "4080-80", "-40", "40-4080"}).names(),
            (std::vector<std::string>{"-40", "40-4080", "4080-80", "80-"}));
  EXPECT_EQ(map_of({"80-", "-80"}), map_of({"-80", "80-"}));
  EXPECT_EQ(map_of({"80-", "-80"}).size(), 2u);
}

TEST(ShardMapTest, RejectsEmpty) {
  Result<ShardMap> map = ShardMap::from_ranges({});
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(map.error().message.find("no ranges"), std::string::npos) << map.error().message;
}

TEST(ShardMapTest, RejectsGaps) {
  std::string message = tiling_error({"-40", "80-"});
  EXPECT_NE(message.find("gap \"40-80\" between \"-40\" and \"80-\""), std::string::npos)
      << message;

  message = tiling_error({"40-"});
  EXPECT_NE(message.find("gap \"-40\" between the start of the space and \"40-\""),
            std::string::npos)
      << message;

  message = tiling_error({"-80", "80-c0"});
  EXPECT_NE(message.find("gap \"c0-\" between \"80-c0\" and the end of the space"),
            std::string::npos)
      << message;

  message = tiling_error({"-40", "4080-"});
  EXPECT_NE(message.find("gap \"40-4080\""), std::string::npos) << message;
}

TEST(ShardMapTest, RejectsOverlaps) {
  std::string message = tiling_error({"-80", "40-"});
  EXPECT_NE(message.find("ranges \"-80\" and \"40-\" overlap"), std::string::npos) << message;

  message = tiling_error({"-", "80-"});
  EXPECT_NE(message.find("\"-\""), std::string::npos) << message;
  EXPECT_NE(message.find("\"80-\""), std::string::npos) << message;
  EXPECT_NE(message.find("overlap"), std::string::npos) << message;

  message = tiling_error({"-80", "-"});
  EXPECT_NE(message.find("ranges \"-80\" and \"-\" overlap"), std::string::npos) << message;

  message = tiling_error({"-80", "80-", "80-"});
  EXPECT_NE(message.find("\"80-\" is listed twice"), std::string::npos) << message;

  message = tiling_error({"-80", "80-c0", "a0-"});
  EXPECT_NE(message.find("ranges \"80-c0\" and \"a0-\" overlap"), std::string::npos) << message;
}

TEST(ShardMapTest, FromNamesPropagatesParseErrors) {
  const std::string message = tiling_error({"-80", "8-"});
  EXPECT_NE(message.find("shard range \"8-\""), std::string::npos) << message;
  EXPECT_NE(message.find("odd number of hex digits"), std::string::npos) << message;
}

TEST(ShardMapTest, Uniform) {
  EXPECT_EQ(ShardMap::uniform(1)->names(), (std::vector<std::string>{"-"}));
  EXPECT_EQ(ShardMap::uniform(2)->names(), (std::vector<std::string>{"-80", "80-"}));
  EXPECT_EQ(ShardMap::uniform(4)->names(),
            (std::vector<std::string>{"-40", "40-80", "80-c0", "c0-"}));
  EXPECT_EQ(ShardMap::uniform(8)->names(),
            (std::vector<std::string>{"-20", "20-40", "40-60", "60-80", "80-a0", "a0-c0", "c0-e0",
                                      "e0-"}));
  Result<ShardMap> big = ShardMap::uniform(512);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->size(), 512u);
  EXPECT_EQ(big->ranges()[1].name(), "0080-01");
  EXPECT_EQ(big->ranges().back().name(), "ff80-");
  // Every uniform map is a valid tiling.
  EXPECT_TRUE(ShardMap::from_ranges(big->ranges()).ok());

  for (const int n : {0, -1, 3, 6, 12, 1000, ShardMap::kMaxUniformShards * 2,
                      std::numeric_limits<int>::min(), std::numeric_limits<int>::max()}) {
    Result<ShardMap> bad = ShardMap::uniform(n);
    ASSERT_FALSE(bad.ok()) << n;
    EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(bad.error().message.find(std::to_string(n) + " shards"), std::string::npos)
        << bad.error().message;
    EXPECT_NE(bad.error().message.find("power of two"), std::string::npos) << bad.error().message;
  }
}

// Brute force: the one range containing ksid, by a linear scan.
std::size_t brute_force_index(const ShardMap& map, uint64_t ksid) {
  std::size_t found = map.size();
  for (std::size_t i = 0; i < map.size(); ++i) {
    if (map.ranges()[i].contains(ksid)) {
      EXPECT_EQ(found, map.size()) << "ksid " << ksid << " in two ranges";
      found = i;
    }
  }
  EXPECT_LT(found, map.size()) << "ksid " << ksid << " in no range";
  return found;
}

TEST(ShardMapTest, LookupMatchesBruteForce) {
  std::vector<ShardMap> maps = {
      *ShardMap::uniform(1),
      *ShardMap::uniform(2),
      *ShardMap::uniform(4),
      *ShardMap::uniform(8),
      map_of({"-40", "40-4080", "4080-80", "80-"}),
      map_of({"-0000000000000001", "0000000000000001-fe", "fe-ff", "ff-"})};
  std::mt19937_64 rng(20240601);
  for (const ShardMap& map : maps) {
    std::vector<uint64_t> probes = {0, 1, kTop - 1, kTop, kMax - 1, kMax};
    for (const ShardRange& r : map.ranges()) {
      probes.push_back(r.start());
      probes.push_back(r.start() - 1);  // wraps to kMax for the first range
      probes.push_back(r.start() + 1);
    }
    for (int i = 0; i < 5000; ++i) probes.push_back(rng());
    for (const Golden& golden : kGolden) probes.push_back(golden.ksid);
    for (const uint64_t k : probes) {
      const std::size_t expected = brute_force_index(map, k);
      ASSERT_EQ(map.index_for(k), expected)
          << "ksid " << k << " in " << ::testing::PrintToString(map.names());
      EXPECT_EQ(map.shard_for(k), map.ranges()[expected]);
      EXPECT_TRUE(map.shard_for(k).contains(k));
    }
  }
}

TEST(ShardMapTest, ShardForVideo) {
  const ShardMap two = *ShardMap::uniform(2);
  Result<ShardRange> shard = two.shard_for_video("dQw4w9WgXcQ");  // ksid 0x914f...
  ASSERT_TRUE(shard.ok());
  EXPECT_EQ(shard->name(), "80-");
  shard = two.shard_for_video("jNQXAC9IVRw");  // ksid 0x0a52...
  ASSERT_TRUE(shard.ok());
  EXPECT_EQ(shard->name(), "-80");

  const ShardMap four = *ShardMap::uniform(4);
  for (const Golden& golden : kGolden) {
    if (golden.id.empty()) continue;
    Result<ShardRange> routed = four.shard_for_video(golden.id);
    ASSERT_TRUE(routed.ok()) << golden.id;
    EXPECT_EQ(*routed, four.shard_for(golden.ksid)) << golden.id;
  }

  for (const std::string& bad : {std::string(), std::string("ab c"), std::string(65, 'a')}) {
    Result<ShardRange> rejected = two.shard_for_video(bad);
    ASSERT_FALSE(rejected.ok()) << bad;
    EXPECT_EQ(rejected.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(rejected.error().message.find("video_id"), std::string::npos);
  }
}

}  // namespace
}  // namespace tally
