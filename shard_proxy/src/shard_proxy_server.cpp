#include "shard_proxy/src/shard_proxy_server.h"

#include <boost/asio/post.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/core/log.h"
#include "common/http/admin_endpoints.h"
#include "common/topology/topology.h"
#include "shard_proxy/src/client_session.h"

namespace tally::shard_proxy {

namespace asio = boost::asio;

ShardProxyServer::ShardProxyServer(ShardProxyConfig config)
    : config_(std::move(config)),
      state_(config_),
      classifier_(config_.read_only_functions),
      metrics_(registry_),
      monitor_(state_, config_.users.front()) {}

ShardProxyServer::~ShardProxyServer() {
  stop();
}

void ShardProxyServer::fetch_server_parameters() {
  // What PostgreSQL announces after login; clients (psql, JDBC) read server_version and friends.
  const ProxyUser& user = config_.users.front();
  std::string info = state_.conninfo(state_.targets().leader, user) + " connect_timeout=2";
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(info.c_str()), &PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK) return;  // the defaults stand until a restart
  std::vector<std::pair<std::string, std::string>> params;
  for (const char* name :
       {"server_version", "server_encoding", "client_encoding", "DateStyle", "IntervalStyle",
        "TimeZone", "integer_datetimes", "standard_conforming_strings"}) {
    if (const char* v = PQparameterStatus(conn.get(), name)) params.emplace_back(name, v);
  }
  params.emplace_back("is_superuser", "off");
  params.emplace_back("application_name", "");
  state_.set_server_parameters(std::move(params));
}

