// The cluster proxy's configuration: one YAML file (config/cluster-proxy.example.yaml documents
// every key), validated at start-up. Every mistake stops the process with an error naming the
// file, the key and the expected form (ConfigError). Immutable afterwards; read by every thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "cluster_proxy/src/analyst_config.h"
#include "cluster_proxy/src/api_request.h"

namespace tally::cluster_proxy {

struct ClusterProxyConfig {
  std::string file;
  std::string id = "cluster-proxy";
  std::string listen_address = "127.0.0.1";
  int http_port = 0;
  int io_threads = 0;  // 0: one per core

  std::string zk_hosts;  // empty: the static shard proxies below only
  int zk_session_timeout_ms = 10000;
  // Shard range -> shard proxy addresses (host:port of their PostgreSQL port): the fallback for
  // shards ZooKeeper lists no proxy for, and the whole topology without ZooKeeper.
  std::map<std::string, std::vector<std::string>> shards;

  std::string database = "tally";
  std::string user;
  std::string password;
  int pool_size = 8;  // connections per worker thread and shard proxy
  int connect_timeout_ms = 1000;

  int shard_timeout_ms = 2000;      // per shard call of a read, retries included
  int write_timeout_ms = 120000;    // per shard call of a write (apply, marks, PUT): large batches
  int request_timeout_ms = 125000;  // the HTTP server's backstop deadline for a whole request
  int64_t max_body_bytes = 32 << 20;
  ApiLimits limits;

  // How stale a stats read may be, in ms; 0: never from a cache. Single stats reads are answered
  // from the proxy's own stats cache (bounded by stats_cache_max_bytes; 0 there hands the TTL to
  // the shard proxies' result cache instead); batchGet and top use the shard proxies' cache.
  int stats_cache_ttl_ms = 500;
  int64_t stats_cache_max_bytes = int64_t{64} << 20;
  int retry_attempts = 2;
  int retry_backoff_ms = 20;
  int breaker_failure_threshold = 5;  // 0: no circuit breaker
  int breaker_open_ms = 1000;
  bool consolidate_reads = true;

  std::vector<std::string> write_tokens;  // bearer tokens for counters:apply, marks and PUT
  std::vector<std::string> read_tokens;   // empty: reads are open (a write token also reads)

  AnalystConfig analyst;  // the optional `analyst` section: the PostgreSQL-wire endpoint
};

// Throws ConfigError on any problem.
ClusterProxyConfig load_cluster_proxy_config(const std::filesystem::path& file);

}  // namespace tally::cluster_proxy
