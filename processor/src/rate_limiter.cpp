#include "processor/src/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace tally::processor {

TokenBucket::TokenBucket(double rate_per_s, double burst, const Clock& clock)
    : rate_(rate_per_s),
      burst_(burst),
      clock_(clock),
      tokens_(burst),
      last_ms_(clock.steady_ms()) {}

int64_t TokenBucket::take(double n) {
  std::lock_guard lock(mu_);
  int64_t now = clock_.steady_ms();
  tokens_ = std::min(burst_, tokens_ + static_cast<double>(now - last_ms_) * rate_ / 1000.0);
  last_ms_ = now;
  double need = std::min(n, burst_);
  if (tokens_ >= need) {
    tokens_ -= n;
    return 0;
  }
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil((need - tokens_) * 1000.0 / rate_)));
}

}  // namespace tally::processor
