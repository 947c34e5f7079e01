#include "common/core/calendar.h"

#include <chrono>

namespace tally {
namespace {

constexpr int64_t kYearsPerEra = 400;
constexpr int64_t kDaysPerEra = 146097;  // 400 Gregorian years, leap days included

// Floor division: -1 / 400 is era -1, not 0.
constexpr int64_t floor_div(int64_t value, int64_t divisor) {
  const int64_t quotient = value / divisor;
  return (value % divisor != 0 && (value < 0) != (divisor < 0)) ? quotient - 1 : quotient;
}

// A year in [0, 400): inside std::chrono::year's range, with the same calendar as `year`.
std::chrono::year year_in_era(int64_t year) {
  return std::chrono::year{static_cast<int>(year - floor_div(year, kYearsPerEra) * kYearsPerEra)};
}

}  // namespace

int64_t days_from_civil(int64_t year, unsigned month, unsigned day) {
  const int64_t era = floor_div(year, kYearsPerEra);
  const std::chrono::year_month_day date{year_in_era(year), std::chrono::month{month},
                                         std::chrono::day{day}};
  return std::chrono::sys_days{date}.time_since_epoch().count() + era * kDaysPerEra;
}

CivilDate civil_from_days(int64_t days) {
  // Day 0 of era 0 is 0000-03-01 in Hinnant's terms; here an era starts on 0000-01-01, which is
  // days_from_civil(0, 1, 1) days from the epoch.
  constexpr int64_t kEraStart = -719528;  // 0000-01-01
  const int64_t era = floor_div(days - kEraStart, kDaysPerEra);
  const std::chrono::year_month_day date{
      std::chrono::sys_days{std::chrono::days{days - era * kDaysPerEra}}};
  return CivilDate{static_cast<int>(date.year()) + era * kYearsPerEra,
                   static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day())};
}

bool is_leap_year(int64_t year) {
  return year_in_era(year).is_leap();
}

unsigned days_in_month(int64_t year, unsigned month) {
  const std::chrono::year_month_day_last last{year_in_era(year) / std::chrono::month{month} /
                                              std::chrono::last};
  return static_cast<unsigned>(last.day());
}

}  // namespace tally
