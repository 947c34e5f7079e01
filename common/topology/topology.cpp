#include "common/topology/topology.h"

#include <nlohmann/json.hpp>

namespace tally {

using nlohmann::json;

namespace topology_paths {
std::string shard(const std::string& range) {
  return std::string(kShards) + "/" + range;
}
std::string shard_proxies(const std::string& range) {
  return std::string(kRoot) + "/shard_proxies/" + range;
}
std::string health(const std::string& range) {
  return std::string(kRoot) + "/health/" + range;
}
std::string processor(const std::string& id) {
  return std::string(kProcessors) + "/" + id;
}
}  // namespace topology_paths

std::string encode_processor(const ProcessorRecord& record) {
  std::vector<int> partitions;
  for (int p = 0; p < record.partitions; ++p) partitions.push_back(p);
  return json{{"id", record.id},
              {"ingest", record.ingest},
              {"partitions", partitions},
              {"cluster_proxy", record.cluster_proxy},
              {"started_at_ms", record.started_at_ms}}
      .dump();
}

Result<ProcessorRecord> decode_processor(const std::string& id, const std::string& json_text) {
  json j = json::parse(json_text, nullptr, false);
  const std::string where = topology_paths::processor(id);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(ErrorCode::kInvalidArgument, where + ": expected a JSON object");
  }
  ProcessorRecord r;
  r.id = j.value("id", id);
  if (!j.contains("ingest") || !j["ingest"].is_string()) {
    return make_error(ErrorCode::kInvalidArgument, where + ": 'ingest' must be \"host:port\"");
  }
  r.ingest = j["ingest"].get<std::string>();
  if (!j.contains("partitions") || !j["partitions"].is_array()) {
    return make_error(ErrorCode::kInvalidArgument,
                      where + ": 'partitions' must be a list of partition numbers");
  }
  r.partitions = static_cast<int>(j["partitions"].size());
  if (j.contains("cluster_proxy") && j["cluster_proxy"].is_string())
    r.cluster_proxy = j["cluster_proxy"].get<std::string>();
  if (j.contains("started_at_ms") && j["started_at_ms"].is_number_integer())
    r.started_at_ms = j["started_at_ms"].get<int64_t>();
  return r;
}

std::string encode_keyspace(const KeyspaceRecord& record) {
  return json{{"version", record.version}, {"shards", record.shards}}.dump();
}

Result<KeyspaceRecord> decode_keyspace(const std::string& json_text) {
  json j = json::parse(json_text, nullptr, false);
  const std::string where = std::string(topology_paths::kKeyspace);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(ErrorCode::kInvalidArgument,
                      where + ": expected a JSON object, got '" + json_text.substr(0, 80) + "'");
  }
  if (!j.contains("version") || !j["version"].is_number_integer()) {
    return make_error(ErrorCode::kInvalidArgument, where + ": 'version' must be an integer");
  }
  if (!j.contains("shards") || !j["shards"].is_array()) {
    return make_error(ErrorCode::kInvalidArgument,
                      where + ": 'shards' must be a list of ranges like [\"-80\",\"80-\"]");
  }
  KeyspaceRecord r;
  r.version = j["version"].get<int64_t>();
  for (const auto& s : j["shards"]) {
    if (!s.is_string()) {
      return make_error(ErrorCode::kInvalidArgument, where + ": every shard must be a string");
    }
    r.shards.push_back(s.get<std::string>());
  }
  return r;
}

std::string encode_shard(const ShardRecord& record) {
  return json{{"leader", record.leader}, {"replica", record.replica},
              {"state", record.state},   {"sync", record.sync},
              {"fenced", record.fenced}, {"state_since_ms", record.state_since_ms}}
      .dump();
}

Result<ShardRecord> decode_shard(const std::string& range, const std::string& json_text) {
  json j = json::parse(json_text, nullptr, false);
  const std::string where = topology_paths::shard(range);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(ErrorCode::kInvalidArgument, where + ": expected a JSON object");
  }
  ShardRecord r;
  if (!j.contains("leader") || !j["leader"].is_string() || j["leader"].get<std::string>().empty()) {
    return make_error(ErrorCode::kInvalidArgument, where + ": 'leader' must be \"host:port\"");
  }
  r.leader = j["leader"].get<std::string>();
  if (j.contains("replica") && j["replica"].is_string())
    r.replica = j["replica"].get<std::string>();
  if (j.contains("state") && j["state"].is_string()) r.state = j["state"].get<std::string>();
  if (j.contains("sync") && j["sync"].is_boolean()) r.sync = j["sync"].get<bool>();
  if (j.contains("fenced") && j["fenced"].is_array()) {
    for (const auto& f : j["fenced"]) {
      if (!f.is_string()) {
        return make_error(ErrorCode::kInvalidArgument,
                          where + ": 'fenced' must be a list of \"host:port\" strings");
      }
      r.fenced.push_back(f.get<std::string>());
    }
  }
  if (j.contains("state_since_ms") && j["state_since_ms"].is_number_integer()) {
    r.state_since_ms = j["state_since_ms"].get<int64_t>();
  }
  return r;
}

