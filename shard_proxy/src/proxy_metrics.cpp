#include "shard_proxy/src/proxy_metrics.h"

namespace tally::shard_proxy {

ProxyMetrics::ProxyMetrics(MetricsRegistry& registry) : registry_(registry) {
  auto make = [&](const char* route) {
    RouteMetrics m;
    m.queries = &registry.counter("tally_shard_proxy_queries_total",
                                  "Requests answered (a simple query or a batch up to Sync)",
                                  {{"route", route}});
    m.failed = &registry.counter("tally_shard_proxy_queries_failed_total",
                                 "Requests answered with an error", {{"route", route}});
    m.latency = &registry.histogram("tally_shard_proxy_query_duration_seconds",
                                    "Time from the request's last message to its answer",
                                    {{"route", route}});
    return m;
  };
  leader_ = make("leader");
  replica_ = make("replica");
  cache_ = make("cache");
  connections_ = &registry.counter("tally_shard_proxy_client_connections_total",
                                   "Client connections accepted");
  pipelined_ = &registry.counter("tally_shard_proxy_pipelined_requests_total",
                                 "Autocommit reads sent on a shared, pipelined server connection");
  pipelined_behind_ = &registry.counter(
      "tally_shard_proxy_pipelined_behind_total",
      "Pipelined reads sent while other requests were in flight on the same server connection");
}

void ProxyMetrics::query_done(std::string_view route, std::chrono::steady_clock::time_point started,
                              bool ok) {
  RouteMetrics& m = route == "replica" ? replica_ : route == "cache" ? cache_ : leader_;
  m.queries->inc();
  if (!ok) m.failed->inc();
  m.latency->observe(std::chrono::steady_clock::now() - started);
}

void ProxyMetrics::error(std::string_view sqlstate) {
  std::lock_guard lock(mutex_);
  auto it = errors_.find(sqlstate);
  if (it == errors_.end()) {
    Counter* c =
        &registry_.counter("tally_shard_proxy_errors_total", "Errors sent to clients, by SQLSTATE",
                           {{"sqlstate", std::string(sqlstate)}});
    it = errors_.emplace(std::string(sqlstate), c).first;
  }
  it->second->inc();
}

}  // namespace tally::shard_proxy
