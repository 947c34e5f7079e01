// DedupCache: one partition's memory of recent event ids (design brief: dedup over a window, 10
// minutes by default), within a fixed memory budget. Keys are a 128-bit hash of (video_id,
// event_id). The clock is the append time stored in each log record, and every entry remembers the
// log position (record offset and index in the record) where its id first appeared: an event is a
// duplicate iff an EARLIER position holds its id within the window. That makes the decision a
// function of the log alone, so replaying the log after a restart (from a snapshot older or newer
// than the shards' marks) decides exactly as the first pass did. When the budget binds, the oldest
// ids are forgotten early and the effective window shrinks (effective_window_ms(), shown in
// /metrics). Snapshots (save/load) write the entries and the offset they cover to a file atomically
// (temporary file, fsync, rename, fsync of the directory).
// Threads: owned by its partition's consumer thread; effective_window_ms() and size() are atomics
// any thread may read.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/core/result.h"

namespace tally::processor {

struct DedupKey {
  uint64_t hi = 0;
  uint64_t lo = 0;  // never both 0 (lo's low bit is forced to 1)
  bool operator==(const DedupKey&) const = default;
};

DedupKey dedup_key(std::string_view video_id, std::string_view event_id);

class DedupCache {
 public:
  // Bytes one entry costs (table slot at the maximum load factor plus its age-queue entry).
  static constexpr double kBytesPerEntry = 24.0 / 0.7 + 24.0;
  // The entry capacity that fits `memory_bytes`.
  static size_t capacity_for(int64_t memory_bytes);

  DedupCache(int64_t window_ms, size_t capacity);

  // True when `key` appeared at an earlier position within the window (a duplicate: drop it);
  // otherwise remembers it (first seen at `position`, at `now_ms`) and returns false. Positions
  // order events in the log: (record offset << 20) | index of the event in its record.
  bool check(const DedupKey& key, int64_t position, int64_t now_ms);
  // A hint that check(key) comes soon: starts loading the key's home slot. The table is far larger
  // than the caches, so a record's keys are prefetched together and their misses overlap.
  void prefetch(const DedupKey& key) const { __builtin_prefetch(&slots_[home(key)]); }

  size_t size() const { return size_.load(std::memory_order_relaxed); }
  size_t capacity() const { return capacity_; }
  int64_t window_ms() const { return window_ms_; }
  // The configured window, or less while the memory budget forces out younger ids.
  int64_t effective_window_ms() const { return effective_ms_.load(std::memory_order_relaxed); }
  uint64_t evicted_early() const { return evicted_early_.load(std::memory_order_relaxed); }
  size_t memory_bytes() const;

  // The snapshot of every entry and `covered_offset` (the last log offset the state includes), as
  // load() reads it: 32 bytes per entry. Owner thread only (it reads the table).
  std::string encode(int64_t covered_offset) const;
  // encode() written with write_file_durably (the consumer writes its snapshots on another thread).
  Status save(const std::filesystem::path& file, int64_t covered_offset) const;
  // Replaces the state with a snapshot; returns its covered offset. kNotFound when there is no
  // file; kInternal for a damaged one (the caller then starts empty).
  Result<int64_t> load(const std::filesystem::path& file);

 private:
  struct Slot {
    DedupKey key;
    int64_t first_position;
  };
  struct Aged {
    DedupKey key;
    int64_t ts_ms;
  };
  size_t home(const DedupKey& k) const { return static_cast<size_t>(k.hi) & mask_; }
  // Index of the key's slot, or of the empty slot ending its probe.
  size_t find(const DedupKey& k) const;
  void erase(const DedupKey& k);
  void evict_oldest();
  void insert(const DedupKey& k, int64_t offset, int64_t now_ms);

  int64_t window_ms_;
  size_t capacity_;
  size_t mask_;
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  // calloc'ed: large tables come as untouched zero pages, so memory is used as ids arrive.
  std::unique_ptr<Slot[], Free> slots_;
  size_t slot_count_ = 0;
  std::unique_ptr<Aged[], Free> ring_;  // insertion order; capacity_ entries
  size_t head_ = 0;                     // oldest entry in ring_
  std::atomic<size_t> size_{0};
  std::atomic<int64_t> effective_ms_;
  std::atomic<uint64_t> evicted_early_{0};
};

}  // namespace tally::processor