Status ShardProxyServer::follow_topology() {
  if (config_.zk_hosts.empty()) return ok_status();
  ZkOptions options;
  options.hosts = config_.zk_hosts;
  options.session_timeout = std::chrono::milliseconds(config_.zk_session_timeout_ms);
  auto zk = ZkClient::connect(options);
  if (!zk) return zk.error();
  zk_ = std::move(*zk);
  // Follow the shard's topology node: a failover moves the leader without a restart.
  zk_->watch_data(
      topology_paths::shard(config_.shard), [this](const std::optional<ZkNodeData>& node) {
        if (node) {
          auto record = decode_shard(config_.shard, node->data);
          if (record) {
            state_.set_targets(record->leader, record->replica, record->state);
          } else {
            log_line("shard_proxy", "ignoring bad topology node: " + record.error().message);
          }
        }
        topology_seen_ = true;
      });
  // The watch delivers the node's current data once right after it is armed (on ZooKeeper's
  // event thread): wait for that before serving, bounded so a slow ZooKeeper leaves the config's
  // addresses in place rather than no proxy at all.
  for (int i = 0; i < 500 && !topology_seen_; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return ok_status();
}

Status ShardProxyServer::register_proxy() {
  if (!zk_) return ok_status();
  const std::string& host =
      config_.advertise_address.empty() ? config_.listen_address : config_.advertise_address;
  nlohmann::json me = {{"pg", host + ":" + std::to_string(pg_port_)},
                       {"http", host + ":" + std::to_string(http_port())}};
  return zk_->hold_ephemeral(topology_paths::shard_proxies(config_.shard) + "/" + config_.id,
                             me.dump());
}

HealthStatus ShardProxyServer::readiness() const {
  HealthStatus h;
  auto& s = const_cast<ShardState&>(state_);
  if (!s.leader_health().reachable.load()) {
    h.ready = false;
    h.reasons.push_back("leader " + s.targets().leader + " unreachable");
  }
  if (zk_ && zk_->state() != ZkSessionState::kConnected) {
    h.reasons.push_back(std::string("zookeeper ") +
                        std::string(zk_session_state_name(zk_->state())) +
                        " (serving from the last known topology)");
  }
  return h;
}

Status ShardProxyServer::start() {
  ResultCacheOptions cache_options;
  cache_options.max_bytes = static_cast<size_t>(config_.cache_max_bytes);
  if (config_.cache_max_bytes > 0) {
    auto cache = ResultCache::create(cache_options);
    if (!cache) return cache.error();
    cache_ = std::move(*cache);
  }
  fetch_server_parameters();
  monitor_.check_once();
  monitor_.start();

  size_t threads = static_cast<size_t>(config_.worker_threads);
  size_t per_worker = std::max<size_t>(1, static_cast<size_t>(config_.pool_size) / threads);
  WorkerServices services{&state_, &classifier_, cache_.get(), &metrics_, &blocking_, &gauges_};
  for (size_t i = 0; i < threads; ++i) {
    workers_.push_back(std::make_unique<Worker>(services, per_worker));
  }

  boost::system::error_code ec;
  auto address = asio::ip::make_address(config_.listen_address, ec);
  if (ec) {
    return make_error(ErrorCode::kInvalidArgument,
                      "listen address '" + config_.listen_address + "': " + ec.message());
  }
  acceptor_ = std::make_unique<asio::ip::tcp::acceptor>(workers_[0]->io());
  asio::ip::tcp::endpoint endpoint(address, static_cast<uint16_t>(config_.pg_port));
  acceptor_->open(endpoint.protocol(), ec);
  if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(endpoint, ec);
  if (!ec) acceptor_->listen(1024, ec);
  if (ec) {
    return make_error(ErrorCode::kUnavailable, "cannot listen on " + config_.listen_address + ":" +
                                                   std::to_string(config_.pg_port) + ": " +
                                                   ec.message());
  }
  pg_port_ = acceptor_->local_endpoint().port();

  HttpServerOptions http_options;
  http_options.address = config_.listen_address;
  http_options.port = static_cast<uint16_t>(config_.http_port);
  http_options.metrics = &registry_;
  http_options.name = "admin";
  http_ = std::make_unique<HttpServer>(http_options);
  registry_.gauge_fn("tally_shard_proxy_clients", "Client sessions open now", {},
                     [this] { return static_cast<double>(state_.clients.load()); });
  registry_.gauge_fn("tally_shard_proxy_pool_open", "Server connections open", {},
                     [this] { return static_cast<double>(gauges_.open.load()); });
  registry_.gauge_fn("tally_shard_proxy_pool_idle", "Server connections idle in the pools", {},
                     [this] { return static_cast<double>(gauges_.idle.load()); });
  registry_.gauge_fn("tally_shard_proxy_pool_waiting", "Requests waiting for a server connection",
                     {}, [this] { return static_cast<double>(gauges_.waiting.load()); });
  registry_.gauge_fn("tally_shard_proxy_replica_lag_ms",
                     "Replica replay lag in milliseconds (-1 unknown)", {},
                     [this] { return static_cast<double>(state_.replica_health().lag_ms.load()); });
  registry_.gauge_fn("tally_shard_proxy_node_up", "1 when the node answers its health check",
                     {{"node", "leader"}},
                     [this] { return state_.leader_health().reachable.load() ? 1.0 : 0.0; });
  registry_.gauge_fn("tally_shard_proxy_node_up", "1 when the node answers its health check",
                     {{"node", "replica"}},
                     [this] { return state_.replica_health().reachable.load() ? 1.0 : 0.0; });
  if (cache_) {
    registry_.gauge_fn("tally_shard_proxy_cache_hits", "Result cache hits", {},
                       [this] { return static_cast<double>(cache_->stats().hits); });
    registry_.gauge_fn("tally_shard_proxy_cache_misses", "Result cache misses", {},
                       [this] { return static_cast<double>(cache_->stats().misses); });
    registry_.gauge_fn("tally_shard_proxy_cache_bytes",
                       "Result cache bytes held (charged: key, value and overhead)", {},
                       [this] { return static_cast<double>(cache_->stats().bytes); });
    registry_.gauge_fn("tally_shard_proxy_cache_max_bytes", "Result cache bound (cache.max_bytes)",
                       {}, [this] { return static_cast<double>(cache_->max_bytes()); });
    registry_.gauge_fn("tally_shard_proxy_cache_entries", "Result cache entries held", {},
                       [this] { return static_cast<double>(cache_->stats().entries); });
    registry_.gauge_fn("tally_shard_proxy_cache_evictions",
                       "Live result cache entries dropped to stay within cache.max_bytes", {},
                       [this] { return static_cast<double>(cache_->stats().evictions); });
  }
  add_admin_routes(*http_, registry_, [this] { return readiness(); });
  if (auto st = http_->start(); !st) return st;

  if (auto st = follow_topology(); !st) {
    return make_error(st.error().code, "zookeeper " + config_.zk_hosts + ": " + st.error().message);
  }

  accept_next();
  for (auto& w : workers_) {
    threads_.emplace_back([&io = w->io()] {
      auto guard = asio::make_work_guard(io);
      io.run();
    });
  }
  // Registration last: a restarted proxy may wait here (up to the session timeout) for a killed
  // predecessor's node to expire, and serves its clients meanwhile.
  if (auto st = register_proxy(); !st) {
    return make_error(st.error().code, "zookeeper " + config_.zk_hosts + ": " + st.error().message);
  }
  return ok_status();
}

void ShardProxyServer::accept_next() {
  Worker& worker = *workers_[next_worker_];
  next_worker_ = (next_worker_ + 1) % workers_.size();
  acceptor_->async_accept(
      worker.io(), [this, &worker](boost::system::error_code ec, asio::ip::tcp::socket socket) {
        if (ec == asio::error::operation_aborted) return;
        if (!ec) {
          metrics_.client_connected();
          auto session = std::make_shared<ClientSession>(worker, std::move(socket));
          asio::post(worker.io(), [session] { session->start(); });
        }
        accept_next();
      });
}

void ShardProxyServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (acceptor_) {
    asio::post(workers_[0]->io(), [this] {
      boost::system::error_code ignored;
      acceptor_->close(ignored);
    });
  }
  if (http_) http_->stop(std::chrono::milliseconds(1000));
  zk_.reset();  // closes the session: the registration disappears at once
  for (auto& w : workers_) w->io().stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  for (auto& w : workers_) w->abandon_sessions();
  monitor_.stop();
  blocking_.join();
}

}  // namespace tally::shard_proxy
