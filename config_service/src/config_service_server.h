// ConfigService: wires one config_service instance: the ZooKeeper session, the leader election,
// one ShardSupervisor per shard of the keyspace (started as the keyspace node names them), and
// the HTTP endpoints (/healthz, /readyz, /metrics, GET /v1/status). start() and stop() run on the
// main thread; the election, the supervisors and a coordinator have their own threads; HTTP
// handlers only copy state those threads keep.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/core/clock.h"
#include "common/core/result.h"
#include "common/http/admin_endpoints.h"
#include "common/http/http_server.h"
#include "common/metrics/metrics_registry.h"
#include "common/zk/zk_client.h"
#include "config_service/src/config_service_config.h"
#include "config_service/src/leader_election.h"
#include "config_service/src/shard_supervisor.h"

namespace tally::config_service {

class ConfigService {
 public:
  explicit ConfigService(ConfigServiceConfig config);
  ~ConfigService();
  ConfigService(const ConfigService&) = delete;
  ConfigService& operator=(const ConfigService&) = delete;

  // Start-up: errors name what could not be done (port in use, ZooKeeper unreachable).
  Status start();
  void stop();

  uint16_t http_port() const { return http_ ? http_->port() : 0; }
  bool is_leader() const { return election_ && election_->is_leader(); }
  // GET /v1/status's body.
  std::string status_json() const;

 private:
  void coordinate();
  HealthStatus readiness() const;

  ConfigServiceConfig config_;
  SystemClock clock_;
  MetricsRegistry registry_;
  ServiceCounters counters_;
  std::unique_ptr<ZkClient> zk_;
  std::unique_ptr<LeaderElection> election_;
  std::unique_ptr<HttpServer> http_;

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<ShardSupervisor>> supervisors_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread coordinator_;
  bool stopped_ = false;
};

}  // namespace tally::config_service
