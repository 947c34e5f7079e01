#include "processor/src/partition_consumer.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <vector>

#include "common/core/log.h"
#include "common/metrics/metrics_registry.h"
#include "processor/src/durable_file.h"
#include "processor/src/event_batch.h"

namespace tally::processor {

namespace {

// A record holds fewer than 2^20 events (at most ~1 MiB of events of at least 19 bytes).
constexpr int kIndexBits = 20;

void inc(Counter* c, uint64_t n = 1) {
  if (c != nullptr) c->inc(n);
}

}  // namespace

PartitionConsumer::PartitionConsumer(PartitionLog& log, CounterWriter& writer, DedupCache& dedup,
                                     ConsumerOptions options, ConsumerMetrics metrics,
                                     std::atomic<int64_t>& backlog_events)
    : log_(log),
      writer_(writer),
      dedup_(dedup),
      options_(std::move(options)),
      metrics_(metrics),
      backlog_(backlog_events) {}

PartitionConsumer::~PartitionConsumer() {
  stop();
}

void PartitionConsumer::start(std::vector<int64_t> shard_marks) {
  snap_thread_ = std::thread([this] { write_snapshots(); });
  thread_ =
      std::thread([this, marks = std::move(shard_marks)]() mutable { run(std::move(marks)); });
}

void PartitionConsumer::stop() {
  stopping_.store(true);
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lock(snap_mu_);
    snap_stop_ = true;
  }
  snap_cv_.notify_all();
  // A snapshot already handed over is still written: it is whole and makes the restart shorter.
  if (snap_thread_.joinable()) snap_thread_.join();
}

std::string PartitionConsumer::failure() const {
  std::lock_guard lock(mu_);
  return failure_;
}

void PartitionConsumer::fail(const std::string& message) {
  log_line("processor",
           "partition " + std::to_string(options_.partition) + " consumer stopped: " + message);
  std::lock_guard lock(mu_);
  failure_ = message;
}

bool PartitionConsumer::begin_snapshot() {
  {
    std::lock_guard lock(snap_mu_);
    if (snap_busy_) return false;
  }
  const auto started = std::chrono::steady_clock::now();
  EncodedSnapshot snap;
  snap.covered = consumed_.load();
  snap.bytes = dedup_.encode(snap.covered);
  if (metrics_.snapshot_pause_seconds != nullptr) {
    metrics_.snapshot_pause_seconds->observe(std::chrono::steady_clock::now() - started);
  }
  {
    std::lock_guard lock(snap_mu_);
    snap_pending_ = std::move(snap);
    snap_busy_ = true;
  }
  snap_cv_.notify_all();
  return true;
}

void PartitionConsumer::write_snapshots() {
  const SnapshotWrite write =
      options_.write_snapshot
          ? options_.write_snapshot
          : SnapshotWrite([](const std::filesystem::path& file, std::string_view bytes) {
              return write_file_durably(file, bytes);
            });
  while (true) {
    EncodedSnapshot snap;
    {
      std::unique_lock lock(snap_mu_);
      snap_cv_.wait(lock, [&] { return snap_pending_.has_value() || snap_stop_; });
      if (!snap_pending_) return;
      snap = std::move(*snap_pending_);
      snap_pending_.reset();
    }
    const auto started = std::chrono::steady_clock::now();
    auto written = write(options_.snapshot_file, snap.bytes);
    snap.bytes = std::string();  // the memory goes back before the log is trimmed
    if (!written) {
      inc(metrics_.snapshot_failures);
      log_line("processor", "partition " + std::to_string(options_.partition) +
                                ": dedup snapshot failed: " + written.error().message);
    } else {
      if (metrics_.snapshot_write_seconds != nullptr) {
        metrics_.snapshot_write_seconds->observe(std::chrono::steady_clock::now() - started);
      }
      snapshot_offset_.store(snap.covered);
      inc(metrics_.snapshots);
      // Below both the snapshot and every shard's mark, nothing is needed any more.
      int64_t floor = std::min(snap.covered, writer_.applied_through());
      if (floor >= 0) {
        auto deleted = log_.truncate_before(static_cast<uint64_t>(floor) + 1);
        if (!deleted.ok()) {
          log_line("processor", "partition " + std::to_string(options_.partition) + ": " +
                                    deleted.error().message);
        } else {
          inc(metrics_.truncated_segments, *deleted);
        }
      }
    }
    std::lock_guard lock(snap_mu_);
    snap_busy_ = false;
  }
}

