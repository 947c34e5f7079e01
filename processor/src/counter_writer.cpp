#include "processor/src/counter_writer.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "common/metrics/metrics_registry.h"
#include "processor/src/dead_letter.h"

namespace tally::processor {

namespace {

using json = nlohmann::json;

std::string cut(std::string_view s, size_t n = 300) {
  return s.size() <= n ? std::string(s) : std::string(s.substr(0, n)) + "...";
}

}  // namespace

std::string encode_apply_request(std::string_view processor_id, const FlushBatch& batch) {
  // Built by hand: ids are validated to [A-Za-z0-9_-] (no escaping needed) and batches reach
  // tens of thousands of rows.
  std::string out;
  out.reserve(128 + batch.rows.size() * 96);
  out += "{\"processor_id\":\"";
  out += processor_id;
  out += "\",\"partition\":" + std::to_string(batch.partition);
  out += ",\"from_offset\":" + std::to_string(batch.from_offset);
  out += ",\"to_offset\":" + std::to_string(batch.to_offset);
  out += ",\"rows\":[";
  bool first = true;
  for (const auto& r : batch.rows) {
    if (!first) out += ',';
    first = false;
    out += "{\"video_id\":\"";
    out += r.video_id;
    out += "\",\"event_type\":\"";
    out += event_type_name(r.type);
    out += "\",\"minute\":" + std::to_string(r.minute_ms);
    out += ",\"count\":" + std::to_string(r.count);
    out += ",\"sum\":" + std::to_string(r.sum) + "}";
  }
  out += "]}";
  return out;
}

Result<std::vector<ShardOutcome>> parse_apply_response(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::kInternal, "counters:apply response " + why + ": " + cut(body));
  };
  if (!j.is_object() || !j.contains("shards") || !j["shards"].is_array()) {
    return bad("is not {\"shards\": [...]}");
  }
  std::vector<ShardOutcome> out;
  for (const auto& s : j["shards"]) {
    if (!s.is_object() || !s.contains("shard") || !s["shard"].is_string() ||
        !s.contains("outcome") || !s["outcome"].is_string()) {
      return bad("has a shard entry without shard and outcome");
    }
    ShardOutcome o;
    o.shard = s["shard"].get<std::string>();
    o.outcome = s["outcome"].get<std::string>();
    static const std::set<std::string> kKnown = {"applied", "already_applied", "overlap", "failed"};
    if (!kKnown.count(o.outcome)) return bad("has unknown outcome \"" + o.outcome + "\"");
    if (s.contains("mark") && s["mark"].is_number_integer()) o.mark = s["mark"].get<int64_t>();
    if (s.contains("error") && s["error"].is_string()) o.error = s["error"].get<std::string>();
    if (s.contains("sqlstate") && s["sqlstate"].is_string())
      o.sqlstate = s["sqlstate"].get<std::string>();
    out.push_back(std::move(o));
  }
  return out;
}

bool timed_out_shard_failure(const ShardOutcome& outcome) {
  return outcome.outcome == "failed" && outcome.sqlstate == "57014";
}

bool permanent_shard_failure(const ShardOutcome& outcome) {
  if (outcome.outcome != "failed" || outcome.sqlstate.size() != 5) return false;
  return outcome.sqlstate.rfind("22", 0) == 0 || outcome.sqlstate.rfind("23", 0) == 0;
}

std::string with_shards(std::string_view body, const std::vector<std::string>& shards) {
  std::string out(body);
  auto close = out.rfind('}');
  if (close == std::string::npos) return out;
  out.insert(close, ",\"shards\":" + json(shards).dump());
  return out;
}

Result<ShardMarks> parse_marks_response(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::kInternal, "counters:marks response " + why + ": " + cut(body));
  };
  if (!j.is_object() || !j.contains("shards") || !j["shards"].is_array()) {
    return bad("is not {\"shards\": [...]}");
  }
  ShardMarks out;
  for (const auto& s : j["shards"]) {
    if (!s.is_object() || !s.contains("shard") || !s["shard"].is_string()) {
      return bad("has a shard entry without a shard name");
    }
    auto& marks = out[s["shard"].get<std::string>()];
    if (!s.contains("marks")) continue;
    if (!s["marks"].is_object()) return bad("has marks that are not an object");
    for (const auto& [partition, mark] : s["marks"].items()) {
      int p = -1;
      try {
        p = std::stoi(partition);
      } catch (...) {
      }
      if (p < 0 || !mark.is_number_integer())
        return bad("has a bad mark for \"" + partition + "\"");
      marks[p] = mark.get<int64_t>();
    }
  }
  return out;
}

