#include "tests/support/resource_trend.h"

#include <algorithm>
#include <cstdio>

namespace tally::testing {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// "first third A, middle B, last C: " + the verdict's words.
std::string thirds(double early, double middle, double late) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "first third %.0f, middle %.0f, last %.0f: ", early, middle,
                late);
  return buf;
}

std::string number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.0f", v);
  return buf;
}

}  // namespace

std::string_view trend_name(Trend trend) {
  switch (trend) {
    case Trend::kTooFewSamples:
      return "too few samples";
    case Trend::kStable:
      return "stable";
    case Trend::kLevelledOff:
      return "grew, then levelled off";
    case Trend::kGrowing:
      return "KEEPS GROWING";
  }
  return "?";
}

TrendVerdict judge_trend(const std::vector<double>& samples, const TrendThresholds& thresholds) {
  TrendVerdict v;
  if (samples.size() < 5) {
    v.reason = "need the warm-up sample and 4 more, have " + std::to_string(samples.size());
    return v;
  }
  std::vector<double> s(samples.begin() + 1, samples.end());
  const size_t n = s.size();
  const size_t third = n / 3 == 0 ? 1 : n / 3;
  const double early = median({s.begin(), s.begin() + static_cast<long>(third)});
  const double middle =
      median({s.begin() + static_cast<long>(third), s.end() - static_cast<long>(third)});
  const double late = median({s.end() - static_cast<long>(third), s.end()});
  const double threshold =
      std::max(thresholds.min_increase, thresholds.min_increase_fraction * early);
  v.early = early;
  v.late = late;
  const double rise = late - early;
  if (rise <= threshold) {
    v.trend = Trend::kStable;
    v.reason = thirds(early, middle, late) + "a rise of " + number(rise) + " is within " +
               number(threshold);
  } else if (middle > early && late - middle > threshold / 2) {
    v.trend = Trend::kGrowing;
    v.reason = thirds(early, middle, late) + "still rising (threshold " + number(threshold) + ")";
  } else {
    v.trend = Trend::kLevelledOff;
    v.reason =
        thirds(early, middle, late) + "rose, then flat (threshold " + number(threshold) + ")";
  }
  return v;
}

FlatVerdict judge_flat_after_warm_up(const std::vector<double>& samples, double max_rise_fraction,
                                     double min_rise) {
  FlatVerdict v;
  const size_t n = samples.size();
  if (n < 6) {
    v.reason = "need 6 samples after the warm-up, have " + std::to_string(n);
    return v;
  }
  const long third = static_cast<long>(n / 3);
  v.middle = median({samples.begin() + third, samples.end() - third});
  v.late = median({samples.end() - third, samples.end()});
  const double rise = v.middle > 0 ? (v.late - v.middle) / v.middle : 0;
  v.flat = rise <= max_rise_fraction || v.late - v.middle <= min_rise;
  char buf[200];
  if (min_rise > 0) {
    std::snprintf(buf, sizeof(buf), "middle third %.0f, last %.0f: %+.1f%% (bound %.0f%% or +%.0f)",
                  v.middle, v.late, rise * 100, max_rise_fraction * 100, min_rise);
  } else {
    std::snprintf(buf, sizeof(buf), "middle third %.0f, last %.0f: %+.1f%% (bound %.0f%%)",
                  v.middle, v.late, rise * 100, max_rise_fraction * 100);
  }
  v.reason = buf;
  return v;
}

}  // namespace tally::testing
