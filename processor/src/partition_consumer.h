// PartitionConsumer: reads one partition's durable log in order on its own thread, drops repeated
// event ids (DedupCache), counts per (video, type, minute) (Aggregator) and hands the table to the
// partition's CounterWriter every flush interval, as the batch (from, to] of log offsets it covers.
// A table is handed over only once the writer has taken the previous one (or when it reaches
// max_batch_rows): while the shards are slow, tables grow and repeated keys collapse into fewer
// rows, so the writer catches up instead of falling further behind.
//
// Restart (contract 4): start() gets the partition's mark on every shard. Reading begins at
// min(dedup snapshot offset, lowest mark) + 1; records at or below the lowest mark only feed the
// dedup cache; above it, batches are cut at every shard's mark, so a shard that already holds a
// batch answers `already_applied` to it and a shard that does not applies it: per shard, exactly
// the records above its mark are applied. A mark beyond the log's end means this data directory
// is not the one the shards saw (a lost or foreign log): the consumer refuses to run and says so.
// Every snapshot interval the consumer encodes the dedup cache in memory (it pauses for that
// only) and hands the bytes to its snapshot thread, which writes them durably and then truncates
// the log below min(snapshot offset, what every shard holds) + 1: the disk never stalls
// consumption. At most one snapshot is being written; the next waits for it, never queues.
// Threads: start()/stop() from the owner; run() and the snapshot writer on their own threads;
// accessors are atomics.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "processor/src/aggregator.h"
#include "processor/src/counter_writer.h"
#include "processor/src/dedup_cache.h"
#include "processor/src/partition_log.h"

namespace tally {
class Counter;
class Histogram;
}  // namespace tally

namespace tally::processor {

// Makes a snapshot's bytes durable at a path. The default is write_file_durably; tests inject a
// slow or failing one.
using SnapshotWrite = std::function<Status(const std::filesystem::path&, std::string_view)>;

struct ConsumerOptions {
  int partition = 0;
  std::chrono::milliseconds flush_interval{1000};
  size_t max_batch_rows = 50000;
  std::chrono::milliseconds snapshot_interval{10000};
  std::filesystem::path snapshot_file;
  SnapshotWrite write_snapshot;  // empty: write_file_durably
};

struct ConsumerMetrics {
  Counter* events = nullptr;                    // events read from the log above the lowest mark
  Counter* duplicates = nullptr;                // of those, dropped as repeated event ids
  Counter* batches = nullptr;                   // tables handed to the writer
  Counter* snapshots = nullptr;                 // written durably
  Counter* snapshot_failures = nullptr;         // writes that failed (the previous snapshot stays)
  Histogram* snapshot_pause_seconds = nullptr;  // the consumer's pause to encode one
  Histogram* snapshot_write_seconds = nullptr;  // the snapshot thread's write of one
  Counter* truncated_segments = nullptr;
};

class PartitionConsumer {
 public:
  PartitionConsumer(PartitionLog& log, CounterWriter& writer, DedupCache& dedup,
                    ConsumerOptions options, ConsumerMetrics metrics,
                    std::atomic<int64_t>& backlog_events);
  ~PartitionConsumer();
  PartitionConsumer(const PartitionConsumer&) = delete;
  PartitionConsumer& operator=(const PartitionConsumer&) = delete;

  // Starts the thread with the partition's mark on each shard.
  void start(std::vector<int64_t> shard_marks);
  void stop();

  int64_t consumed() const { return consumed_.load(std::memory_order_relaxed); }
  int64_t snapshot_offset() const { return snapshot_offset_.load(std::memory_order_relaxed); }
  // Set when the consumer stopped on an error (a mark beyond the log, an unreadable record).
  std::string failure() const;

 private:
  struct EncodedSnapshot {
    std::string bytes;
    int64_t covered = -1;
  };

  void run(std::vector<int64_t> marks);
  void fail(const std::string& message);
  // Consumer thread: encodes the cache and hands it over; false (nothing done) while the previous
  // snapshot is still being written.
  bool begin_snapshot();
  // Snapshot thread: writes what begin_snapshot() hands over until stop().
  void write_snapshots();

  PartitionLog& log_;
  CounterWriter& writer_;
  DedupCache& dedup_;
  const ConsumerOptions options_;
  ConsumerMetrics metrics_;
  std::atomic<int64_t>& backlog_;

  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> consumed_{-1};
  std::atomic<int64_t> snapshot_offset_{-1};
  mutable std::mutex mu_;
  std::string failure_;

  std::mutex snap_mu_;  // guards the three below
  std::condition_variable snap_cv_;
  std::optional<EncodedSnapshot> snap_pending_;
  bool snap_busy_ = false;  // a snapshot is pending or being written
  bool snap_stop_ = false;

  std::thread thread_;
  std::thread snap_thread_;
};

}  // namespace tally::processor
