// config_service's YAML: defaults, every key read, and errors that name the file and key.
#include "config_service/src/config_service_config.h"

#include <gtest/gtest.h>

#include "common/config/yaml_reader.h"

namespace tally::config_service {
namespace {

constexpr const char* kMinimal =
    "config_service:\n"
    "  id: cs1\n"
    "  zookeeper: {hosts: \"127.0.0.1:2181\"}\n"
    "  http: {port: 8080}\n"
    "  postgres: {user: tally, password: secret}\n";

TEST(ConfigServiceConfigTest, DefaultsFromAMinimalFile) {
  auto c = parse_config_service_config(kMinimal, "cs.yaml");
  EXPECT_EQ(c.id, "cs1");
  EXPECT_EQ(c.zk_hosts, "127.0.0.1:2181");
  EXPECT_EQ(c.http_port, 8080);
  EXPECT_EQ(c.listen_address, "127.0.0.1");
  EXPECT_EQ(c.pg_database, "tally");
  EXPECT_EQ(c.health_interval_ms, 250);
  EXPECT_EQ(c.failover_after_ms, 1000);
  EXPECT_EQ(c.replica_unhealthy_after_ms, 1000);
  EXPECT_EQ(c.pause_max_ms, 30000);
  EXPECT_EQ(c.promote_timeout_ms, 10000);
}

TEST(ConfigServiceConfigTest, EveryKey) {
  auto c = parse_config_service_config(
      "config_service:\n"
      "  id: cs2\n"
      "  zookeeper: {hosts: \"127.0.0.1:2181\", session_timeout_ms: 4000}\n"
      "  http: {listen_address: 127.0.0.1, port: 0}\n"
      "  postgres: {user: u, password: p, database: d, connect_timeout_ms: 500}\n"
      "  health: {interval_ms: 100}\n"
      "  failover: {failover_after_ms: 2000, replica_unhealthy_after_ms: 3000, "
      "pause_max_ms: 4000, promote_timeout_ms: 5000}\n",
      "cs.yaml");
  EXPECT_EQ(c.zk_session_timeout_ms, 4000);
  EXPECT_EQ(c.pg_database, "d");
  EXPECT_EQ(c.pg_connect_timeout_ms, 500);
  EXPECT_EQ(c.health_interval_ms, 100);
  EXPECT_EQ(c.failover_after_ms, 2000);
  EXPECT_EQ(c.replica_unhealthy_after_ms, 3000);
  EXPECT_EQ(c.pause_max_ms, 4000);
  EXPECT_EQ(c.promote_timeout_ms, 5000);
}

TEST(ConfigServiceConfigTest, ErrorsNameTheKey) {
  try {
    parse_config_service_config(std::string(kMinimal) + "  health: {interval_ms: -5}\n", "cs.yaml");
    FAIL() << "accepted a negative interval";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("interval_ms"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cs.yaml"), std::string::npos) << e.what();
  }
  try {
    parse_config_service_config(std::string(kMinimal) + "  failover: {failover_afer_ms: 5}\n",
                                "cs.yaml");
    FAIL() << "accepted a misspelt key";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("failover_afer_ms"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_config_service_config("config_service: {id: x}\n", "cs.yaml"), ConfigError);
}

}  // namespace
}  // namespace tally::config_service