std::vector<int64_t> partition_marks(const ShardMarks& marks, int partition) {
  std::vector<int64_t> out;
  for (const auto& [shard, by_partition] : marks) {
    auto it = by_partition.find(partition);
    out.push_back(it == by_partition.end() ? -1 : it->second);
  }
  if (out.empty()) out.push_back(-1);
  return out;
}

Result<ShardMarks> fetch_marks(HttpClient& client, const ClusterProxyOptions& options) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (!options.token.empty()) headers.emplace_back("Authorization", "Bearer " + options.token);
  auto r = client.request(
      "GET", options.url.base_path + "/v1/counters:marks?processor_id=" + options.processor_id, {},
      headers);
  if (!r.ok()) return r.error();
  if (r->status != 200) {
    return make_error(ErrorCode::kUnavailable, "GET /v1/counters:marks answered " +
                                                   std::to_string(r->status) + ": " + cut(r->body));
  }
  return parse_marks_response(r->body);
}

// ---------------------------------------------------------------------------------------------

CounterWriter::CounterWriter(int partition, ClusterProxyOptions options, WriterMetrics metrics,
                             std::atomic<int64_t>& backlog_events, int64_t applied_through,
                             CircuitBreaker* breaker, ApplyTransport transport, const Clock* clock)
    : partition_(partition),
      options_(std::move(options)),
      metrics_(metrics),
      backlog_(backlog_events),
      client_(options_.url.host, options_.url.port, options_.timeout),
      breaker_(breaker),
      transport_(std::move(transport)),
      clock_(clock ? *clock : system_clock_),
      rng_(std::random_device{}()),
      applied_(applied_through),
      attempt_timeout_ms_(options_.timeout.count()),
      target_rows_(std::max<size_t>(options_.max_request_rows, 1)) {
  thread_ = std::thread([this] { run(); });
}

CounterWriter::~CounterWriter() {
  stop();
}

void CounterWriter::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  space_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool CounterWriter::enqueue(FlushBatch batch) {
  {
    std::unique_lock lock(mu_);
    // One batch always fits into an empty queue, however large: the consumer never deadlocks.
    space_cv_.wait(lock, [&] {
      return stopping_ || queue_.empty() ||
             queue_rows_ + batch.rows.size() <= options_.max_queued_rows;
    });
    if (stopping_) return false;
    queue_rows_ += batch.rows.size();
    queue_.push_back(std::move(batch));
    queued_.store(queue_.size(), std::memory_order_relaxed);
    queued_rows_.store(queue_rows_, std::memory_order_relaxed);
  }
  cv_.notify_one();
  return true;
}

std::string CounterWriter::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void CounterWriter::run() {
  while (true) {
    FlushBatch batch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      batch = std::move(queue_.front());
      queue_.pop_front();
      queue_rows_ -= batch.rows.size();
      // Nothing of the queued batches has reached any shard yet: one request covers them all,
      // up to the row bound of one request.
      while (!queue_.empty() && queue_.front().from_offset == batch.to_offset &&
             batch.rows.size() + queue_.front().rows.size() <= target_rows()) {
        FlushBatch& next = queue_.front();
        queue_rows_ -= next.rows.size();
        batch.rows.insert(batch.rows.end(), std::make_move_iterator(next.rows.begin()),
                          std::make_move_iterator(next.rows.end()));
        batch.to_offset = next.to_offset;
        batch.events += next.events;
        queue_.pop_front();
      }
      queued_.store(queue_.size(), std::memory_order_relaxed);
      queued_rows_.store(queue_rows_, std::memory_order_relaxed);
    }
    space_cv_.notify_all();
    if (!deliver(batch)) return;
    applied_.store(batch.to_offset, std::memory_order_release);
    backlog_.fetch_sub(static_cast<int64_t>(batch.events), std::memory_order_relaxed);
  }
}

Result<HttpClientResponse> CounterWriter::send(const std::string& target, const std::string& body,
                                               std::chrono::milliseconds timeout) {
  if (transport_) return transport_(target, body, timeout);
  std::vector<std::pair<std::string, std::string>> headers;
  if (!options_.token.empty()) headers.emplace_back("Authorization", "Bearer " + options_.token);
  headers.emplace_back("Tally-Timeout-Ms", std::to_string(timeout.count()));
  client_.set_timeout(timeout);
  return client_.request("POST", target, body, headers);
}

