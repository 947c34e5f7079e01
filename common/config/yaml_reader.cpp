#include "common/config/yaml_reader.h"

#include <fstream>
#include <sstream>

#include "common/core/host_port.h"

namespace tally {
namespace {

bool present(const YAML::Node& node) {
  return node.IsDefined() && !node.IsNull();
}

std::string describe(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  std::string text = node.Scalar();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return "\"" + text + "\"";
}

ConfigSection from_root(const YAML::Node& root, const std::string& name) {
  auto file = std::make_shared<const std::string>(name);
  if (!root.IsDefined() || root.IsNull()) {
    // An empty file is an empty mapping: every key takes its default.
    return ConfigSection(file, "", YAML::Node(YAML::NodeType::Map));
  }
  if (!root.IsMap()) {
    throw ConfigError("config error in " + name +
                      ": the top level must be a mapping of keys, got " + describe(root));
  }
  return ConfigSection(file, "", root);
}

}  // namespace

ConfigSection::ConfigSection(std::shared_ptr<const std::string> file, std::string path,
                             YAML::Node node)
    : file_(std::move(file)), path_(std::move(path)), node_(std::move(node)) {}

std::string ConfigSection::key_path(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

void ConfigSection::fail(const std::string& key, const std::string& problem) const {
  throw ConfigError("config error in " + *file_ + ": key '" + key_path(key) + "': " + problem);
}

void ConfigSection::fail_value(const std::string& key, const std::string& expected,
                               const YAML::Node& value) const {
  fail(key, "expected " + expected + ", got " + describe(value));
}

void ConfigSection::check_host_port(const std::string& key, const std::string& value) const {
  if (!parse_host_port(value).ok()) {
    fail(key, "expected " + std::string(kHostPortForm) + ", got \"" + value + "\"");
  }
}

bool ConfigSection::has(const std::string& key) const {
  const YAML::Node& node = node_;  // const lookup: never inserts the key
  return present(node[key]);
}

YAML::Node ConfigSection::child(const std::string& key, bool required,
                                const std::string& expected) {
  read_.insert(key);
  const YAML::Node& node = node_;
  YAML::Node value = node[key];
  if (!present(value) && required) fail(key, "missing; expected " + expected);
  return value;  // callers test present(): a missing key and an explicit null both mean "absent"
}

std::string ConfigSection::required_string(const std::string& key, const std::string& expected) {
  YAML::Node v = child(key, true, expected);
  if (!v.IsScalar()) fail_value(key, expected, v);
  return v.Scalar();
}

std::string ConfigSection::optional_string(const std::string& key, const std::string& fallback,
                                           const std::string& expected) {
  YAML::Node v = child(key, false, expected);
  if (!present(v)) return fallback;
  if (!v.IsScalar()) fail_value(key, expected, v);
  return v.Scalar();
}

std::string ConfigSection::optional_choice(const std::string& key, const std::string& fallback,
                                           const std::vector<std::string>& allowed) {
  std::string expected = "one of";
  for (size_t i = 0; i < allowed.size(); ++i) expected += (i ? ", " : " ") + allowed[i];
  YAML::Node v = child(key, false, expected);
  if (!present(v)) return fallback;
  if (!v.IsScalar()) fail_value(key, expected, v);
  for (const auto& a : allowed) {
    if (a == v.Scalar()) return a;
  }
  fail_value(key, expected, v);
}

namespace {
bool parse_int(const std::string& text, int64_t& out) {
  if (text.empty()) return false;
  size_t pos = 0;
  try {
    out = std::stoll(text, &pos, 10);
  } catch (const std::exception&) {
    return false;
  }
  return pos == text.size();
}
}  // namespace

int64_t ConfigSection::required_int(const std::string& key, int64_t min, int64_t max) {
  std::string expected = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  YAML::Node v = child(key, true, expected);
  int64_t out = 0;
  if (!v.IsScalar() || !parse_int(v.Scalar(), out) || out < min || out > max) {
    fail_value(key, expected, v);
  }
  return out;
}

int64_t ConfigSection::optional_int(const std::string& key, int64_t fallback, int64_t min,
                                    int64_t max) {
  if (!has(key)) {
    read_.insert(key);
    return fallback;
  }
  return required_int(key, min, max);
}

bool ConfigSection::optional_bool(const std::string& key, bool fallback) {
  YAML::Node v = child(key, false, "true or false");
  if (!present(v)) return fallback;
  if (v.IsScalar()) {
    if (v.Scalar() == "true") return true;
    if (v.Scalar() == "false") return false;
  }
  fail_value(key, "true or false", v);
}

std::vector<std::string> ConfigSection::optional_string_list(const std::string& key) {
  YAML::Node v = child(key, false, "a list of strings");
  std::vector<std::string> out;
  if (!present(v)) return out;
  if (!v.IsSequence()) fail_value(key, "a list of strings", v);
  for (const auto& item : v) {
    if (!item.IsScalar()) fail_value(key, "a list of strings", item);
    out.push_back(item.Scalar());
  }
  return out;
}

ConfigSection ConfigSection::section(const std::string& key) {
  YAML::Node v = child(key, true, "a mapping");
  if (!v.IsMap()) fail_value(key, "a mapping", v);
  return ConfigSection(file_, key_path(key), v);
}

std::optional<ConfigSection> ConfigSection::optional_section(const std::string& key) {
  YAML::Node v = child(key, false, "a mapping");
  if (!present(v)) return std::nullopt;
  if (!v.IsMap()) fail_value(key, "a mapping", v);
  return ConfigSection(file_, key_path(key), v);
}

std::vector<std::pair<std::string, ConfigSection>> ConfigSection::named_sections(
    const std::string& key) {
  YAML::Node v = child(key, false, "a mapping of names to mappings");
  std::vector<std::pair<std::string, ConfigSection>> out;
  if (!present(v)) return out;
  if (!v.IsMap()) fail_value(key, "a mapping of names to mappings", v);
  for (const auto& item : v) {
    std::string name = item.first.Scalar();
    if (!item.second.IsMap()) {
      fail_value(key + "." + name, "a mapping", item.second);
    }
    out.emplace_back(name, ConfigSection(file_, key_path(key) + "." + name, item.second));
  }
  return out;
}

void ConfigSection::finish() const {
  std::vector<std::string> unknown;
  for (const auto& item : node_) {
    std::string key = item.first.Scalar();
    if (!read_.count(key)) unknown.push_back(key);
  }
  if (unknown.empty()) return;
  std::string known;
  for (const auto& k : read_) known += (known.empty() ? "" : ", ") + k;
  fail(unknown.front(),
       "unknown key" + std::string(known.empty() ? "" : "; known keys here: ") + known);
}

ConfigSection load_config_text(const std::string& text, const std::string& name) {
  try {
    return from_root(YAML::Load(text), name);
  } catch (const YAML::ParserException& e) {
    throw ConfigError("config error in " + name + ": YAML syntax error at line " +
                      std::to_string(e.mark.line + 1) + ", column " +
                      std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
}

ConfigSection load_config_file(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) {
    throw ConfigError("config error: cannot read " + file.string() +
                      " (expected a readable YAML file)");
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return load_config_text(buffer.str(), file.string());
}

ZookeeperSettings read_zookeeper_section(ConfigSection& zk, int default_session_timeout_ms) {
  ZookeeperSettings z;
  z.hosts = zk.required_string("hosts", "a connect string like 127.0.0.1:2181");
  z.session_timeout_ms = static_cast<int>(
      zk.optional_int("session_timeout_ms", default_session_timeout_ms, 1000, 60000));
  zk.finish();
  return z;
}

}  // namespace tally
