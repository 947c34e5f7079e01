#include "config_service/src/config_service_config.h"

#include "common/config/yaml_reader.h"

namespace tally::config_service {
namespace {

ConfigServiceConfig from_root(ConfigSection root, const std::string& file) {
  ConfigServiceConfig c;
  c.file = file;
  auto s = root.section("config_service");
  c.id = s.required_string("id", "an instance id like cs1");

  auto zk = s.section("zookeeper");
  auto zk_settings = read_zookeeper_section(zk, c.zk_session_timeout_ms);
  c.zk_hosts = zk_settings.hosts;
  c.zk_session_timeout_ms = zk_settings.session_timeout_ms;

  auto http = s.section("http");
  c.listen_address = http.optional_string("listen_address", c.listen_address, "an IP address");
  c.http_port = static_cast<int>(http.required_int("port", 0, 65535));
  http.finish();

  auto pg = s.section("postgres");
  c.pg_user = pg.required_string("user", "the cluster's admin (superuser) name");
  c.pg_password = pg.required_string("password", "the admin user's password");
  c.pg_database = pg.optional_string("database", c.pg_database, "a database name");
  c.pg_connect_timeout_ms =
      static_cast<int>(pg.optional_int("connect_timeout_ms", c.pg_connect_timeout_ms, 100, 60000));
  pg.finish();

  if (auto health = s.optional_section("health")) {
    c.health_interval_ms =
        static_cast<int>(health->optional_int("interval_ms", c.health_interval_ms, 10, 60000));
    health->finish();
  }
  if (auto f = s.optional_section("failover")) {
    c.failover_after_ms =
        static_cast<int>(f->optional_int("failover_after_ms", c.failover_after_ms, 0, 600000));
    c.replica_unhealthy_after_ms = static_cast<int>(
        f->optional_int("replica_unhealthy_after_ms", c.replica_unhealthy_after_ms, 0, 600000));
    c.pause_max_ms = static_cast<int>(f->optional_int("pause_max_ms", c.pause_max_ms, 0, 3600000));
    c.promote_timeout_ms =
        static_cast<int>(f->optional_int("promote_timeout_ms", c.promote_timeout_ms, 1000, 600000));
    f->finish();
  }
  s.finish();
  root.finish();
  return c;
}

}  // namespace

ConfigServiceConfig load_config_service_config(const std::filesystem::path& file) {
  return from_root(load_config_file(file), file.string());
}

ConfigServiceConfig parse_config_service_config(const std::string& text, const std::string& name) {
  return from_root(load_config_text(text, name), name);
}

}  // namespace tally::config_service
