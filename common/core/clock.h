// Clock: the seam between code that decides by time (failure windows, pauses, deadlines) and the
// tests that drive it. SystemClock reads the real clocks; ManualClock moves only when told.
// Both are thread-safe; a Clock outlives everything that holds a reference to it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace tally {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic milliseconds (for windows and timeouts); only differences mean anything.
  virtual int64_t steady_ms() const = 0;
  // Milliseconds since the Unix epoch (for records other processes read).
  virtual int64_t wall_ms() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t steady_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  int64_t wall_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 1'000'000) : now_(start_ms) {}
  int64_t steady_ms() const override { return now_.load(); }
  int64_t wall_ms() const override { return now_.load(); }
  void advance(int64_t ms) { now_.fetch_add(ms); }

 private:
  std::atomic<int64_t> now_;
};

inline int64_t wall_clock_ms() {
  return SystemClock().wall_ms();
}

}  // namespace tally
