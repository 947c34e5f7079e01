// judge_trend: the soak harness's verdict on one resource series (the RSS or the open file
// descriptors of one service, sampled at a fixed interval): does it keep growing, did it grow and
// level off, or is it stable? Pure logic on numbers, no I/O; any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tally::testing {

enum class Trend { kTooFewSamples, kStable, kLevelledOff, kGrowing };

std::string_view trend_name(Trend trend);  // "too few samples", "stable", ...

// A rise counts only above max(min_increase, min_increase_fraction * the early level): RSS moves
// by allocator noise, FD counts by a connection or two.
struct TrendThresholds {
  double min_increase = 0;
  double min_increase_fraction = 0;
};

struct TrendVerdict {
  Trend trend = Trend::kTooFewSamples;
  double early = 0;    // median of the first third (after the warm-up sample)
  double late = 0;     // median of the last third
  std::string reason;  // one line a human can check against the samples
};

// The first sample is warm-up (pools and caches filling) and is ignored; at least 4 more are
// needed. The rest is split in thirds and their medians compared: growing when the last third is
// above the first by more than the threshold AND still above the middle third by more than half
// of it (the rise goes on: a steady leak rises as much from the middle to the last third as from
// the first to the middle); levelled off when it rose past the threshold but the last two thirds
// are within that; stable otherwise (falling included).
TrendVerdict judge_trend(const std::vector<double>& samples, const TrendThresholds& thresholds);

// The high-cardinality soak's stricter rule, on samples taken after the warm-up only: split in
// thirds, flat when the last third's median is within `max_rise_fraction` of the middle third's
// (falling counts as flat). At least 6 samples (two per third); fewer is not flat.
struct FlatVerdict {
  bool flat = false;
  double middle = 0;   // median of the middle third
  double late = 0;     // median of the last third
  std::string reason;  // "middle third 812, last 1003: +23.5% (bound 10%)"
};
// `min_rise` (in the samples' unit, 0: none): a rise up to this much is flat whatever its fraction,
// for a small process whose bounded request buffers come and go between samples.
FlatVerdict judge_flat_after_warm_up(const std::vector<double>& samples, double max_rise_fraction,
                                     double min_rise = 0);

}  // namespace tally::testing
