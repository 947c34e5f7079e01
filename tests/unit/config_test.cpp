// The YAML reader must stop start-up on every mistake with the file, the key and the expected form.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include "common/config/yaml_reader.h"
#include "tests/support/test_env.h"

namespace tally {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(ConfigTest, ReadsValuesAndDefaults) {
  auto root = load_config_text(
      "server:\n  port: 8080\n  name: proxy-1\n  tls: true\n  hosts: [a, b]\n", "svc.yaml");
  auto server = root.section("server");
  EXPECT_EQ(server.required_int("port", 1, 65535), 8080);
  EXPECT_EQ(server.required_string("name"), "proxy-1");
  EXPECT_TRUE(server.optional_bool("tls", false));
  EXPECT_EQ(server.optional_string_list("hosts"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(server.optional_int("threads", 4, 1, 64), 4);
  EXPECT_EQ(server.optional_choice("mode", "simple", {"simple", "extended"}), "simple");
  server.finish();
  root.finish();
}

TEST(ConfigTest, UnknownKeyNamesFileKeyAndKnownKeys) {
  auto root = load_config_text("server:\n  port: 1\n  prot: 2\n", "svc.yaml");
  auto server = root.section("server");
  server.required_int("port", 1, 65535);
  std::string msg = error_of([&] { server.finish(); });
  EXPECT_NE(msg.find("svc.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'server.prot'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown key"), std::string::npos) << msg;
  EXPECT_NE(msg.find("port"), std::string::npos) << msg;
}

// The shard proxy's and the cluster proxy's loaders each had a check_host_port; neither rejected
// port 0 or 99999, and only one limited the digits. Both now call this one.
TEST(ConfigTest, HostPortOutsideOneTo65535IsRejectedNamingFileKeyAndForm) {
  auto root = load_config_text("backend: {}\n", "proxy.yaml");
  auto backend = root.section("backend");
  for (const char* good : {"db:5432", "127.0.0.1:1", "pg-s0:65535"}) {
    EXPECT_EQ(error_of([&] { backend.check_host_port("leader", good); }), "<no error>") << good;
  }
  for (const char* bad : {"db:99999", "db:0", "db:123456", "db", ":5432", "db:54x2"}) {
    EXPECT_EQ(error_of([&] { backend.check_host_port("leader", bad); }),
              std::string("config error in proxy.yaml: key 'backend.leader': expected host:port "
                          "with a port from 1 to 65535, got \"") +
                  bad + "\"");
  }
}

TEST(ConfigTest, MissingRequiredKey) {
  auto root = load_config_text("server: {}\n", "svc.yaml");
  auto server = root.section("server");
  std::string msg = error_of([&] { server.required_int("port", 1, 65535); });
  EXPECT_EQ(msg,
            "config error in svc.yaml: key 'server.port': missing; expected an integer from 1 to "
            "65535");
}

TEST(ConfigTest, BadValuesNameTheValueAndExpectedForm) {
  auto root = load_config_text(
      "port: abc\nbig: 70000\nflag: yes-ish\nmode: turbo\nlist: 3\nsub: 5\n", "svc.yaml");
  EXPECT_EQ(
      error_of([&] { root.required_int("port", 1, 65535); }),
      "config error in svc.yaml: key 'port': expected an integer from 1 to 65535, got \"abc\"");
  EXPECT_NE(error_of([&] { root.required_int("big", 1, 65535); }).find("got \"70000\""),
            std::string::npos);
  EXPECT_NE(error_of([&] { root.optional_bool("flag", false); }).find("expected true or false"),
            std::string::npos);
  EXPECT_EQ(
      error_of([&] {
        root.optional_choice("mode", "a", {"simple", "extended"});
      }),
      "config error in svc.yaml: key 'mode': expected one of simple, extended, got \"turbo\"");
  EXPECT_NE(error_of([&] { root.optional_string_list("list"); }).find("a list of strings"),
            std::string::npos);
  EXPECT_NE(error_of([&] { root.section("sub"); }).find("expected a mapping, got \"5\""),
            std::string::npos);
}

TEST(ConfigTest, SyntaxErrorNamesLine) {
  std::string msg = error_of([] { load_config_text("a: 1\nb: [unclosed\n", "broken.yaml"); });
  EXPECT_NE(msg.find("broken.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line"), std::string::npos) << msg;
}

TEST(ConfigTest, TopLevelMustBeAMapping) {
  std::string msg = error_of([] { load_config_text("- a\n- b\n", "list.yaml"); });
  EXPECT_NE(msg.find("top level must be a mapping"), std::string::npos) << msg;
}

TEST(ConfigTest, MissingFileNamesIt) {
  std::string msg = error_of([] { load_config_file("/nonexistent/tally.yaml"); });
  EXPECT_NE(msg.find("/nonexistent/tally.yaml"), std::string::npos) << msg;
}

TEST(ConfigTest, NamedSectionsKeepTheirPath) {
  auto root = load_config_text("users:\n  admin: {password: x, role: rw}\n", "svc.yaml");
  auto users = root.named_sections("users");
  ASSERT_EQ(users.size(), 1u);
  EXPECT_EQ(users[0].first, "admin");
  users[0].second.required_string("password");
  std::string msg = error_of([&] { users[0].second.finish(); });
  EXPECT_NE(msg.find("'users.admin.role'"), std::string::npos) << msg;
}

TEST(ConfigTest, LoadsFromFile) {
  testing::TempDir dir;
  auto file = dir.path() / "c.yaml";
  std::ofstream(file) << "x: 3\n";
  auto root = load_config_file(file);
  EXPECT_EQ(root.required_int("x", 0, 10), 3);
}

}  // namespace
}  // namespace tally
