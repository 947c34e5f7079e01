#include "config_service/src/leader_election.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/topology/topology.h"
#include "config_service/src/service_log.h"

namespace tally::config_service {

namespace {
constexpr const char* kPrefix = "n_";

std::string base_name(const std::string& path) {
  return path.substr(path.rfind('/') + 1);
}
}  // namespace

void LeaderElection::Waker::wake() {
  {
    std::lock_guard lock(mu);
    woken = true;
  }
  cv.notify_all();
}

LeaderElection::LeaderElection(ZkClient& zk, const Clock& clock, std::string id, std::string http,
                               int64_t lease_ms)
    : zk_(zk),
      clock_(clock),
      id_(std::move(id)),
      data_(nlohmann::json{{"id", id_}, {"http", std::move(http)}}.dump()),
      lease_ms_(lease_ms) {}

LeaderElection::~LeaderElection() {
  stop();
}

void LeaderElection::start() {
  auto waker = waker_;
  zk_.on_session_state([waker](ZkSessionState) { waker->wake(); });
  watch_ = zk_.watch_children(topology_paths::kConfigServiceElection,
                              [waker](const std::vector<std::string>&) { waker->wake(); });
  watching_ = true;
  thread_ = std::thread([this] {
    const auto period = std::chrono::milliseconds(std::max<int64_t>(50, lease_ms_ / 3));
    std::unique_lock lock(waker_->mu);
    while (!waker_->stopping) {
      waker_->woken = false;
      lock.unlock();
      step();
      lock.lock();
      waker_->cv.wait_for(lock, period, [this] { return waker_->stopping || waker_->woken; });
    }
  });
}

void LeaderElection::stop() {
  {
    std::lock_guard lock(waker_->mu);
    waker_->stopping = true;
  }
  waker_->cv.notify_all();
  if (thread_.joinable()) thread_.join();
  if (watching_) {
    zk_.unwatch(watch_);
    watching_ = false;
  }
  leading_ = false;
}

bool LeaderElection::is_leader() const {
  if (!leading_.load()) return false;
  if (zk_.state() != ZkSessionState::kConnected) return false;
  {
    std::lock_guard lock(mu_);
    if (zk_.session_id() != node_session_) return false;
  }
  return clock_.steady_ms() - confirmed_ms_.load() < lease_ms_;
}

std::string LeaderElection::leader_id() const {
  std::lock_guard lock(mu_);
  return leader_id_;
}

std::string LeaderElection::node_path() const {
  std::lock_guard lock(mu_);
  return node_;
}

void LeaderElection::lose(const std::string& why) {
  if (leading_.exchange(false)) log_line("election: " + id_ + " stops leading: " + why);
}

bool LeaderElection::ensure_node(int64_t session) {
  {
    std::lock_guard lock(mu_);
    if (!node_.empty() && node_session_ == session) return true;
  }
  const std::string dir = topology_paths::kConfigServiceElection;
  if (auto st = zk_.ensure_path(dir); !st) return false;
  // A create whose answer was lost may have made a node on this session: adopt it.
  std::string found;
  if (auto names = zk_.children(dir)) {
    for (const auto& name : *names) {
      auto node = zk_.get(dir + "/" + name);
      if (node && node->ephemeral_owner == session) {
        if (found.empty()) {
          found = dir + "/" + name;
        } else {
          (void)zk_.remove(dir + "/" + name, node->version);  // a duplicate of ours
        }
      }
    }
  } else {
    return false;
  }
  if (found.empty()) {
    auto created = zk_.create(dir + "/" + kPrefix, data_, ZkCreateMode::kEphemeralSequential);
    if (!created) {
      log_line("election: cannot create a node under " + dir + ": " + created.error().message);
      return false;
    }
    found = *created;
  }
  std::lock_guard lock(mu_);
  node_ = found;
  node_session_ = session;
  log_line("election: " + id_ + " joined as " + node_);
  return true;
}

void LeaderElection::step() {
  const int64_t started = clock_.steady_ms();
  if (zk_.state() != ZkSessionState::kConnected) {
    lose(std::string("ZooKeeper session ") + std::string(zk_session_state_name(zk_.state())));
    return;
  }
  const int64_t session = zk_.session_id();
  if (session == 0 || !ensure_node(session)) {
    lose("no election node");
    return;
  }
  const std::string dir = topology_paths::kConfigServiceElection;
  auto names = zk_.children(dir);
  if (!names) {
    lose("cannot read the election: " + names.error().message);
    return;
  }
  std::vector<std::string> candidates;
  for (const auto& n : *names) {
    if (n.rfind(kPrefix, 0) == 0) candidates.push_back(n);
  }
  // Equal prefixes and zero-padded sequence numbers: name order is sequence order.
  std::sort(candidates.begin(), candidates.end());
  std::string mine;
  {
    std::lock_guard lock(mu_);
    mine = base_name(node_);
  }
  if (std::find(candidates.begin(), candidates.end(), mine) == candidates.end()) {
    {
      std::lock_guard lock(mu_);
      node_.clear();
    }
    lose("our election node " + mine + " is gone");
    waker_->wake();  // re-create it at once
    return;
  }
  if (candidates.front() == mine) {
    confirmed_ms_ = started;
    {
      std::lock_guard lock(mu_);
      leader_id_ = id_;
    }
    if (!leading_.exchange(true)) {
      log_line("election: " + id_ + " leads (" + mine + ")");
    }
    return;
  }
  lose("another instance has a lower sequence");
  std::string leader;
  if (auto node = zk_.get(dir + "/" + candidates.front())) {
    auto j = nlohmann::json::parse(node->data, nullptr, false);
    if (j.is_object() && j.contains("id") && j["id"].is_string())
      leader = j["id"].get<std::string>();
  }
  std::lock_guard lock(mu_);
  leader_id_ = leader;
}

}  // namespace tally::config_service
