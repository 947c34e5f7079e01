// Unit tests for the proxies' result cache: hits share the stored bytes, TTLs on an injected
// clock, LRU order per shard, the memory bound and the per-entry limit, the charge against what
// malloc really hands out, option checks, and four threads reading and writing at once with
// consistent counters (run under TSan as well).
#include "common/cache/result_cache.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace tally {
namespace {

using std::chrono::milliseconds;

// A clock that moves only when told to.
class FakeClock {
 public:
  CacheClock as_function() {
    return [this] {
      return std::chrono::steady_clock::time_point(
          std::chrono::nanoseconds(now_ns_.load(std::memory_order_relaxed)));
    };
  }
  void advance(milliseconds by) {
    now_ns_.fetch_add(std::chrono::nanoseconds(by).count(), std::memory_order_relaxed);
  }

 private:
  std::atomic<int64_t> now_ns_{int64_t{1'000'000'000}};
};

std::shared_ptr<const std::string> bytes(std::size_t n, char fill = 'x') {
  return std::make_shared<const std::string>(n, fill);
}

std::unique_ptr<ResultCache> make_cache(ResultCacheOptions options) {
  Result<std::unique_ptr<ResultCache>> cache = ResultCache::create(std::move(options));
  EXPECT_TRUE(cache.ok()) << (cache.ok() ? "" : cache.error().message);
  return cache.ok() ? std::move(cache).value() : nullptr;
}

// One shard holding exactly `entries` entries of a 1-byte key and a `value_bytes` value.
ResultCacheOptions single_shard(FakeClock& clock, std::size_t entries, std::size_t value_bytes) {
  ResultCacheOptions options;
  options.shards = 1;
  options.entry_limit_divisor = 1;
  options.max_bytes = entries * ResultCache::charge_of(1, value_bytes);
  options.clock = clock.as_function();
  return options;
}

TEST(ResultCache, MissThenHitSharesTheStoredBytes) {
  FakeClock clock;
  auto cache = make_cache({.max_bytes = 1 << 20, .shards = 4, .clock = clock.as_function()});
  ASSERT_TRUE(cache);
  EXPECT_EQ(cache->lookup("k"), nullptr);
  const auto value = std::make_shared<const std::string>("DataRow...CommandComplete");
  ASSERT_TRUE(cache->insert("k", value, milliseconds(1000)));
  const auto hit = cache->lookup("k");
  ASSERT_NE(hit, nullptr);
  EXPECT_EQ(hit.get(), value.get());  // the same bytes, not a copy
  EXPECT_EQ(*hit, "DataRow...CommandComplete");
  EXPECT_EQ(cache->lookup("other"), nullptr);

  const ResultCacheStats stats = cache->stats();
  EXPECT_EQ(stats.hits, 1U);
  EXPECT_EQ(stats.misses, 2U);
  EXPECT_EQ(stats.inserts, 1U);
  EXPECT_EQ(stats.entries, 1U);
  EXPECT_EQ(stats.bytes, ResultCache::charge_of(1, value->size()));
}

TEST(ResultCache, EntryExpiresAtItsTtl) {
  FakeClock clock;
  auto cache = make_cache({.max_bytes = 1 << 20, .shards = 2, .clock = clock.as_function()});
  ASSERT_TRUE(cache->insert("short", bytes(10), milliseconds(500)));
  ASSERT_TRUE(cache->insert("long", bytes(10), milliseconds(5000)));
  clock.advance(milliseconds(499));
  EXPECT_NE(cache->lookup("short"), nullptr);
  clock.advance(milliseconds(1));
  EXPECT_EQ(cache->lookup("short"), nullptr);  // lives for [insert, insert + ttl)
  EXPECT_NE(cache->lookup("long"), nullptr);

  const ResultCacheStats stats = cache->stats();
  EXPECT_EQ(stats.expirations, 1U);
  EXPECT_EQ(stats.entries, 1U);
  EXPECT_EQ(stats.hits, 2U);
  EXPECT_EQ(stats.misses, 1U);
}

TEST(ResultCache, ReinsertRefreshesValueAndTtl) {
  FakeClock clock;
  auto cache = make_cache({.max_bytes = 1 << 20, .shards = 1, .clock = clock.as_function()});
  ASSERT_TRUE(cache->insert("k", bytes(10, 'a'), milliseconds(100)));
  clock.advance(milliseconds(90));
  ASSERT_TRUE(cache->insert("k", bytes(30, 'b'), milliseconds(100)));
  clock.advance(milliseconds(90));
  const auto hit = cache->lookup("k");
  ASSERT_NE(hit, nullptr);
  EXPECT_EQ(*hit, std::string(30, 'b'));
  EXPECT_EQ(cache->stats().entries, 1U);
  EXPECT_EQ(cache->stats().bytes, ResultCache::charge_of(1, 30));
}

TEST(ResultCache, LeastRecentlyUsedIsEvictedAndATouchProtects) {
  FakeClock clock;
  auto cache = make_cache(single_shard(clock, 3, 100));
  ASSERT_TRUE(cache->insert("a", bytes(100), milliseconds(10'000)));
  ASSERT_TRUE(cache->insert("b", bytes(100), milliseconds(10'000)));
  ASSERT_TRUE(cache->insert("c", bytes(100), milliseconds(10'000)));
  ASSERT_NE(cache->lookup("a"), nullptr);  // a is now the most recent; b the least
  ASSERT_TRUE(cache->insert("d", bytes(100), milliseconds(10'000)));
  EXPECT_EQ(cache->lookup("b"), nullptr);
  EXPECT_NE(cache->lookup("a"), nullptr);
  EXPECT_NE(cache->lookup("c"), nullptr);
  EXPECT_NE(cache->lookup("d"), nullptr);
  EXPECT_EQ(cache->stats().evictions, 1U);
  EXPECT_EQ(cache->stats().entries, 3U);
}

TEST(ResultCache, ExpiredTailCountsAsExpirationWhenEvicted) {
  FakeClock clock;
  auto cache = make_cache(single_shard(clock, 2, 100));
  ASSERT_TRUE(cache->insert("a", bytes(100), milliseconds(10)));
  ASSERT_TRUE(cache->insert("b", bytes(100), milliseconds(10'000)));
  clock.advance(milliseconds(20));
  ASSERT_TRUE(cache->insert("c", bytes(100), milliseconds(10'000)));
  EXPECT_EQ(cache->stats().expirations, 1U);
  EXPECT_EQ(cache->stats().evictions, 0U);
}

// Far below its bound, a cache with a short TTL still lets expired answers go: each insert
// drops the expired entries at its shard's LRU tail.
TEST(ResultCache, InsertDropsTheExpiredTail) {
  FakeClock clock;
  auto cache = make_cache({.max_bytes = 1 << 20, .shards = 1, .clock = clock.as_function()});
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(cache->insert("old-" + std::to_string(i), bytes(100), milliseconds(500)));
  }
  ASSERT_TRUE(cache->insert("young", bytes(100), milliseconds(5000)));
  clock.advance(milliseconds(500));
  ASSERT_TRUE(cache->insert("new", bytes(100), milliseconds(500)));
  const ResultCacheStats stats = cache->stats();
  EXPECT_EQ(stats.entries, 2U);
  EXPECT_EQ(stats.expirations, 100U);
  EXPECT_EQ(stats.evictions, 0U);
  EXPECT_EQ(stats.bytes, 2 * ResultCache::charge_of(5, 100));
  EXPECT_NE(cache->lookup("young"), nullptr);
}

TEST(ResultCache, OversizedEntryIsNeverCached) {
  FakeClock clock;
  ResultCacheOptions options;
  options.max_bytes = 1 << 20;
  options.shards = 4;
  options.entry_limit_divisor = 8;
  options.clock = clock.as_function();
  auto cache = make_cache(options);
  EXPECT_EQ(cache->max_entry_bytes(), (std::size_t{1} << 20) / 4 / 8);
  // The largest value that fits beside a 3-byte key: one byte more is over the limit.
  std::size_t fits = cache->max_entry_bytes();
  while (ResultCache::charge_of(3, fits) > cache->max_entry_bytes()) --fits;
  EXPECT_TRUE(cache->insert("key", bytes(fits), milliseconds(1000)));
  EXPECT_FALSE(cache->insert("big", bytes(fits + 1), milliseconds(1000)));
  EXPECT_EQ(cache->lookup("big"), nullptr);
  EXPECT_NE(cache->lookup("key"), nullptr);
  // A refused fresh response also drops the stale one of the same key.
  EXPECT_FALSE(cache->insert("key", bytes(fits + 10), milliseconds(1000)));
  EXPECT_EQ(cache->lookup("key"), nullptr);
  EXPECT_EQ(cache->stats().rejected, 2U);
  EXPECT_EQ(cache->stats().entries, 0U);
  EXPECT_EQ(cache->stats().bytes, 0U);
}

TEST(ResultCache, RefusesNullValuesAndNonPositiveTtls) {
  FakeClock clock;
  auto cache = make_cache({.max_bytes = 1 << 20, .shards = 1, .clock = clock.as_function()});
  EXPECT_FALSE(cache->insert("a", nullptr, milliseconds(10)));
  EXPECT_FALSE(cache->insert("a", bytes(1), milliseconds(0)));
  EXPECT_FALSE(cache->insert("a", bytes(1), milliseconds(-5)));
  EXPECT_EQ(cache->stats().rejected, 3U);
  EXPECT_EQ(cache->stats().entries, 0U);
  // A huge TTL is capped, not overflowed.
  EXPECT_TRUE(cache->insert("a", bytes(1), milliseconds::max()));
  clock.advance(milliseconds(24 * 3600 * 1000));
  EXPECT_NE(cache->lookup("a"), nullptr);
}

TEST(ResultCache, MemoryBoundHoldsUnderManyInserts) {
  FakeClock clock;
  ResultCacheOptions options;
  options.max_bytes = 256 * 1024;
  options.shards = 16;
  options.entry_limit_divisor = 8;
  options.clock = clock.as_function();
  auto cache = make_cache(options);
  std::mt19937 rng(42);
  std::uniform_int_distribution<std::size_t> size(0, 1500);
  for (int i = 0; i < 20'000; ++i) {
    cache->insert("key-" + std::to_string(i), bytes(size(rng)), milliseconds(60'000));
    ASSERT_LE(cache->stats().bytes, options.max_bytes) << "after insert " << i;
  }
  const ResultCacheStats stats = cache->stats();
  EXPECT_GT(stats.evictions, 10'000U);
  EXPECT_GT(stats.entries, 100U);
  EXPECT_GT(stats.bytes, options.max_bytes / 2);  // the bound is used, not just respected
  EXPECT_EQ(stats.inserts + stats.rejected, 20'000U);
  EXPECT_EQ(stats.inserts - stats.evictions, stats.entries);
}

// Bytes malloc has handed out and not taken back, over all arenas (this test's thread only
// allocates from one).
std::size_t heap_in_use() {
  return mallinfo2().uordblks;
}

// False where malloc is not glibc's (a sanitizer build replaces it): mallinfo2 then sees nothing.
bool heap_is_measurable() {
  // Through volatile pointers, so the compiler cannot elide the allocation.
  void* (*volatile allocate)(std::size_t) = std::malloc;
  void (*volatile release)(void*) = std::free;
  const std::size_t before = heap_in_use();
  void* block = allocate(64 << 10);
  const bool seen = heap_in_use() >= before + (64 << 10);
  release(block);
  return seen;
}

// Many small entries: the charge must cover what the entries really take from malloc (keys built
// by appending hold spare capacity; nodes, buckets and control blocks cost more than the text).
TEST(ResultCache, ChargeCoversWhatMallocHandsOut) {
  if (!heap_is_measurable()) GTEST_SKIP() << "malloc is not glibc's here (a sanitizer build)";
  FakeClock clock;
  auto cache =
      make_cache({.max_bytes = std::size_t{1} << 30, .shards = 1, .clock = clock.as_function()});
  ASSERT_TRUE(cache);
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::size_t> value_size(0, 300);
  const std::size_t before = heap_in_use();
  for (int i = 0; i < 50'000; ++i) {
    std::string key = "shard-" + std::to_string(i % 4);
    key += "|v" + std::to_string(i) + "|view|2025-11-22T00:00:00Z|2025-11-23T00:00:00Z#";
    key += std::to_string(i % 7);
    ASSERT_TRUE(cache->insert(std::move(key), bytes(value_size(rng)), milliseconds(60'000)));
  }
  const std::size_t used = heap_in_use() - before;
  const ResultCacheStats stats = cache->stats();
  ASSERT_EQ(stats.entries, 50'000U);
  EXPECT_GE(stats.bytes, used) << "charged " << stats.bytes << ", malloc holds " << used;
  EXPECT_LE(stats.bytes, used + used / 10)
      << "charged " << stats.bytes << ", malloc holds " << used;
  cache->clear();
  EXPECT_LE(heap_in_use(), before + used / 100);  // what was counted is what goes
}

// Filled far past its bound with tiny entries, the cache evicts at the bound and the memory it
// really holds stays within it.
TEST(ResultCache, TinyEntriesEvictAtTheBoundOfRealMemory) {
  if (!heap_is_measurable()) GTEST_SKIP() << "malloc is not glibc's here (a sanitizer build)";
  FakeClock clock;
  ResultCacheOptions options;
  options.max_bytes = 4 << 20;
  options.shards = 16;
  options.clock = clock.as_function();
  const std::size_t before = heap_in_use();
  auto cache = make_cache(options);
  ASSERT_TRUE(cache);
  for (int i = 0; i < 200'000; ++i) {
    cache->insert("key-" + std::to_string(i) + "-of-many-small-ones", bytes(40),
                  milliseconds(60'000));
  }
  const ResultCacheStats stats = cache->stats();
  EXPECT_GT(stats.evictions, 100'000U);
  EXPECT_LE(stats.bytes, options.max_bytes);
  EXPECT_GT(stats.bytes, options.max_bytes - options.max_bytes / 10);
  EXPECT_LE(heap_in_use() - before, options.max_bytes + options.max_bytes / 20);
}

TEST(ResultCache, EraseClearAndPurge) {
  FakeClock clock;
  auto cache = make_cache({.max_bytes = 1 << 20, .shards = 4, .clock = clock.as_function()});
  for (int i = 0; i < 10; ++i) {
    cache->insert("k" + std::to_string(i), bytes(5), milliseconds(i < 5 ? 10 : 1000));
  }
  EXPECT_TRUE(cache->erase("k9"));
  EXPECT_FALSE(cache->erase("k9"));
  clock.advance(milliseconds(10));
  EXPECT_EQ(cache->purge_expired(), 5U);
  EXPECT_EQ(cache->stats().entries, 4U);
  EXPECT_EQ(cache->stats().expirations, 5U);
  cache->clear();
  EXPECT_EQ(cache->stats().entries, 0U);
  EXPECT_EQ(cache->stats().bytes, 0U);
  EXPECT_EQ(cache->lookup("k6"), nullptr);
}

TEST(ResultCache, CreateRejectsBadOptions) {
  ResultCacheOptions no_shards;
  no_shards.shards = 0;
  EXPECT_EQ(ResultCache::create(no_shards).error().message,
            "result cache shards=0: expected 1 to 1024");
  ResultCacheOptions too_many;
  too_many.shards = 5000;
  EXPECT_FALSE(ResultCache::create(too_many).ok());
  ResultCacheOptions no_divisor;
  no_divisor.entry_limit_divisor = 0;
  EXPECT_EQ(ResultCache::create(no_divisor).error().message,
            "result cache entry_limit_divisor=0: expected at least 1");
  ResultCacheOptions tiny;
  tiny.max_bytes = 1000;
  const auto error = ResultCache::create(tiny);
  ASSERT_FALSE(error.ok());
  EXPECT_EQ(error.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(error.error().message,
            "result cache max_bytes=1000: expected at least " +
                std::to_string(16 * 8 * 2 * ResultCache::kEntryOverheadBytes) +
                " for 16 shards and entries up to 1/8 of a shard");
  // Defaults are valid and use the real clock.
  auto cache = make_cache({});
  ASSERT_TRUE(cache);
  EXPECT_EQ(cache->max_bytes(), std::size_t{64} << 20);
  EXPECT_TRUE(cache->insert("k", bytes(1), milliseconds(60'000)));
  EXPECT_NE(cache->lookup("k"), nullptr);
}

// Four threads look up, insert and erase overlapping keys for about half a second. Every hit
// must carry the bytes stored for its key; the counters must add up to the calls made.
TEST(ResultCache, ConcurrentReadersAndWriters) {
  std::atomic<int64_t> now_ns{0};
  ResultCacheOptions options;
  options.max_bytes = 64 * 1024;
  options.shards = 4;
  options.entry_limit_divisor = 4;
  options.clock = [&now_ns] {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(now_ns.load()));
  };
  auto cache = make_cache(options);
  ASSERT_TRUE(cache);

  constexpr int kThreads = 4;
  constexpr int kKeys = 500;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> lookups{0}, insert_calls{0}, bad_hits{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t) * 7919U + 1U);
      uint64_t my_lookups = 0;
      uint64_t my_inserts = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const int k = static_cast<int>(rng() % kKeys);
        const std::string key = "k" + std::to_string(k);
        const unsigned op = rng() % 10;
        if (op < 6) {
          ++my_lookups;
          const auto hit = cache->lookup(key);
          // Values are the key repeated, so a hit shows whether it belongs to its key.
          if (hit && (hit->size() % key.size() != 0 || hit->compare(0, key.size(), key) != 0)) {
            bad_hits.fetch_add(1);
          }
        } else if (op < 9) {
          ++my_inserts;
          std::string value;
          const std::size_t repeats = 1 + rng() % 200;
          for (std::size_t r = 0; r < repeats; ++r) value += key;
          cache->insert(key, std::make_shared<const std::string>(std::move(value)),
                        milliseconds(1 + rng() % 50));
        } else if (t == 0 && rng() % 2 == 0) {
          now_ns.fetch_add(1'000'000);  // thread 0 moves time on by 1 ms now and then
        } else {
          cache->erase(key);
        }
      }
      lookups.fetch_add(my_lookups);
      insert_calls.fetch_add(my_inserts);
    });
  }
  std::this_thread::sleep_for(milliseconds(500));
  stop = true;
  for (std::thread& thread : threads) thread.join();

  const ResultCacheStats stats = cache->stats();
  EXPECT_EQ(bad_hits.load(), 0U);
  EXPECT_GT(lookups.load(), 1000U);
  EXPECT_EQ(stats.hits + stats.misses, lookups.load());
  EXPECT_EQ(stats.inserts + stats.rejected, insert_calls.load());
  EXPECT_GT(stats.hits, 0U);
  EXPECT_GT(stats.expirations, 0U);
  EXPECT_GT(stats.evictions, 0U);
  EXPECT_LE(stats.bytes, options.max_bytes);
  EXPECT_LE(stats.entries, static_cast<uint64_t>(kKeys));
  cache->clear();
  EXPECT_EQ(cache->stats().bytes, 0U);
  EXPECT_EQ(cache->stats().entries, 0U);
}

}  // namespace
}  // namespace tally
