// TokenBucket: the per-API-key rate limit of POST /v1/events, in events per second with a burst.
// A request takes as many tokens as it has events; a request larger than the burst is let through
// when the bucket is full (the bucket then goes into debt), so no size of request is refused
// forever. Thread-safe (a mutex; requests of one key may arrive on several io threads).
#pragma once

#include <cstdint>
#include <mutex>

#include "common/core/clock.h"

namespace tally::processor {

class TokenBucket {
 public:
  TokenBucket(double rate_per_s, double burst, const Clock& clock);

  // 0 when `n` tokens were taken; otherwise the milliseconds until they would be there (>= 1).
  int64_t take(double n);

 private:
  const double rate_;
  const double burst_;
  const Clock& clock_;
  std::mutex mu_;
  double tokens_;
  int64_t last_ms_;
};

}  // namespace tally::processor