void PartitionConsumer::run(std::vector<int64_t> marks) {
  using Clock = std::chrono::steady_clock;
  const int64_t min_mark = *std::min_element(marks.begin(), marks.end());
  const int64_t max_mark = *std::max_element(marks.begin(), marks.end());
  const auto end_at_start = static_cast<int64_t>(log_.end_offset());
  const auto recovered_end = static_cast<int64_t>(log_.recovery().end_offset);
  if (max_mark >= end_at_start) {
    fail("a shard holds this partition up to offset " + std::to_string(max_mark) +
         " but the log ends at " + std::to_string(end_at_start - 1) +
         ": the data directory is not the one the shards saw (lost or foreign log); refusing to "
         "reuse those offsets");
    return;
  }
  int64_t snap = -1;
  auto loaded = dedup_.load(options_.snapshot_file);
  if (loaded.ok()) {
    snap = *loaded;
  } else if (loaded.error().code != ErrorCode::kNotFound) {
    log_line("processor", "partition " + std::to_string(options_.partition) + ": " +
                              loaded.error().message + "; starting with an empty dedup cache");
  }
  snapshot_offset_.store(snap);
  int64_t start = std::min(snap, min_mark) + 1;
  const auto log_start = static_cast<int64_t>(log_.start_offset());
  if (start < log_start) {
    if (min_mark + 1 < log_start) {
      fail("the log starts at offset " + std::to_string(log_start) + " but a shard needs it from " +
           std::to_string(min_mark + 1));
      return;
    }
    start = log_start;  // dedup state older than the log: ids before it are forgotten
  }
  std::set<int64_t> cuts(marks.begin(), marks.end());
  int64_t batch_from = min_mark;
  consumed_.store(start - 1);

  LogReader reader(log_, static_cast<uint64_t>(start));
  Aggregator agg;
  std::vector<EventView> events;  // one record's, reused
  std::vector<DedupKey> keys;
  uint64_t batch_events = 0;
  auto last_flush = Clock::now();
  auto last_snapshot = Clock::now();

  auto flush = [&] {
    last_flush = Clock::now();
    int64_t to = consumed_.load();
    if (to <= batch_from) return;
    FlushBatch b;
    b.partition = options_.partition;
    b.from_offset = batch_from;
    b.to_offset = to;
    b.rows = agg.take();
    b.events = batch_events;
    // Waits while the writer is behind (its queue is bounded); false only when stopping.
    if (!writer_.enqueue(std::move(b))) return;
    inc(metrics_.batches);
    batch_from = to;
    batch_events = 0;
  };

  while (!stopping_.load(std::memory_order_relaxed)) {
    auto now = Clock::now();
    // Every flush interval, but only once the writer has taken the previous table: while it is
    // busy the table keeps collecting, so repeated keys collapse into fewer rows and the apply
    // rate the shards can take covers more events (up to max_batch_rows, then a table is handed
    // over regardless and the writer's bounded queue holds it).
    if (now - last_flush >= options_.flush_interval && writer_.queued() == 0) flush();
    // While the previous snapshot is still being written, the next one waits (and is retried on
    // every pass) rather than queueing a second copy of the cache.
    if (now - last_snapshot >= options_.snapshot_interval && begin_snapshot()) last_snapshot = now;
    auto next = reader.next();
    if (!next.ok()) {
      fail(next.error().message);
      return;
    }
    if (!next->has_value()) {
      log_.wait_for(reader.position(), std::chrono::milliseconds(20));
      continue;
    }
    const RecordView& rec = **next;
    const auto offset = static_cast<int64_t>(rec.offset);
    auto batch = EventBatchReader::open(rec.payload);
    if (!batch.ok()) {
      fail("offset " + std::to_string(offset) + ": " + batch.error().message);
      return;
    }
    const bool counts = offset > min_mark;
    uint64_t dups = 0;
    // The record's events and dedup keys first, each key's table slot prefetched, then the checks
    // in log order: the misses into the large dedup table overlap instead of queueing.
    events.clear();
    keys.clear();
    EventView e;
    while (batch->next(e)) {
      events.push_back(e);
      keys.push_back(e.event_id.empty() ? DedupKey{} : dedup_key(e.video_id, e.event_id));
      if (!e.event_id.empty()) dedup_.prefetch(keys.back());
    }
    if (batch->failed()) {
      fail("offset " + std::to_string(offset) + ": event batch runs past its record");
      return;
    }
    for (size_t i = 0; i < events.size(); ++i) {
      const EventView& ev = events[i];
      // The event's position in the log: its record's offset and its index in the record.
      const int64_t position = (offset << kIndexBits) | static_cast<int64_t>(i);
      if (!ev.event_id.empty() && dedup_.check(keys[i], position, batch->append_ms())) {
        ++dups;
        continue;
      }
      if (counts) agg.add(ev.video_id, ev.type, ev.ts_ms, ev.value);
    }
    consumed_.store(offset);
    if (counts) {
      batch_events += batch->count();
      inc(metrics_.events, batch->count());
      inc(metrics_.duplicates, dups);
      if (offset < recovered_end) {
        // In the log before this process started: not counted by ingest.
        backlog_.fetch_add(batch->count(), std::memory_order_relaxed);
      }
      if (cuts.count(offset) ||
          agg.rows() >= std::min(options_.max_batch_rows, writer_.target_rows()))
        flush();
    }
  }
}

}  // namespace tally::processor
