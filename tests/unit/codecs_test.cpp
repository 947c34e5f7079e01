// Unit tests for the small codecs every service shares, each by table: calendar math and host:port
// (common/core), PostgreSQL LSN text and libpq conninfo quoting (common/pgclient). The single-
// definition check (tests/checks/single_definitions.py) keeps them the only copies.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/core/calendar.h"
#include "common/core/host_port.h"
#include "common/pgclient/conninfo.h"
#include "common/pgclient/lsn.h"

namespace tally {
namespace {

// ---------------------------------------------------------------------------------------------
// Calendar math

struct CivilCase {
  int64_t year;
  unsigned month;
  unsigned day;
  int64_t days;  // since 1970-01-01; checked with Python's datetime and Hinnant's integer formulas
};

constexpr CivilCase kCivilCases[] = {
    {1970, 1, 1, 0},
    {1969, 12, 31, -1},
    {2000, 1, 1, 10957},  // PostgreSQL's epoch
    {2000, 2, 29, 11016},
    {2000, 3, 1, 11017},
    {1900, 3, 1, -25508},  // 1900 is no leap year
    {2024, 2, 29, 19782},
    {2026, 12, 7, 20794},
    {1, 1, 1, -719162},
    {0, 1, 1, -719528},
    {0, 3, 1, -719468},  // Hinnant's era origin
    {-1, 12, 31, -719529},
    {9999, 12, 31, 2932896},
    {32767, 12, 31, 11248737},    // the last year std::chrono::year holds
    {32768, 1, 1, 11248738},      // and one past it
    {294276, 12, 31, 106762939},  // PostgreSQL's last timestamp date
    {-4713, 11, 24, -2440588},    // PostgreSQL's first date (4714-11-24 BC; year 0 is 1 BC)
};

TEST(Calendar, DaysFromCivilTable) {
  for (const CivilCase& c : kCivilCases) {
    EXPECT_EQ(days_from_civil(c.year, c.month, c.day), c.days)
        << c.year << "-" << c.month << "-" << c.day;
  }
}

TEST(Calendar, CivilFromDaysInvertsTheTable) {
  for (const CivilCase& c : kCivilCases) {
    const CivilDate date = civil_from_days(c.days);
    EXPECT_EQ(date.year, c.year) << c.days;
    EXPECT_EQ(date.month, c.month) << c.days;
    EXPECT_EQ(date.day, c.day) << c.days;
  }
}

TEST(Calendar, RoundTripsEveryDayOfFourCenturies) {
  for (int64_t days = -146097 * 2; days < 146097 * 2; days += 7) {
    const CivilDate date = civil_from_days(days);
    ASSERT_EQ(days_from_civil(date.year, date.month, date.day), days) << days;
  }
}

TEST(Calendar, ADayPastTheMonthsEndCountsOn) {
  // binary_values' date encoder checks only 1-31 and relies on this, as it did before chrono.
  EXPECT_EQ(days_from_civil(2023, 2, 31), days_from_civil(2023, 3, 3));
  EXPECT_EQ(days_from_civil(2024, 4, 31), days_from_civil(2024, 5, 1));
}

TEST(Calendar, LeapYearsAndMonthLengths) {
  struct Case {
    int64_t year;
    bool leap;
  };
  for (const Case& c :
       {Case{2000, true}, Case{1900, false}, Case{2024, true}, Case{2023, false}, Case{0, true},
        Case{-4, true}, Case{-100, false}, Case{40000, true}, Case{40100, false}}) {
    EXPECT_EQ(is_leap_year(c.year), c.leap) << c.year;
    EXPECT_EQ(days_in_month(c.year, 2), c.leap ? 29U : 28U) << c.year;
  }
  constexpr unsigned kLengths[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  for (unsigned month = 1; month <= 12; ++month) {
    EXPECT_EQ(days_in_month(2023, month), kLengths[month - 1]) << month;
  }
}

// ---------------------------------------------------------------------------------------------
// host:port

TEST(HostPort, ParsesValidAddresses) {
  struct Case {
    std::string_view text;
    std::string_view host;
    uint16_t port;
  };
  for (const Case& c : {Case{"db:5432", "db", 5432}, Case{"127.0.0.1:1", "127.0.0.1", 1},
                        Case{"pg-s0-leader:65535", "pg-s0-leader", 65535},
                        Case{"::1:5432", "::1", 5432}, Case{"h:00080", "h", 80}}) {
    Result<HostPort> parsed = parse_host_port(c.text);
    ASSERT_TRUE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed->host, c.host) << c.text;
    EXPECT_EQ(parsed->port, c.port) << c.text;
  }
}

TEST(HostPort, RejectsMalformedAddresses) {
  // The two config loaders differed here before: one took any number of port digits.
  for (std::string_view bad : {"", "db", "db:", ":5432", "db:54x2", "db:-1", "db: 5432", "db:0",
                               "db:65536", "db:99999", "db:123456", "db:5432 "}) {
    Result<HostPort> parsed = parse_host_port(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidArgument);
  }
  EXPECT_EQ(parse_host_port("db:x").error().message,
            "address \"db:x\": expected host:port with a port from 1 to 65535");
}

TEST(HostPort, SplitsWithoutChecking) {
  struct Case {
    std::string_view address;
    std::string_view port_if_absent;
    std::string_view host;
    std::string_view port;
  };
  for (const Case& c : {Case{"db:5432", "", "db", "5432"}, Case{"db", "5432", "db", "5432"},
                        Case{"db", "", "db", ""}, Case{"::1:6432", "5432", "::1", "6432"},
                        Case{"db:x", "5432", "db", "x"}}) {
    const HostPortText parts = split_host_port(c.address, c.port_if_absent);
    EXPECT_EQ(parts.host, c.host) << c.address;
    EXPECT_EQ(parts.port, c.port) << c.address;
  }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL LSN text

TEST(Lsn, ParseAndFormatRoundTrip) {
  struct Case {
    std::string_view text;
    uint64_t value;
  };
  for (const Case& c : {Case{"0/0", 0}, Case{"0/16B3748", 0x16B3748},
                        Case{"16/B374D848", (uint64_t{0x16} << 32) | 0xB374D848},
                        Case{"FFFFFFFF/FFFFFFFF", ~uint64_t{0}}, Case{"1/0", uint64_t{1} << 32}}) {
    Result<uint64_t> parsed = parse_lsn(c.text);
    ASSERT_TRUE(parsed.ok()) << c.text;
    EXPECT_EQ(*parsed, c.value) << c.text;
    EXPECT_EQ(format_lsn(c.value), c.text);
  }
  EXPECT_EQ(*parse_lsn("a/b"), (uint64_t{0xA} << 32) | 0xB);  // lower case accepted
  EXPECT_EQ(*parse_lsn("00000001/00000002"), (uint64_t{1} << 32) | 2);
  for (uint64_t v : {uint64_t{1}, uint64_t{0x123456789ABCDEF0}, uint64_t{0xDEADBEEF} << 32}) {
    EXPECT_EQ(*parse_lsn(format_lsn(v)), v);
  }
}

TEST(Lsn, RejectsMalformedTextInsteadOfReadingZero) {
  // The health checkers' copies read all of these as LSN 0; the caller now decides what it means.
  for (std::string_view bad : {"", "/", "0/", "/0", "0x1/0", "1/2/3", "123456789/0", "0/123456789",
                               "g/0", " 0/0", "0/0 ", "-1/0", "16B374D848"}) {
    Result<uint64_t> parsed = parse_lsn(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidArgument);
  }
  EXPECT_EQ(parse_lsn("x/y").error().message,
            "LSN \"x/y\": expected two groups of 1-8 hex digits separated by '/', such as "
            "0/16B3748");
}

// ---------------------------------------------------------------------------------------------
// libpq conninfo

TEST(Conninfo, QuotesOnlyWhatLibpqWouldMisread) {
  struct Case {
    std::string_view value;
    std::string_view quoted;
  };
  for (const Case& c : {Case{"tally", "tally"}, Case{"127.0.0.1", "127.0.0.1"}, Case{"a=b", "a=b"},
                        Case{"", "''"}, Case{"two words", "'two words'"},
                        Case{"it's", R"('it\'s')"}, Case{R"(back\slash)", R"('back\\slash')"},
                        Case{"tab\there", "'tab\there'"}, Case{"new\nline", "'new\nline'"},
                        Case{"-c statement_timeout=1000", "'-c statement_timeout=1000'"}}) {
    EXPECT_EQ(quote_conninfo_value(c.value), c.quoted) << c.value;
  }
}

TEST(Conninfo, BuildsKeywordValuePairsInOrder) {
  EXPECT_EQ(build_conninfo({{"host", "127.0.0.1"},
                            {"port", "5432"},
                            {"dbname", "tally"},
                            {"user", "tally"},
                            {"password", "p w'd"}}),
            R"(host=127.0.0.1 port=5432 dbname=tally user=tally password='p w\'d')");
  EXPECT_EQ(build_conninfo({}), "");
  std::string conninfo = build_conninfo({{"host", "db"}});
  append_conninfo_param(conninfo, "options", "-c statement_timeout=1000");
  EXPECT_EQ(conninfo, "host=db options='-c statement_timeout=1000'");
}

}  // namespace
}  // namespace tally
