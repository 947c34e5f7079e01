#include "cluster_proxy/src/time_range.h"

#include <cstdio>

#include "common/core/calendar.h"

namespace tally::cluster_proxy {
namespace {

// Reads exactly `n` digits at `pos`.
bool digits(std::string_view s, size_t& pos, size_t n, int64_t& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    out = out * 10 + (c - '0');
  }
  pos += n;
  return true;
}

bool expect(std::string_view s, size_t& pos, char c) {
  if (pos >= s.size() || s[pos] != c) return false;
  ++pos;
  return true;
}

int64_t floor_to(int64_t ms, int64_t unit) {
  return ms / unit * unit;  // ms >= 0
}
int64_t ceil_to(int64_t ms, int64_t unit) {
  return (ms + unit - 1) / unit * unit;
}

constexpr const char* kExpectedInstant =
    "expected epoch milliseconds (digits) or an RFC 3339 time such as 2025-11-22T08:27:00Z, "
    "between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z";

}  // namespace

std::string_view granularity_name(Granularity g) {
  switch (g) {
    case Granularity::kMinute:
      return "minute";
    case Granularity::kHour:
      return "hour";
    case Granularity::kDay:
      return "day";
  }
  return "minute";
}

int64_t granularity_ms(Granularity g) {
  switch (g) {
    case Granularity::kMinute:
      return kMinuteMs;
    case Granularity::kHour:
      return kHourMs;
    case Granularity::kDay:
      return kDayMs;
  }
  return kMinuteMs;
}

Result<Granularity> parse_granularity(std::string_view text) {
  if (text == "minute") return Granularity::kMinute;
  if (text == "hour") return Granularity::kHour;
  if (text == "day") return Granularity::kDay;
  return make_error(ErrorCode::kInvalidArgument, "expected one of minute, hour, day");
}

Result<Instant> parse_instant(std::string_view s) {
  auto bad = [] { return make_error(ErrorCode::kInvalidArgument, kExpectedInstant); };
  if (s.empty() || s.size() > 40) return bad();
  bool all_digits = true;
  for (char c : s) all_digits = all_digits && c >= '0' && c <= '9';
  if (all_digits) {
    if (s.size() > 15) return bad();
    int64_t ms = 0;
    for (char c : s) ms = ms * 10 + (c - '0');
    if (ms > kMaxInstantMs) return bad();
    return Instant{ms, false};
  }
  size_t pos = 0;
  int64_t y, mo, d, h, mi, sec;
  if (!digits(s, pos, 4, y) || !expect(s, pos, '-') || !digits(s, pos, 2, mo) ||
      !expect(s, pos, '-') || !digits(s, pos, 2, d) || !expect(s, pos, 'T') ||
      !digits(s, pos, 2, h) || !expect(s, pos, ':') || !digits(s, pos, 2, mi) ||
      !expect(s, pos, ':') || !digits(s, pos, 2, sec)) {
    return bad();
  }
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, static_cast<unsigned>(mo)) || h > 23 ||
      mi > 59 || sec > 59) {
    return bad();
  }
  int64_t frac_ms = 0;
  bool sub_ms = false;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t n = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (n < 3) {
        frac_ms = frac_ms * 10 + (s[pos] - '0');
      } else if (s[pos] != '0') {
        sub_ms = true;
      }
      ++n;
      ++pos;
    }
    if (n == 0 || n > 9) return bad();
    for (size_t i = n; i < 3; ++i) frac_ms *= 10;
  }
  int64_t offset_min = 0;
  if (pos < s.size() && s[pos] == 'Z') {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int sign = s[pos] == '-' ? -1 : 1;
    ++pos;
    int64_t oh, om;
    if (!digits(s, pos, 2, oh) || !expect(s, pos, ':') || !digits(s, pos, 2, om) || oh > 23 ||
        om > 59) {
      return bad();
    }
    offset_min = sign * (oh * 60 + om);
  } else {
    return bad();
  }
  if (pos != s.size()) return bad();
  const int64_t days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  int64_t ms = ((days * 24 + h) * 60 + mi - offset_min) * kMinuteMs + sec * 1000 + frac_ms;
  if (ms < 0 || ms > kMaxInstantMs || (ms == kMaxInstantMs && sub_ms)) return bad();
  return Instant{ms, sub_ms};
}

std::string format_rfc3339(int64_t ms) {
  const int64_t days = ms / kDayMs;
  int64_t rest = ms % kDayMs;
  const CivilDate c = civil_from_days(days);
  char buf[40];
  int h = static_cast<int>(rest / kHourMs);
  int mi = static_cast<int>(rest % kHourMs / kMinuteMs);
  int sec = static_cast<int>(rest % kMinuteMs / 1000);
  int frac = static_cast<int>(rest % 1000);
  if (frac == 0) {
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02dZ", static_cast<int>(c.year),
             static_cast<int>(c.month), static_cast<int>(c.day), h, mi, sec);
  } else {
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", static_cast<int>(c.year),
             static_cast<int>(c.month), static_cast<int>(c.day), h, mi, sec, frac);
  }
  return buf;
}

std::string format_sql_timestamptz(int64_t ms) {
  const int64_t days = ms / kDayMs;
  int64_t rest = ms % kDayMs;
  const CivilDate c = civil_from_days(days);
  char buf[48];
  snprintf(buf, sizeof(buf), "%04d-%02d-%02d %02d:%02d:%02d.%03d+00", static_cast<int>(c.year),
           static_cast<int>(c.month), static_cast<int>(c.day), static_cast<int>(rest / kHourMs),
           static_cast<int>(rest % kHourMs / kMinuteMs), static_cast<int>(rest % kMinuteMs / 1000),
           static_cast<int>(rest % 1000));
  return buf;
}

Span round_to_minutes(const Instant& start, const Instant& end) {
  Span s;
  s.start_ms = floor_to(start.ms, kMinuteMs);
  int64_t e = end.ms;
  s.end_ms = ceil_to(e, kMinuteMs);
  if (end.sub_ms && s.end_ms == e) s.end_ms += kMinuteMs;
  return s;
}

Tiling tile(Span span, Granularity coarsest) {
  const int64_t s = span.start_ms;
  const int64_t e = span.end_ms;
  Tiling t;
  // Empty parts sit at the position they would have, so the five parts stay in time order.
  t.minute_lo = {s, e};
  t.hour_lo = t.day = t.hour_hi = t.minute_hi = {e, e};
  if (coarsest == Granularity::kMinute || span.empty()) return t;
  const int64_t hs = ceil_to(s, kHourMs);
  const int64_t he = floor_to(e, kHourMs);
  if (hs >= he) return t;  // no whole hour inside
  if (coarsest == Granularity::kDay) {
    const int64_t ds = ceil_to(s, kDayMs);
    const int64_t de = floor_to(e, kDayMs);
    if (ds < de) {
      t.minute_lo = {s, hs};
      t.hour_lo = {hs, ds};
      t.day = {ds, de};
      t.hour_hi = {de, he};
      t.minute_hi = {he, e};
      return t;
    }
  }
  t.minute_lo = {s, hs};
  t.hour_lo = {hs, he};
  t.day = t.hour_hi = {he, he};
  t.minute_hi = {he, e};
  return t;
}

}  // namespace tally::cluster_proxy
