// Write epochs for the local stats cache: one counter per slot of the keyspace (ksid % kSlots).
// A read puts its slot's epoch, taken before it asks the shard, into its cache key; an applied
// counters batch bumps the slots of its videos, so no later read is answered from a value cached
// before the apply (a stale entry is simply never looked up again and ages out of the LRU).
// Any thread: relaxed atomics; a read racing an apply either misses or sees the newer epoch.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "common/keyspace/ksid.h"

namespace tally::cluster_proxy {

class StatsEpochs {
 public:
  static constexpr std::size_t kSlots = 4096;

  uint32_t of(KeyspaceId ksid) const {
    return slots_[ksid % kSlots].load(std::memory_order_acquire);
  }
  void bump(KeyspaceId ksid) { slots_[ksid % kSlots].fetch_add(1, std::memory_order_acq_rel); }

 private:
  std::array<std::atomic<uint32_t>, kSlots> slots_{};
};

}  // namespace tally::cluster_proxy
