#include "shard_proxy/src/shard_state.h"

#include <chrono>
#include <random>

#include "common/core/host_port.h"
#include "common/pgclient/conninfo.h"

namespace tally::shard_proxy {

ShardState::ShardState(const ShardProxyConfig& config) : config_(config) {
  targets_.leader = config.leader;
  targets_.replica = config.replica;
  // Defaults until the first server connection tells the real values.
  parameters_ = {{"server_version", "15"},      {"server_encoding", "UTF8"},
                 {"client_encoding", "UTF8"},   {"DateStyle", "ISO, MDY"},
                 {"IntervalStyle", "postgres"}, {"TimeZone", "UTC"},
                 {"integer_datetimes", "on"},   {"standard_conforming_strings", "on"},
                 {"is_superuser", "off"}};
}

NodeTargets ShardState::targets() const {
  std::lock_guard lock(mutex_);
  return targets_;
}

void ShardState::set_targets(const std::string& leader, const std::string& replica,
                             const std::string& state) {
  std::vector<std::function<void()>> listeners;
  {
    std::lock_guard lock(mutex_);
    bool paused = state != "serving";
    bool moved = leader != targets_.leader || replica != targets_.replica;
    if (!moved && state == state_name_) return;
    state_name_ = state;
    leader_paused_.store(paused, std::memory_order_release);
    if (moved) {
      targets_.leader = leader;
      targets_.replica = replica;
      targets_.generation = generation_.load() + 1;
      // Health measured for the old addresses says nothing about the new ones.
      leader_health_.reachable = false;
      replica_health_.reachable = false;
      replica_health_.lag_ms = -1;
      replica_health_.lsn = 0;
      generation_.store(targets_.generation, std::memory_order_release);
    }
    listeners = listeners_;
  }
  for (auto& l : listeners) l();
}

std::string ShardState::shard_state() const {
  std::lock_guard lock(mutex_);
  return state_name_;
}

void ShardState::add_listener(std::function<void()> listener) {
  std::lock_guard lock(mutex_);
  listeners_.push_back(std::move(listener));
}

bool ShardState::replica_serves_reads(uint64_t min_lsn) const {
  if (!replica_health_.reachable.load(std::memory_order_relaxed)) return false;
  if (!replica_health_.in_recovery.load(std::memory_order_relaxed)) return false;
  int64_t lag = replica_health_.lag_ms.load(std::memory_order_relaxed);
  if (lag < 0 || lag > config_.max_replica_lag_ms) return false;
  return min_lsn == 0 || replica_health_.lsn.load(std::memory_order_relaxed) >= min_lsn;
}

std::string ShardState::conninfo(const std::string& address, const ProxyUser& user) const {
  const HostPortText node = split_host_port(address);
  std::string conninfo = build_conninfo({{"host", node.host},
                                         {"port", node.port},
                                         {"dbname", config_.database},
                                         {"user", user.name},
                                         {"password", user.password},
                                         {"application_name", "tally_shard_proxy"},
                                         {"sslmode", "disable"}});
  if (config_.statement_timeout_ms > 0) {
    // The server enforces the statement timeout itself: it cancels with 57014 and the connection
    // stays usable, which is exactly what the client must see.
    append_conninfo_param(conninfo, "options",
                          "-c statement_timeout=" + std::to_string(config_.statement_timeout_ms));
  }
  return conninfo;
}

std::vector<std::pair<std::string, std::string>> ShardState::server_parameters() const {
  std::lock_guard lock(mutex_);
  return parameters_;
}

void ShardState::set_server_parameters(std::vector<std::pair<std::string, std::string>> p) {
  std::lock_guard lock(mutex_);
  parameters_ = std::move(p);
}

std::pair<int32_t, int32_t> ShardState::register_session(std::function<void()> cancel) {
  std::lock_guard lock(mutex_);
  int32_t pid = next_process_id_++;
  if (next_process_id_ <= 0) next_process_id_ = 1;
  auto secret = static_cast<int32_t>(rng_());
  sessions_[pid] = {secret, std::move(cancel)};
  return {pid, secret};
}

void ShardState::unregister_session(int32_t process_id) {
  std::lock_guard lock(mutex_);
  sessions_.erase(process_id);
}

bool ShardState::cancel_session(int32_t process_id, int32_t secret_key) {
  std::function<void()> cancel;
  {
    std::lock_guard lock(mutex_);
    auto it = sessions_.find(process_id);
    if (it == sessions_.end() || it->second.secret != secret_key) return false;
    cancel = it->second.cancel;
  }
  cancel();
  return true;
}

}  // namespace tally::shard_proxy
