// ClusterProxyServer: the cluster proxy process's parts wired together: the topology cache
// (ZooKeeper), one ShardWorker per io thread with its pools to the shard proxies, the circuit
// breakers, the REST API and /healthz, /readyz, /metrics on one HttpServer; with an `analyst`
// section also the analyst SQL endpoints (PostgreSQL wire, POST /v1/sql).
// Thread: start() and stop() from the owner's (main) thread.
#pragma once

#include <memory>
#include <vector>

#include "cluster_proxy/src/analyst_server.h"
#include "cluster_proxy/src/api_service.h"
#include "cluster_proxy/src/cluster_proxy_config.h"
#include "cluster_proxy/src/shard_worker.h"
#include "cluster_proxy/src/topology_cache.h"
#include "common/core/circuit_breaker.h"
#include "common/core/clock.h"
#include "common/http/http_server.h"
#include "common/metrics/metrics_registry.h"
#include "common/pgclient/backend_pool.h"

namespace tally::cluster_proxy {

class ClusterProxyServer {
 public:
  explicit ClusterProxyServer(ClusterProxyConfig config);
  ~ClusterProxyServer();
  ClusterProxyServer(const ClusterProxyServer&) = delete;
  ClusterProxyServer& operator=(const ClusterProxyServer&) = delete;

  // Loads the topology, starts the workers and the HTTP server. An error when there is no
  // topology (ZooKeeper unreachable and no static shards) or the port cannot be bound.
  Status start();
  void stop();

  uint16_t http_port() const;
  uint16_t analyst_pg_port() const { return analyst_ ? analyst_->port() : 0; }
  const ClusterProxyConfig& config() const { return config_; }

 private:
  ClusterProxyConfig config_;
  SystemClock clock_;
  MetricsRegistry metrics_;
  PoolGauges gauges_;
  CircuitBreakers breakers_;
  TopologyCache topology_;
  // Destroyed in reverse: the API, then the workers (whose io_contexts carry the HTTP connections),
  // then the HTTP server those connections refer to.
  std::unique_ptr<HttpServer> http_;
  std::vector<std::unique_ptr<ShardWorker>> workers_;
  std::unique_ptr<ResultCache> stats_cache_;  // before api_, which points into it
  std::unique_ptr<ApiService> api_;
  std::unique_ptr<AnalystServer> analyst_;  // when the config has an analyst section; stopped first
  std::unique_ptr<SqlHttpService> sql_;     // POST /v1/sql, with the analyst section
};

}  // namespace tally::cluster_proxy
