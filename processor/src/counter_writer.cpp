#include "processor/src/counter_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "common/metrics/metrics_registry.h"
#include "processor/src/log_segment.h"

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
    out.push_back(std::move(o));
  }
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
                             std::atomic<int64_t>& backlog_events, int64_t applied_through)
    : partition_(partition),
      options_(std::move(options)),
      metrics_(metrics),
      backlog_(backlog_events),
      client_(options_.url.host, options_.url.port, options_.timeout),
      rng_(std::random_device{}()),
      applied_(applied_through) {
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
  if (thread_.joinable()) thread_.join();
}

void CounterWriter::enqueue(FlushBatch batch) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(batch));
    queued_.store(queue_.size(), std::memory_order_relaxed);
  }
  cv_.notify_one();
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
      // Nothing of the queued batches has reached any shard yet: one request covers them all.
      while (!queue_.empty() && queue_.front().from_offset == batch.to_offset &&
             batch.rows.size() + queue_.front().rows.size() <= options_.max_merge_rows) {
        FlushBatch& next = queue_.front();
        batch.rows.insert(batch.rows.end(), std::make_move_iterator(next.rows.begin()),
                          std::make_move_iterator(next.rows.end()));
        batch.to_offset = next.to_offset;
        batch.events += next.events;
        queue_.pop_front();
      }
      queued_.store(queue_.size(), std::memory_order_relaxed);
    }
    if (!deliver(batch)) return;
    applied_.store(batch.to_offset, std::memory_order_release);
    backlog_.fetch_sub(static_cast<int64_t>(batch.events), std::memory_order_relaxed);
  }
}

bool CounterWriter::deliver(FlushBatch& batch) {
  std::string body = encode_apply_request(options_.processor_id, batch);
  std::vector<std::pair<std::string, std::string>> headers;
  if (!options_.token.empty()) headers.emplace_back("Authorization", "Bearer " + options_.token);
  const std::string target = options_.url.base_path + "/v1/counters:apply";
  for (int attempt = 0;; ++attempt) {
    auto started = std::chrono::steady_clock::now();
    auto r = client_.request("POST", target, body, headers);
    std::string error;
    if (!r.ok()) {
      error = r.error().message;
    } else if (r->status == 200) {
      auto outcomes = parse_apply_response(r->body);
      if (!outcomes.ok()) {
        error = outcomes.error().message;
      } else {
        std::string failed, overlap;
        for (const auto& o : *outcomes) {
          if (o.outcome == "failed") {
            failed += (failed.empty() ? "" : "; ") + o.shard + ": " + o.error;
          } else if (o.outcome == "overlap") {
            overlap +=
                (overlap.empty() ? "" : "; ") + o.shard + " (mark " + std::to_string(o.mark) + ")";
            if (metrics_.overlaps) metrics_.overlaps->inc();
          }
        }
        if (failed.empty()) {
          if (metrics_.apply_seconds) {
            metrics_.apply_seconds->observe(std::chrono::steady_clock::now() - started);
          }
          if (!overlap.empty()) {
            dead_letter(batch, body,
                        "overlap: the batch straddles the mark of shard(s) " + overlap +
                            "; the processor's state disagrees with the shard's");
          } else if (metrics_.batches_applied) {
            metrics_.batches_applied->inc();
          }
          if (metrics_.rows_sent) metrics_.rows_sent->inc(batch.rows.size());
          failing_.store(0, std::memory_order_relaxed);
          return true;
        }
        // Shards that applied it answer already_applied to the resend: only the failed ones act.
        error = "shards failed: " + failed;
      }
    } else if (r->status == 400 || r->status == 404 || r->status == 409 || r->status == 413 ||
               r->status == 422) {
      dead_letter(batch, body,
                  "refused with HTTP " + std::to_string(r->status) + ": " + cut(r->body, 2000));
      failing_.store(0, std::memory_order_relaxed);
      return true;
    } else {
      error = "HTTP " + std::to_string(r->status) + ": " + cut(r->body);
    }
    if (metrics_.requests_failed) metrics_.requests_failed->inc();
    failing_.store(attempt + 1, std::memory_order_relaxed);
    {
      std::lock_guard lock(mu_);
      last_error_ = "partition " + std::to_string(partition_) + " batch (" +
                    std::to_string(batch.from_offset) + ", " + std::to_string(batch.to_offset) +
                    "]: " + error;
    }
    if (attempt == 0 || attempt % 20 == 0) {
      std::fprintf(stderr, "processor: counters:apply %s (attempt %d, retrying)\n",
                   last_error().c_str(), attempt + 1);
    }
    if (!sleep_backoff(attempt)) return false;
  }
}

bool CounterWriter::sleep_backoff(int attempt) {
  double base = static_cast<double>(options_.min_backoff.count()) *
                static_cast<double>(uint64_t{1} << std::min(attempt, 16));
  base = std::min(base, static_cast<double>(options_.max_backoff.count()));
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  auto wait = std::chrono::milliseconds(static_cast<int64_t>(base * jitter(rng_)));
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, wait, [&] { return stopping_; });
}

void CounterWriter::dead_letter(const FlushBatch& batch, const std::string& body,
                                const std::string& reason) {
  if (metrics_.dead_lettered) metrics_.dead_lettered->inc();
  std::fprintf(stderr,
               "processor: partition %d batch (%lld, %lld] to the dead-letter directory: %s\n",
               partition_, static_cast<long long>(batch.from_offset),
               static_cast<long long>(batch.to_offset), reason.c_str());
  std::error_code ec;
  std::filesystem::create_directories(options_.dead_letter_dir, ec);
  char name[96];
  std::snprintf(name, sizeof(name), "p%d-%020lld-%020lld.json", partition_,
                static_cast<long long>(batch.from_offset), static_cast<long long>(batch.to_offset));
  auto file = options_.dead_letter_dir / name;
  std::string content = "{\"reason\":" + json(reason).dump() + ",\"request\":" + body + "}\n";
  auto tmp = file;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = fd >= 0 &&
            ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
            ::fdatasync(fd) == 0;
  if (fd >= 0) ::close(fd);
  ok = ok && ::rename(tmp.c_str(), file.c_str()) == 0 &&
       sync_directory(options_.dead_letter_dir).ok();
  if (!ok) {
    std::fprintf(stderr, "processor: cannot write dead-letter file %s\n", file.c_str());
  }
}

}  // namespace tally::processor
