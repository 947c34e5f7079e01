// judge_trend (the soak harness's verdict per service and resource): stable with noise, a leak
// that goes on, a rise that levels off, warm-up ignored, falling series, too few samples.
#include "tests/support/resource_trend.h"

#include <gtest/gtest.h>

namespace tally::testing {
namespace {

const TrendThresholds kRss{2048, 0.05};  // KiB: 2 MiB or 5 %
const TrendThresholds kFds{3, 0.1};

TEST(ResourceTrendTest, TooFewSamples) {
  auto v = judge_trend({100, 100, 100, 100}, kRss);
  EXPECT_EQ(v.trend, Trend::kTooFewSamples);
  EXPECT_NE(v.reason.find("have 4"), std::string::npos) << v.reason;
  EXPECT_EQ(judge_trend({}, kFds).trend, Trend::kTooFewSamples);
}

TEST(ResourceTrendTest, NoiseAroundALevelIsStable) {
  auto v =
      judge_trend({50000, 60000, 59000, 61000, 60500, 59800, 60900, 60100, 59900, 61200}, kRss);
  EXPECT_EQ(v.trend, Trend::kStable) << v.reason;
  EXPECT_EQ(v.reason, "first third 60000, middle 60500, last 60100: a rise of 100 is within 3000");
}

TEST(ResourceTrendTest, TheWarmUpSampleIsIgnored) {
  // The first sample is far below the rest (pools opening): not growth.
  auto v = judge_trend({10, 40, 41, 40, 40, 41, 40}, kFds);
  EXPECT_EQ(v.trend, Trend::kStable) << v.reason;
}

TEST(ResourceTrendTest, ASteadyLeakKeepsGrowing) {
  std::vector<double> rss;
  for (int i = 0; i < 12; ++i) rss.push_back(60000 + 1500.0 * i);  // +1.5 MiB a minute
  auto v = judge_trend(rss, kRss);
  EXPECT_EQ(v.trend, Trend::kGrowing) << v.reason;
  EXPECT_GT(v.late, v.early);
  std::vector<double> fds;
  for (int i = 0; i < 10; ++i) fds.push_back(30 + i);  // one descriptor more every sample
  EXPECT_EQ(judge_trend(fds, kFds).trend, Trend::kGrowing);
}

TEST(ResourceTrendTest, ARiseThatStopsLevelsOff) {
  auto v =
      judge_trend({60000, 60000, 70000, 80000, 90000, 90100, 90000, 89900, 90000, 90050}, kRss);
  EXPECT_EQ(v.trend, Trend::kLevelledOff) << v.reason;
}

TEST(ResourceTrendTest, AWarmUpThenNoiseIsNotGrowth) {
  // A PostgreSQL leader with its backends in a 10-minute soak (KiB): up over the first minutes,
  // then swinging between 81 and 84 MiB. A quarter-threshold "still rising" test called it growing.
  auto v = judge_trend(
      {72499, 77312, 80589, 83046, 86323, 83251, 85914, 83251, 86426, 86221, 83456}, kRss);
  EXPECT_NE(v.trend, Trend::kGrowing) << v.reason;
}

TEST(ResourceTrendTest, ARiseBelowTheThresholdIsStable) {
  // +1 MiB over the run on 100 MiB: allocator noise, not a leak.
  auto v = judge_trend({100000, 100000, 100200, 100400, 100600, 100800, 101000}, kRss);
  EXPECT_EQ(v.trend, Trend::kStable) << v.reason;
  EXPECT_EQ(judge_trend({20, 20, 21, 21, 22, 22, 22}, kFds).trend, Trend::kStable);
}

TEST(ResourceTrendTest, FallingIsStable) {
  EXPECT_EQ(judge_trend({90000, 90000, 85000, 80000, 75000, 70000}, kRss).trend, Trend::kStable);
}

TEST(ResourceTrendTest, FlatAfterWarmUpWithinTheBound) {
  // A cache filling over the first third, then noise within 10 %: flat.
  auto v = judge_flat_after_warm_up({400, 600, 800, 810, 790, 820, 800, 830, 805}, 0.10);
  EXPECT_TRUE(v.flat) << v.reason;
  EXPECT_EQ(v.reason, "middle third 810, last 805: -0.6% (bound 10%)");
  EXPECT_TRUE(judge_flat_after_warm_up({900, 900, 900, 800, 800, 700}, 0.10).flat);
}

TEST(ResourceTrendTest, StillRisingAfterWarmUpIsNotFlat) {
  // The cluster proxy of the 20-minute run (MiB every 2 minutes): 530, 841, 966, 1012 ...
  auto v = judge_flat_after_warm_up({241, 530, 841, 900, 966, 1012}, 0.10);
  EXPECT_FALSE(v.flat) << v.reason;
  EXPECT_EQ(v.middle, 870.5);
  EXPECT_EQ(v.late, 989);
  // Just past the bound fails, just within passes.
  EXPECT_FALSE(judge_flat_after_warm_up({100, 100, 100, 100, 111, 111}, 0.10).flat);
  EXPECT_TRUE(judge_flat_after_warm_up({100, 100, 100, 100, 110, 110}, 0.10).flat);
}

TEST(ResourceTrendTest, ASmallRiseWithinTheSlackIsFlat) {
  // A 25 MiB process whose samples catch a few MiB of request buffers or not.
  const std::vector<double> sawtooth = {24, 30, 25, 32, 27, 34, 27, 35, 26, 41, 31, 38, 28};
  EXPECT_FALSE(judge_flat_after_warm_up(sawtooth, 0.10).flat);
  auto v = judge_flat_after_warm_up(sawtooth, 0.10, 8);
  EXPECT_TRUE(v.flat) << v.reason;
  EXPECT_NE(v.reason.find("or +8"), std::string::npos) << v.reason;
  // A leak outgrows the slack.
  const std::vector<double> leak = {20, 25, 30, 35, 40, 45, 50, 55, 60};
  EXPECT_FALSE(judge_flat_after_warm_up(leak, 0.10, 8).flat);
}

TEST(ResourceTrendTest, FlatNeedsSixSamples) {
  auto v = judge_flat_after_warm_up({100, 100, 100, 100, 100}, 0.10);
  EXPECT_FALSE(v.flat);
  EXPECT_EQ(v.reason, "need 6 samples after the warm-up, have 5");
}

TEST(ResourceTrendTest, NamesForTheTable) {
  EXPECT_EQ(trend_name(Trend::kGrowing), "KEEPS GROWING");
  EXPECT_EQ(trend_name(Trend::kStable), "stable");
}

}  // namespace
}  // namespace tally::testing
