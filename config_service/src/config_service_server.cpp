#include "config_service/src/config_service_server.h"

#include <nlohmann/json.hpp>

#include "common/topology/topology.h"
#include "config_service/src/service_log.h"

namespace tally::config_service {

using nlohmann::json;

ConfigService::ConfigService(ConfigServiceConfig config)
    : config_(std::move(config)), counters_(registry_) {}

ConfigService::~ConfigService() {
  stop();
}

HealthStatus ConfigService::readiness() const {
  HealthStatus s;
  if (!zk_ || zk_->state() != ZkSessionState::kConnected) {
    s.ready = false;
    s.reasons.push_back("zookeeper: " + std::string(zk_ ? zk_session_state_name(zk_->state())
                                                        : std::string_view("not connected")));
  }
  return s;
}

Status ConfigService::start() {
  HttpServerOptions http_options;
  http_options.address = config_.listen_address;
  http_options.port = static_cast<uint16_t>(config_.http_port);
  http_options.metrics = &registry_;
  http_options.name = "admin";
  http_ = std::make_unique<HttpServer>(http_options);
  add_admin_routes(*http_, registry_, [this] { return readiness(); });
  http_->route("GET", "/v1/status", [this](HttpRequest&&, Responder respond) {
    respond(HttpResponse::json(200, status_json()));
  });
  registry_.gauge_fn("config_service_is_leader", "1 while this instance leads the election", {},
                     [this] { return is_leader() ? 1.0 : 0.0; });

  ZkOptions options;
  options.hosts = config_.zk_hosts;
  options.session_timeout = std::chrono::milliseconds(config_.zk_session_timeout_ms);
  auto zk = ZkClient::connect(options);
  if (!zk) {
    return make_error(zk.error().code, "zookeeper " + config_.zk_hosts + ": " + zk.error().message);
  }
  zk_ = std::move(*zk);
  if (auto st = http_->start(); !st) return st;

  // The lease stays well inside the session timeout: a successor can only take over after our
  // session expired, and by then we have stopped acting.
  const int64_t lease = std::max<int64_t>(config_.zk_session_timeout_ms / 2, 300);
  election_ = std::make_unique<LeaderElection>(
      *zk_, clock_, config_.id, config_.listen_address + ":" + std::to_string(http_->port()),
      lease);
  election_->start();
  coordinator_ = std::thread([this] { coordinate(); });
  log_line(config_.id + " started: http port " + std::to_string(http_->port()) + ", zookeeper " +
           config_.zk_hosts);
  return ok_status();
}

void ConfigService::coordinate() {
  // Starts a supervisor for every shard the keyspace names (now and after a change).
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    std::vector<std::string> ranges;
    if (auto node = zk_->get(topology_paths::kKeyspace)) {
      if (auto ks = decode_keyspace(node->data)) {
        for (const auto& s : ks->shards) {
          if (auto r = ShardRange::parse(s)) ranges.push_back(r->name());
        }
      }
    }
    lock.lock();
    for (const auto& range : ranges) {
      bool known = false;
      for (const auto& s : supervisors_) known = known || s->snapshot().range == range;
      if (known || stopping_) continue;
      supervisors_.push_back(std::make_unique<ShardSupervisor>(range, *zk_, *election_, clock_,
                                                               config_, registry_, counters_));
      supervisors_.back()->start();
    }
    wake_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
  }
}

std::string ConfigService::status_json() const {
  json shards = json::array();
  {
    std::lock_guard lock(mu_);
    for (const auto& s : supervisors_) {
      auto snap = s->snapshot();
      json entry = {{"shard", snap.range}};
      if (snap.have_record) entry["record"] = json::parse(encode_shard(snap.record));
      if (snap.have_health) entry["health"] = json::parse(encode_health(snap.health));
      entry["decision"] = snap.reason;
      entry["last_action"] = snap.last_action;
      shards.push_back(std::move(entry));
    }
  }
  bool leading = is_leader();
  json body = {{"id", config_.id},
               {"role", leading ? "leader" : "follower"},
               {"leader", election_ ? election_->leader_id() : ""},
               {"election_node", election_ ? election_->node_path() : ""},
               {"zookeeper", zk_ ? std::string(zk_session_state_name(zk_->state())) : "none"},
               {"shards", shards}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

void ConfigService::stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (coordinator_.joinable()) coordinator_.join();
  for (auto& s : supervisors_) s->stop();
  if (election_) election_->stop();
  if (http_) http_->stop(std::chrono::milliseconds(1000));
  // Closing the session removes our election node at once: a successor need not wait for expiry.
  zk_.reset();
  supervisors_.clear();
  election_.reset();
}

}  // namespace tally::config_service
