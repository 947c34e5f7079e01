#include "cluster_proxy/src/api_service.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>

#include "cluster_proxy/src/shard_statements.h"
#include "common/metrics/metrics_registry.h"

namespace tally::cluster_proxy {

using json = nlohmann::json;

namespace {

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

int64_t to_int(const std::optional<std::string>& text) {
  int64_t v = 0;
  if (text) std::from_chars(text->data(), text->data() + text->size(), v);
  return v;
}

json value_of(StatFunction f, int64_t count, int64_t sum) {
  switch (f) {
    case StatFunction::kCount:
      return count;
    case StatFunction::kSum:
      return sum;
    case StatFunction::kAvg:
      return count == 0 ? json(nullptr)
                        : json(static_cast<double>(sum) / static_cast<double>(count));
  }
  return count;
}

// The answer to one stats read from its statement's rows (see stats_statement).
json stats_json(const StatsRequest& r, const StatementResult& s) {
  json j = {{"video_id", r.video_id},
            {"event_type", r.event_type},
            {"function", function_name(r.function)},
            {"start", format_rfc3339(r.range.start_ms)},
            {"end", format_rfc3339(r.range.end_ms)}};
  int64_t count = 0;
  int64_t sum = 0;
  if (r.granularity) {
    std::map<int64_t, std::pair<int64_t, int64_t>> buckets;
    for (int row = 0; row < s.rows; ++row) {
      buckets[to_int(s.at(row, 0))] = {to_int(s.at(row, 1)), to_int(s.at(row, 2))};
    }
    const int64_t unit = granularity_ms(*r.granularity);
    json series = json::array();
    for (int64_t t = r.range.start_ms / unit * unit; t < r.range.end_ms; t += unit) {
      auto it = buckets.find(t);
      int64_t c = it == buckets.end() ? 0 : it->second.first;
      int64_t v = it == buckets.end() ? 0 : it->second.second;
      count += c;
      sum += v;
      series.push_back({{"start", format_rfc3339(std::max(t, r.range.start_ms))},
                        {"end", format_rfc3339(std::min(t + unit, r.range.end_ms))},
                        {"value", value_of(r.function, c, v)},
                        {"count", c},
                        {"sum", v}});
    }
    j["granularity"] = granularity_name(*r.granularity);
    j["series"] = std::move(series);
  } else if (s.rows > 0) {
    count = to_int(s.at(0, 0));
    sum = to_int(s.at(0, 1));
  }
  j["value"] = value_of(r.function, count, sum);
  j["count"] = count;
  j["sum"] = sum;
  return j;
}

ApiError statement_error(const StatementResult& s, const std::string& shard) {
  ApiError e;
  e.status = 500;
  e.message = "shard " + shard + " refused the statement: " + s.message +
              (s.sqlstate.empty() ? "" : " (SQLSTATE " + s.sqlstate + ")");
  e.shards = {shard};
  return e;
}

// Everything the answer depends on; the shard too, so a topology change never serves an answer
// from the shard that used to own the video. Fields are separated by a byte no field contains.
std::string stats_cache_key(const std::string& shard, const StatsRequest& r) {
  std::string key;
  key.reserve(shard.size() + r.video_id.size() + r.event_type.size() + 48);
  key.append(shard).push_back('\x1f');
  key.append(r.video_id).push_back('\x1f');
  key.append(r.event_type).push_back('\x1f');
  key.append(function_name(r.function)).push_back('\x1f');
  key.append(std::to_string(r.range.start_ms)).push_back('\x1f');
  key.append(std::to_string(r.range.end_ms)).push_back('\x1f');
  if (r.granularity) key.append(granularity_name(*r.granularity));
  return key;
}

json error_json(const ApiError& e) {
  json j = {{"code", e.status}, {"message", e.message}};
  if (!e.shards.empty()) j["shards"] = e.shards;
  return j;
}

bool token_equal(std::string_view a, std::string_view b) {
  // Constant time in the length of the secret: no early exit on the first difference.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

}  // namespace

ApiService::ApiService(const ClusterProxyConfig& config, TopologyCache& topology,
                       std::vector<std::unique_ptr<ShardWorker>>& workers,
                       CircuitBreakers& breakers, MetricsRegistry& metrics,
                       ResultCache* stats_cache)
    : config_(config),
      topology_(topology),
      workers_(workers),
      breakers_(breakers),
      metrics_(metrics),
      stats_cache_(stats_cache) {
  const char* help = "Requests refused for a missing (401) or wrong (403) bearer token";
  auth_missing_ =
      &metrics_.counter("tally_cluster_proxy_auth_failures_total", help, {{"reason", "missing"}});
  auth_invalid_ =
      &metrics_.counter("tally_cluster_proxy_auth_failures_total", help, {{"reason", "invalid"}});
  if (stats_cache_ != nullptr) {
    const char* cache_help = "Single stats reads by whether the proxy's stats cache answered them";
    stats_cache_hits_ = &metrics_.counter("tally_cluster_proxy_stats_cache_lookups_total",
                                          cache_help, {{"result", "hit"}});
    stats_cache_misses_ = &metrics_.counter("tally_cluster_proxy_stats_cache_lookups_total",
                                            cache_help, {{"result", "miss"}});
  }
}

std::optional<ApiError> ApiService::check_auth(const HttpRequest& request, Access access) {
  if (access == Access::kRead && config_.read_tokens.empty()) return std::nullopt;
  auto header = request.header("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (!header || header->size() <= kBearer.size() || header->substr(0, kBearer.size()) != kBearer) {
    auth_missing_->inc();
    ApiError e;
    e.status = 401;
    e.message = "this endpoint needs an Authorization: Bearer <token> header";
    return e;
  }
  std::string_view token = header->substr(kBearer.size());
  bool ok = false;
  for (const auto& t : config_.write_tokens) ok = token_equal(token, t) || ok;
  if (access == Access::kRead) {
    for (const auto& t : config_.read_tokens) ok = token_equal(token, t) || ok;
  }
  if (ok) return std::nullopt;
  auth_invalid_->inc();
  ApiError e;
  e.status = 403;
  e.message = access == Access::kWrite ? "the bearer token does not allow writes"
                                       : "the bearer token is not valid";
  return e;
}

ShardWorker& ApiService::next_worker() {
  // The handler's own thread when it is a worker's (the HTTP connections live there): no hop.
  for (auto& w : workers_) {
    if (w->on_this_thread()) return *w;
  }
  return *workers_[next_worker_.fetch_add(1, std::memory_order_relaxed) % workers_.size()];
}

std::shared_ptr<const Routing> ApiService::routing() {
  auto r = topology_.routing();
  // Circuit state gauges for the shards of a routing table not seen before (rare: topology
  // changes), so the hot path never takes the registry's lock.
  if (gauges_for_.load(std::memory_order_acquire) != r.get()) {
    for (const auto& shard : r->shards) {
      CircuitBreaker* b = &breakers_.get(shard.name);
      metrics_.gauge_fn("tally_cluster_proxy_circuit_open",
                        "1 while the shard's circuit breaker is open (calls fail fast)",
                        {{"shard", shard.name}}, [b] { return b->is_open() ? 1.0 : 0.0; });
    }
    gauges_for_.store(r.get(), std::memory_order_release);
  }
  return r;
}

ShardCall ApiService::make_call(const ShardRoute& shard, bool idempotent, bool write) const {
  ShardCall call;
  call.shard = shard.name;
  call.proxies = shard.proxies;
  call.idempotent = idempotent;
  call.timeout =
      std::chrono::milliseconds(write ? config_.write_timeout_ms : config_.shard_timeout_ms);
  return call;
}

ApiError ApiService::shard_error(const Error& error, const std::string& shard) const {
  ApiError e;
  e.shards = {shard};
  if (error.code == ErrorCode::kTimeout) {
    e.status = 504;
    e.message = error.message;
    return e;
  }
  if (error.code == ErrorCode::kUnavailable) {
    e.status = 503;
    e.message = error.message + " (other shards keep serving)";
    int64_t ms = breakers_.get(shard).retry_after_ms();
    e.retry_after_s = static_cast<int>(std::max<int64_t>(1, (ms + 999) / 1000));
    return e;
  }
  e.status = 502;
  e.message = error.message;
  return e;
}

HealthStatus ApiService::readiness() const {
  HealthStatus h;
  TopologyHealth t = topology_.health();
  auto r = topology_.routing();
  h.ready = t.have_routing && r != nullptr;
  if (!h.ready) {
    h.reasons.push_back("no topology yet: " + t.last_error);
    return h;
  }
  if (t.zk_configured && (!t.zk_connected || !t.last_error.empty())) {
    h.reasons.push_back(
        "zookeeper unreachable: serving the last known topology (keyspace version " +
        std::to_string(r->keyspace_version) + ", source " + r->source + ", read at " +
        format_rfc3339(r->read_at_ms) + ")" +
        (t.last_error.empty() ? std::string() : ": " + t.last_error));
  }
  for (const auto& shard : r->shards) {
    if (shard.proxies.empty()) h.reasons.push_back("shard " + shard.name + ": no shard proxy");
  }
  for (auto& [name, b] : const_cast<CircuitBreakers&>(breakers_).all()) {
    if (b->is_open()) h.reasons.push_back("shard " + name + ": circuit " + b->state());
  }
  return h;
}

void ApiService::register_routes(HttpServer& server, SqlHttpService* sql) {
  auto bind = [this](void (ApiService::*fn)(HttpRequest&&, Responder)) {
    return [this, fn](HttpRequest&& request, Responder respond) {
      (this->*fn)(std::move(request), std::move(respond));
    };
  };
  server.route("GET", "/v1/videos/*", bind(&ApiService::get_stats));
  server.route("PUT", "/v1/videos/*", bind(&ApiService::put_video));
  server.route("PUT", "/v1/channels/*", bind(&ApiService::put_channel));
  server.route("POST", "/v1/stats:batchGet", bind(&ApiService::batch_get));
  server.route("GET", "/v1/top", bind(&ApiService::top));
  server.route("POST", "/v1/counters:apply", bind(&ApiService::apply));
  server.route("GET", "/v1/counters:marks", bind(&ApiService::marks));
  server.route("GET", "/v1/topology", bind(&ApiService::topology));
  if (sql != nullptr) {
    sql_ = sql;
    server.route("POST", "/v1/sql", bind(&ApiService::run_sql));
  }
}

void ApiService::get_stats(HttpRequest&& request, Responder respond) {
  if (auto e = check_auth(request, Access::kRead)) return respond(to_response(*e));
  // path_suffix: "{id}/stats"
  constexpr std::string_view kStats = "/stats";
  std::string_view suffix = request.path_suffix;
  if (suffix.size() <= kStats.size() || !suffix.ends_with(kStats) ||
      suffix.substr(0, suffix.size() - kStats.size()).find('/') != std::string_view::npos) {
    return respond(HttpResponse::error(
        404, "no route for " + request.path + " (expected /v1/videos/{id}/stats)"));
  }
  auto parsed = parse_stats_query(suffix.substr(0, suffix.size() - kStats.size()), request.query,
                                  config_.limits);
  if (!parsed.ok()) return respond(to_response(parsed.error()));
  auto r = routing();
  const ShardRoute& shard = r->for_ksid(ksid_for(parsed->request.video_id));
  std::optional<uint64_t> min_lsn;
  if (parsed->token) {
    auto it = parsed->token->lsn_by_shard.find(shard.name);
    if (it != parsed->token->lsn_by_shard.end()) min_lsn = it->second;
  }
  // The local cache answers a repeat within the TTL without a shard call. A read with a token
  // must see its write, so it neither reads nor fills the cache (nor shares another read's answer:
  // that one may predate the write). The shard proxies' cache is then not asked as well, so an
  // answer is never more than stats_ttl_ms old.
  // The key carries the video's write epoch, taken before the shard is asked: once a counters
  // batch for the video is applied, earlier answers are never looked up again.
  const bool cacheable = stats_cache_ != nullptr && config_.stats_cache_ttl_ms > 0 && !min_lsn &&
                         !parsed->token.has_value();
  std::string cache_key;
  if (cacheable) {
    cache_key = stats_cache_key(shard.name, parsed->request) + '#' +
                std::to_string(stats_epochs_.of(ksid_for(parsed->request.video_id)));
    if (auto hit = stats_cache_->lookup(cache_key)) {
      stats_cache_hits_->inc();
      return respond(HttpResponse::json(200, *hit));
    }
    stats_cache_misses_->inc();
  }
  const int shard_ttl_ms = stats_cache_ != nullptr ? 0 : config_.stats_cache_ttl_ms;
  ShardCall call = make_call(shard, true);
  call.exchanges.push_back({{stats_statement(parsed->request, read_hint(shard_ttl_ms, min_lsn))}});
  ShardWorker& w = next_worker();
  bool consolidate = !parsed->token.has_value();
  w.post([this, &w, call = std::move(call), consolidate, req = std::move(parsed->request),
          cache_key = std::move(cache_key), respond = std::move(respond)]() mutable {
    std::string shard_name = call.shard;
    w.call(
        std::move(call),
        [this, req = std::move(req), shard_name, cache_key = std::move(cache_key),
         respond = std::move(respond)](Result<ShardCallResults> result) {
          if (!result.ok()) return respond(to_response(shard_error(result.error(), shard_name)));
          const StatementResult& s = (*result)[0][0];
          if (!s.ok) return respond(to_response(statement_error(s, shard_name)));
          json j = stats_json(req, s);
          j["shard"] = shard_name;
          std::string body = dump(j);
          if (!cache_key.empty()) {
            stats_cache_->insert(std::move(cache_key), std::make_shared<const std::string>(body),
                                 std::chrono::milliseconds(config_.stats_cache_ttl_ms));
          }
          respond(HttpResponse::json(200, std::move(body)));
        },
        consolidate);
  });
}

void ApiService::batch_get(HttpRequest&& request, Responder respond) {
  if (auto e = check_auth(request, Access::kRead)) return respond(to_response(*e));
  auto parsed = parse_batch_get(request.body, config_.limits);
  if (!parsed.ok()) return respond(to_response(parsed.error()));
  auto r = routing();
  // One call per shard holding all of its items, pipelined in one round trip.
  struct ShardPart {
    ShardCall call;
    std::vector<size_t> items;
  };
  std::map<size_t, ShardPart> parts;
  for (size_t i = 0; i < parsed->requests.size(); ++i) {
    const StatsRequest& item = parsed->requests[i];
    size_t index = r->index_for(ksid_for(item.video_id));
    auto [it, fresh] = parts.try_emplace(index);
    const ShardRoute& shard = r->shards[index];
    if (fresh) {
      it->second.call = make_call(shard, true);
      it->second.call.exchanges.emplace_back();
    }
    std::optional<uint64_t> min_lsn;
    if (parsed->token) {
      auto t = parsed->token->lsn_by_shard.find(shard.name);
      if (t != parsed->token->lsn_by_shard.end()) min_lsn = t->second;
    }
    it->second.call.exchanges[0].statements.push_back(
        stats_statement(item, read_hint(config_.stats_cache_ttl_ms, min_lsn)));
    it->second.items.push_back(i);
  }
  // State shared by the shard callbacks, all on the one worker's thread.
  struct Batch {
    std::vector<StatsRequest> requests;
    std::vector<json> results;
    size_t pending = 0;
    Responder respond;
  };
  auto batch = std::make_shared<Batch>();
  batch->requests = std::move(parsed->requests);
  batch->results.resize(batch->requests.size());
  batch->pending = parts.size();
  batch->respond = std::move(respond);
  ShardWorker& w = next_worker();
  w.post([this, &w, batch, parts = std::move(parts)]() mutable {
    for (auto& [index, part] : parts) {
      std::string shard_name = part.call.shard;
      w.call(std::move(part.call), [this, batch, items = part.items,
                                    shard_name](Result<ShardCallResults> result) {
        for (size_t k = 0; k < items.size(); ++k) {
          size_t i = items[k];
          if (!result.ok()) {
            batch->results[i] = {{"error", error_json(shard_error(result.error(), shard_name))}};
            continue;
          }
          const StatementResult& s = (*result)[0][k];
          if (!s.ok) {
            batch->results[i] = {{"error", error_json(statement_error(s, shard_name))}};
            continue;
          }
          batch->results[i] = stats_json(batch->requests[i], s);
          batch->results[i]["shard"] = shard_name;
        }
        if (--batch->pending == 0) {
          batch->respond(HttpResponse::json(200, dump(json{{"results", batch->results}})));
        }
      });
    }
  });
}

void ApiService::top(HttpRequest&& request, Responder respond) {
  if (auto e = check_auth(request, Access::kRead)) return respond(to_response(*e));
  auto parsed = parse_top_query(request.query, config_.limits);
  if (!parsed.ok()) return respond(to_response(parsed.error()));
  auto r = routing();
  struct Top {
    TopRequest request;
    std::vector<std::tuple<int64_t, std::string, int64_t, int64_t, std::string>> rows;
    std::vector<std::string> failed;
    std::optional<Error> first_error;
    size_t pending = 0;
    Responder respond;
  };
  auto state = std::make_shared<Top>();
  state->request = *parsed;
  state->pending = r->shards.size();
  state->respond = std::move(respond);
  std::vector<ShardCall> calls;
  for (const auto& shard : r->shards) {
    ShardCall call = make_call(shard, true);
    call.exchanges.push_back(
        {{top_statement(*parsed, read_hint(config_.stats_cache_ttl_ms, std::nullopt))}});
    calls.push_back(std::move(call));
  }
  ShardWorker& w = next_worker();
  w.post([this, &w, state, calls = std::move(calls)]() mutable {
    for (auto& call : calls) {
      std::string shard_name = call.shard;
      w.call(std::move(call), [this, state, shard_name](Result<ShardCallResults> result) {
        if (!result.ok() || !(*result)[0][0].ok) {
          state->failed.push_back(shard_name);
          if (!state->first_error) {
            state->first_error = result.ok()
                                     ? make_error(ErrorCode::kInternal, (*result)[0][0].message)
                                     : result.error();
          }
        } else {
          const StatementResult& s = (*result)[0][0];
          for (int row = 0; row < s.rows; ++row) {
            int64_t c = to_int(s.at(row, 1));
            int64_t v = to_int(s.at(row, 2));
            int64_t key = state->request.function == StatFunction::kSum ? v : c;
            state->rows.emplace_back(key, s.at(row, 0).value_or(""), c, v, shard_name);
          }
        }
        if (--state->pending != 0) return;
        if (!state->failed.empty()) {
          // A top-N without a shard is silently wrong: refuse it, naming the shards.
          std::sort(state->failed.begin(), state->failed.end());
          ApiError e = shard_error(*state->first_error, state->failed[0]);
          e.shards = state->failed;
          return state->respond(to_response(e));
        }
        std::sort(state->rows.begin(), state->rows.end(), [](const auto& a, const auto& b) {
          if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
          return std::get<1>(a) < std::get<1>(b);
        });
        json items = json::array();
        for (size_t i = 0; i < state->rows.size() && static_cast<int64_t>(i) < state->request.limit;
             ++i) {
          const auto& [key, id, c, v, shard] = state->rows[i];
          items.push_back(
              {{"video_id", id}, {"value", key}, {"count", c}, {"sum", v}, {"shard", shard}});
        }
        json j = {{"event_type", state->request.event_type},
                  {"function", function_name(state->request.function)},
                  {"start", format_rfc3339(state->request.range.start_ms)},
                  {"end", format_rfc3339(state->request.range.end_ms)},
                  {"limit", state->request.limit},
                  {"videos", std::move(items)}};
        state->respond(HttpResponse::json(200, dump(j)));
      });
    }
  });
}

void ApiService::apply(HttpRequest&& request, Responder respond) {
  if (auto e = check_auth(request, Access::kWrite)) return respond(to_response(*e));
  auto parsed = parse_apply(request.body, config_.limits);
  if (!parsed.ok()) return respond(to_response(parsed.error()));
  auto caller_timeout = parse_timeout_header(request.header(kTimeoutHeader));
  if (!caller_timeout.ok()) return respond(to_response(caller_timeout.error()));
  // Each shard's apply must end (done, or cancelled on the server) before the caller gives up:
  // a retry then never runs beside, or waits behind, an attempt nobody is waiting for.
  const auto apply_timeout = std::chrono::milliseconds(
      caller_timeout->has_value()
          ? std::min<int64_t>(config_.write_timeout_ms, shard_budget_ms(**caller_timeout))
          : config_.write_timeout_ms);
  auto r = routing();
  std::vector<std::vector<size_t>> rows_by_shard(r->shards.size());
  for (size_t i = 0; i < parsed->rows.size(); ++i) {
    rows_by_shard[r->index_for(parsed->rows[i].ksid)].push_back(i);
  }
  // Every shard gets the batch, rows or not, so every shard's mark advances (contract 9); a
  // retry naming "shards" goes to those only, and only if the keyspace still has them.
  std::vector<bool> wanted(r->shards.size(), !parsed->shards.has_value());
  if (parsed->shards) {
    std::string current;
    for (const auto& shard : r->shards) current += (current.empty() ? "" : ", ") + shard.name;
    for (const auto& name : *parsed->shards) {
      size_t s = 0;
      while (s < r->shards.size() && r->shards[s].name != name) ++s;
      if (s == r->shards.size()) {
        ApiError e;
        e.status = 409;
        e.parameter = "shards";
        e.value = name;
        e.expected = "a shard of the current keyspace (" + current + ")";
        e.message = "shards: " + name + " is not a shard of the current keyspace (" + current +
                    "); resend the batch without \"shards\"";
        return respond(to_response(e));
      }
      wanted[s] = true;
    }
  }
  std::vector<ShardCall> calls;
  std::vector<size_t> rows_per_call;
  std::vector<std::vector<KeyspaceId>> ksids_by_call;
  for (size_t s = 0; s < r->shards.size(); ++s) {
    if (!wanted[s]) continue;
    rows_per_call.push_back(rows_by_shard[s].size());
    ksids_by_call.emplace_back();
    for (size_t i : rows_by_shard[s]) ksids_by_call.back().push_back(parsed->rows[i].ksid);
    // Re-sending is safe by contract 4, so the call is retried like a read.
    ShardCall call = make_call(r->shards[s], true, /*write=*/true);
    call.timeout = apply_timeout;
    call.exchanges.push_back(
        {{apply_statement(*parsed, apply_rows_json(*parsed, rows_by_shard[s]))}});
    // Its own exchange, after the apply's commit: the LSN then covers the commit record.
    call.exchanges.push_back({{current_lsn_statement()}});
    calls.push_back(std::move(call));
  }
  struct Apply {
    std::vector<json> shards;
    ReadToken token;
    size_t pending = 0;
    Responder respond;
  };
  auto state = std::make_shared<Apply>();
  state->shards.resize(calls.size());
  state->pending = calls.size();
  state->respond = std::move(respond);
  ShardWorker& w = next_worker();
  w.post([this, &w, state, calls = std::move(calls), rows_per_call = std::move(rows_per_call),
          ksids_by_call = std::move(ksids_by_call)]() mutable {
    for (size_t s = 0; s < calls.size(); ++s) {
      std::string shard_name = calls[s].shard;
      size_t nrows = rows_per_call[s];
      w.call(std::move(calls[s]),
             [this, state, s, shard_name, nrows,
              ksids = std::move(ksids_by_call[s])](Result<ShardCallResults> result) {
               // Whatever the outcome (a timed-out apply may still have committed), cached
               // answers for these videos are no longer trusted.
               for (KeyspaceId k : ksids) stats_epochs_.bump(k);
               json j = {{"shard", shard_name}, {"rows", nrows}};
               if (!result.ok()) {
                 j["outcome"] = "failed";
                 j["error"] = shard_error(result.error(), shard_name).message;
                 // Out of time, and cancelled on the shard: the processor gives the next attempt
                 // more time instead of repeating one that cannot finish (contract 9).
                 if (result.error().code == ErrorCode::kTimeout) j["sqlstate"] = "57014";
               } else if (!(*result)[0][0].ok || (*result)[0][0].rows != 1) {
                 j["outcome"] = "failed";
                 j["error"] = statement_error((*result)[0][0], shard_name).message;
                 // The processor tells data the shard refuses (22xxx, 23xxx) from a transient
                 // failure by it (contract 9).
                 if (!(*result)[0][0].sqlstate.empty()) j["sqlstate"] = (*result)[0][0].sqlstate;
               } else {
                 const StatementResult& a = (*result)[0][0];
                 j["outcome"] = a.at(0, 0).value_or("failed");
                 j["mark"] = to_int(a.at(0, 1));
                 const StatementResult& l = (*result)[1][0];
                 if (l.ok && l.rows == 1 && l.at(0, 0)) {
                   if (auto lsn = parse_lsn(*l.at(0, 0)))
                     state->token.lsn_by_shard[shard_name] = *lsn;
                 }
               }
               state->shards[s] = std::move(j);
               if (--state->pending != 0) return;
               json body = {{"shards", state->shards}, {"token", format_token(state->token)}};
               state->respond(HttpResponse::json(200, dump(body)));
             });
    }
  });
}

void ApiService::marks(HttpRequest&& request, Responder respond) {
  if (auto e = check_auth(request, Access::kWrite)) return respond(to_response(*e));
  auto processor = parse_marks_query(request.query);
  if (!processor.ok()) return respond(to_response(processor.error()));
  auto r = routing();
  struct Marks {
    std::vector<json> shards;
    std::vector<std::string> failed;
    std::vector<std::string> errors;
    size_t pending = 0;
    Responder respond;
  };
  auto state = std::make_shared<Marks>();
  state->shards.resize(r->shards.size());
  state->pending = r->shards.size();
  state->respond = std::move(respond);
  std::vector<ShardCall> calls;
  for (const auto& shard : r->shards) {
    ShardCall call = make_call(shard, true, /*write=*/true);
    call.exchanges.push_back({{marks_statement(*processor)}});
    calls.push_back(std::move(call));
  }
  ShardWorker& w = next_worker();
  w.post([this, &w, state, calls = std::move(calls)]() mutable {
    for (size_t s = 0; s < calls.size(); ++s) {
      std::string shard_name = calls[s].shard;
      w.call(std::move(calls[s]), [this, state, s, shard_name](Result<ShardCallResults> result) {
        if (!result.ok() || !(*result)[0][0].ok) {
          state->failed.push_back(shard_name);
          state->errors.push_back(result.ok() ? statement_error((*result)[0][0], shard_name).message
                                              : shard_error(result.error(), shard_name).message);
        } else {
          const StatementResult& m = (*result)[0][0];
          json marks = json::object();
          for (int row = 0; row < m.rows; ++row) {
            marks[m.at(row, 0).value_or("")] = to_int(m.at(row, 1));
          }
          state->shards[s] = {{"shard", shard_name}, {"marks", std::move(marks)}};
        }
        if (--state->pending != 0) return;
        if (!state->failed.empty()) {
          ApiError e;
          e.status = 503;
          e.shards = state->failed;
          e.retry_after_s = 1;
          e.message =
              "marks unavailable from " + std::to_string(state->failed.size()) + " shard(s): ";
          for (size_t i = 0; i < state->errors.size(); ++i) {
            e.message += (i ? "; " : "") + state->errors[i];
          }
          return state->respond(to_response(e));
        }
        state->respond(HttpResponse::json(200, dump(json{{"shards", state->shards}})));
      });
    }
  });
}

void ApiService::put_video(HttpRequest&& request, Responder respond) {
  if (auto e = check_auth(request, Access::kWrite)) return respond(to_response(*e));
  if (request.path_suffix.find('/') != std::string::npos) {
    return respond(HttpResponse::error(
        404, "no route for PUT " + request.path + " (expected /v1/videos/{id})"));
  }
  auto parsed = parse_video_put(request.path_suffix, request.body);
  if (!parsed.ok()) return respond(to_response(parsed.error()));
  auto r = routing();
  const ShardRoute& shard = r->for_ksid(ksid_for(parsed->video_id));
  // An upsert of the same values: safe to repeat.
  ShardCall call = make_call(shard, true, /*write=*/true);
  call.exchanges.push_back({{video_upsert_statement(*parsed)}});
  ShardWorker& w = next_worker();
  w.post([this, &w, call = std::move(call), video = std::move(*parsed),
          respond = std::move(respond)]() mutable {
    std::string shard_name = call.shard;
    w.call(std::move(call), [this, video, shard_name,
                             respond = std::move(respond)](Result<ShardCallResults> result) {
      if (!result.ok()) return respond(to_response(shard_error(result.error(), shard_name)));
      const StatementResult& s = (*result)[0][0];
      if (!s.ok) return respond(to_response(statement_error(s, shard_name)));
      json j = {{"video_id", video.video_id},
                {"title", video.title ? json(*video.title) : json(nullptr)},
                {"channel_id", video.channel_id ? json(*video.channel_id) : json(nullptr)},
                {"shard", shard_name}};
      respond(HttpResponse::json(200, dump(j)));
    });
  });
}

void ApiService::put_channel(HttpRequest&& request, Responder respond) {
  if (auto e = check_auth(request, Access::kWrite)) return respond(to_response(*e));
  if (request.path_suffix.find('/') != std::string::npos) {
    return respond(HttpResponse::error(
        404, "no route for PUT " + request.path + " (expected /v1/channels/{id})"));
  }
  auto parsed = parse_channel_put(request.path_suffix, request.body);
  if (!parsed.ok()) return respond(to_response(parsed.error()));
  auto r = routing();
  struct Channel {
    ChannelPut channel;
    std::vector<std::string> written;
    std::vector<std::string> missing;
    std::vector<std::string> errors;
    size_t pending = 0;
    Responder respond;
  };
  auto state = std::make_shared<Channel>();
  state->channel = *parsed;
  state->pending = r->shards.size();
  state->respond = std::move(respond);
  const int64_t written_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
  std::vector<ShardCall> calls;
  for (const auto& shard : r->shards) {
    ShardCall call = make_call(shard, true, /*write=*/true);
    call.exchanges.push_back({{channel_upsert_statement(*parsed, written_at_ms)}});
    calls.push_back(std::move(call));
  }
  ShardWorker& w = next_worker();
  w.post([this, &w, state, calls = std::move(calls)]() mutable {
    for (auto& call : calls) {
      std::string shard_name = call.shard;
      w.call(std::move(call), [this, state, shard_name](Result<ShardCallResults> result) {
        if (!result.ok() || !(*result)[0][0].ok) {
          state->missing.push_back(shard_name);
          state->errors.push_back(result.ok() ? statement_error((*result)[0][0], shard_name).message
                                              : shard_error(result.error(), shard_name).message);
        } else {
          state->written.push_back(shard_name);
        }
        if (--state->pending != 0) return;
        std::sort(state->written.begin(), state->written.end());
        if (!state->missing.empty()) {
          std::sort(state->missing.begin(), state->missing.end());
          ApiError e;
          e.status = 503;
          e.shards = state->missing;
          e.retry_after_s = 1;
          std::string names;
          for (const auto& m : state->missing) names += (names.empty() ? "" : ", ") + m;
          e.message = "channel " + state->channel.channel_id + " was written to " +
                      std::to_string(state->written.size()) + " of " +
                      std::to_string(state->written.size() + state->missing.size()) +
                      " shards; missing: " + names + " (a retry is safe): ";
          for (size_t i = 0; i < state->errors.size(); ++i) {
            e.message += (i ? "; " : "") + state->errors[i];
          }
          return state->respond(to_response(e));
        }
        json j = {{"channel_id", state->channel.channel_id},
                  {"name", state->channel.name},
                  {"shards", state->written}};
        state->respond(HttpResponse::json(200, dump(j)));
      });
    }
  });
}

void ApiService::run_sql(HttpRequest&& request, Responder respond) {
  if (auto e = check_auth(request, Access::kRead)) return respond(to_response(*e));
  sql_->handle(std::move(request), std::move(respond));
}

void ApiService::topology(HttpRequest&& request, Responder respond) {
  if (auto e = check_auth(request, Access::kRead)) return respond(to_response(*e));
  auto r = routing();
  TopologyHealth h = topology_.health();
  json shards = json::array();
  for (const auto& s : r->shards) {
    CircuitBreaker& b = breakers_.get(s.name);
    shards.push_back({{"range", s.name},
                      {"leader", s.record.leader},
                      {"replica", s.record.replica},
                      {"state", s.record.state},
                      {"shard_proxies", s.proxies},
                      {"shard_proxies_source", s.proxies_source},
                      {"circuit", b.state()}});
  }
  json j = {{"keyspace_version", r->keyspace_version},
            {"source", r->source},
            {"read_at", format_rfc3339(r->read_at_ms)},
            {"zookeeper",
             {{"configured", h.zk_configured},
              {"connected", h.zk_connected},
              {"stale", h.zk_configured && (!h.zk_connected || !h.last_error.empty())},
              {"last_error", h.last_error}}},
            {"shards", std::move(shards)}};
  respond(HttpResponse::json(200, dump(j)));
}

}  // namespace tally::cluster_proxy