void CounterWriter::record(bool proxy_ok) {
  if (breaker_ == nullptr) return;
  if (proxy_ok) {
    breaker_->record_success();
    return;
  }
  const bool was_open = std::string_view(breaker_->state()) == "open";
  breaker_->record_failure();
  if (!was_open && breaker_->is_open()) {
    if (metrics_.breaker_opened) metrics_.breaker_opened->inc();
    log_.log("circuit", "circuit toward the cluster proxy is open (partition " +
                            std::to_string(partition_) +
                            " saw the last failure); writers wait, the log keeps every event");
  }
}

bool CounterWriter::deliver(FlushBatch& batch) {
  const std::string body = encode_apply_request(options_.processor_id, batch);
  const std::string target = options_.url.base_path + "/v1/counters:apply";
  // The shards still to answer for this batch; empty while the whole batch goes to every shard.
  std::vector<std::string> pending;
  bool dead_lettered = false;
  for (int attempt = 0;;) {
    if (breaker_ != nullptr && !breaker_->allow()) {
      // Open: no request at all until the probe window (the log keeps the events meanwhile).
      if (metrics_.breaker_waits) metrics_.breaker_waits->inc();
      auto wait = std::chrono::milliseconds(std::min<int64_t>(
          std::max<int64_t>(breaker_->retry_after_ms(), options_.min_backoff.count()),
          options_.max_backoff.count()));
      if (wait.count() < 1) wait = std::chrono::milliseconds(1);
      if (!sleep_for(wait)) return false;
      continue;
    }
    auto started = std::chrono::steady_clock::now();
    const auto timeout = attempt_timeout();
    auto r = send(target, pending.empty() ? body : with_shards(body, pending), timeout);
    std::string error;
    bool timed_out = false;
    if (!r.ok()) {
      record(false);
      error = r.error().message;
      timed_out = r.error().code == ErrorCode::kTimeout;
    } else if (r->status == 200) {
      record(true);
      auto outcomes = parse_apply_response(r->body);
      if (!outcomes.ok()) {
        error = outcomes.error().message;
      } else {
        std::vector<std::string> failed, rejected, overlapped;
        std::string failed_text, rejected_text, overlap_text;
        for (const auto& o : *outcomes) {
          if (o.outcome == "overlap") {
            overlapped.push_back(o.shard);
            overlap_text += (overlap_text.empty() ? "" : "; ") + o.shard + " (mark " +
                            std::to_string(o.mark) + ")";
            if (metrics_.overlaps) metrics_.overlaps->inc();
          } else if (o.outcome == "failed" && permanent_shard_failure(o)) {
            rejected.push_back(o.shard);
            rejected_text += (rejected_text.empty() ? "" : "; ") + o.shard + ": " + o.error;
          } else if (o.outcome == "failed") {
            timed_out = timed_out || timed_out_shard_failure(o);
            failed.push_back(o.shard);
            failed_text += (failed_text.empty() ? "" : "; ") + o.shard + ": " + o.error;
          }
        }
        bool written = true;
        if (!rejected.empty()) {
          written = dead_letter(batch, body, dead_letter_kinds::kRejected, rejected,
                                "shard(s) refused the batch as invalid data: " + rejected_text);
        }
        if (written && !overlapped.empty()) {
          written =
              dead_letter(batch, body, dead_letter_kinds::kOverlap, overlapped,
                          "overlap: the batch straddles the mark of shard(s) " + overlap_text +
                              "; the processor's state disagrees with the "
                              "shard's");
        }
        dead_lettered = dead_lettered || !rejected.empty() || !overlapped.empty();
        if (!written) {
          // Keep the batch: the next attempt gets the same answer and tries the file again.
          error = "cannot write the dead-letter file (see above)";
          pending.clear();
        } else if (failed.empty()) {
          if (metrics_.apply_seconds) {
            metrics_.apply_seconds->observe(std::chrono::steady_clock::now() - started);
          }
          if (!dead_lettered && metrics_.batches_applied) metrics_.batches_applied->inc();
          if (metrics_.rows_sent) metrics_.rows_sent->inc(batch.rows.size());
          failing_.store(0, std::memory_order_relaxed);
          // Twice what this attempt took, between the configured timeout and max_timeout: a
          // batch that needed a longer timeout is not followed by one cancelled at the normal
          // timeout (the shards would redo the work), and a quick one brings the normal back.
          const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - started);
          attempt_timeout_ms_.store(
              std::clamp<int64_t>(2 * took.count(), options_.timeout.count(),
                                  std::max(options_.max_timeout, options_.timeout).count()),
              std::memory_order_relaxed);
          const size_t rows_now = target_rows();
          target_rows_.store(std::min(std::max<size_t>(options_.max_request_rows, 1),
                                      rows_now + std::max<size_t>(rows_now / 4, 1)),
                             std::memory_order_relaxed);
          return true;
        } else {
          // Only the failed shards act on a resend: address it to them alone.
          pending = failed;
          if (metrics_.shard_retries) metrics_.shard_retries->inc();
          error = "shards failed: " + failed_text;
        }
      }
    } else if (r->status == 409 && !pending.empty()) {
      // A shard named in "shards" is gone (a reshard): resend to every shard; those that hold the
      // batch answer already_applied.
      record(true);
      error = "HTTP 409 for the failed shards only: " + cut(r->body) + "; resending to every shard";
      pending.clear();
    } else if (r->status == 400 || r->status == 404 || r->status == 409 || r->status == 413 ||
               r->status == 422) {
      record(true);
      if (dead_letter(
              batch, body, dead_letter_kinds::kRejected, pending,
              "refused with HTTP " + std::to_string(r->status) + ": " + cut(r->body, 2000))) {
        failing_.store(0, std::memory_order_relaxed);
        return true;
      }
      error = "cannot write the dead-letter file (see above)";
    } else {
      // 5xx: the cluster proxy is failing (the breaker counts it); 401/403/429: it is up.
      record(r->status < 500);
      error = "HTTP " + std::to_string(r->status) + ": " + cut(r->body);
    }
    if (metrics_.requests_failed) metrics_.requests_failed->inc();
    if (timed_out) {
      if (metrics_.timeouts) metrics_.timeouts->inc();
      target_rows_.store(
          std::max(std::max<size_t>(options_.max_request_rows / 10, 1), target_rows() / 2),
          std::memory_order_relaxed);
      attempt_timeout_ms_.store(
          std::min<int64_t>(timeout.count() * 2,
                            std::max(options_.max_timeout, options_.timeout).count()),
          std::memory_order_relaxed);
      error += " (next attempt waits up to " + std::to_string(attempt_timeout().count()) + " ms)";
    }
    failing_.store(attempt + 1, std::memory_order_relaxed);
    {
      std::lock_guard lock(mu_);
      last_error_ = "partition " + std::to_string(partition_) + " batch (" +
                    std::to_string(batch.from_offset) + ", " + std::to_string(batch.to_offset) +
                    "]: " + error;
    }
    if (attempt == 0 || attempt % 20 == 0) {
      log_.log("counters:apply", "counters:apply " + last_error() + " (attempt " +
                                     std::to_string(attempt + 1) + ", retrying)");
    }
    if (!sleep_backoff(attempt)) return false;
    ++attempt;
  }
}

