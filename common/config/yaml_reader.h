// Reading a service's YAML configuration so that every mistake stops start-up with an error naming
// the file, the key (as a dotted path) and the expected form. Unknown keys are errors, not
// warnings: a typo must never silently fall back to a default. Start-up only: errors are
// ConfigError exceptions.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace tally {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A mapping node of a config file. Read keys with required()/optional(), nested mappings with
// section(), then call finish() to reject keys nobody read.
class ConfigSection {
 public:
  ConfigSection(std::shared_ptr<const std::string> file, std::string path, YAML::Node node);

  std::string required_string(const std::string& key, const std::string& expected = "a string");
  std::string optional_string(const std::string& key, const std::string& fallback,
                              const std::string& expected = "a string");
  // One of `allowed`; the error lists them.
  std::string optional_choice(const std::string& key, const std::string& fallback,
                              const std::vector<std::string>& allowed);
  int64_t required_int(const std::string& key, int64_t min, int64_t max);
  int64_t optional_int(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  bool optional_bool(const std::string& key, bool fallback);
  std::vector<std::string> optional_string_list(const std::string& key);

  bool has(const std::string& key) const;
  ConfigSection section(const std::string& key);
  std::optional<ConfigSection> optional_section(const std::string& key);
  // A mapping whose keys are free-form names (e.g. users by name); values are sections.
  std::vector<std::pair<std::string, ConfigSection>> named_sections(const std::string& key);

  // Throws when the mapping has keys that were never read.
  void finish() const;

  // Fails naming the file, `key` and the expected form unless `value` (read from `key`) is
  // host:port as parse_host_port (common/core/host_port.h) accepts it.
  void check_host_port(const std::string& key, const std::string& value) const;

  // An error about `key` of this section, for cross-field checks done by the caller.
  [[noreturn]] void fail(const std::string& key, const std::string& problem) const;
  std::string key_path(const std::string& key) const;

 private:
  YAML::Node child(const std::string& key, bool required, const std::string& expected);
  [[noreturn]] void fail_value(const std::string& key, const std::string& expected,
                               const YAML::Node& value) const;

  std::shared_ptr<const std::string> file_;
  std::string path_;
  YAML::Node node_;
  std::set<std::string> read_;
};

// The `zookeeper: {hosts, session_timeout_ms}` section every service reads the same way; checks
// the section's keys (finish()).
struct ZookeeperSettings {
  std::string hosts;
  int session_timeout_ms = 0;
};
ZookeeperSettings read_zookeeper_section(ConfigSection& zk, int default_session_timeout_ms);

// Parses `file` and returns its top-level mapping. A missing file, a syntax error or a top level
// that is not a mapping throws ConfigError naming the file (and line for syntax errors).
ConfigSection load_config_file(const std::filesystem::path& file);
// Same, from text already in memory; `name` stands in for the file name in errors.
ConfigSection load_config_text(const std::string& text, const std::string& name);

}  // namespace tally
