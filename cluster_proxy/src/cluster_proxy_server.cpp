#include "cluster_proxy/src/cluster_proxy_server.h"

#include <thread>

#include "common/http/admin_endpoints.h"

namespace tally::cluster_proxy {
namespace {

TopologyCacheOptions topology_options(const ClusterProxyConfig& c) {
  TopologyCacheOptions o;
  o.zk_hosts = c.zk_hosts;
  o.zk_session_timeout = std::chrono::milliseconds(c.zk_session_timeout_ms);
  o.static_proxies = c.shards;
  return o;
}

size_t thread_count(const ClusterProxyConfig& c) {
  if (c.io_threads > 0) return static_cast<size_t>(c.io_threads);
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

}  // namespace

ClusterProxyServer::ClusterProxyServer(ClusterProxyConfig config)
    : config_(std::move(config)),
      breakers_(CircuitOptions{config_.breaker_failure_threshold, config_.breaker_open_ms}, clock_),
      topology_(topology_options(config_), clock_) {}

ClusterProxyServer::~ClusterProxyServer() {
  stop();
}

Status ClusterProxyServer::start() {
  if (auto st = topology_.start(); !st) return st;

  metrics_.gauge_fn("tally_cluster_proxy_zookeeper_connected",
                    "1 while the ZooKeeper session is connected", {},
                    [this] { return topology_.health().zk_connected ? 1.0 : 0.0; });
  metrics_.gauge_fn(
      "tally_cluster_proxy_topology_stale",
      "1 while the proxy serves a topology ZooKeeper could not confirm (unreachable)", {}, [this] {
        TopologyHealth h = topology_.health();
        return h.zk_configured && (!h.zk_connected || !h.last_error.empty()) ? 1.0 : 0.0;
      });
  metrics_.gauge_fn("tally_cluster_proxy_topology_age_seconds",
                    "Seconds since the topology was last read from ZooKeeper", {}, [this] {
                      TopologyHealth h = topology_.health();
                      if (h.last_success_ms == 0) return -1.0;
                      return static_cast<double>(clock_.wall_ms() - h.last_success_ms) / 1000.0;
                    });
  metrics_.gauge_fn("tally_cluster_proxy_topology_refreshes", "Topology reads from ZooKeeper", {},
                    [this] { return static_cast<double>(topology_.refreshes()); });
  metrics_.gauge_fn("tally_cluster_proxy_pool_open",
                    "Connections to shard proxies, open or opening", {},
                    [this] { return static_cast<double>(gauges_.open.load()); });
  metrics_.gauge_fn("tally_cluster_proxy_pool_idle", "Idle connections to shard proxies", {},
                    [this] { return static_cast<double>(gauges_.idle.load()); });
  metrics_.gauge_fn("tally_cluster_proxy_pool_waiting", "Shard calls waiting for a connection", {},
                    [this] { return static_cast<double>(gauges_.waiting.load()); });

  const size_t threads = thread_count(config_);
  ShardWorkerOptions wo;
  wo.database = config_.database;
  wo.user = config_.user;
  wo.password = config_.password;
  wo.pool_size = static_cast<size_t>(config_.pool_size);
  wo.connect_timeout = std::chrono::milliseconds(config_.connect_timeout_ms);
  wo.retry_attempts = config_.retry_attempts;
  wo.retry_backoff = std::chrono::milliseconds(config_.retry_backoff_ms);
  wo.consolidate_reads = config_.consolidate_reads;
  for (size_t i = 0; i < threads; ++i) {
    workers_.push_back(std::make_unique<ShardWorker>(wo, breakers_, metrics_, gauges_));
    workers_.back()->start();
  }
  if (config_.stats_cache_max_bytes > 0 && config_.stats_cache_ttl_ms > 0) {
    ResultCacheOptions co;
    co.max_bytes = static_cast<size_t>(config_.stats_cache_max_bytes);
    auto cache = ResultCache::create(co);
    if (!cache) return cache.error();
    stats_cache_ = std::move(*cache);
    metrics_.gauge_fn("tally_cluster_proxy_stats_cache_bytes",
                      "Bytes the stats cache holds (charged: key, value and overhead)", {},
                      [this] { return static_cast<double>(stats_cache_->stats().bytes); });
    metrics_.gauge_fn("tally_cluster_proxy_stats_cache_max_bytes",
                      "Stats cache bound (cache.local_max_bytes)", {},
                      [this] { return static_cast<double>(stats_cache_->max_bytes()); });
    metrics_.gauge_fn("tally_cluster_proxy_stats_cache_entries", "Stats cache entries held", {},
                      [this] { return static_cast<double>(stats_cache_->stats().entries); });
    metrics_.gauge_fn("tally_cluster_proxy_stats_cache_evictions",
                      "Live stats cache entries dropped to stay within cache.local_max_bytes", {},
                      [this] { return static_cast<double>(stats_cache_->stats().evictions); });
  }
  api_ = std::make_unique<ApiService>(config_, topology_, workers_, breakers_, metrics_,
                                      stats_cache_.get());

  HttpServerOptions ho;
  ho.address = config_.listen_address;
  ho.port = static_cast<uint16_t>(config_.http_port);
  // Connections live on the workers' threads, so a request is parsed, routed, sent to its shard
  // and answered on one thread (two thread hops per request cost a third of the throughput). The
  // server's own thread only accepts.
  ho.threads = 1;
  for (auto& w : workers_) ho.connection_contexts.push_back(&w->io());
  ho.max_body_bytes = static_cast<size_t>(config_.max_body_bytes);
  ho.request_timeout = std::chrono::milliseconds(config_.request_timeout_ms);
  ho.metrics = &metrics_;
  ho.name = "cluster_proxy";
  http_ = std::make_unique<HttpServer>(ho);
  if (config_.analyst.enabled) {
    sql_ = std::make_unique<SqlHttpService>(config_.analyst, config_.database,
                                            config_.connect_timeout_ms, topology_);
    sql_->start();
  }
  api_->register_routes(*http_, sql_.get());
  add_admin_routes(*http_, metrics_, [this] { return api_->readiness(); });
  if (auto st = http_->start(); !st) return st;
  if (config_.analyst.enabled) {
    analyst_ =
        std::make_unique<AnalystServer>(config_.analyst, config_.listen_address, config_.database,
                                        config_.connect_timeout_ms, topology_);
    return analyst_->start();
  }
  return ok_status();
}

void ClusterProxyServer::stop() {
  if (analyst_) analyst_->stop();
  if (sql_) sql_->stop();
  if (http_) http_->stop();
  for (auto& w : workers_) w->stop();
  topology_.stop();
}

uint16_t ClusterProxyServer::http_port() const {
  return http_ ? http_->port() : 0;
}

}  // namespace tally::cluster_proxy
