// MetricsRegistry: the Prometheus metrics of one service. The service owns it (there is no global
// registry) and hands it by reference to the components that register metrics in it; it must
// outlive them and the /metrics endpoint that renders it.
//
// Registration (counter(), gauge(), gauge_fn(), histogram()) happens at start-up: it takes a mutex,
// validates names and throws std::invalid_argument naming what is wrong. It returns a reference
// that stays valid as long as the registry; registering the same name and label set again returns
// the same metric, so components may register lazily, but keep the reference: the hot path is
// Counter::inc(), Gauge::add() and Histogram::observe(), which are relaxed lock-free atomics.
//
// render_prometheus() writes the text exposition format 0.0.4: families sorted by name, series
// sorted by their (name-sorted) labels, HELP and TYPE once per family.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tally {

// Label name and value pairs. The order does not matter: the registry sorts them by name.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing count.
class Counter {
 public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double d) { value_.fetch_add(d, std::memory_order_relaxed); }
  void inc() { add(1.0); }
  void dec() { add(-1.0); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted in fixed buckets (upper bounds, inclusive) plus their sum.
class Histogram {
 public:
  // `bounds` must be strictly increasing and finite (the registry checks); +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);

  // NaN observations are ignored.
  void observe(double value);
  // Observes a duration in seconds (the unit of default_latency_buckets()).
  template <typename Rep, typename Period>
  void observe(std::chrono::duration<Rep, Period> d) {
    observe(std::chrono::duration<double>(d).count());
  }

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // bounds.size() + 1 entries; the last one is +Inf == count
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, not cumulative; last is +Inf
  std::atomic<double> sum_{0.0};
};

// 0.0001 s (100 us) to 10 s.
std::vector<double> default_latency_buckets();

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and must not
  // start with "__" or repeat within a set; histograms reserve the label "le". A name already
  // registered with another type throws; the HELP text of the first registration is kept.
  Counter& counter(std::string_view name, std::string_view help, MetricLabels labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, MetricLabels labels = {});
  // A gauge whose value is fn(), called by render_prometheus() under the registry's mutex: it must
  // be quick, must not call into the registry, and must stay callable as long as the registry
  // renders. Registering the same name and labels again replaces the function.
  void gauge_fn(std::string_view name, std::string_view help, MetricLabels labels,
                std::function<double()> fn);
  // All series of one histogram family share the buckets of its first registration; other
  // buckets throw.
  Histogram& histogram(std::string_view name, std::string_view help, MetricLabels labels = {},
                       std::vector<double> buckets = default_latency_buckets());

  std::string render_prometheus() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family;
  struct Series;
  // With mu_ held: the family `name` (created when new) and its series for `labels`.
  Series& series(std::string_view name, std::string_view help, Type type, MetricLabels labels,
                 const std::vector<double>* buckets);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_;
};

}  // namespace tally
