// ShardSupervisor: one thread per shard that, while this instance leads the election, runs a
// health round every interval: probes the leader, the replica and any fenced former leader
// (blocking libpq on this thread, never an io thread), publishes /tally/health/<range>, asks
// FailoverPolicy what to do and does it exactly as contract 8 says (sync enable/confirm/downgrade,
// failover, fencing). Every ZooKeeper write is a compare-and-set on the version just read, and
// election.is_leader() is checked right before each action. snapshot() from any thread.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/core/clock.h"
#include "common/metrics/metrics_registry.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"
#include "config_service/src/config_service_config.h"
#include "config_service/src/failover_policy.h"
#include "config_service/src/leader_election.h"
#include "config_service/src/pg_node_client.h"

namespace tally::config_service {

// Counters shared by every supervisor of the process.
struct ServiceCounters {
  explicit ServiceCounters(MetricsRegistry& registry);
  Counter& failovers;
  Counter& sync_changes;
  Counter& fence_actions;
  Counter& health_rounds;
};

class ShardSupervisor {
 public:
  ShardSupervisor(std::string range, ZkClient& zk, const LeaderElection& election,
                  const Clock& clock, const ConfigServiceConfig& config, MetricsRegistry& registry,
                  ServiceCounters& counters);
  ~ShardSupervisor();
  ShardSupervisor(const ShardSupervisor&) = delete;
  ShardSupervisor& operator=(const ShardSupervisor&) = delete;

  void start();
  void stop();

  struct Snapshot {
    std::string range;
    bool have_record = false;
    ShardRecord record;
    bool have_health = false;
    HealthRecord health;
    std::string last_action;  // the last action taken, with its reason
    std::string reason;       // why the last round decided what it did
  };
  Snapshot snapshot() const;

  // One round on the caller's thread (the thread's body).
  void round();

 private:
  ShardObservation observe(const ShardRecord& record);
  NodeObservation probe(PgNodeClient& node, const std::string& sql,
                        std::vector<PgNodeClient::Row>* rows);
  PgNodeClient& client(const std::string& address);
  void publish(const ShardObservation& obs);
  void execute(const Action& action, const ShardRecord& record, int32_t version,
               const ShardObservation& obs);
  bool cas(const ShardRecord& record, int32_t version, const std::string& what);
  void enable_sync(const ShardRecord& record);
  void downgrade_sync(ShardRecord record, int32_t version, const ShardObservation& obs);
  void failover(ShardRecord record, int32_t version);
  bool finish_failover(ShardRecord record, int32_t version);
  void fence(const std::string& address);
  void note(const std::string& message);

  const std::string range_;
  const std::string path_;
  ZkClient& zk_;
  const LeaderElection& election_;
  const Clock& clock_;
  const ConfigServiceConfig& config_;
  ServiceCounters& counters_;
  PgAccess access_;
  FailoverPolicy policy_;
  std::map<std::string, std::unique_ptr<PgNodeClient>> clients_;
  bool was_leader_ = false;
  bool health_path_ready_ = false;
  std::string last_reason_;

  Gauge& leader_ok_;
  Gauge& replica_ok_;
  Gauge& lag_ms_;
  Gauge& lag_bytes_;
  Gauge& sync_;

  mutable std::mutex mu_;
  Snapshot snapshot_;

  std::mutex wake_mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tally::config_service
