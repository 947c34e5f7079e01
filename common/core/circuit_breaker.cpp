#include "common/core/circuit_breaker.h"

namespace tally {

bool CircuitBreaker::allow() {
  if (options_.failure_threshold <= 0) return true;
  int64_t until = open_until_.load(std::memory_order_acquire);
  if (until == 0) return true;
  int64_t now = clock_.steady_ms();
  if (now < until) return false;
  // Half-open: one caller per window wins the probe (the others keep failing fast until it
  // reports). A probe that never reports only holds the circuit for one more window.
  if (!open_until_.compare_exchange_strong(until, now + options_.open_ms)) return false;
  probing_.store(true, std::memory_order_release);
  return true;
}

void CircuitBreaker::record_success() {
  failures_.store(0, std::memory_order_relaxed);
  open_until_.store(0, std::memory_order_release);
  probing_.store(false, std::memory_order_release);
}

void CircuitBreaker::record_failure() {
  if (options_.failure_threshold <= 0) return;
  int n = failures_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n >= options_.failure_threshold) {
    open_until_.store(clock_.steady_ms() + options_.open_ms, std::memory_order_release);
    probing_.store(false, std::memory_order_release);
  }
}

int64_t CircuitBreaker::retry_after_ms() const {
  int64_t until = open_until_.load(std::memory_order_acquire);
  if (until == 0) return 0;
  int64_t left = until - clock_.steady_ms();
  return left > 0 ? left : 0;
}

bool CircuitBreaker::is_open() const {
  return open_until_.load(std::memory_order_acquire) != 0;
}

const char* CircuitBreaker::state() const {
  int64_t until = open_until_.load(std::memory_order_acquire);
  if (until == 0) return "closed";
  if (probing_.load(std::memory_order_acquire)) return "half_open";
  return clock_.steady_ms() < until ? "open" : "half_open";
}

CircuitBreaker& CircuitBreakers::get(const std::string& shard) {
  std::lock_guard lock(mu_);
  auto& b = breakers_[shard];
  if (!b) b = std::make_unique<CircuitBreaker>(options_, clock_);
  return *b;
}

std::vector<std::pair<std::string, CircuitBreaker*>> CircuitBreakers::all() {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, CircuitBreaker*>> out;
  for (auto& [name, b] : breakers_) out.emplace_back(name, b.get());
  return out;
}

}  // namespace tally
