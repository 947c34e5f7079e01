// WriteLoop: a bounded write loop for failover tests. Its own thread INSERTs increasing ids into
// `table (id bigint)` through one libpq connection (re-made after any error), remembers every id
// whose INSERT was acknowledged and when each attempt started and ended, so a test can measure
// write unavailability and check that nothing acknowledged was lost.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tally::testing {

class WriteLoop {
 public:
  using Clock = std::chrono::steady_clock;

  // Ids start at `first_id`: loops sharing a table use disjoint ranges.
  WriteLoop(std::string conninfo, std::string table = "cs_writes", int64_t first_id = 1);
  ~WriteLoop();
  WriteLoop(const WriteLoop&) = delete;
  WriteLoop& operator=(const WriteLoop&) = delete;

  void stop();
  std::vector<int64_t> acked() const;
  size_t acked_count() const;
  // Attempts that failed (connection or statement errors), since the start.
  size_t failed_count() const;
  // The end of the first acknowledged write that started at or after `t`.
  std::optional<Clock::time_point> first_ok_started_after(Clock::time_point t) const;
  // The longest time between two acknowledgements after `t` (or from `t` to the first), seconds.
  double longest_gap_after(Clock::time_point t) const;
  std::string last_error() const;

 private:
  struct Attempt {
    Clock::time_point start, end;
    bool ok;
  };
  void run();

  std::string conninfo_;
  std::string table_;
  int64_t first_id_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<int64_t> acked_;
  std::vector<Attempt> attempts_;
  std::string last_error_;
  std::thread thread_;
};

}  // namespace tally::testing
