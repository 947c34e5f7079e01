// The processor's side of contract 9 (docs/contracts.md): encoding POST /v1/counters:apply,
// reading its per-shard outcomes and GET /v1/counters:marks, and CounterWriter, which sends one
// partition's FlushBatches in order with at most one in flight.
//
// CounterWriter guarantees: a batch (from, to] is sent until every shard has answered `applied` or
// `already_applied`, or its part was dead-lettered. The first attempt goes to every shard; when
// some shards answer `failed` only those are sent it again (the request's "shards" field; a 409
// for a shard the keyspace no longer has falls back to the whole batch, whose shards that hold it
// answer `already_applied`), so a resend never counts twice. Connection errors, 5xx, 401/403/429
// and transient shard failures are retried with exponential backoff and jitter; consecutive
// connection errors and 5xx open the shared circuit breaker toward the cluster proxy, and while it
// is open the writers wait (the log keeps every event) until one probe gets through. A batch the
// cluster proxy refuses as invalid (4xx), a shard refusing its part as invalid data (SQLSTATE class
// 22 or 23) or answering `overlap` goes to the dead-letter directory (dead_letter.h) naming the
// shards that lack it, is counted, and the writer moves on. If that file cannot be written the
// batch is retried instead: nothing is dropped silently. Batches queued meanwhile are merged into
// one request while nothing of them reached any shard, up to max_request_rows: however far behind
// the writer is, no request carries more rows than one full flush.
// Bounds: enqueue() blocks the consumer while max_queued_rows rows wait (the log keeps the events
// meanwhile, and ingest answers 503 once its backlog bound is reached), so memory does not grow
// with the backlog. Every request says how long the writer waits for it (the Tally-Timeout-Ms
// header): the cluster proxy ends, and cancels on the shards, whatever it started before that, so
// a retry never runs beside an abandoned attempt. After a timed-out attempt the next one gets
// twice the time (up to max_timeout), and after a success the next gets twice what that attempt
// took (at least `timeout`): a batch the shards cannot apply in `timeout` under load still gets
// through instead of being cancelled and retried forever, and the batches after it are not
// cancelled at the normal timeout only to be redone.
// Threads: enqueue() from the partition's consumer thread; the writer runs its own thread and its
// own blocking HttpClient (or the injected transport); the accessors are atomics any thread reads.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/core/circuit_breaker.h"
#include "common/core/log.h"
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
  std::string sqlstate;  // of a failed shard's statement, when the cluster proxy gives one
};
// True for a shard failure retrying cannot cure: the shard refused the data itself (SQLSTATE
// class 22 data exception, class 23 integrity constraint violation, e.g. a CHECK constraint).
bool permanent_shard_failure(const ShardOutcome& outcome);
// `body` (an encode_apply_request result) addressed to `shards` only (contract 9's "shards").
std::string with_shards(std::string_view body, const std::vector<std::string>& shards);
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
  std::chrono::milliseconds max_timeout{40000};  // the longest an attempt may get after timeouts
  std::chrono::milliseconds min_backoff{50};
  std::chrono::milliseconds max_backoff{5000};
  std::filesystem::path dead_letter_dir;
  size_t max_request_rows = 10000;  // queued batches merge into one request up to this many rows
  size_t max_queued_rows = 40000;   // enqueue() blocks while this many rows wait
};

// GET /v1/counters:marks with the client; errors name the status and body.
Result<ShardMarks> fetch_marks(HttpClient& client, const ClusterProxyOptions& options);

// Counters shared by all writers (registered once by the server).
struct WriterMetrics {
  Counter* batches_applied = nullptr;  // batches every shard holds
  Counter* requests_failed = nullptr;  // attempts that will be retried
  Counter* timeouts = nullptr;         // of those, attempts that ran out of time
  Counter* dead_lettered = nullptr;    // batches sent to the dead-letter directory
  Counter* overlaps = nullptr;         // shard outcomes `overlap`
  Counter* rows_sent = nullptr;
  Counter* shard_retries = nullptr;    // re-sends addressed to the failed shards only
  Counter* breaker_opened = nullptr;   // closed/half-open -> open transitions
  Counter* breaker_waits = nullptr;    // attempts held back while the circuit was open
  Histogram* apply_seconds = nullptr;  // one successful counters:apply exchange
};

