// The services' log lines: one timestamped line per call on stderr (the service's log file under
// `tallyctl cluster up`), and LogThrottle, which keeps a message that repeats per request or per
// retry from flooding that file. log_line is thread-safe; a LogThrottle is too (one mutex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/core/clock.h"

namespace tally {

// Longer messages are cut there, with a note of how much was cut: no line carries a whole request.
inline constexpr size_t kMaxLogMessageBytes = 4096;

// "2026-12-07T18:53:38.123Z component: message" on stderr, written with one fprintf so lines of
// two threads never interleave.
void log_line(std::string_view component, std::string_view message);

// `message` as log_line writes it: at most kMaxLogMessageBytes of it, then "... (N bytes cut)".
std::string bounded_message(std::string_view message);

struct LogThrottleOptions {
  int lines_per_window = 5;  // lines written per key and window; the rest are counted
  int64_t window_ms = 10'000;
  size_t max_keys = 256;  // keys tracked at once; beyond that, new keys share one "other" key
};

// At most `lines_per_window` lines per key in each window; what it holds back is reported as one
// line "suppressed K similar messages in the last N s (key)" once that key's window has ended: with
// the key's next message, or at the first message of any key after that, or at destruction.
// Keys name a kind of message (a call site, a partition), never a request: their number is bounded.
class LogThrottle {
 public:
  LogThrottle(const Clock& clock, std::string component, LogThrottleOptions options = {});
  ~LogThrottle();
  LogThrottle(const LogThrottle&) = delete;
  LogThrottle& operator=(const LogThrottle&) = delete;

  // Writes what admit() returns through log_line.
  void log(std::string_view key, std::string_view message);
  // The decision alone: the lines to write now, in order (suppression reports first), without the
  // component prefix.
  std::vector<std::string> admit(std::string_view key, std::string_view message);
  // Suppression reports of every key whose window has ended; called by admit and the destructor.
  std::vector<std::string> drain_ended();

 private:
  struct Window {
    int64_t start_ms = 0;
    int written = 0;
    int64_t suppressed = 0;
  };
  std::string report(const std::string& key, const Window& w) const;
  void drain_ended_locked(int64_t now, std::vector<std::string>& out);

  const Clock& clock_;
  const std::string component_;
  const LogThrottleOptions options_;
  std::mutex mu_;
  std::map<std::string, Window, std::less<>> windows_;
  int64_t last_sweep_ms_ = 0;
};

}  // namespace tally
