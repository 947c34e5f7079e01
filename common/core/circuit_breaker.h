// CircuitBreaker: one per downstream (the cluster proxy keeps one per shard, the processor one
// toward the cluster proxy), shared by every caller. After `failure_threshold` consecutive
// unavailable/timeout failures the circuit opens and calls fail fast (the cluster proxy answers 503
// with Retry-After, the processor's writers wait) for `open_ms`; then exactly one call is let
// through as a probe (half-open): its success closes the circuit, its failure opens it again.
// Lock-free on the hot path; any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/core/clock.h"

namespace tally {

struct CircuitOptions {
  int failure_threshold = 5;  // 0 turns breakers off
  int64_t open_ms = 1000;
};

class CircuitBreaker {
 public:
  CircuitBreaker(CircuitOptions options, const Clock& clock) : options_(options), clock_(clock) {}

  // True when a call may go ahead now (closed, or this call is the half-open probe).
  bool allow();
  void record_success();
  void record_failure();
  // Milliseconds until a probe is let through; 0 when closed.
  int64_t retry_after_ms() const;
  // "closed", "open" or "half_open".
  const char* state() const;
  bool is_open() const;

 private:
  CircuitOptions options_;
  const Clock& clock_;
  std::atomic<int> failures_{0};
  // While open: the steady time when the next probe may go; 0 when closed.
  std::atomic<int64_t> open_until_{0};
  std::atomic<bool> probing_{false};
};

// The breakers by shard range, created on first use and kept for the process's life.
class CircuitBreakers {
 public:
  CircuitBreakers(CircuitOptions options, const Clock& clock) : options_(options), clock_(clock) {}
  CircuitBreaker& get(const std::string& shard);
  // (shard, state) for every breaker, for /v1/topology and /metrics.
  std::vector<std::pair<std::string, CircuitBreaker*>> all();

 private:
  CircuitOptions options_;
  const Clock& clock_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<CircuitBreaker>> breakers_;
};

}  // namespace tally
