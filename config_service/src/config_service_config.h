// The config service's configuration: one YAML file (config/config-service.example.yaml documents
// every key), validated at start-up. Every mistake stops the process with a ConfigError naming the
// file, the key and the expected form. Read once; immutable afterwards and shared read-only.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace tally::config_service {

struct ConfigServiceConfig {
  std::string file;
  std::string id;  // unique per instance; shown in the election node and health records

  std::string zk_hosts;
  int zk_session_timeout_ms = 6000;

  std::string listen_address = "127.0.0.1";
  int http_port = 0;

  // The cluster's admin superuser: pg_promote(), ALTER SYSTEM and pg_terminate_backend need it.
  std::string pg_user;
  std::string pg_password;
  std::string pg_database = "tally";
  int pg_connect_timeout_ms = 2000;

  int health_interval_ms = 250;

  int failover_after_ms = 1000;           // leader unreachable this long: fail over (if licensed)
  int replica_unhealthy_after_ms = 1000;  // replica unhealthy this long: downgrade sync
  int pause_max_ms = 30000;               // a paused shard older than this may be failed over
  int promote_timeout_ms = 10000;         // pg_promote's wait
};

// Throws ConfigError on any problem.
ConfigServiceConfig load_config_service_config(const std::filesystem::path& file);
// The same from text (tests); `name` stands in for the file name in errors.
ConfigServiceConfig parse_config_service_config(const std::string& text, const std::string& name);

}  // namespace tally::config_service
