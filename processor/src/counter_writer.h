// The processor's side of contract 9 (docs/contracts.md): encoding POST /v1/counters:apply,
// reading its per-shard outcomes and GET /v1/counters:marks, and CounterWriter, which sends one
// partition's FlushBatches in order with at most one in flight.
//
// CounterWriter guarantees: a batch (from, to] is sent until every shard has answered `applied` or
// `already_applied` (a shard that already holds it answers `already_applied` to a resend, so the
// resend of a batch some shards applied never counts twice); failures (connection errors, 5xx,
// 401/403/429, shards reporting `failed`) are retried with exponential backoff and jitter, and
// batches queued meanwhile are merged into one request while nothing of them is applied. A batch
// the cluster proxy refuses as invalid (4xx) or a shard answers `overlap` for goes to the
// dead-letter directory with the reason, is counted, and the writer moves on.
// Threads: enqueue() from the partition's consumer thread; the writer runs its own thread and its
// own blocking HttpClient; the accessors are atomics any thread may read.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/core/result.h"
#include "common/http/http_client.h"
#include "processor/src/aggregator.h"

namespace tally {
class MetricsRegistry;
class Counter;
class Histogram;
}  // namespace tally

namespace tally::processor {

std::string encode_apply_request(std::string_view processor_id, const FlushBatch& batch);

struct ShardOutcome {
  std::string shard;
  std::string outcome;  // applied | already_applied | overlap | failed
  int64_t mark = -1;    // -1 when absent
  std::string error;
};
Result<std::vector<ShardOutcome>> parse_apply_response(std::string_view body);

// shard -> partition -> mark. A partition a shard has no mark for holds nothing (-1).
using ShardMarks = std::map<std::string, std::map<int, int64_t>>;
Result<ShardMarks> parse_marks_response(std::string_view body);
// The marks of one partition, one per shard (-1 where a shard has none); {-1} with no shards.
std::vector<int64_t> partition_marks(const ShardMarks& marks, int partition);

struct ClusterProxyOptions {
  std::string processor_id;
  HttpUrl url;
  std::string token;
  std::chrono::milliseconds timeout{5000};
  std::chrono::milliseconds min_backoff{50};
  std::chrono::milliseconds max_backoff{5000};
  std::filesystem::path dead_letter_dir;
  size_t max_merge_rows = 100000;
};

// GET /v1/counters:marks with the client; errors name the status and body.
Result<ShardMarks> fetch_marks(HttpClient& client, const ClusterProxyOptions& options);

// Counters shared by all writers (registered once by the server).
struct WriterMetrics {
  Counter* batches_applied = nullptr;  // batches every shard holds
  Counter* requests_failed = nullptr;  // attempts that will be retried
  Counter* dead_lettered = nullptr;    // batches sent to the dead-letter directory
  Counter* overlaps = nullptr;         // shard outcomes `overlap`
  Counter* rows_sent = nullptr;
  Histogram* apply_seconds = nullptr;  // one successful counters:apply exchange
};

class CounterWriter {
 public:
  // `applied_through`: the offset every shard already holds at start (the partition's lowest mark).
  CounterWriter(int partition, ClusterProxyOptions options, WriterMetrics metrics,
                std::atomic<int64_t>& backlog_events, int64_t applied_through);
  ~CounterWriter();
  CounterWriter(const CounterWriter&) = delete;
  CounterWriter& operator=(const CounterWriter&) = delete;

  void enqueue(FlushBatch batch);
  // Stops after the exchange in flight (queued batches stay unsent: the log replays them).
  void stop();

  // The highest offset every shard holds (contract 4's min over shards of the marks).
  int64_t applied_through() const { return applied_.load(std::memory_order_acquire); }
  size_t queued() const { return queued_.load(std::memory_order_relaxed); }
  // Consecutive failed attempts of the batch in flight (0 when healthy).
  int failing() const { return failing_.load(std::memory_order_relaxed); }
  std::string last_error() const;

 private:
  void run();
  // Sends until done; false when stopped first.
  bool deliver(FlushBatch& batch);
  void dead_letter(const FlushBatch& batch, const std::string& body, const std::string& reason);
  bool sleep_backoff(int attempt);

  const int partition_;
  const ClusterProxyOptions options_;
  WriterMetrics metrics_;
  std::atomic<int64_t>& backlog_;
  HttpClient client_;
  std::mt19937_64 rng_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<FlushBatch> queue_;
  bool stopping_ = false;
  std::string last_error_;

  std::atomic<int64_t> applied_;
  std::atomic<size_t> queued_{0};
  std::atomic<int> failing_{0};
  std::thread thread_;
};

}  // namespace tally::processor
