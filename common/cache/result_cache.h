// ResultCache: encoded responses of reads, by a key the caller builds (the shard proxy: statement
// text, parameter values, result formats, database, user; the cluster proxy: the canonical stats
// request), each with its own TTL, under a memory bound with LRU eviction. Lookups and inserts are
// O(1); a hit shares the stored bytes (no copy). Any thread: the cache is split into shards by key
// hash, each behind its own mutex; stats() reads atomics without locking.
#pragma once

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
  // Upper bound of the charged bytes of all entries: key + value + kEntryOverheadBytes each.
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

class ResultCache {
 public:
  // Per-entry estimate of the bookkeeping beyond key and value bytes: list and hash nodes, the
  // shared_ptr control block and the string headers.
  static constexpr std::size_t kEntryOverheadBytes = 160;
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
  // kMaxTtl counts as kMaxTtl), replacing
  // an entry of the same key, then evicts the least recently used entries of the shard until it
  // is within its bound. Returns false, storing nothing, for a null value, ttl <= 0 or an entry
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
  // The charge of an entry: what counts against the bound.
  static std::size_t charge_of(std::size_t key_bytes, std::size_t value_bytes) {
    return key_bytes + value_bytes + kEntryOverheadBytes;
  }

 private:
  using TimePoint = std::chrono::steady_clock::time_point;

  struct Entry {
    std::string key;
    std::shared_ptr<const std::string> value;
    TimePoint expires;
    std::size_t charge;
  };

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
