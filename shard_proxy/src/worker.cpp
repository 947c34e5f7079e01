#include "shard_proxy/src/worker.h"

namespace tally::shard_proxy {

Worker::Worker(WorkerServices services, size_t pool_size_per_node)
    : services_(services), pool_size_(pool_size_per_node) {
  targets_ = services_.state->targets();
  generation_ = targets_.generation;
}

void Worker::refresh_targets() {
  if (services_.state->targets_generation() == generation_) return;
  targets_ = services_.state->targets();
  generation_ = targets_.generation;
  for (auto& [name, pools] : pools_) {
    const ProxyUser* user = services_.state->config().user(name);
    if (user == nullptr) continue;
    pools.leader->set_target("leader " + targets_.leader,
                             services_.state->conninfo(targets_.leader, *user));
    // A pool is never destroyed while the worker runs: sessions hold leases from it and wait in
    // its queue. Without a replica, pool(..., true) simply stops handing it out.
    if (pools.replica && !targets_.replica.empty()) {
      pools.replica->set_target("replica " + targets_.replica,
                                services_.state->conninfo(targets_.replica, *user));
    }
  }
}

BackendPool* Worker::pool(const ProxyUser& user, bool replica) {
  refresh_targets();
  auto& pools = pools_[user.name];
  const auto& config = services_.state->config();
  auto make = [&](const std::string& role, const std::string& address) {
    PoolOptions o;
    o.node = role + " " + address;
    o.conninfo = services_.state->conninfo(address, user);
    o.max_size = pool_size_;
    o.wait_timeout = std::chrono::milliseconds(config.pool_wait_timeout_ms);
    o.connect_timeout = std::chrono::milliseconds(config.connect_timeout_ms);
    o.gauges = services_.gauges;
    return std::make_unique<BackendPool>(io_, o);
  };
  if (!replica) {
    if (!pools.leader) pools.leader = make("leader", targets_.leader);
    return pools.leader.get();
  }
  if (targets_.replica.empty()) return nullptr;
  if (!pools.replica) pools.replica = make("replica", targets_.replica);
  return pools.replica.get();
}

uint64_t Worker::track_session(std::function<void()> abandon) {
  sessions_.emplace(++next_session_, std::move(abandon));
  return next_session_;
}

void Worker::untrack_session(uint64_t id) {
  sessions_.erase(id);
}

void Worker::abandon_sessions() {
  auto sessions = std::move(sessions_);  // abandoning may destroy sessions, which untrack
  sessions_.clear();
  for (auto& [id, abandon] : sessions) abandon();
}

}  // namespace tally::shard_proxy
