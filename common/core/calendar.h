// Calendar math: proleptic Gregorian dates <-> days since 1970-01-01, on C++20 <chrono>.
// Exact for every year an int64_t day count can hold (chrono's own years stop at +-32767; the
// calendar repeats every 400 years, so wider years are shifted by whole eras). Pure; any thread.
#pragma once

#include <cstdint>

namespace tally {

struct CivilDate {
  int64_t year = 1970;
  unsigned month = 1;  // 1-12
  unsigned day = 1;    // 1-31
};

// Days from 1970-01-01 to year-month-day (negative before it). `month` must be 1-12 and `day`
// 1-31; a day past the month's end counts on into the next month (2023-02-31 is 2023-03-03), as
// std::chrono::sys_days does, so callers that must reject it check days_in_month first.
int64_t days_from_civil(int64_t year, unsigned month, unsigned day);

// The date `days` after 1970-01-01; the inverse of days_from_civil.
CivilDate civil_from_days(int64_t days);

bool is_leap_year(int64_t year);

// 28-31; `month` must be 1-12.
unsigned days_in_month(int64_t year, unsigned month);

}  // namespace tally
