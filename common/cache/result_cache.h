// ResultCache: encoded responses of reads, by a key the caller builds (the shard proxy: statement
// text, parameter values, result formats, database, user; the cluster proxy: the canonical stats
// request), each with its own TTL, under a memory bound with LRU eviction. The bound counts what an
// entry really takes from the allocator (key and value buffers, list and index nodes, bucket
// slots, the value's control block), not just key and value lengths. Lookups and inserts are
// O(1); a hit shares the stored bytes (no copy). Any thread: the cache is split into shards by key
// hash, each behind its own mutex; stats() reads atomics without locking.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/core/result.h"

namespace tally {

// Returns the current time; injected so tests drive TTLs without sleeping.
using CacheClock = std::function<std::chrono::steady_clock::time_point()>;

struct ResultCacheOptions {
  // Upper bound of the charged bytes of all entries (see ResultCache::charge_of).
  std::size_t max_bytes = std::size_t{64} << 20;
  // Independent LRU shards, each bounded by max_bytes / shards. 1..1024.
  std::size_t shards = 16;
  // An entry charged more than (max_bytes / shards) / entry_limit_divisor bytes is never
  // cached, so one response cannot flush a shard. >= 1; 8 by default.
  std::size_t entry_limit_divisor = 8;
  // Defaults to std::chrono::steady_clock::now.
  CacheClock clock;
};

// Counters since construction; each is read atomically, the set is not a snapshot.
struct ResultCacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;       // including lookups of expired entries
  uint64_t inserts = 0;      // new entries and replacements
  uint64_t rejected = 0;     // inserts refused: too large, no value or a TTL <= 0
  uint64_t evictions = 0;    // live entries dropped to stay within the bound
  uint64_t expirations = 0;  // entries dropped because their TTL had passed
  uint64_t bytes = 0;        // charged bytes held now
  uint64_t entries = 0;      // entries held now
};

namespace result_cache_detail {

struct Entry {
  std::string key;
  std::shared_ptr<const std::string> value;
  std::chrono::steady_clock::time_point expires;
  std::size_t charge;
};

// glibc malloc's chunk for a request: the request plus an 8-byte header, rounded up to 16 bytes,
// at least 32.
constexpr std::size_t allocation_bytes(std::size_t request) {
  return std::max<std::size_t>(32, (request + sizeof(std::size_t) + 15) & ~std::size_t{15});
}
// libstdc++ keeps up to 15 characters inside the std::string object.
inline constexpr std::size_t kInlineStringCapacity = 15;

}  // namespace result_cache_detail

class ResultCache {
 public:
  // What an entry takes beyond its key's and value's character buffers: its list node (the
  // Entry and two links), its index node (link, key view, iterator, cached hash), up to two
  // bucket slots (the index doubles its buckets at a load factor of 1) and the control block
  // std::make_shared puts in front of the value's std::string.
  static constexpr std::size_t kEntryOverheadBytes =
      result_cache_detail::allocation_bytes(sizeof(result_cache_detail::Entry) +
                                            2 * sizeof(void*)) +
      result_cache_detail::allocation_bytes(sizeof(void*) + sizeof(std::string_view) +
                                            sizeof(void*) + sizeof(std::size_t)) +
      2 * sizeof(void*) +
      result_cache_detail::allocation_bytes(2 * sizeof(void*) + sizeof(std::string));
  static constexpr std::size_t kMaxShards = 1024;
  static constexpr std::chrono::milliseconds kMaxTtl = std::chrono::hours(24 * 366);

  // kInvalidArgument when an option is out of range, e.g. a bound too small to hold one entry
  // per shard of kEntryOverheadBytes.
  static Result<std::unique_ptr<ResultCache>> create(ResultCacheOptions options);

  ResultCache(const ResultCache&) = delete;
  ResultCache& operator=(const ResultCache&) = delete;

  // The stored response, or nullptr on a miss. An entry whose TTL has passed is a miss and is
  // dropped. A hit makes the entry the most recently used of its shard.
  std::shared_ptr<const std::string> lookup(std::string_view key);

  // Stores `value` under `key` for `ttl` (it is a hit while now < insert time + ttl; a ttl above
  // kMaxTtl counts as kMaxTtl), replacing an entry of the same key, drops the expired entries at
  // the shard's LRU tail, then evicts the least recently used entries of the shard until it is
  // within its bound. Returns false, storing nothing, for a null value, ttl <= 0 or an entry
  // larger than max_entry_bytes() (an existing entry of that key is dropped in that case, so a
  // stale response never outlives a refused fresh one).
  bool insert(std::string key, std::shared_ptr<const std::string> value,
              std::chrono::milliseconds ttl);

  // Drops the entry of `key`, if any; true if there was one.
  bool erase(std::string_view key);
  // Drops every entry.
  void clear();
  // Drops the entries whose TTL has passed (O(entries)); for a periodic timer. Returns how many.
  std::size_t purge_expired();

  ResultCacheStats stats() const;
  std::size_t max_bytes() const { return shard_bytes_ * shards_.size(); }
  std::size_t max_entry_bytes() const { return max_entry_bytes_; }
  // The charge of an entry whose key and value strings have these capacities (not sizes: a
  // string built by appending holds more than it uses): what counts against the bound. Values
  // are expected to come from std::make_shared (one allocation with the control block).
  static constexpr std::size_t charge_of(std::size_t key_capacity, std::size_t value_capacity) {
    return string_heap_bytes(key_capacity) + string_heap_bytes(value_capacity) +
           kEntryOverheadBytes;
  }
  // Heap bytes of a std::string's character buffer of this capacity.
  static constexpr std::size_t string_heap_bytes(std::size_t capacity) {
    return capacity <= result_cache_detail::kInlineStringCapacity
               ? 0
               : result_cache_detail::allocation_bytes(capacity + 1);
  }

 private:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Entry = result_cache_detail::Entry;

  // One LRU: most recent at the front. The index keys view the list nodes' keys (list nodes do
  // not move). Counters are atomics so stats() needs no lock; they are written under `mutex`.
  struct alignas(64) Shard {
    std::mutex mutex;
    std::list<Entry> lru;
    std::unordered_map<std::string_view, std::list<Entry>::iterator> index;
    std::size_t bytes = 0;

    std::atomic<uint64_t> hits{0};
    std::atomic<uint64_t> misses{0};
    std::atomic<uint64_t> inserts{0};
    std::atomic<uint64_t> rejected{0};
    std::atomic<uint64_t> evictions{0};
    std::atomic<uint64_t> expirations{0};
    std::atomic<uint64_t> bytes_now{0};
    std::atomic<uint64_t> entries_now{0};
  };

  ResultCache(std::size_t shards, std::size_t shard_bytes, std::size_t max_entry_bytes,
              CacheClock clock);

  Shard& shard_for(std::string_view key);
  // Both with the shard's mutex held.
  void drop(Shard& shard, std::list<Entry>::iterator it);
  void publish(Shard& shard);

  std::vector<std::unique_ptr<Shard>> shards_;
  std::size_t shard_bytes_;
  std::size_t max_entry_bytes_;
  CacheClock clock_;
};

}  // namespace tally
