// Loadgen: posts events with unique ids to the processor's ingest API at a steady rate, retries a
// failed request with the same body (so the same event ids) until it gets a 200, keeps a ledger of
// what was acknowledged per (video, event type), and audits that ledger against the cluster
// proxy's stats (issue 6; the chaos test of issue 8 drives it as a library).
//
// Threading: run() blocks its caller and runs `producers` threads, each with its own HttpClient;
// the ledger is shared under a mutex. audit() blocks its caller too (reading over 4 connections
// from threads of its own). Neither may run on an
// io_context thread. Only events in a 200 answer (minus the listed rejections) count as accepted;
// a batch still failing when the retry budget ends is counted as uncertain, never as accepted.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/core/result.h"

namespace tally {

struct LoadgenOptions {
  std::string ingest_url;  // the processor, e.g. http://127.0.0.1:16006
  std::string rest_url;    // the cluster proxy, for audit()
  std::string rest_token;  // sent as a bearer token on reads when not empty
  std::string api_key;     // X-Api-Key for the processor when not empty
  double rate = 1000;      // events per second over all producers
  std::chrono::milliseconds duration{10000};
  int videos = 100;
  // Video popularity: 0 uniform; s > 0 Zipf, video k drawn with weight 1/(k+1)^s (s = 1: the
  // most popular video gets about 1/ln(videos) of the events).
  double zipf = 0;
  int batch = 100;  // events per request
  int producers = 2;
  int duplicate_percent = 5;    // accepted batches re-sent once more (dedup must drop them)
  int watch_time_percent = 10;  // share of events that are watch_time with a value
  // Share of events made invalid (an unknown event type, a video id with a space, a timestamp two
  // days old, in turn): the processor must list exactly those as rejected.
  int invalid_percent = 0;
  std::string run_id;  // prefix of video and event ids; random when empty
  // After `duration` (or the stop flag), a batch that still fails is retried this much longer
  // before it is counted as uncertain.
  std::chrono::milliseconds retry_budget{120000};
  std::chrono::milliseconds request_timeout{10000};
  // Called after every ingest request (first sends, retries, duplicate re-sends) with whether it
  // was accepted (a 200 with the processor's answer), the HTTP status (0: no answer) and when the
  // answer came. From the producer threads, no loadgen lock held: the chaos test times outages
  // with it.
  std::function<void(bool accepted, int status, std::chrono::steady_clock::time_point at)>
      on_response;
};

struct CounterKey {
  std::string video_id;
  std::string event_type;
  auto operator<=>(const CounterKey&) const = default;
};

struct CounterTotals {
  int64_t count = 0;
  int64_t sum = 0;
};

struct LoadgenStats {
  int64_t requests_ok = 0;                    // 200 answers, duplicates included
  int64_t requests_failed = 0;                // every failed attempt (then retried)
  std::map<int, int64_t> failures_by_status;  // HTTP status, 0 = no answer (connection, timeout)
  int64_t events_accepted = 0;                // distinct events acknowledged by a 200
  int64_t events_rejected = 0;                // listed as rejected in a 200
  int64_t invalid_sent = 0;                   // invalid events in batches answered 200
  int64_t invalid_accepted = 0;               // ... that the answer did not list as rejected
  int64_t events_uncertain = 0;               // in batches that never got a 200
  int64_t duplicate_batches = 0;              // accepted batches sent a second time
  double seconds = 0;                         // wall time of run()
};

struct AuditMismatch {
  CounterKey key;
  CounterTotals expected;
  CounterTotals got;
  int64_t uncertain = 0;
  std::string error;  // the stats read failed for this key
};

struct AuditReport {
  size_t keys = 0;
  int64_t expected_events = 0;
  int64_t got_events = 0;
  std::vector<AuditMismatch> mismatches;
  double seconds_waited = 0;  // until the stats matched (or the wait ended)
  size_t reread_pairs = 0;    // reads after the first pass: counts settling, or a failed read
  bool ok() const { return mismatches.empty(); }
};

class Loadgen {
 public:
  // Checks the options (URLs, positive rate and sizes); kInvalidArgument naming the option.
  static Result<std::unique_ptr<Loadgen>> create(LoadgenOptions options);

  // Produces for `duration` (or until *stop becomes true), then finishes retrying what failed.
  // Safe to call once.
  void run(const std::atomic<bool>* stop = nullptr);

  // Which (video, type) pairs audit() reads.
  enum class AuditScope {
    // Every pair of the run's videos, so a count for a pair never acknowledged shows up too.
    kEveryPair,
    // Only the pairs the ledger holds (accepted or uncertain): at 500k videos the full scan is
    // 2.5M reads, longer than a soak's drain. The run id in every video id keeps other pairs of
    // the run's own videos at zero unless something counts what it never received.
    kLedgerPairs,
  };

  // Reads the pairs `scope` names through POST /v1/stats:batchGet until all match or `wait` has
  // passed, and returns the last comparison. kUnavailable only when the cluster proxy URL is
  // unusable.
  Result<AuditReport> audit(std::chrono::milliseconds wait,
                            AuditScope scope = AuditScope::kEveryPair) const;

  LoadgenStats stats() const;
  std::map<CounterKey, CounterTotals> expected() const;
  const LoadgenOptions& options() const { return options_; }
  // Video ids this run uses, in order (video k is "<run_id>_v<k>").
  std::string video_id(int k) const;

 private:
  explicit Loadgen(LoadgenOptions options);
  void produce(int producer, std::chrono::steady_clock::time_point start,
               std::chrono::steady_clock::time_point end, const std::atomic<bool>* stop);

  struct Ledger {
    std::map<CounterKey, CounterTotals> accepted;
    std::map<CounterKey, CounterTotals> uncertain;
    LoadgenStats stats;
    int64_t min_ts = 0;
    int64_t max_ts = 0;
  };

  LoadgenOptions options_;
  mutable std::mutex mutex_;
  Ledger ledger_;
};

// One line: what the run sent, got acknowledged and retried.
std::string format_stats(const LoadgenStats& stats);

// Human summary: the run's stats, then per mismatch "video type: expected count/sum, got ...",
// then one verdict line.
std::string format_audit(const LoadgenStats& stats, const AuditReport& report);

}  // namespace tally
