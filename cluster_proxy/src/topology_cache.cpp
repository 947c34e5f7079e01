#include "cluster_proxy/src/topology_cache.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/core/log.h"

namespace tally::cluster_proxy {

TopologyCache::TopologyCache(TopologyCacheOptions options, const Clock& clock)
    : options_(std::move(options)), clock_(clock) {
  health_.zk_configured = !options_.zk_hosts.empty();
}

TopologyCache::~TopologyCache() {
  stop();
}

Result<std::shared_ptr<Routing>> TopologyCache::static_routing() const {
  std::vector<std::string> names;
  for (const auto& [name, proxies] : options_.static_proxies) names.push_back(name);
  auto map = ShardMap::from_names(names);
  if (!map) return map.error();
  auto r = std::make_shared<Routing>(Routing{*map, {}, 0, "config", clock_.wall_ms()});
  for (const auto& range : map->ranges()) {
    ShardRoute route;
    route.name = range.name();
    route.range = range;
    for (const auto& [name, proxies] : options_.static_proxies) {
      auto parsed = ShardRange::parse(name);
      if (parsed && *parsed == range) route.proxies = proxies;
    }
    route.proxies_source = "config";
    r->shards.push_back(std::move(route));
  }
  return r;
}

Status TopologyCache::connect_zk() {
  ZkOptions o;
  o.hosts = options_.zk_hosts;
  o.session_timeout = options_.zk_session_timeout;
  o.connect_timeout = options_.zk_connect_timeout;
  auto zk = ZkClient::connect(o);
  if (!zk) return zk.error();
  zk_ = std::move(*zk);
  zk_connected_ = true;
  zk_->on_session_state([this](ZkSessionState s) {
    zk_connected_ = s == ZkSessionState::kConnected;
    if (zk_connected_) mark_dirty();
  });
  watches_.push_back(
      zk_->watch_data(topology_paths::kKeyspace, [this](const auto&) { mark_dirty(); }));
  return ok_status();
}

void TopologyCache::mark_dirty() {
  std::lock_guard lock(mu_);
  dirty_ = true;
  cv_.notify_all();
}

void TopologyCache::update_watches(const std::vector<std::string>& ranges) {
  if (ranges == watched_ranges_) return;
  // Keep the keyspace watch (the first); re-arm the per-shard ones for the new set of ranges.
  for (size_t i = 1; i < watches_.size(); ++i) zk_->unwatch(watches_[i]);
  watches_.resize(1);
  for (const auto& name : ranges) {
    watches_.push_back(
        zk_->watch_data(topology_paths::shard(name), [this](const auto&) { mark_dirty(); }));
    watches_.push_back(zk_->watch_children(topology_paths::shard_proxies(name),
                                           [this](const auto&) { mark_dirty(); }));
  }
  watched_ranges_ = ranges;
}

Status TopologyCache::refresh() {
  if (!zk_) {
    if (options_.zk_hosts.empty()) return ok_status();
    if (auto st = connect_zk(); !st) return st;
  }
  auto snap = read_topology(*zk_);
  if (!snap) return snap.error();
  auto r = std::make_shared<Routing>(
      Routing{snap->map, {}, snap->keyspace.version, "zookeeper", clock_.wall_ms()});
  std::vector<std::string> names;
  for (const auto& shard : snap->shards) {
    ShardRoute route;
    route.name = shard.range.name();
    route.range = shard.range;
    route.record = shard.record;
    names.push_back(route.name);
    auto children = zk_->children(topology_paths::shard_proxies(route.name));
    if (!children && children.error().code != ErrorCode::kNotFound) return children.error();
    if (children) {
      for (const auto& child : *children) {
        auto node = zk_->get(topology_paths::shard_proxies(route.name) + "/" + child);
        if (!node) continue;  // it went away meanwhile
        auto j = nlohmann::json::parse(node->data, nullptr, false);
        if (j.is_object() && j.contains("pg") && j["pg"].is_string()) {
          route.proxies.push_back(j["pg"].get<std::string>());
        }
      }
    }
    route.proxies_source = "zookeeper";
    if (route.proxies.empty()) {
      for (const auto& [name, proxies] : options_.static_proxies) {
        auto parsed = ShardRange::parse(name);
        if (parsed && *parsed == shard.range) {
          route.proxies = proxies;
          route.proxies_source = "config";
        }
      }
    }
    std::sort(route.proxies.begin(), route.proxies.end());
    r->shards.push_back(std::move(route));
  }
  update_watches(names);
  std::lock_guard lock(mu_);
  routing_ = std::move(r);
  health_.have_routing = true;
  health_.last_success_ms = clock_.wall_ms();
  health_.last_error.clear();
  health_.keyspace_version = snap->keyspace.version;
  ++refreshes_;
  return ok_status();
}

Status TopologyCache::start() {
  Status st = refresh();
  if (!st || !routing_) {
    if (!options_.static_proxies.empty()) {
      auto r = static_routing();
      if (!r) return r.error();
      std::lock_guard lock(mu_);
      routing_ = std::move(*r);
      health_.have_routing = true;
      if (!st) health_.last_error = st.error().message;
    } else if (!st) {
      return make_error(st.error().code,
                        "no topology: ZooKeeper " + options_.zk_hosts + ": " + st.error().message +
                            ", and the config lists no shard proxies to fall back on");
    } else {
      return make_error(ErrorCode::kInvalidArgument,
                        "no topology: neither zookeeper nor shards are configured");
    }
  }
  thread_ = std::thread([this] { run(); });
  return ok_status();
}

void TopologyCache::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  if (zk_) {
    for (auto id : watches_) zk_->unwatch(id);
    watches_.clear();
    zk_.reset();
  }
}

void TopologyCache::run() {
  if (options_.zk_hosts.empty()) return;  // static: nothing ever changes
  while (true) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, options_.refresh_interval, [this] { return dirty_ || stopping_; });
      if (stopping_) return;
      dirty_ = false;
    }
    Status st = refresh();
    if (!st) {
      std::unique_lock lock(mu_);
      if (health_.last_error != st.error().message) {
        log_line("cluster_proxy",
                 "topology refresh failed (serving the last one): " + st.error().message);
      }
      health_.last_error = st.error().message;
      // Retry soon rather than at the next interval: a watch may have been missed.
      cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stopping_; });
      if (stopping_) return;
      dirty_ = true;
    }
  }
}

std::shared_ptr<const Routing> TopologyCache::routing() const {
  std::lock_guard lock(mu_);
  return routing_;
}

TopologyHealth TopologyCache::health() const {
  std::lock_guard lock(mu_);
  TopologyHealth h = health_;
  h.zk_connected = zk_connected_.load();
  return h;
}

}  // namespace tally::cluster_proxy
