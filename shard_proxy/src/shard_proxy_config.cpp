#include "shard_proxy/src/shard_proxy_config.h"

#include "common/config/yaml_reader.h"
#include "common/keyspace/shard_range.h"

namespace tally::shard_proxy {

const ProxyUser* ShardProxyConfig::user(std::string_view name) const {
  for (const auto& u : users) {
    if (u.name == name) return &u;
  }
  return nullptr;
}

ShardProxyConfig load_shard_proxy_config(const std::filesystem::path& file) {
  ShardProxyConfig c;
  c.file = file.string();
  auto root = load_config_file(file);
  auto s = root.section("shard_proxy");
  c.id = s.required_string("id", "a proxy id like shard0-proxy");
  c.shard = s.required_string("shard", "a shard range like -80");
  if (auto r = ShardRange::parse(c.shard); !r) s.fail("shard", r.error().message);
  c.worker_threads = static_cast<int>(s.optional_int("worker_threads", c.worker_threads, 1, 64));

  auto listen = s.section("listen");
  c.listen_address = listen.optional_string("address", c.listen_address, "an IP address");
  c.advertise_address =
      listen.optional_string("advertise_address", "", "a host name or IP address");
  c.pg_port = static_cast<int>(listen.required_int("pg_port", 1, 65535));
  c.http_port = static_cast<int>(listen.required_int("http_port", 0, 65535));
  listen.finish();

  if (auto zk = s.optional_section("zookeeper")) {
    auto zk_settings = read_zookeeper_section(*zk, c.zk_session_timeout_ms);
    c.zk_hosts = zk_settings.hosts;
    c.zk_session_timeout_ms = zk_settings.session_timeout_ms;
  }

  auto backend = s.section("backend");
  c.database = backend.optional_string("database", c.database, "a database name");
  c.leader = backend.required_string("leader", "host:port");
  backend.check_host_port("leader", c.leader);
  c.replica = backend.optional_string("replica", "", "host:port");
  if (!c.replica.empty()) backend.check_host_port("replica", c.replica);
  c.pool_size = static_cast<int>(backend.optional_int("pool_size", c.pool_size, 1, 10000));
  c.connect_timeout_ms =
      static_cast<int>(backend.optional_int("connect_timeout_ms", c.connect_timeout_ms, 10, 60000));
  c.pipelined_connections = static_cast<int>(
      backend.optional_int("pipelined_connections", c.pipelined_connections, 0, 1000));
  c.pipeline_depth =
      static_cast<int>(backend.optional_int("pipeline_depth", c.pipeline_depth, 1, 10000));
  c.pipeline_stall_ms =
      static_cast<int>(backend.optional_int("pipeline_stall_ms", c.pipeline_stall_ms, 1, 60000));
  backend.finish();

  if (auto limits = s.optional_section("limits")) {
    c.max_clients =
        static_cast<int>(limits->optional_int("max_clients", c.max_clients, 1, 1000000));
    c.pool_wait_timeout_ms = static_cast<int>(
        limits->optional_int("pool_wait_timeout_ms", c.pool_wait_timeout_ms, 1, 600000));
    c.statement_timeout_ms = static_cast<int>(
        limits->optional_int("statement_timeout_ms", c.statement_timeout_ms, 0, 86400000));
    c.max_replica_lag_ms = static_cast<int>(
        limits->optional_int("max_replica_lag_ms", c.max_replica_lag_ms, 0, 86400000));
    c.pause_hold_ms =
        static_cast<int>(limits->optional_int("pause_hold_ms", c.pause_hold_ms, 0, 600000));
    limits->finish();
  }
  if (auto health = s.optional_section("health")) {
    c.health_interval_ms =
        static_cast<int>(health->optional_int("interval_ms", c.health_interval_ms, 10, 60000));
    health->finish();
  }
  if (auto cache = s.optional_section("cache")) {
    c.cache_max_bytes = cache->optional_int("max_bytes", c.cache_max_bytes, 0, int64_t{1} << 40);
    cache->finish();
  }

  auto auth = s.section("auth");
  std::string method =
      auth.optional_choice("method", "scram-sha-256", {"scram-sha-256", "md5", "trust"});
  c.auth_method = method == "md5"     ? AuthMethod::kMd5
                  : method == "trust" ? AuthMethod::kTrust
                                      : AuthMethod::kScramSha256;
  for (auto& [name, user] : auth.named_sections("users")) {
    ProxyUser u;
    u.name = name;
    u.password = user.required_string("password", "the user's password");
    user.finish();
    auto salt = pgwire::make_scram_salt();
    auto creds = salt ? pgwire::make_scram_credentials(u.password, *salt)
                      : Result<pgwire::ScramCredentials>(salt.error());
    if (!creds) auth.fail("users." + name + ".password", creds.error().message);
    u.scram = *creds;
    c.users.push_back(std::move(u));
  }
  if (c.users.empty()) auth.fail("users", "expected at least one user");
  auth.finish();
  c.read_only_functions = s.optional_string_list("read_only_functions");
  s.finish();
  root.finish();
  return c;
}

}  // namespace tally::shard_proxy
