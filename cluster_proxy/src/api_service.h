// ApiService: the REST endpoints of the cluster proxy (docs/rest-api.md), on top of HttpServer.
// A handler validates the request on the HTTP io thread (api_request.h), routes it with the
// current topology snapshot, and hands the shard calls to one ShardWorker (the one whose thread
// the handler runs on: the HTTP connections live on the workers' io_contexts); the worker's
// callbacks build the JSON answer and respond (Responder is callable from any thread). Nothing
// blocks. Thread: register_routes() at start-up; handlers and callbacks on worker threads.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster_proxy/src/api_request.h"
#include "cluster_proxy/src/cluster_proxy_config.h"
#include "cluster_proxy/src/shard_worker.h"
#include "cluster_proxy/src/sql_http_service.h"
#include "cluster_proxy/src/stats_epochs.h"
#include "cluster_proxy/src/topology_cache.h"
#include "common/cache/result_cache.h"
#include "common/core/circuit_breaker.h"
#include "common/http/admin_endpoints.h"
#include "common/http/http_server.h"

namespace tally {
class MetricsRegistry;
class Counter;
}  // namespace tally

namespace tally::cluster_proxy {

class ApiService {
 public:
  // `stats_cache` answers repeated single stats reads for config.stats_cache_ttl_ms without a
  // shard call; null when the local cache is off. It outlives the service.
  ApiService(const ClusterProxyConfig& config, TopologyCache& topology,
             std::vector<std::unique_ptr<ShardWorker>>& workers, CircuitBreakers& breakers,
             MetricsRegistry& metrics, ResultCache* stats_cache);

  // With `sql` (the analyst section is configured): POST /v1/sql too, under the read rules.
  void register_routes(HttpServer& server, SqlHttpService* sql = nullptr);
  // For /readyz: ready while a routing table exists; reasons name a stale topology (ZooKeeper
  // unreachable), shards without proxies and open circuits.
  HealthStatus readiness() const;

 private:
  enum class Access { kRead, kWrite };
  std::optional<ApiError> check_auth(const HttpRequest& request, Access access);
  ShardWorker& next_worker();
  std::shared_ptr<const Routing> routing();
  // A call to one shard; writes get limits.write_timeout_ms, reads limits.shard_timeout_ms.
  ShardCall make_call(const ShardRoute& shard, bool idempotent, bool write = false) const;
  // The answer for a failed shard call: 503 (unavailable, naming the range, Retry-After), 504.
  ApiError shard_error(const Error& error, const std::string& shard) const;

  void get_stats(HttpRequest&& request, Responder respond);
  void batch_get(HttpRequest&& request, Responder respond);
  void top(HttpRequest&& request, Responder respond);
  void apply(HttpRequest&& request, Responder respond);
  void marks(HttpRequest&& request, Responder respond);
  void put_video(HttpRequest&& request, Responder respond);
  void put_channel(HttpRequest&& request, Responder respond);
  void topology(HttpRequest&& request, Responder respond);
  void run_sql(HttpRequest&& request, Responder respond);

  const ClusterProxyConfig& config_;
  TopologyCache& topology_;
  std::vector<std::unique_ptr<ShardWorker>>& workers_;
  CircuitBreakers& breakers_;
  MetricsRegistry& metrics_;
  std::atomic<uint64_t> next_worker_{0};
  std::atomic<const Routing*> gauges_for_{nullptr};
  ResultCache* stats_cache_;
  StatsEpochs stats_epochs_;
  Counter* stats_cache_hits_ = nullptr;
  Counter* stats_cache_misses_ = nullptr;
  Counter* auth_missing_ = nullptr;
  Counter* auth_invalid_ = nullptr;
  SqlHttpService* sql_ = nullptr;
};

}  // namespace tally::cluster_proxy