// One counters:apply exchange: (target, body, timeout) -> response. The default posts with the
// writer's HttpClient, bearer token and the Tally-Timeout-Ms header; tests inject a fake.
using ApplyTransport = std::function<Result<HttpClientResponse>(
    const std::string& target, const std::string& body, std::chrono::milliseconds timeout)>;

// True when a shard's failure is the cluster proxy or the server giving up on time (SQLSTATE
// 57014, query_canceled): the attempt needs more time, not a different request.
bool timed_out_shard_failure(const ShardOutcome& outcome);

class CounterWriter {
 public:
  // `applied_through`: the offset every shard already holds at start (the partition's lowest mark).
  // `breaker` (may be null: none) is shared by the processor's writers and outlives them.
  CounterWriter(int partition, ClusterProxyOptions options, WriterMetrics metrics,
                std::atomic<int64_t>& backlog_events, int64_t applied_through,
                CircuitBreaker* breaker = nullptr, ApplyTransport transport = {},
                const Clock* clock = nullptr);
  ~CounterWriter();
  CounterWriter(const CounterWriter&) = delete;
  CounterWriter& operator=(const CounterWriter&) = delete;

  // Blocks while max_queued_rows rows wait (back-pressure on the consumer); false when stop()
  // ended the wait (the batch is dropped: the log replays it).
  bool enqueue(FlushBatch batch);
  // Stops after the exchange in flight (queued batches stay unsent: the log replays them).
  void stop();

  // The highest offset every shard holds (contract 4's min over shards of the marks).
  int64_t applied_through() const { return applied_.load(std::memory_order_acquire); }
  size_t queued() const { return queued_.load(std::memory_order_relaxed); }
  size_t queued_rows() const { return queued_rows_.load(std::memory_order_relaxed); }
  // Rows one request should carry now: max_request_rows while applies finish in time, halved
  // after each timeout (down to a tenth), grown back by a quarter after each success. The
  // consumer hands a table over at this size too, so an overloaded shard gets batches it can
  // finish instead of the same too-large ones again and again.
  size_t target_rows() const { return target_rows_.load(std::memory_order_relaxed); }
  // The timeout of the next attempt (grows after timeouts, see above).
  std::chrono::milliseconds attempt_timeout() const {
    return std::chrono::milliseconds(attempt_timeout_ms_.load(std::memory_order_relaxed));
  }
  // Consecutive failed attempts of the batch in flight (0 when healthy).
  int failing() const { return failing_.load(std::memory_order_relaxed); }
  std::string last_error() const;

 private:
  void run();
  // Sends until done; false when stopped first.
  bool deliver(FlushBatch& batch);
  // False when the file could not be written (the caller retries the batch).
  bool dead_letter(const FlushBatch& batch, const std::string& body, const char* kind,
                   const std::vector<std::string>& shards, const std::string& reason);
  bool sleep_backoff(int attempt);
  bool sleep_for(std::chrono::milliseconds wait);
  Result<HttpClientResponse> send(const std::string& target, const std::string& body,
                                  std::chrono::milliseconds timeout);
  void record(bool proxy_ok);

  const int partition_;
  const ClusterProxyOptions options_;
  WriterMetrics metrics_;
  std::atomic<int64_t>& backlog_;
  HttpClient client_;
  CircuitBreaker* breaker_;
  ApplyTransport transport_;
  SystemClock system_clock_;
  const Clock& clock_;
  LogThrottle log_{clock_, "processor"};  // retries and dead letters repeat while applies fail
  std::mt19937_64 rng_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable space_cv_;  // the consumer waits here while the queue is full
  std::deque<FlushBatch> queue_;
  size_t queue_rows_ = 0;  // rows in queue_
  bool stopping_ = false;
  std::string last_error_;

  std::atomic<int64_t> applied_;
  std::atomic<size_t> queued_{0};
  std::atomic<size_t> queued_rows_{0};
  std::atomic<int64_t> attempt_timeout_ms_;
  std::atomic<size_t> target_rows_;
  std::atomic<int> failing_{0};
  std::thread thread_;
};

}  // namespace tally::processor
