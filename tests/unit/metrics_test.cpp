// Unit tests for common/metrics: the exact Prometheus text of a small registry, escaping,
// cumulative histogram buckets, idempotent registration, name validation and exact sums under
// concurrent increments.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics/metrics_registry.h"

namespace tally {
namespace {

TEST(MetricsRegistry, RendersExactExpositionText) {
  MetricsRegistry r;
  r.counter("tally_requests_total", "Requests served.", {{"route", "/b"}, {"code", "200"}}).inc(3);
  r.counter("tally_requests_total", "Requests served.", {{"code", "404"}, {"route", "/a"}}).inc();
  r.gauge("tally_open", "Open things.").set(2.5);
  r.gauge_fn("tally_answer", "Computed at scrape time.", {{"kind", "fn"}}, [] { return 42.0; });
  Histogram& h = r.histogram("tally_latency_seconds", "Latency.", {{"op", "read"}}, {0.125, 1, 10});
  h.observe(0.0625);
  h.observe(0.125);  // upper bounds are inclusive
  h.observe(0.5);
  h.observe(20);

  EXPECT_EQ(r.render_prometheus(),
            "# HELP tally_answer Computed at scrape time.\n"
            "# TYPE tally_answer gauge\n"
            "tally_answer{kind=\"fn\"} 42\n"
            "# HELP tally_latency_seconds Latency.\n"
            "# TYPE tally_latency_seconds histogram\n"
            "tally_latency_seconds_bucket{op=\"read\",le=\"0.125\"} 2\n"
            "tally_latency_seconds_bucket{op=\"read\",le=\"1\"} 3\n"
            "tally_latency_seconds_bucket{op=\"read\",le=\"10\"} 3\n"
            "tally_latency_seconds_bucket{op=\"read\",le=\"+Inf\"} 4\n"
            "tally_latency_seconds_sum{op=\"read\"} 20.6875\n"
            "tally_latency_seconds_count{op=\"read\"} 4\n"
            "# HELP tally_open Open things.\n"
            "# TYPE tally_open gauge\n"
            "tally_open 2.5\n"
            "# HELP tally_requests_total Requests served.\n"
            "# TYPE tally_requests_total counter\n"
            "tally_requests_total{code=\"200\",route=\"/b\"} 3\n"
            "tally_requests_total{code=\"404\",route=\"/a\"} 1\n");
}

TEST(MetricsRegistry, EscapesLabelValuesAndHelp) {
  MetricsRegistry r;
  r.counter("tally_x_total", "Help with \\ and\nnewline \"quotes\".", {{"v", "a\\b\"c\nd"}}).inc();
  EXPECT_EQ(r.render_prometheus(),
            "# HELP tally_x_total Help with \\\\ and\\nnewline \"quotes\".\n"
            "# TYPE tally_x_total counter\n"
            "tally_x_total{v=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST(MetricsRegistry, FormatsNumbersLikeThePrometheusClients) {
  MetricsRegistry r;
  r.gauge("tally_a", "a").set(0.0001);
  r.gauge("tally_b", "b").set(0.00001);
  r.gauge("tally_c", "c").set(100);
  r.gauge("tally_d", "d").set(-2.5e21);
  r.gauge("tally_e", "e").set(1.0 / 0.0);
  r.gauge("tally_f", "f").set(0.1 + 0.2);
  r.counter("tally_g", "g").inc(18446744073709551615u);
  std::string text = r.render_prometheus();
  for (const char* line :
       {"tally_a 0.0001\n", "tally_b 1e-05\n", "tally_c 100\n", "tally_d -2.5e+21\n",
        "tally_e +Inf\n", "tally_f 0.30000000000000004\n", "tally_g 18446744073709551615\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << text;
  }
  // The default buckets' le labels.
  r.histogram("tally_l", "l");
  text = r.render_prometheus();
  EXPECT_NE(text.find("tally_l_bucket{le=\"0.0005\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tally_l_bucket{le=\"2.5\"} 0\n"), std::string::npos) << text;
}

TEST(MetricsRegistry, HistogramBucketsAreCumulative) {
  MetricsRegistry r;
  Histogram& h = r.histogram("tally_h", "h", {}, {1, 2, 3});
  for (double v : {0.5, 1.5, 1.6, 2.5, 2.6, 2.7, 99.0}) h.observe(v);
  Histogram::Snapshot s = h.snapshot();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{1, 3, 6, 7}));
  EXPECT_EQ(s.count, 7u);
  EXPECT_DOUBLE_EQ(s.sum, 0.5 + 1.5 + 1.6 + 2.5 + 2.6 + 2.7 + 99.0);
  std::string text = r.render_prometheus();
  EXPECT_NE(text.find("tally_h_bucket{le=\"2\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tally_h_bucket{le=\"+Inf\"} 7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tally_h_count 7\n"), std::string::npos) << text;
}

TEST(MetricsRegistry, DurationsAreObservedInSeconds) {
  MetricsRegistry r;
  Histogram& h = r.histogram("tally_d_seconds", "d");
  h.observe(std::chrono::milliseconds(3));
  Histogram::Snapshot s = h.snapshot();
  EXPECT_DOUBLE_EQ(s.sum, 0.003);
  // 0.003 s falls in the 0.005 bucket of the default latency buckets.
  EXPECT_EQ(s.bounds, default_latency_buckets());
  EXPECT_EQ(s.cumulative[4], 0u);  // le 0.0025
  EXPECT_EQ(s.cumulative[5], 1u);  // le 0.005
}

TEST(MetricsRegistry, SameNameAndLabelsReturnSameMetric) {
  MetricsRegistry r;
  Counter& a = r.counter("tally_c_total", "c", {{"x", "1"}, {"y", "2"}});
  Counter& b = r.counter("tally_c_total", "c", {{"y", "2"}, {"x", "1"}});  // order does not matter
  Counter& c = r.counter("tally_c_total", "c", {{"x", "1"}, {"y", "3"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &c);
  EXPECT_EQ(&r.gauge("tally_g", "g"), &r.gauge("tally_g", "g"));
  EXPECT_EQ(&r.histogram("tally_h", "h"), &r.histogram("tally_h", "h"));
  a.inc();
  b.inc();
  EXPECT_EQ(a.value(), 2u);
}

TEST(MetricsRegistry, GaugeSetAddAndFunctionReplacement) {
  MetricsRegistry r;
  Gauge& g = r.gauge("tally_g", "g");
  g.set(5);
  g.add(-1.5);
  g.inc();
  g.dec();
  EXPECT_DOUBLE_EQ(g.value(), 3.5);
  r.gauge_fn("tally_f", "f", {}, [] { return 1.0; });
  r.gauge_fn("tally_f", "f", {}, [] { return 2.0; });
  EXPECT_NE(r.render_prometheus().find("tally_f 2\n"), std::string::npos);
  EXPECT_THROW(r.gauge_fn("tally_g", "g", {}, [] { return 0.0; }), std::invalid_argument);
}

void expect_invalid(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception, expected one naming " << needle;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(MetricsRegistry, RejectsBadNamesNamingThem) {
  MetricsRegistry r;
  expect_invalid([&] { r.counter("1abc", "x"); }, "1abc");
  expect_invalid([&] { r.counter("bad-name", "x"); }, "bad-name");
  expect_invalid([&] { r.counter("", "x"); }, "\"\"");
  expect_invalid([&] { r.counter("tally_ok", "x", {{"bad:label", "v"}}); }, "bad:label");
  expect_invalid([&] { r.counter("tally_ok", "x", {{"__reserved", "v"}}); }, "__reserved");
  expect_invalid([&] { r.counter("tally_ok", "x", {{"a", "1"}, {"a", "2"}}); }, "\"a\" repeated");
  expect_invalid([&] { r.histogram("tally_hh", "x", {{"le", "1"}}); }, "\"le\"");
  expect_invalid([&] { r.histogram("tally_hh", "x", {}, {1, 1}); }, "tally_hh");
  r.counter("tally_typed", "x");
  expect_invalid([&] { r.gauge("tally_typed", "x"); }, "tally_typed");
  r.histogram("tally_hb", "x", {}, {1, 2});
  expect_invalid([&] { r.histogram("tally_hb", "x", {{"a", "b"}}, {1, 3}); }, "other buckets");
  // Colons are fine in metric names; nothing bad was registered.
  r.counter("tally:recorded:rule", "x");
  EXPECT_EQ(r.render_prometheus().find("tally_ok"), std::string::npos);
}

TEST(MetricsRegistry, ConcurrentIncrementsSumExactly) {
  MetricsRegistry r;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&r] {
      // Registration from several threads at once returns the same metrics.
      Counter& c = r.counter("tally_hits_total", "hits");
      Histogram& h = r.histogram("tally_obs", "obs", {}, {0.5});
      Gauge& g = r.gauge("tally_level", "level");
      for (int i = 0; i < kPerThread; ++i) {
        c.inc();
        h.observe(1.0);
        g.add(1.0);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(r.counter("tally_hits_total", "hits").value(), uint64_t{kThreads} * kPerThread);
  Histogram::Snapshot s = r.histogram("tally_obs", "obs", {}, {0.5}).snapshot();
  EXPECT_EQ(s.count, uint64_t{kThreads} * kPerThread);
  EXPECT_DOUBLE_EQ(s.sum, double{kThreads} * kPerThread);
  EXPECT_DOUBLE_EQ(r.gauge("tally_level", "level").value(), double{kThreads} * kPerThread);
}

}  // namespace
}  // namespace tally
