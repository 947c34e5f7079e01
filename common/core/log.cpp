#include "common/core/log.h"

#include <cstdio>
#include <ctime>
#include <utility>

namespace tally {
namespace {

constexpr std::string_view kOtherKeys = "(other keys)";

}  // namespace

void log_line(std::string_view component, std::string_view message) {
  int64_t now = wall_clock_ms();
  time_t secs = static_cast<time_t>(now / 1000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char stamp[96];
  std::snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(now % 1000));
  std::string text = bounded_message(message);
  // One fprintf per line: stdio locks the stream, so lines of two threads never interleave.
  std::fprintf(stderr, "%s %.*s: %s\n", stamp, static_cast<int>(component.size()), component.data(),
               text.c_str());
}

std::string bounded_message(std::string_view message) {
  if (message.size() <= kMaxLogMessageBytes) return std::string(message);
  return std::string(message.substr(0, kMaxLogMessageBytes)) + "... (" +
         std::to_string(message.size() - kMaxLogMessageBytes) + " bytes cut)";
}

LogThrottle::LogThrottle(const Clock& clock, std::string component, LogThrottleOptions options)
    : clock_(clock),
      component_(std::move(component)),
      options_(options),
      last_sweep_ms_(clock.steady_ms()) {}

LogThrottle::~LogThrottle() {
  std::vector<std::string> out;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, w] : windows_) {
      if (w.suppressed > 0) out.push_back(report(key, w));
    }
  }
  for (const auto& line : out) log_line(component_, line);
}

void LogThrottle::log(std::string_view key, std::string_view message) {
  for (const auto& line : admit(key, message)) log_line(component_, line);
}

std::vector<std::string> LogThrottle::drain_ended() {
  std::vector<std::string> out;
  std::lock_guard lock(mu_);
  drain_ended_locked(clock_.steady_ms(), out);
  return out;
}

std::vector<std::string> LogThrottle::admit(std::string_view key, std::string_view message) {
  int64_t now = clock_.steady_ms();
  std::vector<std::string> out;
  std::lock_guard lock(mu_);
  if (now - last_sweep_ms_ >= options_.window_ms) {
    drain_ended_locked(now, out);
    last_sweep_ms_ = now;
  }
  auto it = windows_.find(key);
  if (it == windows_.end()) {
    if (windows_.size() >= options_.max_keys) drain_ended_locked(now, out);
    // Still full: new keys share one entry, so a key per request cannot grow the map.
    if (windows_.size() >= options_.max_keys) key = kOtherKeys;
    it = windows_.find(key);
    if (it == windows_.end()) it = windows_.emplace(std::string(key), Window{now, 0, 0}).first;
  } else if (now - it->second.start_ms >= options_.window_ms) {
    if (it->second.suppressed > 0) out.push_back(report(it->first, it->second));
    it->second = Window{now, 0, 0};
  }
  Window& w = it->second;
  if (w.written < options_.lines_per_window) {
    ++w.written;
    out.emplace_back(message);
  } else {
    ++w.suppressed;
  }
  return out;
}

void LogThrottle::drain_ended_locked(int64_t now, std::vector<std::string>& out) {
  for (auto it = windows_.begin(); it != windows_.end();) {
    if (now - it->second.start_ms < options_.window_ms) {
      ++it;
      continue;
    }
    if (it->second.suppressed > 0) out.push_back(report(it->first, it->second));
    it = windows_.erase(it);
  }
}

std::string LogThrottle::report(const std::string& key, const Window& w) const {
  return "suppressed " + std::to_string(w.suppressed) + " similar message" +
         (w.suppressed == 1 ? "" : "s") + " (" + key + ") in a " +
         std::to_string(options_.window_ms / 1000) + " s window after " +
         std::to_string(w.written) + " written";
}

}  // namespace tally
