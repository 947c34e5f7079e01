#include "common/cluster/cluster_manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/pgclient/conninfo.h"

namespace tally {

using nlohmann::json;

const ManifestProcess* ClusterManifest::find(const std::string& name) const {
  for (const auto& p : processes) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

ManifestProcess* ClusterManifest::find(const std::string& name) {
  for (auto& p : processes) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::vector<const ManifestProcess*> ClusterManifest::with_role(const std::string& role) const {
  std::vector<const ManifestProcess*> out;
  for (const auto& p : processes) {
    if (p.role == role) out.push_back(&p);
  }
  return out;
}

std::string ClusterManifest::conninfo(const ManifestProcess& pg, const std::string& user) const {
  auto port = pg.ports.find("pg");
  auto u = users.find(user);
  std::string out =
      build_conninfo({{"host", "127.0.0.1"},
                      {"port", std::to_string(port == pg.ports.end() ? 0 : port->second)},
                      {"dbname", database}});
  if (u != users.end()) {
    append_conninfo_param(out, "user", u->second.name);
    append_conninfo_param(out, "password", u->second.password);
  }
  return out;
}

std::string manifest_to_json(const ClusterManifest& m) {
  json j;
  j["database"] = m.database;
  j["users"] = json::object();
  for (const auto& [role, u] : m.users)
    j["users"][role] = {{"name", u.name}, {"password", u.password}};
  j["endpoints"] = json::object();
  for (const auto& [name, url] : m.endpoints) {
    j["endpoints"][name] = url ? json(*url) : json(nullptr);
  }
  j["zookeeper"] = m.zookeeper;
  j["base_port"] = m.base_port;
  j["shards"] = m.shards;
  j["processes"] = json::array();
  for (const auto& p : m.processes) {
    json ports = json::object();
    for (const auto& [k, v] : p.ports) ports[k] = v;
    j["processes"].push_back({{"name", p.name},
                              {"role", p.role},
                              {"shard", p.shard ? json(*p.shard) : json(nullptr)},
                              {"pid", p.pid},
                              {"ports", ports},
                              {"data_dir", p.data_dir},
                              {"log", p.log},
                              {"config", p.config}});
  }
  return j.dump(2) + "\n";
}

Result<ClusterManifest> manifest_from_json(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(ErrorCode::kInvalidArgument, "cluster.json is not a JSON object");
  }
  // The file is ours; a structural problem means it was edited or truncated. Name what is wrong.
  try {
    ClusterManifest m;
    m.database = j.at("database").get<std::string>();
    for (const auto& [role, u] : j.at("users").items()) {
      m.users[role] =
          ManifestUser{u.at("name").get<std::string>(), u.at("password").get<std::string>()};
    }
    for (const auto& [name, url] : j.at("endpoints").items()) {
      m.endpoints[name] =
          url.is_null() ? std::nullopt : std::optional<std::string>(url.get<std::string>());
    }
    m.zookeeper = j.value("zookeeper", "");
    m.base_port = j.value("base_port", 0);
    m.shards = j.value("shards", std::vector<std::string>{});
    for (const auto& p : j.at("processes")) {
      ManifestProcess mp;
      mp.name = p.at("name").get<std::string>();
      mp.role = p.at("role").get<std::string>();
      if (p.contains("shard") && !p["shard"].is_null()) mp.shard = p["shard"].get<std::string>();
      mp.pid = p.value("pid", 0);
      const json ports = p.value("ports", json::object());  // named: items() must not outlive it
      for (const auto& [k, v] : ports.items()) mp.ports[k] = v.get<int>();
      mp.data_dir = p.value("data_dir", "");
      mp.log = p.value("log", "");
      mp.config = p.value("config", "");
      m.processes.push_back(std::move(mp));
    }
    return m;
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kInvalidArgument, std::string("cluster.json: ") + e.what());
  }
}

Status write_manifest(const std::filesystem::path& file, const ClusterManifest& manifest) {
  std::string tmp = file.string() + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return make_error(ErrorCode::kInternal, "cannot write " + tmp);
  std::string text = manifest_to_json(manifest);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n <= 0) {
      close(fd);
      return make_error(ErrorCode::kInternal, "cannot write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  fsync(fd);
  close(fd);
  if (rename(tmp.c_str(), file.c_str()) != 0) {
    return make_error(ErrorCode::kInternal, "cannot rename " + tmp + " to " + file.string());
  }
  return ok_status();
}

Result<ClusterManifest> read_manifest(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return make_error(ErrorCode::kNotFound, "no cluster manifest at " + file.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto m = manifest_from_json(buffer.str());
  if (!m) return make_error(m.error().code, file.string() + ": " + m.error().message);
  return m;
}

}  // namespace tally
