#include "tallyctl/src/bootstrap.h"

#include <libpq-fe.h>

#include <memory>
#include <ostream>
#include <thread>

#include "common/core/clock.h"
#include "common/core/host_port.h"
#include "common/keyspace/shard_map.h"
#include "common/migrations/migration_runner.h"
#include "common/pgclient/conninfo.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"

namespace tally {
namespace {

using SteadyClock = std::chrono::steady_clock;

std::string leader_conninfo(const BootstrapOptions& o, const std::string& address) {
  const HostPortText leader = split_host_port(address);
  return build_conninfo({{"host", leader.host},
                         {"port", leader.port},
                         {"dbname", o.database},
                         {"user", o.admin_user},
                         {"password", o.admin_password},
                         {"connect_timeout", "5"}});
}

// Start-up path of a one-shot command: plain blocking libpq is fine here.
Status exec(const std::string& conninfo, const std::string& sql, const std::string& what) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(conninfo.c_str()), &PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return make_error(ErrorCode::kUnavailable,
                      what + ": cannot connect: " + PQerrorMessage(conn.get()));
  }
  std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(conn.get(), sql.c_str()), &PQclear);
  auto st = PQresultStatus(res.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    return make_error(ErrorCode::kInternal, what + ": " + PQresultErrorMessage(res.get()));
  }
  return ok_status();
}

}  // namespace

Result<std::vector<BootstrapShard>> parse_bootstrap_shards(const std::string& text) {
  std::vector<BootstrapShard> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    auto comma = text.find(',', pos);
    std::string entry =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? text.size() + 1 : comma + 1;
    auto fail = [&](const std::string& why) {
      return make_error(ErrorCode::kInvalidArgument,
                        "--shards entry '" + entry + "': " + why +
                            " (expected RANGE=LEADER_HOST:PORT[/REPLICA_HOST:PORT], entries "
                            "separated by commas, e.g. -80=pg-s0-leader:5432/pg-s0-replica:5432)");
    };
    auto eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) return fail("no RANGE= prefix");
    BootstrapShard s;
    s.range = entry.substr(0, eq);
    std::string nodes = entry.substr(eq + 1);
    auto slash = nodes.find('/');
    s.leader = nodes.substr(0, slash);
    if (slash != std::string::npos) s.replica = nodes.substr(slash + 1);
    if (!parse_host_port(s.leader)) return fail("leader '" + s.leader + "' is not host:port");
    if (slash != std::string::npos && !parse_host_port(s.replica)) {
      return fail("replica '" + s.replica + "' is not host:port");
    }
    out.push_back(std::move(s));
  }
  std::vector<std::string> names;
  for (const auto& s : out) names.push_back(s.range);
  if (auto map = ShardMap::from_names(names); !map) {
    return make_error(ErrorCode::kInvalidArgument,
                      "--shards: the ranges do not cover the keyspace: " + map.error().message);
  }
  return out;
}

Status bootstrap_cluster(const BootstrapOptions& o, std::ostream& progress) {
  if (o.admin_password.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "the admin password is empty (set TALLY_ADMIN_PASSWORD)");
  }
  auto files = load_migration_files(o.migrations_dir);
  if (!files) return files.error();
  const auto deadline = SteadyClock::now() + o.wait;

  // ZooKeeper may still be starting: retry until the deadline.
  ZkOptions zk_options;
  zk_options.hosts = o.zookeeper;
  zk_options.connect_timeout = std::chrono::seconds(5);
  auto zk = ZkClient::connect(zk_options);
  while (!zk && SteadyClock::now() < deadline) {
    progress << "  waiting for ZooKeeper " << o.zookeeper << ": " << zk.error().message << "\n";
    std::this_thread::sleep_for(std::chrono::seconds(1));
    zk = ZkClient::connect(zk_options);
  }
  if (!zk) return zk.error();

  // An existing topology wins: after a failover the leaders are not the ones given on the
  // command line, and the migrations must go to the nodes taking writes now.
  std::vector<BootstrapShard> shards = o.shards;
  auto exists = (*zk)->exists(topology_paths::kKeyspace);
  if (!exists) return exists.error();
  if (*exists) {
    auto topo = read_topology(**zk);
    if (!topo) return topo.error();
    shards.clear();
    for (const auto& s : topo->shards) {
      shards.push_back({s.range.name(), s.record.leader, s.record.replica});
    }
    progress << "  topology already in ZooKeeper (" << shards.size()
             << " shards): using its leaders\n";
  }

  std::vector<MigrationTarget> targets;
  for (const auto& s : shards) {
    const std::string info = leader_conninfo(o, s.leader);
    while (PQping(info.c_str()) != PQPING_OK && SteadyClock::now() < deadline) {
      progress << "  waiting for the leader of shard " << s.range << " (" << s.leader << ")\n";
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    targets.push_back({s.range, info});
  }
  auto outcomes = apply_migrations_to_all(targets, *files);
  if (!outcomes) return outcomes.error();
  for (const auto& out : *outcomes) {
    progress << "  shard " << out.shard << ": " << out.applied.size() << " applied, "
             << out.already_applied << " already applied\n";
  }
  if (!o.analyst_password.empty()) {
    // The migrations create the analyst role without a login (as in `tallyctl cluster up`).
    std::string pw;
    for (char c : o.analyst_password) {
      if (c == '\'') pw += '\'';
      pw += c;
    }
    for (const auto& t : targets) {
      auto st =
          exec(t.conninfo,
               "ALTER ROLE tally_analyst WITH LOGIN PASSWORD '" + pw +
                   "'; REVOKE ALL ON DATABASE " + o.database +
                   " FROM PUBLIC; GRANT CONNECT ON DATABASE " + o.database + " TO tally_analyst;",
               "shard " + t.shard + " analyst role");
      if (!st) return st;
    }
    progress << "  tally_analyst may log in on every shard\n";
  }

  if (!*exists) {
    KeyspaceRecord keyspace;
    keyspace.version = 1;
    std::vector<ShardRecord> records;
    for (const auto& s : shards) {
      keyspace.shards.push_back(s.range);
      ShardRecord r;
      r.leader = s.leader;
      r.replica = s.replica;
      r.state_since_ms = wall_clock_ms();
      records.push_back(std::move(r));
    }
    auto snap = bootstrap_topology(**zk, keyspace, records);
    if (!snap) return snap.error();
    progress << "  topology written to ZooKeeper " << topology_paths::kKeyspace << " ("
             << snap->shards.size() << " shards)\n";
  }
  return ok_status();
}

}  // namespace tally
