// ProcessorServer: wires one processor together: the ingest API (POST /v1/events on HttpServer,
// plus /healthz, /readyz, /metrics), the partitioned log, and per partition a consumer (dedup and
// aggregation) and a writer (counters:apply to the cluster proxy).
//
// Ingest guarantees: a response lists every rejected event with its index and reason and counts
// the accepted ones, and it is sent only after every accepted event is durable in the log (the
// handler hands the records to the partitions' committers and the last commit answers). Refusals
// come before anything is written: 401 unknown API key, 400 malformed body, 413 body too large
// (HttpServer), 429 over the key's rate (Retry-After), 503 while the backlog of events not yet
// applied on every shard exceeds limits.max_backlog_events (Retry-After) or the log has failed.
// At start-up a background thread reads every shard's marks (GET /v1/counters:marks, retried with
// backoff while the cluster proxy is down: ingest is open meanwhile) and then starts the
// consumers and writers. Without a cluster proxy in the config, events only go to the log. The
// writers share one circuit breaker toward the cluster proxy. With a zookeeper section the
// processor registers the ephemeral /tally/processors/<id> (processor_registration.h).
// Threads: start()/stop() from the owner's thread; handlers on the HTTP threads; the rest on the
// threads of the parts it owns.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/core/clock.h"
#include "common/core/result.h"
#include "common/http/admin_endpoints.h"
#include "common/http/http_server.h"
#include "common/metrics/metrics_registry.h"
#include "processor/src/counter_writer.h"
#include "processor/src/dedup_cache.h"
#include "processor/src/partition_consumer.h"
#include "processor/src/partition_log.h"
#include "processor/src/processor_config.h"
#include "processor/src/processor_registration.h"
#include "processor/src/rate_limiter.h"

namespace tally::processor {

class ProcessorServer {
 public:
  explicit ProcessorServer(ProcessorConfig config, const Clock* clock = nullptr);
  ~ProcessorServer();
  ProcessorServer(const ProcessorServer&) = delete;
  ProcessorServer& operator=(const ProcessorServer&) = delete;

  // Opens (and recovers) the logs and starts serving. Errors name what could not be done.
  Status start();
  void stop();

  uint16_t http_port() const { return http_ ? http_->port() : 0; }
  const ProcessorConfig& config() const { return config_; }
  MetricsRegistry& metrics() { return registry_; }
  int64_t backlog_events() const { return backlog_.load(std::memory_order_relaxed); }
  PartitionLog& log(int partition) { return *logs_[static_cast<size_t>(partition)]; }
  // True once the marks were read and consumers and writers run.
  bool pipeline_running() const { return running_.load(std::memory_order_acquire); }
  // The offset every shard holds for the partition (-1 before the pipeline runs).
  int64_t applied_through(int partition) const;

 private:
  void handle_events(HttpRequest&& request, Responder respond);
  void bootstrap();
  HealthStatus readiness() const;
  void register_metrics();

  ProcessorConfig config_;
  SystemClock system_clock_;
  const Clock& clock_;
  // A request's events of one partition go to records of at most this many payload bytes.
  const size_t record_limit_;
  MetricsRegistry registry_;
  std::map<std::string, std::unique_ptr<TokenBucket>, std::less<>> buckets_;  // by key
  std::map<std::string, std::string, std::less<>> key_names_;                 // key -> name

  std::vector<std::unique_ptr<PartitionLog>> logs_;
  std::vector<std::unique_ptr<DedupCache>> dedups_;
  // Filled by the bootstrap thread before running_ is set; read by others only after.
  std::vector<std::unique_ptr<CounterWriter>> writers_;
  std::vector<std::unique_ptr<PartitionConsumer>> consumers_;
  std::atomic<bool> running_{false};
  std::atomic<int64_t> backlog_{0};
  std::unique_ptr<CircuitBreaker> breaker_;  // toward the cluster proxy; null without one
  std::unique_ptr<ProcessorRegistration> registration_;

  std::unique_ptr<HttpServer> http_;
  std::thread bootstrap_thread_;
  mutable std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::string bootstrap_error_;
  bool stopped_ = false;

  // Metrics (owned by registry_).
  Counter* requests_accepted_ = nullptr;
  Counter* requests_bad_ = nullptr;
  Counter* requests_unauthorized_ = nullptr;
  Counter* requests_rate_limited_ = nullptr;
  Counter* requests_backpressure_ = nullptr;
  Counter* requests_log_failed_ = nullptr;
  Counter* events_accepted_ = nullptr;
  Counter* events_rejected_ = nullptr;
  Histogram* ingest_seconds_ = nullptr;
  WriterMetrics writer_metrics_;
  ConsumerMetrics consumer_metrics_;
};

}  // namespace tally::processor