namespace {
json node_report_json(const NodeHealthReport& n) {
  return json{
      {"address", n.address}, {"ok", n.ok}, {"in_recovery", n.in_recovery}, {"error", n.error}};
}
NodeHealthReport node_report_from(const json& j) {
  NodeHealthReport n;
  if (!j.is_object()) return n;
  n.address = j.value("address", "");
  n.ok = j.value("ok", false);
  n.in_recovery = j.value("in_recovery", false);
  n.error = j.value("error", "");
  return n;
}
}  // namespace

std::string encode_health(const HealthRecord& r) {
  // leader_ok / replica_ok / replica_lag_ms at the top level: the design brief's suggested layout.
  return json{{"leader_ok", r.leader.ok},
              {"replica_ok", r.replica.ok},
              {"replica_lag_ms", r.replica_lag_ms},
              {"replica_lag_bytes", r.replica_lag_bytes},
              {"replica_streaming", r.replica_streaming},
              {"replica_sync", r.replica_sync},
              {"leader", node_report_json(r.leader)},
              {"replica", node_report_json(r.replica)},
              {"fenced_running", r.fenced_running},
              {"at", r.at_ms},
              {"checked_by", r.checked_by}}
      .dump();
}

Result<HealthRecord> decode_health(const std::string& range, const std::string& json_text) {
  json j = json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(ErrorCode::kInvalidArgument,
                      topology_paths::health(range) + ": expected a JSON object");
  }
  HealthRecord r;
  try {
    if (j.contains("leader")) r.leader = node_report_from(j["leader"]);
    if (j.contains("replica")) r.replica = node_report_from(j["replica"]);
    r.leader.ok = j.value("leader_ok", r.leader.ok);
    r.replica.ok = j.value("replica_ok", r.replica.ok);
    r.replica_lag_ms = j.value("replica_lag_ms", int64_t{-1});
    r.replica_lag_bytes = j.value("replica_lag_bytes", int64_t{-1});
    r.replica_streaming = j.value("replica_streaming", false);
    r.replica_sync = j.value("replica_sync", false);
    if (j.contains("fenced_running") && j["fenced_running"].is_array()) {
      for (const auto& f : j["fenced_running"]) {
        if (f.is_string()) r.fenced_running.push_back(f.get<std::string>());
      }
    }
    r.at_ms = j.value("at", int64_t{0});
    r.checked_by = j.value("checked_by", "");
  } catch (const json::exception& e) {
    // value() throws on a type mismatch: a hand-edited or foreign node, never a crash.
    return make_error(ErrorCode::kInvalidArgument, topology_paths::health(range) + ": " + e.what());
  }
  return r;
}

Result<TopologySnapshot> read_topology(ZkClient& zk) {
  auto ks_node = zk.get(topology_paths::kKeyspace);
  if (!ks_node) return ks_node.error();
  auto keyspace = decode_keyspace(ks_node->data);
  if (!keyspace) return keyspace.error();
  auto map = ShardMap::from_names(keyspace->shards);
  if (!map) {
    return make_error(map.error().code,
                      std::string(topology_paths::kKeyspace) + ": " + map.error().message);
  }
  TopologySnapshot snap{*keyspace, *map, {}};
  for (const auto& range : map->ranges()) {
    std::string name = range.name();
    auto node = zk.get(topology_paths::shard(name));
    if (!node) return node.error();
    auto record = decode_shard(name, node->data);
    if (!record) return record.error();
    snap.shards.push_back({range, *record, node->version});
  }
  return snap;
}

Result<TopologySnapshot> bootstrap_topology(ZkClient& zk, const KeyspaceRecord& keyspace,
                                            const std::vector<ShardRecord>& shards) {
  auto map = ShardMap::from_names(keyspace.shards);
  if (!map) return map.error();
  if (shards.size() != map->size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "bootstrap_topology: " + std::to_string(shards.size()) +
                          " shard records for " + std::to_string(map->size()) + " ranges");
  }
  auto existing = zk.exists(topology_paths::kKeyspace);
  if (!existing) return existing.error();
  if (!*existing) {
    if (auto st = zk.ensure_path(topology_paths::kShards); !st) return st.error();
    // Shard nodes first, the keyspace node last: a reader that sees the keyspace finds its shards.
    for (size_t i = 0; i < shards.size(); ++i) {
      // Canonical names, so "-80" and "-8000" name the same node.
      auto range = ShardRange::parse(keyspace.shards[i]);
      std::string path = topology_paths::shard(range->name());
      auto created = zk.create(path, encode_shard(shards[i]));
      if (!created && created.error().code != ErrorCode::kAlreadyExists) return created.error();
      if (!created) {
        if (auto st = zk.set(path, encode_shard(shards[i]), -1); !st) return st.error();
      }
    }
    auto created = zk.create(topology_paths::kKeyspace, encode_keyspace(keyspace));
    if (!created && created.error().code != ErrorCode::kAlreadyExists) return created.error();
  }
  return read_topology(zk);
}

}  // namespace tally
