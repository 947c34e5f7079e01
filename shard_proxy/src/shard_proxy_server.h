// ShardProxyServer: wires one shard proxy together: the PostgreSQL-wire listener and its worker
// threads (one io_context each, sessions spread round-robin), the node monitor, the ZooKeeper
// topology follower and registration, and the HTTP admin endpoints. start() and stop() are called
// from the main thread; everything else runs on the threads it owns.
#pragma once

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>
#include <thread>
#include <vector>

#include "common/cache/result_cache.h"
#include "common/core/result.h"
#include "common/http/admin_endpoints.h"
#include "common/http/http_server.h"
#include "common/metrics/metrics_registry.h"
#include "common/sql/statement_classifier.h"
#include "common/zk/zk_client.h"
#include "shard_proxy/src/node_monitor.h"
#include "shard_proxy/src/proxy_metrics.h"
#include "shard_proxy/src/shard_proxy_config.h"
#include "shard_proxy/src/shard_state.h"
#include "shard_proxy/src/worker.h"

namespace tally::shard_proxy {

class ShardProxyServer {
 public:
  explicit ShardProxyServer(ShardProxyConfig config);
  ~ShardProxyServer();
  ShardProxyServer(const ShardProxyServer&) = delete;
  ShardProxyServer& operator=(const ShardProxyServer&) = delete;

  // Start-up: errors name what could not be done (port in use, ZooKeeper unreachable, ...).
  Status start();
  void stop();

  uint16_t pg_port() const { return pg_port_; }
  uint16_t http_port() const { return http_ ? http_->port() : 0; }
  ShardState& state() { return state_; }

 private:
  void accept_next();
  void fetch_server_parameters();
  // Connects to ZooKeeper and follows the shard's topology node; returns once the first reading
  // was applied (or after a bound, keeping the config's addresses), so clients are never served
  // with stale ones.
  Status follow_topology();
  // Registers under /tally/shard_proxies/<range>. Called after the listener serves: after a
  // kill -9 the predecessor's node stays until its session expires, and clients must not wait
  // for that.
  Status register_proxy();
  HealthStatus readiness() const;

  ShardProxyConfig config_;
  ShardState state_;
  sql::Classifier classifier_;
  MetricsRegistry registry_;
  ProxyMetrics metrics_;
  PoolGauges gauges_;
  std::unique_ptr<ResultCache> cache_;
  boost::asio::thread_pool blocking_{1};
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor_;
  size_t next_worker_ = 0;
  uint16_t pg_port_ = 0;
  NodeMonitor monitor_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<ZkClient> zk_;
  std::atomic<bool> topology_seen_{false};
  bool stopped_ = false;
};

}  // namespace tally::shard_proxy
