// The processor's configuration: one YAML file (config/processor.example.yaml lists every key),
// validated at start-up. Every mistake stops the process with an error naming the file, the key and
// the expected form (ConfigError). Read once at start-up; immutable afterwards, shared read-only by
// every thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "processor/src/event.h"

namespace tally::processor {

struct ApiKey {
  std::string name;  // for metrics and logs; the key itself is never logged
  std::string key;
  double events_per_second = 100000;  // token bucket refill rate
  double burst = 200000;              // bucket size
};

struct ProcessorConfig {
  std::string file;
  std::string id;  // the stable processor_id of contract 4
  std::filesystem::path data_dir;
  int partitions = 4;

  std::string listen_address = "127.0.0.1";
  std::string advertise_address;  // the host registered in ZooKeeper; empty: listen_address
  int http_port = 0;
  int http_threads = 2;
  size_t max_body_bytes = 8 << 20;

  uint64_t segment_bytes = 64 << 20;
  bool fsync = true;

  EventLimits event_limits;
  int64_t max_backlog_events = 5'000'000;  // unapplied events in the log; more: 503
  int retry_after_s = 1;

  int64_t dedup_window_ms = 600'000;
  int64_t dedup_memory_bytes = 256 << 20;  // over all partitions
  int64_t dedup_snapshot_interval_ms = 10'000;

  int64_t flush_interval_ms = 1000;
  size_t max_batch_rows = 50'000;  // rows of one apply request; a larger table is sent early

  std::string cluster_proxy_url;  // empty: no writer (events stay in the log)
  std::string cluster_proxy_token;
  int64_t cluster_proxy_timeout_ms = 20000;  // one apply attempt; the cluster proxy cancels by then
  int64_t max_backoff_ms = 5000;
  // Circuit breaker toward the cluster proxy: open after this many consecutive connection errors
  // or 5xx answers (0: no breaker), probe again after breaker_open_ms.
  int breaker_failures = 5;
  int64_t breaker_open_ms = 2000;

  // ZooKeeper, for the ephemeral /tally/processors/<id> registration; empty hosts: none.
  std::string zk_hosts;
  int zk_session_timeout_ms = 10000;

  std::vector<ApiKey> api_keys;  // empty: no key required
};

// Throws ConfigError on any problem.
ProcessorConfig load_processor_config(const std::filesystem::path& file);
ProcessorConfig parse_processor_config(const std::string& text, const std::string& name);

}  // namespace tally::processor
