// ShardState: what every worker of one shard proxy shares: where the leader and replica are now
// (from the config, then from ZooKeeper), how healthy they are (from the NodeMonitor), the result
// cache, the registry of live sessions for CancelRequest, and counters.
// Thread-safe: addresses behind a mutex with a generation number workers poll cheaply; health,
// the paused flag and counters are atomics. Listeners hear of every topology change (called on the
// ZooKeeper thread: they must only post to their io_context).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "shard_proxy/src/shard_proxy_config.h"

namespace tally::shard_proxy {

struct NodeTargets {
  std::string leader;   // host:port
  std::string replica;  // host:port or empty
  uint64_t generation = 0;
};

struct NodeHealth {
  std::atomic<bool> reachable{false};
  std::atomic<bool> in_recovery{false};
  std::atomic<int64_t> lag_ms{-1};        // replicas: replay lag; -1 unknown
  std::atomic<uint64_t> lsn{0};           // leader: current WAL LSN; replica: replayed LSN
  std::atomic<int64_t> checked_at_ms{0};  // steady clock, ms
};

class ShardState {
 public:
  explicit ShardState(const ShardProxyConfig& config);

  const ShardProxyConfig& config() const { return config_; }

  NodeTargets targets() const;
  uint64_t targets_generation() const { return generation_.load(std::memory_order_acquire); }
  // The shard's topology node changed: a new leader/replica (failover, switchover) and/or a new
  // state ("serving", "paused", "failing_over"). Workers pick up addresses on their next acquire,
  // and listeners are told so they can retire idle connections and resume held work.
  void set_targets(const std::string& leader, const std::string& replica,
                   const std::string& state = "serving");
  // True while the shard is paused or failing over: new leader work must wait (contract 8).
  bool leader_paused() const { return leader_paused_.load(std::memory_order_acquire); }
  std::string shard_state() const;
  // Register before the topology can change (start-up); never removed.
  void add_listener(std::function<void()> listener);

  NodeHealth& leader_health() { return leader_health_; }
  NodeHealth& replica_health() { return replica_health_; }
  // True when reads may go to the replica now: reachable, replaying, and lagging at most the bound.
  bool replica_serves_reads(uint64_t min_lsn) const;

  // libpq conninfo for `address` as `user`.
  std::string conninfo(const std::string& address, const ProxyUser& user) const;

  // Parameters announced to clients after authentication (ParameterStatus).
  std::vector<std::pair<std::string, std::string>> server_parameters() const;
  void set_server_parameters(std::vector<std::pair<std::string, std::string>> parameters);

  // Sessions, for CancelRequest: the key is (process id, secret key) handed out in BackendKeyData.
  std::pair<int32_t, int32_t> register_session(std::function<void()> cancel);
  void unregister_session(int32_t process_id);
  // Runs the cancel function of the session with that key, if any (and the secret matches).
  bool cancel_session(int32_t process_id, int32_t secret_key);

  std::atomic<int64_t> clients{0};

 private:
  const ShardProxyConfig& config_;
  mutable std::mutex mutex_;
  NodeTargets targets_;
  std::atomic<uint64_t> generation_{0};
  std::string state_name_ = "serving";
  std::atomic<bool> leader_paused_{false};
  std::vector<std::function<void()>> listeners_;
  NodeHealth leader_health_;
  NodeHealth replica_health_;
  std::vector<std::pair<std::string, std::string>> parameters_;
  struct SessionEntry {
    int32_t secret;
    std::function<void()> cancel;
  };
  std::map<int32_t, SessionEntry> sessions_;
  int32_t next_process_id_ = 1;
  std::mt19937 rng_{std::random_device{}()};  // cancel secrets; guarded by mutex_
};

}  // namespace tally::shard_proxy
