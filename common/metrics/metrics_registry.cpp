#include "common/metrics/metrics_registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace tally {
namespace {

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return name.substr(0, 2) != "__";
}

// Prometheus floats as Go's strconv.FormatFloat(v, 'g', -1, 64) writes them (what the Prometheus
// client libraries emit, so le="0.0005" matches across exporters): the shortest digits that
// round-trip, in fixed notation unless the exponent is below -4 or at least 21; +Inf, -Inf, NaN.
void append_double(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[64];
  auto sci = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string_view text(buf, static_cast<size_t>(sci.ptr - buf));
  int exponent = 0;
  size_t e = text.find('e');
  if (e != std::string_view::npos) {
    std::string_view digits = text.substr(e + 1);
    if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
    std::from_chars(digits.data(), digits.data() + digits.size(), exponent);
  }
  if (exponent < -4 || exponent >= 21) {
    out.append(text);
    return;
  }
  auto fixed = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  out.append(buf, fixed.ec == std::errc{} ? fixed.ptr : buf);
}

void append_uint(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, ec == std::errc{} ? end : buf);
}

// Label values escape backslash, double quote and line feed; HELP escapes backslash and line feed.
void append_escaped(std::string& out, std::string_view s, bool quotes) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quotes && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// `{a="x",b="y"}` plus an optional extra label (le) last; nothing when there are no labels.
void append_labels(std::string& out, const MetricLabels& labels, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  auto one = [&](std::string_view name, std::string_view value) {
    if (!first) out += ',';
    first = false;
    out += name;
    out += "=\"";
    append_escaped(out, value, true);
    out += '"';
  };
  for (const auto& [name, value] : labels) one(name, value);
  if (!extra_name.empty()) one(extra_name, extra_value);
  out += '}';
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Histogram

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::observe(double value) {
  if (std::isnan(value)) return;
  // The first bound >= value: buckets are "less than or equal".
  size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) -
                                 bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.count = total;  // == the +Inf bucket, so a scrape is always self-consistent
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> default_latency_buckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

// ---------------------------------------------------------------------------------------------
// Registry

struct MetricsRegistry::Series {
  MetricLabels labels;  // sorted by name
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::function<double()> gauge_fn;
  std::unique_ptr<Histogram> histogram;
};

struct MetricsRegistry::Family {
  std::string name;
  std::string help;
  Type type = Type::kCounter;
  std::vector<double> buckets;  // histograms
  std::map<MetricLabels, Series> series;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry::Series& MetricsRegistry::series(std::string_view name, std::string_view help,
                                                 Type type, MetricLabels labels,
                                                 const std::vector<double>* buckets) {
  if (!valid_metric_name(name)) {
    throw std::invalid_argument("invalid metric name \"" + std::string(name) + "\"");
  }
  std::sort(labels.begin(), labels.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& label = labels[i].first;
    if (!valid_label_name(label)) {
      throw std::invalid_argument("invalid label name \"" + label + "\" on metric " +
                                  std::string(name));
    }
    if (i > 0 && labels[i - 1].first == label) {
      throw std::invalid_argument("label \"" + label + "\" repeated on metric " +
                                  std::string(name));
    }
    if (type == Type::kHistogram && label == "le") {
      throw std::invalid_argument("label \"le\" is reserved on histogram " + std::string(name));
    }
  }
  if (buckets != nullptr) {
    for (size_t i = 0; i < buckets->size(); ++i) {
      double b = (*buckets)[i];
      if (!std::isfinite(b) || (i > 0 && b <= (*buckets)[i - 1])) {
        throw std::invalid_argument("histogram " + std::string(name) +
                                    ": buckets must be finite and strictly increasing");
      }
    }
  }

  auto it = families_.find(name);
  if (it == families_.end()) {
    auto f = std::make_unique<Family>();
    f->name = std::string(name);
    f->help = std::string(help);
    f->type = type;
    if (buckets != nullptr) f->buckets = *buckets;
    it = families_.emplace(f->name, std::move(f)).first;
  }
  Family& f = *it->second;
  if (f.type != type) {
    throw std::invalid_argument("metric " + std::string(name) +
                                " is already registered with another type");
  }
  if (buckets != nullptr && f.buckets != *buckets) {
    throw std::invalid_argument("histogram " + std::string(name) +
                                " is already registered with other buckets");
  }
  auto [sit, inserted] = f.series.try_emplace(labels);
  if (inserted) sit->second.labels = std::move(labels);
  return sit->second;
}

Counter& MetricsRegistry::counter(std::string_view name, std::string_view help,
                                  MetricLabels labels) {
  std::lock_guard lock(mu_);
  Series& s = series(name, help, Type::kCounter, std::move(labels), nullptr);
  if (!s.counter) s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help, MetricLabels labels) {
  std::lock_guard lock(mu_);
  Series& s = series(name, help, Type::kGauge, std::move(labels), nullptr);
  if (s.gauge_fn) {
    throw std::invalid_argument("gauge " + std::string(name) +
                                " is already registered with a function for these labels");
  }
  if (!s.gauge) s.gauge = std::make_unique<Gauge>();
  return *s.gauge;
}

void MetricsRegistry::gauge_fn(std::string_view name, std::string_view help, MetricLabels labels,
                               std::function<double()> fn) {
  if (!fn) throw std::invalid_argument("gauge " + std::string(name) + ": empty function");
  std::lock_guard lock(mu_);
  Series& s = series(name, help, Type::kGauge, std::move(labels), nullptr);
  if (s.gauge) {
    throw std::invalid_argument("gauge " + std::string(name) +
                                " is already registered as a plain gauge for these labels");
  }
  s.gauge_fn = std::move(fn);
}

Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help,
                                      MetricLabels labels, std::vector<double> buckets) {
  std::lock_guard lock(mu_);
  Series& s = series(name, help, Type::kHistogram, std::move(labels), &buckets);
  if (!s.histogram) s.histogram = std::make_unique<Histogram>(std::move(buckets));
  return *s.histogram;
}

std::string MetricsRegistry::render_prometheus() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, family] : families_) {
    const Family& f = *family;
    out += "# HELP ";
    out += f.name;
    out += ' ';
    append_escaped(out, f.help, false);
    out += "\n# TYPE ";
    out += f.name;
    switch (f.type) {
      case Type::kCounter:
        out += " counter\n";
        break;
      case Type::kGauge:
        out += " gauge\n";
        break;
      case Type::kHistogram:
        out += " histogram\n";
        break;
    }
    for (const auto& [key, s] : f.series) {
      if (f.type == Type::kHistogram) {
        Histogram::Snapshot snap = s.histogram->snapshot();
        std::string le;
        for (size_t i = 0; i <= snap.bounds.size(); ++i) {
          le.clear();
          if (i < snap.bounds.size()) {
            append_double(le, snap.bounds[i]);
          } else {
            le = "+Inf";
          }
          out += f.name;
          out += "_bucket";
          append_labels(out, s.labels, "le", le);
          out += ' ';
          append_uint(out, snap.cumulative[i]);
          out += '\n';
        }
        out += f.name;
        out += "_sum";
        append_labels(out, s.labels);
        out += ' ';
        append_double(out, snap.sum);
        out += '\n';
        out += f.name;
        out += "_count";
        append_labels(out, s.labels);
        out += ' ';
        append_uint(out, snap.count);
        out += '\n';
        continue;
      }
      out += f.name;
      append_labels(out, s.labels);
      out += ' ';
      if (s.counter) {
        append_uint(out, s.counter->value());
      } else if (s.gauge) {
        append_double(out, s.gauge->value());
      } else {
        append_double(out, s.gauge_fn());
      }
      out += '\n';
    }
  }
  return out;
}

}  // namespace tally
