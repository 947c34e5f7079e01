// ProxyMetrics: the shard proxy's own metrics on the service's MetricsRegistry: queries and their
// latency by where they were answered (leader, replica, cache), errors by SQLSTATE. Pool, client,
// cache and replica-lag gauges are registered as scrape-time callbacks by the server.
// Thread-safe: hot-path updates are relaxed atomics; a new SQLSTATE takes a mutex once.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "common/metrics/metrics_registry.h"

namespace tally::shard_proxy {

class ProxyMetrics {
 public:
  explicit ProxyMetrics(MetricsRegistry& registry);

  // A request (a simple query or an extended-protocol batch up to Sync) finished.
  void query_done(std::string_view route, std::chrono::steady_clock::time_point started, bool ok);
  void error(std::string_view sqlstate);
  void client_connected() { connections_->inc(); }
  // A read went to a shared (pipelined) server connection; `behind_others`: other requests were
  // in flight on it, so it rode in their send and wake-up.
  void pipelined(bool behind_others) {
    pipelined_->inc();
    if (behind_others) pipelined_behind_->inc();
  }

  MetricsRegistry& registry() { return registry_; }

 private:
  struct RouteMetrics {
    Counter* queries;
    Counter* failed;
    Histogram* latency;
  };
  MetricsRegistry& registry_;
  RouteMetrics leader_, replica_, cache_;
  Counter* connections_;
  Counter* pipelined_;
  Counter* pipelined_behind_;
  std::mutex mutex_;
  std::map<std::string, Counter*, std::less<>> errors_;
};

}  // namespace tally::shard_proxy
