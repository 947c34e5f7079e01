#include "shard_proxy/src/worker.h"

#include <boost/asio/post.hpp>

namespace tally::shard_proxy {

Worker::Worker(WorkerServices services, size_t pool_size_per_node)
    : services_(services), pool_size_(pool_size_per_node) {
  targets_ = services_.state->targets();
  generation_ = targets_.generation;
  // Called on the ZooKeeper thread: only hand over to this worker's thread.
  services_.state->add_listener([this] { boost::asio::post(io_, [this] { topology_changed(); }); });
}

void Worker::topology_changed() {
  // Idle connections to an old leader close now, not at the next request.
  refresh_targets();
  if (services_.state->leader_paused() || held_.empty()) return;
  auto held = std::move(held_);
  held_.clear();
  for (auto& [id, resume] : held) resume();
}

const std::string& Worker::leader_address() {
  refresh_targets();
  return targets_.leader;
}

uint64_t Worker::hold(std::function<void()> resume) {
  held_.emplace(++next_hold_, std::move(resume));
  return next_hold_;
}

void Worker::unhold(uint64_t id) {
  held_.erase(id);
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
    o.max_shared = static_cast<size_t>(config.pipelined_connections);
    o.pipeline_depth = static_cast<size_t>(config.pipeline_depth);
    o.pipeline_stall = std::chrono::milliseconds(config.pipeline_stall_ms);
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
  held_.clear();                         // the resume functions keep their sessions alive
  auto sessions = std::move(sessions_);  // abandoning may destroy sessions, which untrack
  sessions_.clear();
  for (auto& [id, abandon] : sessions) abandon();
}

}  // namespace tally::shard_proxy
