#include "tallyctl/src/commands.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <map>
#include <optional>
#include <ostream>

#include "common/cluster/cluster_manifest.h"
#include "common/core/clock.h"
#include "common/core/host_port.h"
#include "common/migrations/migration_runner.h"
#include "common/pgclient/conninfo.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"
#include "tallyctl/src/bootstrap.h"
#include "tallyctl/src/dead_letter_queue.h"
#include "tallyctl/src/local_cluster.h"
#include "tallyctl/src/shard_operations.h"
#include "tools/loadgen/src/loadgen_cli.h"

namespace tally {
namespace {

constexpr const char* kUsage =
    "usage:\n"
    "  tallyctl cluster up --dir DIR [--shards N] [--base-port P] [--config FILE] [--migrations "
    "DIR]\n"
    "  tallyctl cluster status --dir DIR\n"
    "  tallyctl cluster down --dir DIR\n"
    "  tallyctl topology show --dir DIR [--health-stale-ms MS]\n"
    "  tallyctl shard switchover RANGE --dir DIR [--drain-timeout-ms MS] [--config FILE]\n"
    "  tallyctl shard rejoin RANGE --dir DIR [--node HOST:PORT] [--config FILE]\n"
    "  tallyctl migrate --dir DIR [--migrations DIR]\n"
    "  tallyctl dlq list (--dir DIR | --dead-letter-dir DIR)\n"
    "  tallyctl dlq replay (--dir DIR | --dead-letter-dir DIR --cluster-proxy URL --token T)\n"
    "      [--file NAME]   (re-sends dead-lettered batches; see docs/operations.md)\n"
    "  tallyctl loadgen --dir DIR [--rate N] [--duration S] [--videos N] [--zipf S] ...\n"
    "      (tallyctl loadgen --help lists every option)\n"
    "  tallyctl bootstrap --zookeeper HOST:PORT --shards RANGE=LEADER[/REPLICA],... [--database "
    "DB]\n"
    "      [--admin-user USER] [--migrations DIR] [--wait-s S]   (passwords from the environment:\n"
    "      TALLY_ADMIN_PASSWORD, optional TALLY_ANALYST_PASSWORD)\n";

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;
};

std::optional<Args> parse(const std::vector<std::string>& raw, std::ostream& err) {
  Args a;
  for (size_t i = 0; i < raw.size(); ++i) {
    const std::string& s = raw[i];
    if (s.rfind("--", 0) == 0) {
      std::string key = s.substr(2);
      std::string value;
      auto eq = key.find('=');
      if (eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
      } else if (i + 1 < raw.size()) {
        value = raw[++i];
      } else {
        err << "tallyctl: --" << key << " needs a value\n" << kUsage;
        return std::nullopt;
      }
      a.flags[key] = value;
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

std::optional<int> int_flag(const Args& a, const std::string& key, std::ostream& err) {
  auto it = a.flags.find(key);
  if (it == a.flags.end()) return std::nullopt;
  try {
    size_t pos = 0;
    int v = std::stoi(it->second, &pos);
    if (pos == it->second.size()) return v;
  } catch (const std::exception&) {
  }
  err << "tallyctl: --" << key << " expects an integer, got '" << it->second << "'\n";
  return -1;
}

std::filesystem::path default_migrations_dir() {
  // Next to an installed binary first (/usr/local/bin/../share/tally/migrations), then the source
  // tree this binary was built from.
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto installed = exe.parent_path().parent_path() / "share" / "tally" / "migrations";
    if (std::filesystem::is_directory(installed)) return installed;
  }
  return TALLY_DEFAULT_MIGRATIONS_DIR;
}

int fail(std::ostream& err, const Error& e) {
  err << "tallyctl: " << e.message << "\n";
  return 1;
}

int cluster_up(const Args& a, std::ostream& out, std::ostream& err) {
  LocalClusterOptions o;
  if (a.flags.count("config")) {
    try {
      o = load_local_cluster_options(a.flags.at("config"));
    } catch (const ConfigError& e) {
      err << "tallyctl: " << e.what() << "\n";
      return 2;
    }
  }
  o.dir = std::filesystem::absolute(a.flags.at("dir"));
  if (auto n = int_flag(a, "shards", err)) {
    if (*n < 1 || *n > 16 || (*n & (*n - 1))) {
      err << "tallyctl: --shards expects a power of two from 1 to 16, got '" << a.flags.at("shards")
          << "'\n";
      return 2;
    }
    o.shards = *n;
  }
  if (auto p = int_flag(a, "base-port", err)) {
    if (*p < 1024 || *p > 65000) {
      err << "tallyctl: --base-port expects a port from 1024 to 65000, got '"
          << a.flags.at("base-port") << "'\n";
      return 2;
    }
    o.base_port = *p;
  }
  if (a.flags.count("migrations")) o.migrations_dir = a.flags.at("migrations");
  if (o.migrations_dir.empty()) o.migrations_dir = default_migrations_dir();

  auto m = LocalCluster::up(o, out);
  if (!m) return fail(err, m.error());
  out << "\nTally cluster running (" << m->shards.size()
      << " shards). Manifest: " << LocalCluster::manifest_path(o.dir).string() << "\n";
  out << "  ZooKeeper:  " << m->zookeeper << "\n";
  if (auto rest = m->endpoints.find("rest"); rest != m->endpoints.end() && rest->second) {
    out << "  REST API:   " << *rest->second << "  (cluster proxy; write token in "
        << LocalCluster::manifest_path(o.dir).string() << " users.rest)\n";
  }
  for (const auto& p : m->processes) {
    const char* label = p.role == "shard_proxy"  ? "proxy  "
                        : p.role == "pg_leader"  ? "leader "
                        : p.role == "pg_replica" ? "replica"
                                                 : nullptr;
    if (label == nullptr) continue;
    out << "  shard " << std::left << std::setw(6) << p.shard.value_or("") << " " << label
        << "  psql \"" << m->conninfo(p, "admin") << "\"";
    if (p.role == "shard_proxy")
      out << "  (metrics http://127.0.0.1:" << p.ports.at("http") << "/metrics)";
    out << "\n";
  }
  if (auto ingest = m->endpoints.find("ingest"); ingest != m->endpoints.end() && ingest->second) {
    out << "  ingest:     POST " << *ingest->second << "/v1/events  (processor)\n";
  }
  out << "  status:     tallyctl cluster status --dir " << o.dir.string() << "\n"
      << "  stop:       tallyctl cluster down --dir " << o.dir.string() << "\n";
  return 0;
}

int cluster_status(const Args& a, std::ostream& out, std::ostream& err) {
  auto health = LocalCluster::status(std::filesystem::absolute(a.flags.at("dir")));
  if (!health) return fail(err, health.error());
  bool all_ok = true;
  out << std::left << std::setw(22) << "NAME" << std::setw(16) << "ROLE" << std::setw(8) << "SHARD"
      << std::setw(9) << "PID" << std::setw(10) << "STATE"
      << "DETAIL\n";
  for (const auto& h : *health) {
    std::string state = !h.running ? "stopped" : (h.responding ? "healthy" : "unhealthy");
    all_ok = all_ok && h.running && h.responding;
    out << std::left << std::setw(22) << h.name << std::setw(16) << h.role << std::setw(8)
        << (h.shard.empty() ? "-" : h.shard) << std::setw(9) << h.pid << std::setw(10) << state
        << h.detail << "\n";
  }
  return all_ok ? 0 : 1;
}

int cluster_down(const Args& a, std::ostream& out, std::ostream& err) {
  auto st = LocalCluster::down(std::filesystem::absolute(a.flags.at("dir")), out);
  if (!st) return fail(err, st.error());
  out << "cluster stopped (data kept; `cluster up` with the same --dir starts it again)\n";
  return 0;
}

Result<std::unique_ptr<ZkClient>> zk_for(const ClusterManifest& m) {
  ZkOptions o;
  o.hosts = m.zookeeper;
  o.connect_timeout = std::chrono::seconds(5);
  return ZkClient::connect(o);
}

std::string age_text(int64_t ms) {
  if (ms < 0) return "in the future";
  if (ms < 10000) return std::to_string(ms) + " ms ago";
  if (ms < 600000) return std::to_string(ms / 1000) + " s ago";
  return std::to_string(ms / 60000) + " min ago";
}

std::string node_health_text(const NodeHealthReport& n) {
  if (n.ok) return n.in_recovery ? "ok (standby)" : "ok (primary)";
  return "DOWN" + (n.error.empty() ? std::string() : " (" + n.error + ")");
}

int topology_show(const Args& a, std::ostream& out, std::ostream& err) {
  auto m = read_manifest(LocalCluster::manifest_path(std::filesystem::absolute(a.flags.at("dir"))));
  if (!m) return fail(err, m.error());
  // The health node counts as unknown when config_service has not written it for this long
  // (contract 8: three rounds; its default round is 250 ms, with margin for a slow machine).
  int64_t stale_ms = 5000;
  if (auto v = int_flag(a, "health-stale-ms", err)) {
    if (*v < 1) {
      if (*v == 0) err << "tallyctl: --health-stale-ms expects a positive number of ms, got '0'\n";
      return 2;
    }
    stale_ms = *v;
  }
  auto zk = zk_for(*m);
  if (!zk) return fail(err, zk.error());
  auto topo = read_topology(**zk);
  if (!topo) return fail(err, topo.error());
  const int64_t now = wall_clock_ms();
  out << "keyspace version " << topo->keyspace.version << ", " << topo->shards.size()
      << " shards\n";
  for (const auto& s : topo->shards) {
    const ShardRecord& r = s.record;
    out << "\nshard " << s.range.name() << "  " << r.state;
    if (r.state_since_ms > 0) out << " (since " << age_text(now - r.state_since_ms) << ")";
    out << "\n";
    std::string fenced;
    for (const auto& f : r.fenced) fenced += (fenced.empty() ? "" : ", ") + f;
    out << "  leader   " << r.leader << "\n"
        << "  replica  " << (r.replica.empty() ? "none" : r.replica) << "\n"
        << "  sync     " << (r.sync ? "true (failover allowed)" : "false (no automatic failover)")
        << "\n"
        << "  fenced   " << (fenced.empty() ? "none" : fenced) << "\n";
    auto node = (*zk)->get(topology_paths::health(s.range.name()));
    if (!node) {
      out << "  health   unknown ("
          << (node.error().code == ErrorCode::kNotFound ? "no health record: is config_service "
                                                          "running?"
                                                        : node.error().message)
          << ")\n";
      continue;
    }
    auto h = decode_health(s.range.name(), node->data);
    if (!h) {
      out << "  health   unknown (" << h.error().message << ")\n";
      continue;
    }
    const int64_t age = now - h->at_ms;
    if (age > stale_ms) {
      out << "  health   unknown (last record " << age_text(age) << " by " << h->checked_by
          << ", older than " << stale_ms << " ms)\n";
      continue;
    }
    out << "  health   checked " << age_text(age) << " by " << h->checked_by << "\n"
        << "    leader_ok   " << node_health_text(h->leader) << "\n";
    if (!h->replica.address.empty()) {
      out << "    replica_ok  " << node_health_text(h->replica) << "\n"
          << "    streaming   " << (h->replica_streaming ? "yes" : "no")
          << (h->replica_sync ? ", synchronous" : "") << "\n"
          << "    lag         "
          << (h->replica_lag_ms < 0 ? std::string("unknown")
                                    : std::to_string(h->replica_lag_ms) + " ms")
          << ", "
          << (h->replica_lag_bytes < 0 ? std::string("unknown")
                                       : std::to_string(h->replica_lag_bytes) + " bytes")
          << "\n";
    }
    if (!h->fenced_running.empty()) {
      std::string running;
      for (const auto& f : h->fenced_running) running += (running.empty() ? "" : ", ") + f;
      out << "    fenced nodes found running as primaries: " << running << "\n";
    }
  }
  // Live processors: ephemeral nodes, gone when a processor stops (or its session expires).
  auto ids = (*zk)->children(topology_paths::kProcessors);
  if (!ids && ids.error().code != ErrorCode::kNotFound) return fail(err, ids.error());
  std::vector<std::string> processors = ids ? *ids : std::vector<std::string>{};
  std::sort(processors.begin(), processors.end());
  out << "\nprocessors  " << (processors.empty() ? "none registered" : "") << "\n";
  for (const auto& id : processors) {
    auto node = (*zk)->get(topology_paths::processor(id));
    if (!node) continue;  // gone between the two reads
    auto p = decode_processor(id, node->data);
    if (!p) {
      out << "  " << id << "  unreadable (" << p.error().message << ")\n";
      continue;
    }
    out << "  " << p->id << "  ingest " << p->ingest << ", partitions 0-" << p->partitions - 1
        << ", applies through "
        << (p->cluster_proxy.empty() ? std::string("nothing (no cluster proxy)") : p->cluster_proxy)
        << ", up since " << age_text(now - p->started_at_ms) << "\n";
  }
  return 0;
}

int dlq(const Args& a, std::ostream& out, std::ostream& err) {
  const bool replay = a.positional[1] == "replay";
  DlqTarget target;
  if (a.flags.count("dead-letter-dir")) {
    target.dir = a.flags.at("dead-letter-dir");
    if (a.flags.count("cluster-proxy")) target.cluster_proxy_url = a.flags.at("cluster-proxy");
    if (a.flags.count("token")) target.token = a.flags.at("token");
    if (replay && target.cluster_proxy_url.empty()) {
      err << "tallyctl: dlq replay --dead-letter-dir needs --cluster-proxy URL (and --token T)\n";
      return 2;
    }
  } else if (a.flags.count("dir")) {
    auto t = dlq_target_from_cluster(std::filesystem::absolute(a.flags.at("dir")));
    if (!t) return fail(err, t.error());
    target = *t;
    if (a.flags.count("cluster-proxy")) target.cluster_proxy_url = a.flags.at("cluster-proxy");
    if (a.flags.count("token")) target.token = a.flags.at("token");
  } else {
    err << "tallyctl: dlq needs --dir DIR or --dead-letter-dir DIR\n" << kUsage;
    return 2;
  }
  if (!replay) {
    auto n = dlq_list(target, out);
    if (!n) return fail(err, n.error());
    return 0;
  }
  DlqReplayOptions o;
  if (a.flags.count("file")) o.only_file = a.flags.at("file");
  auto summary = dlq_replay(target, o, out);
  if (!summary) return fail(err, summary.error());
  return summary->kept == 0 && summary->held == 0 ? 0 : 1;
}

// --config (optional) gives the PostgreSQL binaries and the servers' account, as for cluster up.
bool shard_operation_options(const Args& a, ShardOperationOptions& o, std::ostream& err) {
  LocalClusterOptions defaults;
  if (a.flags.count("config")) {
    try {
      defaults = load_local_cluster_options(a.flags.at("config"));
    } catch (const ConfigError& e) {
      err << "tallyctl: " << e.what() << "\n";
      return false;
    }
  }
  o.dir = std::filesystem::absolute(a.flags.at("dir"));
  o.range = a.positional.at(2);
  o.pg_bin_dir = defaults.pg_bin_dir;
  o.service_user = defaults.service_user;
  return true;
}

int shard_switchover(const Args& a, std::ostream& out, std::ostream& err) {
  SwitchoverOptions o;
  if (!shard_operation_options(a, o.shard, err)) return 2;
  if (auto v = int_flag(a, "drain-timeout-ms", err)) {
    if (*v < 0) {
      // int_flag said why when it was not a number; a negative one gets its own message.
      if (a.flags.at("drain-timeout-ms").find_first_not_of("-0123456789") == std::string::npos)
        err << "tallyctl: --drain-timeout-ms expects 0 or more ms, got '"
            << a.flags.at("drain-timeout-ms") << "'\n";
      return 2;
    }
    o.drain_timeout = std::chrono::milliseconds(*v);
  }
  out << "switchover of shard " << o.shard.range << "\n";
  auto r = switchover_shard(o, out);
  if (!r) return fail(err, r.error());
  out << "switchover done: leader " << r->new_leader << ", replica " << r->old_leader
      << "; write pause " << r->pause_ms << " ms\n";
  return 0;
}

int shard_rejoin(const Args& a, std::ostream& out, std::ostream& err) {
  RejoinOptions o;
  if (!shard_operation_options(a, o.shard, err)) return 2;
  if (a.flags.count("node")) o.node = a.flags.at("node");
  out << "rejoin in shard " << o.shard.range << "\n";
  auto r = rejoin_shard_node(o, out);
  if (!r) return fail(err, r.error());
  out << "rejoined " << r->node << " as the replica of shard " << o.shard.range << " (" << r->method
      << ")\n";
  return 0;
}

int migrate(const Args& a, std::ostream& out, std::ostream& err) {
  auto m = read_manifest(LocalCluster::manifest_path(std::filesystem::absolute(a.flags.at("dir"))));
  if (!m) return fail(err, m.error());
  auto files = load_migration_files(
      a.flags.count("migrations") ? a.flags.at("migrations") : default_migrations_dir().string());
  if (!files) return fail(err, files.error());
  // The leaders as ZooKeeper names them now: after a failover that is not what cluster.json says.
  auto zk = zk_for(*m);
  if (!zk) return fail(err, zk.error());
  auto topo = read_topology(**zk);
  if (!topo) return fail(err, topo.error());
  std::vector<MigrationTarget> targets;
  const auto& admin = m->users.at("admin");
  for (const auto& s : topo->shards) {
    const HostPortText leader = split_host_port(s.record.leader);
    targets.push_back({s.range.name(), build_conninfo({{"host", leader.host},
                                                       {"port", leader.port},
                                                       {"dbname", m->database},
                                                       {"user", admin.name},
                                                       {"password", admin.password},
                                                       {"connect_timeout", "5"}})});
  }
  auto outcomes = apply_migrations_to_all(targets, *files);
  if (!outcomes) return fail(err, outcomes.error());
  for (const auto& o : *outcomes) {
    out << "shard " << o.shard << ": " << o.applied.size() << " applied, " << o.already_applied
        << " already applied\n";
    for (const auto& name : o.applied) out << "  applied " << name << "\n";
  }
  return 0;
}

// Servers run by something else (docker compose): migrations on every leader, topology written
// once.
int bootstrap(const Args& a, std::ostream& out, std::ostream& err) {
  for (const char* required : {"zookeeper", "shards"}) {
    if (!a.flags.count(required)) {
      err << "tallyctl: bootstrap needs --" << required << "\n" << kUsage;
      return 2;
    }
  }
  BootstrapOptions o;
  o.zookeeper = a.flags.at("zookeeper");
  auto shards = parse_bootstrap_shards(a.flags.at("shards"));
  if (!shards) return fail(err, shards.error());
  o.shards = *shards;
  if (a.flags.count("database")) o.database = a.flags.at("database");
  if (a.flags.count("admin-user")) o.admin_user = a.flags.at("admin-user");
  o.migrations_dir =
      a.flags.count("migrations") ? a.flags.at("migrations") : default_migrations_dir().string();
  if (auto w = int_flag(a, "wait-s", err)) {
    if (*w < 0) {
      if (a.flags.at("wait-s").find_first_not_of("-0123456789") == std::string::npos)
        err << "tallyctl: --wait-s expects 0 or more seconds, got '" << a.flags.at("wait-s")
            << "'\n";
      return 2;
    }
    o.wait = std::chrono::seconds(*w);
  }
  // Passwords come from the environment, never the command line (ps shows that).
  if (const char* pw = std::getenv("TALLY_ADMIN_PASSWORD")) o.admin_password = pw;
  if (const char* pw = std::getenv("TALLY_ANALYST_PASSWORD")) o.analyst_password = pw;
  out << "bootstrap: " << o.shards.size() << " shards, ZooKeeper " << o.zookeeper << "\n";
  if (auto st = bootstrap_cluster(o, out); !st) return fail(err, st.error());
  out << "bootstrap done\n";
  return 0;
}

}  // namespace

int run_tallyctl(const std::vector<std::string>& raw, std::ostream& out, std::ostream& err) {
  // loadgen has flags without values (--no-audit): it parses its own options.
  if (!raw.empty() && raw[0] == "loadgen") {
    return run_loadgen_command(std::vector<std::string>(raw.begin() + 1, raw.end()),
                               "tallyctl loadgen", out, err);
  }
  auto args = parse(raw, err);
  if (!args) return 2;
  const auto& pos = args->positional;
  auto need_dir = [&]() {
    if (args->flags.count("dir")) return true;
    err << "tallyctl: --dir DIR is required\n" << kUsage;
    return false;
  };
  if (pos.size() == 2 && pos[0] == "cluster") {
    if (!need_dir()) return 2;
    if (pos[1] == "up") return cluster_up(*args, out, err);
    if (pos[1] == "status") return cluster_status(*args, out, err);
    if (pos[1] == "down") return cluster_down(*args, out, err);
  }
  if (pos.size() == 2 && pos[0] == "topology" && pos[1] == "show") {
    if (!need_dir()) return 2;
    return topology_show(*args, out, err);
  }
  if (pos.size() == 3 && pos[0] == "shard" && (pos[1] == "switchover" || pos[1] == "rejoin")) {
    if (!need_dir()) return 2;
    return pos[1] == "switchover" ? shard_switchover(*args, out, err)
                                  : shard_rejoin(*args, out, err);
  }
  if (pos.size() == 1 && pos[0] == "migrate") {
    if (!need_dir()) return 2;
    return migrate(*args, out, err);
  }
  if (pos.size() == 2 && pos[0] == "dlq" && (pos[1] == "list" || pos[1] == "replay")) {
    return dlq(*args, out, err);
  }
  if (pos.size() == 1 && pos[0] == "bootstrap") return bootstrap(*args, out, err);
  if (pos.size() == 1 && (pos[0] == "help" || pos[0] == "--help")) {
    out << kUsage;
    return 0;
  }
  err << "tallyctl: unknown command";
  for (const auto& p : pos) err << " " << p;
  err << "\n" << kUsage;
  return 2;
}

}  // namespace tally
