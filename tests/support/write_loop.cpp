#include "tests/support/write_loop.h"

#include <algorithm>
#include <memory>

#include "tests/support/pg_client.h"

namespace tally::testing {

WriteLoop::WriteLoop(std::string conninfo, std::string table, int64_t first_id)
    : conninfo_(std::move(conninfo)), table_(std::move(table)), first_id_(first_id) {
  thread_ = std::thread([this] { run(); });
}

WriteLoop::~WriteLoop() {
  stop();
}

void WriteLoop::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

std::vector<int64_t> WriteLoop::acked() const {
  std::lock_guard lock(mu_);
  return acked_;
}

size_t WriteLoop::acked_count() const {
  std::lock_guard lock(mu_);
  return acked_.size();
}

size_t WriteLoop::failed_count() const {
  std::lock_guard lock(mu_);
  return static_cast<size_t>(
      std::count_if(attempts_.begin(), attempts_.end(), [](const Attempt& a) { return !a.ok; }));
}

std::optional<WriteLoop::Clock::time_point> WriteLoop::first_ok_started_after(
    Clock::time_point t) const {
  std::lock_guard lock(mu_);
  for (const auto& a : attempts_) {
    if (a.ok && a.start >= t) return a.end;
  }
  return std::nullopt;
}

double WriteLoop::longest_gap_after(Clock::time_point t) const {
  std::lock_guard lock(mu_);
  double worst = 0;
  Clock::time_point last = t;
  for (const auto& a : attempts_) {
    if (!a.ok || a.end < t) continue;
    worst = std::max(worst, std::chrono::duration<double>(a.end - last).count());
    last = a.end;
  }
  return worst;
}

std::string WriteLoop::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void WriteLoop::run() {
  std::unique_ptr<PgClient> c;
  int64_t next = first_id_;
  while (!stop_) {
    if (!c || !c->ok()) {
      c = std::make_unique<PgClient>(conninfo_);
      if (!c->ok()) {
        {
          std::lock_guard lock(mu_);
          last_error_ = c->error();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
    }
    int64_t id = next++;
    auto start = Clock::now();
    std::string r = c->query("INSERT INTO " + table_ + " (id) VALUES (" + std::to_string(id) + ")");
    auto end = Clock::now();
    bool ok = r == "OK";
    {
      std::lock_guard lock(mu_);
      attempts_.push_back({start, end, ok});
      if (ok) {
        acked_.push_back(id);
      } else {
        last_error_ = r;
      }
    }
    if (!ok) {
      c.reset();  // whatever broke, start over on a fresh connection
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
}

}  // namespace tally::testing
