#include "tools/loadgen/src/loadgen.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "common/http/http_client.h"

namespace tally {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kTypes[] = {"view", "like", "dislike", "share", "watch_time"};

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_run_id() {
  std::random_device rd;
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string id = "lg";
  for (int i = 0; i < 8; ++i) id += kAlphabet[rd() % (sizeof(kAlphabet) - 1)];
  return id;
}

bool valid_id_chars(const std::string& s) {
  return !s.empty() && s.size() <= 40 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c));
  });
}

struct PendingEvent {
  CounterKey key;
  int64_t value = 0;
  bool invalid = false;
};

void add(std::map<CounterKey, CounterTotals>& into, const PendingEvent& e) {
  auto& t = into[e.key];
  ++t.count;
  t.sum += e.value;
}

}  // namespace

Result<std::unique_ptr<Loadgen>> Loadgen::create(LoadgenOptions o) {
  auto bad = [](const std::string& what) { return make_error(ErrorCode::kInvalidArgument, what); };
  if (auto u = parse_http_url(o.ingest_url); !u) return bad("ingest URL: " + u.error().message);
  if (!o.rest_url.empty()) {
    if (auto u = parse_http_url(o.rest_url); !u) return bad("REST URL: " + u.error().message);
  }
  if (!(o.rate > 0))
    return bad("rate: expected events per second > 0, got " + std::to_string(o.rate));
  if (o.duration.count() <= 0) return bad("duration: expected > 0 ms");
  if (o.videos < 1 || o.videos > 1000000)
    return bad("videos: expected 1 to 1000000, got " + std::to_string(o.videos));
  if (!(o.zipf >= 0 && o.zipf <= 5))
    return bad("zipf: expected an exponent from 0 (uniform) to 5, got " + std::to_string(o.zipf));
  if (o.batch < 1 || o.batch > 10000)
    return bad("batch: expected 1 to 10000 events per request, got " + std::to_string(o.batch));
  if (o.producers < 1 || o.producers > 64)
    return bad("producers: expected 1 to 64, got " + std::to_string(o.producers));
  if (o.duplicate_percent < 0 || o.duplicate_percent > 100)
    return bad("duplicates: expected a percentage 0-100, got " +
               std::to_string(o.duplicate_percent));
  if (o.watch_time_percent < 0 || o.watch_time_percent > 100)
    return bad("watch-time share: expected a percentage 0-100, got " +
               std::to_string(o.watch_time_percent));
  if (o.invalid_percent < 0 || o.invalid_percent > 100)
    return bad("invalid share: expected a percentage 0-100, got " +
               std::to_string(o.invalid_percent));
  if (o.run_id.empty()) o.run_id = random_run_id();
  if (!valid_id_chars(o.run_id))
    return bad("run id: expected 1-40 letters or digits, got '" + o.run_id + "'");
  return std::unique_ptr<Loadgen>(new Loadgen(std::move(o)));
}

Loadgen::Loadgen(LoadgenOptions options) : options_(std::move(options)) {}

std::string Loadgen::video_id(int k) const {
  return options_.run_id + "_v" + std::to_string(k);
}

void Loadgen::run(const std::atomic<bool>* stop) {
  auto start = Clock::now();
  auto end = start + options_.duration;
  std::vector<std::thread> threads;
  for (int p = 0; p < options_.producers; ++p)
    threads.emplace_back([this, p, start, end, stop] { produce(p, start, end, stop); });
  for (auto& t : threads) t.join();
  std::lock_guard lock(mutex_);
  ledger_.stats.seconds = std::chrono::duration<double>(Clock::now() - start).count();
}

