// Time for stats reads (contract 2): parsing the API's instants, rounding a range to whole UTC
// minutes, and tiling it with the coarsest buckets that cover it exactly (days in the middle, hours
// next to them, minutes at the ends), so a one-year read touches a few hundred rows.
// Pure functions over epoch milliseconds; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/core/result.h"

namespace tally::cluster_proxy {

inline constexpr int64_t kMinuteMs = 60'000;
inline constexpr int64_t kHourMs = 60 * kMinuteMs;
inline constexpr int64_t kDayMs = 24 * kHourMs;
// 9999-12-31T23:59:59.999Z: the last instant the API accepts.
inline constexpr int64_t kMaxInstantMs = 253'402'300'799'999;

enum class Granularity { kMinute, kHour, kDay };

std::string_view granularity_name(Granularity g);
int64_t granularity_ms(Granularity g);
// "minute", "hour", "day"; kInvalidArgument otherwise (the caller names the parameter).
Result<Granularity> parse_granularity(std::string_view text);

// An instant given by a client: epoch milliseconds (digits only, e.g. 1763800000000) or RFC 3339
// ("2025-11-22T08:27:00Z", "2025-11-22T09:27:00.5+01:00"). `sub_ms` is true when the text named a
// moment inside that millisecond (RFC 3339 fractions finer than 1 ms), so rounding up is exact.
struct Instant {
  int64_t ms = 0;
  bool sub_ms = false;
};
// Accepts 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z. The error message states the expected
// forms; the caller prefixes the parameter name and value.
Result<Instant> parse_instant(std::string_view text);

// "2025-11-22T08:27:00Z" (milliseconds shown only when not zero: "...:00.250Z").
std::string format_rfc3339(int64_t ms);
// "2025-11-22 08:27:00+00": a timestamptz literal PostgreSQL reads the same under any TimeZone.
std::string format_sql_timestamptz(int64_t ms);

// A half-open span [start_ms, end_ms); empty when start_ms == end_ms.
struct Span {
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  bool empty() const { return start_ms >= end_ms; }
  friend bool operator==(const Span&, const Span&) = default;
};

// start rounded down and end rounded up to whole minutes (contract 2). Requires start < end.
Span round_to_minutes(const Instant& start, const Instant& end);

// The buckets that tile a minute-aligned span exactly, using no bucket coarser than `coarsest`:
//   [minute_lo][hour_lo][day][hour_hi][minute_hi]
// in time order, each part possibly empty (an empty part has start == end). Every part is aligned
// to its granularity, the parts are adjacent and their union is the span.
struct Tiling {
  Span minute_lo, hour_lo, day, hour_hi, minute_hi;
};
Tiling tile(Span minutes, Granularity coarsest);

}  // namespace tally::cluster_proxy
