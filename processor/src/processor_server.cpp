#include "processor/src/processor_server.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/core/log.h"
#include "processor/src/event_batch.h"

namespace tally::processor {

namespace {

using json = nlohmann::json;

// Full flushes that may wait per partition for its writer before the consumer waits.
constexpr size_t kQueuedFlushesPerPartition = 2;
// An attempt that timed out gets twice the time, up to this many times the configured timeout.
constexpr int kTimeoutGrowthLimit = 8;

// One ingest request waiting for its records to become durable.
struct PendingIngest {
  Responder respond;
  std::atomic<size_t> remaining{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string error;
  size_t accepted = 0;
  std::vector<Rejection> rejected;
  std::chrono::steady_clock::time_point started;
};

std::string ingest_body(size_t accepted, const std::vector<Rejection>& rejected) {
  json j;
  j["accepted"] = accepted;
  j["rejected"] = json::array();
  for (const auto& r : rejected)
    j["rejected"].push_back({{"index", r.index}, {"reason", r.reason}});
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

HttpResponse retry_later(int status, std::string_view message, int retry_after_s) {
  HttpResponse r = HttpResponse::error(status, message);
  r.headers.emplace_back("Retry-After", std::to_string(retry_after_s));
  return r;
}

}  // namespace

ProcessorServer::ProcessorServer(ProcessorConfig config, const Clock* clock)
    : config_(std::move(config)),
      clock_(clock ? *clock : system_clock_),
      record_limit_(std::min<uint64_t>(1 << 20, config_.segment_bytes / 4)) {
  for (const auto& k : config_.api_keys) {
    buckets_.emplace(k.key, std::make_unique<TokenBucket>(k.events_per_second, k.burst, clock_));
    key_names_.emplace(k.key, k.name);
  }
  if (!config_.cluster_proxy_url.empty()) {
    breaker_ = std::make_unique<CircuitBreaker>(
        CircuitOptions{config_.breaker_failures, config_.breaker_open_ms}, clock_);
  }
}

ProcessorServer::~ProcessorServer() {
  stop();
}

int64_t ProcessorServer::applied_through(int partition) const {
  if (!running_.load(std::memory_order_acquire)) return -1;
  return writers_[static_cast<size_t>(partition)]->applied_through();
}

Status ProcessorServer::start() {
  const auto partitions = static_cast<size_t>(config_.partitions);
  LogOptions log_options;
  log_options.segment_bytes = config_.segment_bytes;
  log_options.max_payload_bytes = static_cast<uint32_t>(record_limit_ + 1024);
  log_options.fsync = config_.fsync;
  size_t dedup_capacity =
      DedupCache::capacity_for(config_.dedup_memory_bytes / static_cast<int64_t>(partitions));
  for (size_t p = 0; p < partitions; ++p) {
    auto dir = config_.data_dir / "partitions" / std::to_string(p);
    auto log = PartitionLog::open(dir, log_options);
    if (!log) return log.error();
    const auto& rec = (*log)->recovery();
    if (rec.cut_bytes > 0) {
      log_line("processor", "partition " + std::to_string(p) + ": cut a torn tail of " +
                                std::to_string(rec.cut_bytes) + " bytes (" + rec.problem + ")");
    }
    logs_.push_back(std::move(*log));
    dedups_.push_back(std::make_unique<DedupCache>(config_.dedup_window_ms, dedup_capacity));
  }
  writers_.resize(partitions);
  consumers_.resize(partitions);
  register_metrics();

  HttpServerOptions options;
  options.address = config_.listen_address;
  options.port = static_cast<uint16_t>(config_.http_port);
  options.threads = static_cast<size_t>(config_.http_threads);
  options.max_body_bytes = config_.max_body_bytes;
  options.metrics = &registry_;
  options.name = "ingest";
  http_ = std::make_unique<HttpServer>(options);
  http_->route("POST", "/v1/events", [this](HttpRequest&& req, Responder respond) {
    handle_events(std::move(req), std::move(respond));
  });
  add_admin_routes(*http_, registry_, [this] { return readiness(); });
  if (auto st = http_->start(); !st) return st;

  if (!config_.zk_hosts.empty()) {
    ZkOptions zk;
    zk.hosts = config_.zk_hosts;
    zk.session_timeout = std::chrono::milliseconds(config_.zk_session_timeout_ms);
    zk.connect_timeout = std::chrono::milliseconds(3000);
    ProcessorRecord me;
    me.id = config_.id;
    me.ingest =
        (config_.advertise_address.empty() ? config_.listen_address : config_.advertise_address) +
        ":" + std::to_string(http_->port());
    me.partitions = config_.partitions;
    me.cluster_proxy = config_.cluster_proxy_url;
    me.started_at_ms = clock_.wall_ms();
    registration_ = std::make_unique<ProcessorRegistration>(zk, me);
    registration_->start();
  }

  if (!config_.cluster_proxy_url.empty()) {
    bootstrap_thread_ = std::thread([this] { bootstrap(); });
  }
  return ok_status();
}

void ProcessorServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (registration_) registration_->stop();  // the ZooKeeper node goes first: no new producers
  if (http_) http_->stop(std::chrono::milliseconds(2000));
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (bootstrap_thread_.joinable()) bootstrap_thread_.join();
  for (auto& c : consumers_) {
    if (c) c->stop();
  }
  for (auto& w : writers_) {
    if (w) w->stop();
  }
  consumers_.clear();
  writers_.clear();
  logs_.clear();  // each committer commits what is queued, then stops
}

void ProcessorServer::bootstrap() {
  auto url = parse_http_url(config_.cluster_proxy_url);
  if (!url) {
    std::lock_guard lock(mu_);
    bootstrap_error_ = url.error().message;
    return;
  }
  ClusterProxyOptions options;
  options.processor_id = config_.id;
  options.url = *url;
  options.token = config_.cluster_proxy_token;
  options.timeout = std::chrono::milliseconds(config_.cluster_proxy_timeout_ms);
  options.max_backoff = std::chrono::milliseconds(config_.max_backoff_ms);
  options.dead_letter_dir = config_.data_dir / "dead_letter";
  // One request never carries more rows than one full flush, however far behind the writer is;
  // a few flushes may wait per partition before the consumer waits (the log keeps the rest).
  options.max_request_rows = std::max<size_t>(config_.max_batch_rows, 1);
  options.max_queued_rows = options.max_request_rows * kQueuedFlushesPerPartition;
  options.max_timeout = options.timeout * kTimeoutGrowthLimit;

  HttpClient client(url->host, url->port, options.timeout);
  ShardMarks marks;
  for (int attempt = 0;; ++attempt) {
    auto r = fetch_marks(client, options);
    if (r.ok()) {
      marks = std::move(*r);
      break;
    }
    std::unique_lock lock(mu_);
    bootstrap_error_ = "cluster_proxy: cannot read counters:marks: " + r.error().message;
    if (attempt % 10 == 0) log_line("processor", bootstrap_error_ + " (retrying)");
    auto wait = std::chrono::milliseconds(
        std::min<int64_t>(config_.max_backoff_ms, int64_t{100} << std::min(attempt, 10)));
    if (stop_cv_.wait_for(lock, wait, [&] { return stopping_; })) return;
  }
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    bootstrap_error_.clear();
  }
  for (size_t p = 0; p < logs_.size(); ++p) {
    auto pm = partition_marks(marks, static_cast<int>(p));
    int64_t low = *std::min_element(pm.begin(), pm.end());
    writers_[p] =
        std::make_unique<CounterWriter>(static_cast<int>(p), options, writer_metrics_, backlog_,
                                        low, breaker_.get(), ApplyTransport{}, &clock_);
    ConsumerOptions co;
    co.partition = static_cast<int>(p);
    co.flush_interval = std::chrono::milliseconds(config_.flush_interval_ms);
    co.max_batch_rows = config_.max_batch_rows;
    co.snapshot_interval = std::chrono::milliseconds(config_.dedup_snapshot_interval_ms);
    co.snapshot_file = logs_[p]->dir() / "dedup.snapshot";
    consumers_[p] = std::make_unique<PartitionConsumer>(*logs_[p], *writers_[p], *dedups_[p], co,
                                                        consumer_metrics_, backlog_);
    consumers_[p]->start(std::move(pm));
  }
  running_.store(true, std::memory_order_release);
  log_line("processor", "read the marks of " + std::to_string(marks.size()) +
                            " shard(s); consumers and writers run");
}

HealthStatus ProcessorServer::readiness() const {
  HealthStatus h;
  for (size_t p = 0; p < logs_.size(); ++p) {
    if (auto f = logs_[p]->failure()) {
      h.ready = false;
      h.reasons.push_back("partition " + std::to_string(p) + " log failed: " + *f);
    }
  }
  if (backlog_events() >= config_.max_backlog_events) {
    h.ready = false;
    h.reasons.push_back("backlog of " + std::to_string(backlog_events()) +
                        " unapplied events is at the bound " +
                        std::to_string(config_.max_backlog_events));
  }
  if (breaker_ && breaker_->is_open()) {
    // Ingest stays open (the log keeps the events); this only tells the operator.
    h.reasons.push_back(std::string("circuit toward the cluster proxy ") + breaker_->state());
  }
  if (registration_) {
    if (auto problem = registration_->problem(); !problem.empty()) h.reasons.push_back(problem);
  }
  if (running_.load(std::memory_order_acquire)) {
    for (const auto& c : consumers_) {
      if (auto f = c->failure(); !f.empty()) {
        h.ready = false;
        h.reasons.push_back(f);
      }
    }
  } else {
    std::lock_guard lock(mu_);
    if (!bootstrap_error_.empty()) {
      h.ready = false;
      h.reasons.push_back(bootstrap_error_);
    }
  }
  return h;
}

void ProcessorServer::handle_events(HttpRequest&& request, Responder respond) {
  auto started = std::chrono::steady_clock::now();
  TokenBucket* bucket = nullptr;
  std::string key_name;
  if (!buckets_.empty()) {
    std::string_view key;
    if (auto h = request.header("X-Api-Key")) {
      key = *h;
    } else if (auto a = request.header("Authorization"); a && a->substr(0, 7) == "Bearer ") {
      key = a->substr(7);
    }
    auto it = buckets_.find(key);
    if (it == buckets_.end()) {
      requests_unauthorized_->inc();
      respond(HttpResponse::error(
          401, key.empty() ? "an API key is required (X-Api-Key header)" : "unknown API key"));
      return;
    }
    bucket = it->second.get();
    key_name = key_names_.find(key)->second;
  }
  if (backlog_events() >= config_.max_backlog_events) {
    requests_backpressure_->inc();
    respond(retry_later(503,
                        "backlog of " + std::to_string(backlog_events()) +
                            " events not yet applied is at the bound " +
                            std::to_string(config_.max_backlog_events) + "; retry later",
                        config_.retry_after_s));
    return;
  }
  auto parsed = parse_events(request.body, clock_.wall_ms(), config_.event_limits);
  if (!parsed) {
    requests_bad_->inc();
    respond(HttpResponse::from_error(parsed.error()));
    return;
  }
  if (bucket != nullptr) {
    if (int64_t wait_ms = bucket->take(static_cast<double>(parsed->total)); wait_ms > 0) {
      requests_rate_limited_->inc();
      int retry_s = static_cast<int>((wait_ms + 999) / 1000);
      respond(retry_later(429,
                          "API key " + key_name + " is over its rate limit of " +
                              std::to_string(parsed->total) + " events now; retry in " +
                              std::to_string(wait_ms) + " ms",
                          retry_s));
      return;
    }
  }
  events_rejected_->inc(parsed->rejected.size());

  // Group the valid events by partition and encode them as records of bounded size.
  const auto partitions = static_cast<size_t>(config_.partitions);
  std::vector<std::vector<const Event*>> by_partition(partitions);
  for (const auto& e : parsed->events) {
    by_partition[static_cast<size_t>(partition_of(e.video_id, config_.partitions))].push_back(&e);
  }
  struct Record {
    size_t partition;
    std::string payload;
    size_t events;
  };
  std::vector<Record> records;
  const int64_t now = clock_.wall_ms();
  for (size_t p = 0; p < partitions; ++p) {
    const auto& events = by_partition[p];
    size_t begin = 0;
    while (begin < events.size()) {
      size_t end = begin;
      size_t bytes = kEventBatchHeaderBytes;
      while (end < events.size() &&
             (end == begin || bytes + encoded_event_size(*events[end]) <= record_limit_)) {
        bytes += encoded_event_size(*events[end]);
        ++end;
      }
      Record r{p, {}, end - begin};
      r.payload.reserve(bytes);
      encode_event_batch(now, std::span(events.data() + begin, end - begin), r.payload);
      records.push_back(std::move(r));
      begin = end;
    }
  }
  auto pending = std::make_shared<PendingIngest>();
  pending->respond = std::move(respond);
  pending->accepted = parsed->events.size();
  pending->rejected = std::move(parsed->rejected);
  pending->started = started;
  if (records.empty()) {
    requests_accepted_->inc();
    pending->respond(HttpResponse::json(200, ingest_body(0, pending->rejected)));
    return;
  }
  pending->remaining.store(records.size());
  for (auto& r : records) {
    size_t n = r.events;
    logs_[r.partition]->append(std::move(r.payload), [this, pending, n](Result<uint64_t> offset) {
      if (offset.ok()) {
        backlog_.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
      } else {
        std::lock_guard lock(pending->mu);
        pending->failed.store(true);
        pending->error = offset.error().message;
      }
      if (pending->remaining.fetch_sub(1) != 1) return;
      if (pending->failed.load()) {
        requests_log_failed_->inc();
        std::lock_guard lock(pending->mu);
        pending->respond(
            retry_later(503,
                        "events could not be made durable: " + pending->error +
                            "; some may have been stored, so retry with the same event_ids",
                        config_.retry_after_s));
        return;
      }
      requests_accepted_->inc();
      events_accepted_->inc(pending->accepted);
      ingest_seconds_->observe(std::chrono::steady_clock::now() - pending->started);
      pending->respond(HttpResponse::json(200, ingest_body(pending->accepted, pending->rejected)));
    });
  }
}

void ProcessorServer::register_metrics() {
  auto& r = registry_;
  const char* req_help = "POST /v1/events requests by outcome";
  requests_accepted_ = &r.counter("tally_processor_requests_total", req_help, {{"outcome", "ok"}});
  requests_bad_ = &r.counter("tally_processor_requests_total", req_help, {{"outcome", "bad_body"}});
  requests_unauthorized_ =
      &r.counter("tally_processor_requests_total", req_help, {{"outcome", "unauthorized"}});
  requests_rate_limited_ =
      &r.counter("tally_processor_requests_total", req_help, {{"outcome", "rate_limited"}});
  requests_backpressure_ =
      &r.counter("tally_processor_requests_total", req_help, {{"outcome", "backpressure"}});
  requests_log_failed_ =
      &r.counter("tally_processor_requests_total", req_help, {{"outcome", "log_failed"}});
  events_accepted_ =
      &r.counter("tally_processor_events_accepted_total", "Events made durable and acknowledged");
  events_rejected_ = &r.counter("tally_processor_events_rejected_total",
                                "Events rejected by validation (listed in the response)");
  ingest_seconds_ = &r.histogram("tally_processor_ingest_seconds",
                                 "POST /v1/events from arrival to durable acknowledgement");
  r.gauge_fn("tally_processor_backlog_events",
             "Events in the log not yet applied on every shard (503 at the bound)", {},
             [this] { return static_cast<double>(backlog_events()); });
  r.gauge_fn("tally_processor_backlog_bound_events", "limits.max_backlog_events", {},
             [this] { return static_cast<double>(config_.max_backlog_events); });
  r.gauge_fn("tally_processor_dedup_window_seconds", "The configured dedup window", {},
             [this] { return static_cast<double>(config_.dedup_window_ms) / 1000.0; });

  writer_metrics_.batches_applied =
      &r.counter("tally_processor_apply_batches_total", "Batches every shard holds");
  writer_metrics_.requests_failed = &r.counter("tally_processor_apply_failures_total",
                                               "counters:apply attempts that failed (retried)");
  writer_metrics_.dead_lettered = &r.counter("tally_processor_dead_letter_batches_total",
                                             "Batches written to the dead-letter directory");
  writer_metrics_.overlaps =
      &r.counter("tally_processor_apply_overlaps_total", "Shard outcomes `overlap`");
  writer_metrics_.rows_sent =
      &r.counter("tally_processor_apply_rows_total", "Counter rows sent in applied batches");
  writer_metrics_.apply_seconds =
      &r.histogram("tally_processor_apply_seconds", "One successful counters:apply exchange");
  writer_metrics_.timeouts =
      &r.counter("tally_processor_apply_timeouts_total",
                 "counters:apply attempts that ran out of time (the next one gets twice as long)");
  writer_metrics_.shard_retries =
      &r.counter("tally_processor_apply_shard_retries_total",
                 "counters:apply re-sends addressed only to the shards that failed");
  writer_metrics_.breaker_opened = &r.counter("tally_processor_circuit_opened_total",
                                              "Times the circuit toward the cluster proxy opened");
  writer_metrics_.breaker_waits =
      &r.counter("tally_processor_circuit_waits_total",
                 "Apply attempts held back because the circuit was open");
  if (breaker_) {
    for (const char* state : {"closed", "open", "half_open"}) {
      r.gauge_fn(
          "tally_processor_circuit_state",
          "Circuit toward the cluster proxy: 1 for the current state", {{"state", state}},
          [this, state] { return std::string_view(breaker_->state()) == state ? 1.0 : 0.0; });
    }
  }
  consumer_metrics_.events =
      &r.counter("tally_processor_consumed_events_total", "Events read by the consumers");
  consumer_metrics_.duplicates =
      &r.counter("tally_processor_duplicate_events_total", "Events dropped as repeated event ids");
  consumer_metrics_.batches =
      &r.counter("tally_processor_flushed_batches_total", "Aggregate tables handed to writers");
  consumer_metrics_.snapshots =
      &r.counter("tally_processor_dedup_snapshots_total", "Dedup snapshots written");
  consumer_metrics_.snapshot_failures =
      &r.counter("tally_processor_dedup_snapshot_failures_total",
                 "Dedup snapshot writes that failed (the previous snapshot stays)");
  consumer_metrics_.snapshot_pause_seconds =
      &r.histogram("tally_processor_dedup_snapshot_pause_seconds",
                   "A consumer's pause to encode its dedup cache for a snapshot");
  consumer_metrics_.snapshot_write_seconds =
      &r.histogram("tally_processor_dedup_snapshot_write_seconds",
                   "Writing one dedup snapshot durably (beside the consumer, on its own thread)");
  consumer_metrics_.truncated_segments = &r.counter("tally_processor_log_segments_deleted_total",
                                                    "Log segments deleted below every mark");

  for (size_t p = 0; p < logs_.size(); ++p) {
    MetricLabels l = {{"partition", std::to_string(p)}};
    PartitionLog* log = logs_[p].get();
    DedupCache* dedup = dedups_[p].get();
    r.gauge_fn("tally_processor_log_end_offset", "One past the last durable log offset", l,
               [log] { return static_cast<double>(log->end_offset()); });
    r.gauge_fn("tally_processor_log_syncs", "fdatasync calls (group commits)", l,
               [log] { return static_cast<double>(log->syncs()); });
    r.gauge_fn("tally_processor_log_bytes", "Bytes appended to the log", l,
               [log] { return static_cast<double>(log->bytes_written()); });
    r.gauge_fn("tally_processor_dedup_entries", "Event ids the dedup cache holds", l,
               [dedup] { return static_cast<double>(dedup->size()); });
    r.gauge_fn("tally_processor_dedup_capacity", "Event ids the memory budget allows", l,
               [dedup] { return static_cast<double>(dedup->capacity()); });
    r.gauge_fn("tally_processor_dedup_effective_window_seconds",
               "The dedup window actually covered (shrinks when the memory budget binds)", l,
               [dedup] { return static_cast<double>(dedup->effective_window_ms()) / 1000.0; });
    r.gauge_fn("tally_processor_dedup_evicted_early", "Ids forgotten before the window ended", l,
               [dedup] { return static_cast<double>(dedup->evicted_early()); });
    r.gauge_fn("tally_processor_applied_offset",
               "The log offset every shard holds (-1: none, or not started)", l,
               [this, p] { return static_cast<double>(applied_through(static_cast<int>(p))); });
    // A gauge of partition p's writer: 0 while the writers are not running (before the marks
    // are read, after stop()).
    auto writer_gauge = [&](const char* name, const char* help, auto read) {
      r.gauge_fn(name, help, l, [this, p, read] {
        return running_.load(std::memory_order_acquire) ? read(*writers_[p]) : 0.0;
      });
    };
    writer_gauge("tally_processor_writer_queue", "Batches waiting for the writer",
                 [](const CounterWriter& w) { return static_cast<double>(w.queued()); });
    writer_gauge("tally_processor_writer_queue_rows",
                 "Counter rows waiting for the writer (the consumer waits at the bound)",
                 [](const CounterWriter& w) { return static_cast<double>(w.queued_rows()); });
    writer_gauge("tally_processor_apply_target_rows",
                 "Rows per request now: halved after a timeout, grown back after successes",
                 [](const CounterWriter& w) { return static_cast<double>(w.target_rows()); });
    writer_gauge("tally_processor_apply_timeout_seconds",
                 "The timeout of the writer's next attempt (doubles after a timeout)",
                 [](const CounterWriter& w) {
                   return static_cast<double>(w.attempt_timeout().count()) / 1000.0;
                 });
  }
  r.gauge_fn("tally_processor_writer_queue_bound_rows",
             "Rows that may wait per partition before its consumer waits", {}, [this] {
               return static_cast<double>(std::max<size_t>(config_.max_batch_rows, 1) *
                                          kQueuedFlushesPerPartition);
             });
}

}  // namespace tally::processor