void Loadgen::produce(int producer, Clock::time_point start, Clock::time_point end,
                      const std::atomic<bool>* stop) {
  auto url = *parse_http_url(options_.ingest_url);
  HttpClient client(url.host, url.port, options_.request_timeout);
  const std::string target = url.base_path + "/v1/events";
  std::vector<std::pair<std::string, std::string>> headers;
  if (!options_.api_key.empty()) headers.emplace_back("X-Api-Key", options_.api_key);
  std::mt19937_64 rng(std::hash<std::string>{}(options_.run_id) + static_cast<uint64_t>(producer));
  std::uniform_int_distribution<int> uniform_video(0, options_.videos - 1);
  std::discrete_distribution<int> zipf_video;
  if (options_.zipf > 0) {
    std::vector<double> weights(static_cast<size_t>(options_.videos));
    for (size_t k = 0; k < weights.size(); ++k)
      weights[k] = 1.0 / std::pow(static_cast<double>(k + 1), options_.zipf);
    zipf_video = std::discrete_distribution<int>(weights.begin(), weights.end());
  }
  auto video = [&](std::mt19937_64& g) {
    return options_.zipf > 0 ? zipf_video(g) : uniform_video(g);
  };
  std::uniform_int_distribution<int> percent(0, 99);
  std::uniform_int_distribution<int64_t> watch_ms(1, 600000);
  // Each producer sends one batch per interval; together they make `rate`.
  const auto interval = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
      static_cast<double>(options_.batch) * options_.producers / options_.rate));
  auto next = start + interval * producer / options_.producers;
  int64_t seq = 0;
  int64_t invalid_seq = 0;
  // The retry budget runs from the end of the run: `end`, or when the stop flag was first seen.
  std::optional<Clock::time_point> stopped_at;
  auto retry_deadline = [&] {
    if (stop && stop->load() && !stopped_at) stopped_at = Clock::now();
    return std::min(end, stopped_at.value_or(end)) + options_.retry_budget;
  };

  // Sends `body` until a 200 (returns its parsed answer) or the retry budget ends (nullopt).
  auto send = [&](const std::string& body) -> std::optional<json> {
    auto backoff = std::chrono::milliseconds(50);
    for (;;) {
      auto r = client.request("POST", target, body, headers);
      int status = r ? r->status : 0;
      if (status == 200) {
        json answer = json::parse(r->body, nullptr, false);
        if (!answer.is_discarded() && answer.contains("rejected")) {
          if (options_.on_response) options_.on_response(true, status, Clock::now());
          return answer;
        }
      }
      if (options_.on_response) options_.on_response(false, status, Clock::now());
      {
        std::lock_guard lock(mutex_);
        ++ledger_.stats.requests_failed;
        ++ledger_.stats.failures_by_status[status];
      }
      if (Clock::now() > retry_deadline()) return std::nullopt;
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
  };

  while (Clock::now() < end && !(stop && stop->load())) {
    std::this_thread::sleep_until(next);
    next += interval;
    std::vector<PendingEvent> events;
    events.reserve(static_cast<size_t>(options_.batch));
    std::string body = "[";
    const int64_t ts = now_ms();
    for (int i = 0; i < options_.batch; ++i) {
      PendingEvent e;
      e.key.video_id = video_id(video(rng));
      int roll = percent(rng);
      if (roll < options_.watch_time_percent) {
        e.key.event_type = "watch_time";
        e.value = watch_ms(rng);
      } else {
        e.key.event_type = kTypes[roll % 4];
      }
      int64_t event_ts = ts;
      e.invalid = options_.invalid_percent > 0 && percent(rng) < options_.invalid_percent;
      if (e.invalid) {
        // Never counted; the JSON keeps a valid shape so only this event is rejected.
        switch (invalid_seq++ % 3) {
          case 0:
            e.key.event_type = "vieww";
            e.value = 0;
            break;
          case 1:
            e.key.video_id += " x";
            break;
          default:
            event_ts = ts - 48LL * 3600 * 1000;
        }
      }
      if (i) body += ',';
      body += R"({"event_id":")" + options_.run_id + "-p" + std::to_string(producer) + "-" +
              std::to_string(seq++) + R"(","video_id":")" + e.key.video_id + R"(","event_type":")" +
              e.key.event_type + R"(","ts":)" + std::to_string(event_ts);
      if (e.value) body += R"(,"value":)" + std::to_string(e.value);
      body += '}';
      events.push_back(std::move(e));
    }
    body += ']';
    {
      std::lock_guard lock(mutex_);
      if (ledger_.min_ts == 0 || ts < ledger_.min_ts) ledger_.min_ts = ts;
      ledger_.max_ts = std::max(ledger_.max_ts, ts);
    }
    auto answer = send(body);
    std::unique_lock lock(mutex_);
    if (!answer) {
      for (const auto& e : events) {
        if (e.invalid) continue;
        ++ledger_.stats.events_uncertain;
        add(ledger_.uncertain, e);
      }
      continue;
    }
    ++ledger_.stats.requests_ok;
    std::vector<bool> rejected(events.size(), false);
    for (const auto& r : (*answer)["rejected"]) {
      auto index = r.value("index", static_cast<size_t>(events.size()));
      if (index < events.size()) rejected[index] = true;
    }
    for (size_t i = 0; i < events.size(); ++i) {
      if (events[i].invalid) {
        ++ledger_.stats.invalid_sent;
        if (!rejected[i]) ++ledger_.stats.invalid_accepted;
      }
      if (rejected[i]) {
        ++ledger_.stats.events_rejected;
      } else if (!events[i].invalid) {
        ++ledger_.stats.events_accepted;
        add(ledger_.accepted, events[i]);
      }
    }
    if (percent(rng) < options_.duplicate_percent) {
      ++ledger_.stats.duplicate_batches;
      lock.unlock();
      auto again = send(body);  // the same ids: whatever the answer, nothing may count twice
      lock.lock();
      if (again) ++ledger_.stats.requests_ok;
    }
  }
}

