#include "common/cache/result_cache.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace tally {
namespace {

// kInlineStringCapacity and the node sizes in kEntryOverheadBytes describe libstdc++ on LP64.
static_assert(sizeof(std::string) == 4 * sizeof(void*), "ResultCache's charge assumes libstdc++");

// The shard's mutex is held wherever a counter changes, so a plain load and store does; readers
// on other threads still see whole values.
void bump(std::atomic<uint64_t>& counter) {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

// Spreads std::hash's bits before taking a shard: the shard's hash map uses the same hash, so
// the shard must not be chosen by the bits the map's buckets use.
std::size_t mix(std::size_t h) {
  uint64_t x = static_cast<uint64_t>(h);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return static_cast<std::size_t>(x);
}

}  // namespace

Result<std::unique_ptr<ResultCache>> ResultCache::create(ResultCacheOptions options) {
  if (options.shards < 1 || options.shards > kMaxShards) {
    return make_error(ErrorCode::kInvalidArgument,
                      "result cache shards=" + std::to_string(options.shards) + ": expected 1 to " +
                          std::to_string(kMaxShards));
  }
  if (options.entry_limit_divisor < 1) {
    return make_error(ErrorCode::kInvalidArgument,
                      "result cache entry_limit_divisor=0: expected at least 1");
  }
  // Each shard must take entries with some payload beyond the per-entry overhead.
  const std::size_t min_entry = 2 * kEntryOverheadBytes;
  const std::size_t min_bytes = options.shards * options.entry_limit_divisor * min_entry;
  if (options.max_bytes < min_bytes) {
    return make_error(ErrorCode::kInvalidArgument,
                      "result cache max_bytes=" + std::to_string(options.max_bytes) +
                          ": expected at least " + std::to_string(min_bytes) + " for " +
                          std::to_string(options.shards) + " shards and entries up to 1/" +
                          std::to_string(options.entry_limit_divisor) + " of a shard");
  }
  const std::size_t shard_bytes = options.max_bytes / options.shards;
  CacheClock clock = options.clock ? std::move(options.clock)
                                   : CacheClock([] { return std::chrono::steady_clock::now(); });
  // The constructor is private: create() is the only way in, so make_unique cannot be used.
  return std::unique_ptr<ResultCache>(new ResultCache(
      options.shards, shard_bytes, shard_bytes / options.entry_limit_divisor, std::move(clock)));
}

ResultCache::ResultCache(std::size_t shards, std::size_t shard_bytes, std::size_t max_entry_bytes,
                         CacheClock clock)
    : shard_bytes_(shard_bytes), max_entry_bytes_(max_entry_bytes), clock_(std::move(clock)) {
  shards_.reserve(shards);
  for (std::size_t i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
}

ResultCache::Shard& ResultCache::shard_for(std::string_view key) {
  return *shards_[mix(std::hash<std::string_view>{}(key)) % shards_.size()];
}

void ResultCache::drop(Shard& shard, std::list<Entry>::iterator it) {
  shard.bytes -= it->charge;
  shard.index.erase(std::string_view(it->key));
  shard.lru.erase(it);
}

void ResultCache::publish(Shard& shard) {
  shard.bytes_now.store(shard.bytes, std::memory_order_relaxed);
  shard.entries_now.store(shard.lru.size(), std::memory_order_relaxed);
}

std::shared_ptr<const std::string> ResultCache::lookup(std::string_view key) {
  const TimePoint now = clock_();
  Shard& shard = shard_for(key);
  std::lock_guard<std::mutex> lock(shard.mutex);
  const auto found = shard.index.find(key);
  if (found == shard.index.end()) {
    bump(shard.misses);
    return nullptr;
  }
  const auto it = found->second;
  if (now >= it->expires) {
    drop(shard, it);
    bump(shard.expirations);
    bump(shard.misses);
    publish(shard);
    return nullptr;
  }
  shard.lru.splice(shard.lru.begin(), shard.lru, it);
  bump(shard.hits);
  return it->value;
}

bool ResultCache::insert(std::string key, std::shared_ptr<const std::string> value,
                         std::chrono::milliseconds ttl) {
  const bool refused = !value || ttl <= std::chrono::milliseconds::zero() ||
                       charge_of(key.capacity(), value->capacity()) > max_entry_bytes_;
  const TimePoint now = clock_();
  Shard& shard = shard_for(key);
  std::lock_guard<std::mutex> lock(shard.mutex);
  const auto found = shard.index.find(key);
  if (refused) {
    if (found != shard.index.end()) {
      drop(shard, found->second);
      publish(shard);
    }
    bump(shard.rejected);
    return false;
  }
  // A replacement drops the old entry and stores the new key: the charge is the new key's.
  if (found != shard.index.end()) drop(shard, found->second);
  const std::size_t charge = charge_of(key.capacity(), value->capacity());
  shard.lru.push_front(
      Entry{std::move(key), std::move(value), now + std::min(ttl, kMaxTtl), charge});
  shard.index.emplace(std::string_view(shard.lru.front().key), shard.lru.begin());
  shard.bytes += charge;
  bump(shard.inserts);
  // Expired entries at the LRU tail go now rather than when the bound needs their room: with a
  // short TTL most of a full cache would otherwise be answers nobody may read. Each entry is
  // dropped once, so this costs O(1) per insert over time.
  while (shard.lru.size() > 1 && now >= std::prev(shard.lru.end())->expires) {
    bump(shard.expirations);
    drop(shard, std::prev(shard.lru.end()));
  }
  // The new entry is at the front and fits alone (charge <= max_entry_bytes_ <= shard_bytes_),
  // so this stops before reaching it.
  while (shard.bytes > shard_bytes_) {
    const auto victim = std::prev(shard.lru.end());
    bump(now >= victim->expires ? shard.expirations : shard.evictions);
    drop(shard, victim);
  }
  publish(shard);
  return true;
}

bool ResultCache::erase(std::string_view key) {
  Shard& shard = shard_for(key);
  std::lock_guard<std::mutex> lock(shard.mutex);
  const auto found = shard.index.find(key);
  if (found == shard.index.end()) return false;
  drop(shard, found->second);
  publish(shard);
  return true;
}

void ResultCache::clear() {
  for (const std::unique_ptr<Shard>& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mutex);
    shard->index.clear();
    shard->lru.clear();
    shard->bytes = 0;
    publish(*shard);
  }
}

std::size_t ResultCache::purge_expired() {
  const TimePoint now = clock_();
  std::size_t purged = 0;
  for (const std::unique_ptr<Shard>& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mutex);
    for (auto it = shard->lru.begin(); it != shard->lru.end();) {
      const auto next = std::next(it);
      if (now >= it->expires) {
        drop(*shard, it);
        bump(shard->expirations);
        ++purged;
      }
      it = next;
    }
    publish(*shard);
  }
  return purged;
}

ResultCacheStats ResultCache::stats() const {
  ResultCacheStats out;
  for (const std::unique_ptr<Shard>& shard : shards_) {
    out.hits += shard->hits.load(std::memory_order_relaxed);
    out.misses += shard->misses.load(std::memory_order_relaxed);
    out.inserts += shard->inserts.load(std::memory_order_relaxed);
    out.rejected += shard->rejected.load(std::memory_order_relaxed);
    out.evictions += shard->evictions.load(std::memory_order_relaxed);
    out.expirations += shard->expirations.load(std::memory_order_relaxed);
    out.bytes += shard->bytes_now.load(std::memory_order_relaxed);
    out.entries += shard->entries_now.load(std::memory_order_relaxed);
  }
  return out;
}

}  // namespace tally