bool CounterWriter::sleep_backoff(int attempt) {
  double base = static_cast<double>(options_.min_backoff.count()) *
                static_cast<double>(uint64_t{1} << std::min(attempt, 16));
  base = std::min(base, static_cast<double>(options_.max_backoff.count()));
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  return sleep_for(std::chrono::milliseconds(static_cast<int64_t>(base * jitter(rng_))));
}

bool CounterWriter::sleep_for(std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, wait, [&] { return stopping_; });
}

bool CounterWriter::dead_letter(const FlushBatch& batch, const std::string& body, const char* kind,
                                const std::vector<std::string>& shards, const std::string& reason) {
  DeadLetter letter;
  letter.kind = kind;
  letter.reason = reason;
  letter.processor_id = options_.processor_id;
  letter.partition = partition_;
  letter.from_offset = batch.from_offset;
  letter.to_offset = batch.to_offset;
  letter.shards = shards;
  letter.rows = batch.rows.size();
  letter.events = static_cast<int64_t>(batch.events);
  letter.at_ms = clock_.wall_ms();
  letter.request = body;
  auto name = write_dead_letter(options_.dead_letter_dir, letter);
  if (!name.ok()) {
    log_.log("dead-letter", "partition " + std::to_string(partition_) + " batch (" +
                                std::to_string(batch.from_offset) + ", " +
                                std::to_string(batch.to_offset) + "]: " + name.error().message +
                                " (the batch is kept)");
    return false;
  }
  if (metrics_.dead_lettered) metrics_.dead_lettered->inc();
  std::string names;
  for (const auto& s : shards) names += (names.empty() ? "" : ",") + s;
  log_.log("dead-letter", "partition " + std::to_string(partition_) + " batch (" +
                              std::to_string(batch.from_offset) + ", " +
                              std::to_string(batch.to_offset) + "] for shard(s) " +
                              (names.empty() ? "all" : names) +
                              " to the dead-letter directory as " + *name + ": " + reason);
  return true;
}

}  // namespace tally::processor