LoadgenStats Loadgen::stats() const {
  std::lock_guard lock(mutex_);
  return ledger_.stats;
}

std::map<CounterKey, CounterTotals> Loadgen::expected() const {
  std::lock_guard lock(mutex_);
  return ledger_.accepted;
}

Result<AuditReport> Loadgen::audit(std::chrono::milliseconds wait, AuditScope scope) const {
  auto url = parse_http_url(options_.rest_url);
  if (!url) return make_error(ErrorCode::kUnavailable, "REST URL: " + url.error().message);
  std::map<CounterKey, CounterTotals> accepted;
  std::map<CounterKey, CounterTotals> uncertain;
  int64_t min_ts = 0;
  int64_t max_ts = 0;
  {
    std::lock_guard lock(mutex_);
    accepted = ledger_.accepted;
    uncertain = ledger_.uncertain;
    min_ts = ledger_.min_ts;
    max_ts = ledger_.max_ts;
  }
  if (min_ts == 0) min_ts = max_ts = now_ms();
  std::vector<CounterKey> keys;
  if (scope == AuditScope::kEveryPair) {
    // Every (video, type) of this run, so counts for pairs never acknowledged show up too.
    for (int v = 0; v < options_.videos; ++v)
      for (const char* type : kTypes) keys.push_back(CounterKey{video_id(v), type});
  } else {
    std::set<CounterKey> held;
    for (const auto* ledger : {&accepted, &uncertain})
      for (const auto& [key, totals] : *ledger) held.insert(key);
    keys.assign(held.begin(), held.end());
  }
  const std::string start = std::to_string(min_ts - 120000);
  const std::string end = std::to_string(max_ts + 120000);
  std::vector<std::pair<std::string, std::string>> headers;
  if (!options_.rest_token.empty())
    headers.emplace_back("Authorization", "Bearer " + options_.rest_token);
  // One batchGet of the keys at `indexes`: one outcome per key, in order. A key whose read failed
  // carries the error: its count is unknown, not wrong.
  auto check = [&](HttpClient& client, const std::vector<size_t>& indexes) {
    std::vector<AuditMismatch> outcomes;
    json req;
    req["requests"] = json::array();
    for (size_t i : indexes) {
      req["requests"].push_back({{"video_id", keys[i].video_id},
                                 {"event_type", keys[i].event_type},
                                 {"function", "sum"},
                                 {"start", start},
                                 {"end", end}});
    }
    auto r = client.request("POST", url->base_path + "/v1/stats:batchGet", req.dump(), headers);
    json results;
    std::string error;
    if (!r) {
      error = r.error().message;
    } else if (r->status != 200) {
      error = "HTTP " + std::to_string(r->status) + ": " + r->body;
    } else {
      json answer = json::parse(r->body, nullptr, false);
      if (answer.is_discarded() || !answer.contains("results") ||
          answer["results"].size() != indexes.size()) {
        error = "unexpected answer: " + r->body.substr(0, 200);
      } else {
        results = std::move(answer["results"]);
      }
    }
    for (size_t n = 0; n < indexes.size(); ++n) {
      const size_t i = indexes[n];
      AuditMismatch m;
      m.key = keys[i];
      if (auto it = accepted.find(keys[i]); it != accepted.end()) m.expected = it->second;
      if (auto it = uncertain.find(keys[i]); it != uncertain.end()) m.uncertain = it->second.count;
      if (!error.empty()) {
        m.error = error;
      } else {
        const json& item = results[n];
        if (item.contains("error")) {
          m.error = item["error"].dump();
        } else {
          m.got.count = item.value("count", int64_t{-1});
          m.got.sum = item.value("sum", int64_t{-1});
        }
      }
      outcomes.push_back(std::move(m));
    }
    return outcomes;
  };
  auto matches = [](const AuditMismatch& m) {
    return m.error.empty() &&
           (m.uncertain == 0
                ? m.got.count == m.expected.count && m.got.sum == m.expected.sum
                : m.got.count >= m.expected.count && m.got.count <= m.expected.count + m.uncertain);
  };
  // kAuditConnections connections take the 1000-key chunks in turn (at 500k videos one
  // connection's pass takes minutes). Each pass reads only the keys that did not match in the
  // one before: counts still settling get until `wait`; a failed read (a shard slow for a moment
  // after the load) is read again, up to kErrorRounds passes, even when `wait` is over, since a
  // pass over 500k videos alone can take longer than `wait`.
  constexpr size_t kChunk = 1000;
  constexpr int kAuditConnections = 4;
  constexpr int kErrorRounds = 5;
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int c = 0; c < kAuditConnections; ++c)
    clients.push_back(
        std::make_unique<HttpClient>(url->host, url->port, std::chrono::milliseconds(30000)));

  auto t0 = Clock::now();
  std::vector<AuditMismatch> outcome(keys.size());
  std::vector<size_t> pending(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) pending[i] = i;
  AuditReport report;
  report.keys = keys.size();
  for (int round = 1;; ++round) {
    const size_t chunks = (pending.size() + kChunk - 1) / kChunk;
    std::atomic<size_t> next{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < kAuditConnections; ++c) {
      threads.emplace_back([&, c] {
        for (size_t k; (k = next++) < chunks;) {
          std::vector<size_t> indexes(pending.begin() + static_cast<std::ptrdiff_t>(k * kChunk),
                                      pending.begin() + static_cast<std::ptrdiff_t>(std::min(
                                                            pending.size(), (k + 1) * kChunk)));
          auto outcomes = check(*clients[c], indexes);
          for (size_t n = 0; n < indexes.size(); ++n) outcome[indexes[n]] = std::move(outcomes[n]);
        }
      });
    }
    for (auto& t : threads) t.join();
    std::vector<size_t> still;
    bool read_errors = false;
    for (size_t i : pending) {
      if (matches(outcome[i])) continue;
      still.push_back(i);
      read_errors = read_errors || !outcome[i].error.empty();
    }
    if (round > 1) report.reread_pairs += pending.size();
    pending = std::move(still);
    const bool in_time = Clock::now() - t0 < wait;
    if (pending.empty() || !(in_time || (read_errors && round < kErrorRounds))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  for (const AuditMismatch& m : outcome) {
    report.expected_events += m.expected.count;
    report.got_events += std::max<int64_t>(m.got.count, 0);
  }
  std::sort(pending.begin(), pending.end());  // mismatches in key order
  for (size_t i : pending) report.mismatches.push_back(std::move(outcome[i]));
  report.seconds_waited = std::chrono::duration<double>(Clock::now() - t0).count();
  return report;
}

std::string format_stats(const LoadgenStats& s) {
  std::ostringstream out;
  out << "sent for " << s.seconds << " s: " << s.events_accepted << " events accepted ("
      << (s.seconds > 0 ? static_cast<int64_t>(s.events_accepted / s.seconds) : 0) << "/s), "
      << s.events_rejected << " rejected";
  if (s.invalid_sent > 0) {
    out << " (" << s.invalid_sent << " invalid sent, " << s.invalid_accepted
        << " of them accepted)";
  }
  out << ", " << s.events_uncertain << " uncertain; " << s.requests_ok << " requests ok, "
      << s.duplicate_batches << " batches re-sent as duplicates, " << s.requests_failed
      << " failed attempts retried";
  if (!s.failures_by_status.empty()) {
    out << " (";
    bool first = true;
    for (const auto& [status, n] : s.failures_by_status) {
      out << (first ? "" : ", ")
          << (status == 0 ? std::string("no answer") : "HTTP " + std::to_string(status)) << ": "
          << n;
      first = false;
    }
    out << ")";
  }
  out << "\n";
  return out.str();
}

std::string format_audit(const LoadgenStats& s, const AuditReport& report) {
  std::ostringstream out;
  out << format_stats(s);
  size_t shown = 0;
  for (const auto& m : report.mismatches) {
    if (++shown > 50) {
      out << "  ... " << report.mismatches.size() - 50 << " more\n";
      break;
    }
    out << "  MISMATCH " << m.key.video_id << " " << m.key.event_type << ": expected count "
        << m.expected.count << " sum " << m.expected.sum;
    if (m.uncertain) out << " (+ up to " << m.uncertain << " uncertain)";
    if (m.error.empty()) {
      out << ", got count " << m.got.count << " sum " << m.got.sum << "\n";
    } else {
      out << ", read failed: " << m.error << "\n";
    }
  }
  out << "audit: " << report.keys << " (video, type) pairs, expected " << report.expected_events
      << " events, got " << report.got_events << ", " << report.mismatches.size()
      << " mismatches after " << report.seconds_waited << " s";
  if (report.reread_pairs > 0) out << " (" << report.reread_pairs << " pair reads repeated)";
  out << ": " << (report.ok() ? "OK" : "FAILED") << "\n";
  return out.str();
}

}  // namespace tally
