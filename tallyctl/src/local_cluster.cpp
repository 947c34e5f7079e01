#include "tallyctl/src/local_cluster.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <ostream>
#include <random>
#include <set>
#include <thread>

#include "common/core/clock.h"
#include "common/keyspace/shard_map.h"
#include "common/migrations/migration_runner.h"
#include "common/process/child_process.h"
#include "common/process/system_user.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"
#include "tallyctl/src/http_probe.h"
#include "tallyctl/src/postgres_node.h"
#include "tallyctl/src/zookeeper_node.h"

namespace tally {

// The services' YAML as `tallyctl cluster up` writes it (declared in local_cluster.h).
std::string shard_proxy_config_text(const ManifestProcess& p, const ShardRecord& record,
                                    const ClusterManifest& m) {
  return "# Written by tallyctl cluster up for this cluster.\n"
         "shard_proxy:\n"
         "  id: " +
         p.name +
         "\n"
         "  shard: \"" +
         *p.shard +
         "\"\n"
         "  listen: {address: 127.0.0.1, pg_port: " +
         std::to_string(p.ports.at("pg")) + ", http_port: " + std::to_string(p.ports.at("http")) +
         "}\n"
         "  worker_threads: 2\n"
         "  zookeeper: {hosts: \"" +
         m.zookeeper +
         "\", session_timeout_ms: 10000}\n"
         "  backend:\n"
         "    database: " +
         m.database +
         "\n"
         "    leader: \"" +
         record.leader +
         "\"\n"
         "    replica: \"" +
         record.replica +
         "\"\n"
         "    pool_size: 20\n"
         "  limits: {max_clients: 1000, pool_wait_timeout_ms: 5000, statement_timeout_ms: 120000, "
         "max_replica_lag_ms: 1000}\n"
         "  cache: {max_bytes: 67108864}\n"
         "  auth:\n"
         "    method: scram-sha-256\n"
         "    users:\n"
         "      " +
         m.users.at("admin").name + ": {password: \"" + m.users.at("admin").password +
         "\"}\n"
         "      " +
         m.users.at("analyst").name + ": {password: \"" + m.users.at("analyst").password + "\"}\n";
}

std::string config_service_config_text(const ManifestProcess& p, const ClusterManifest& m) {
  const auto& admin = m.users.at("admin");
  return "# Written by tallyctl cluster up for this cluster.\n"
         "config_service:\n"
         "  id: " +
         p.name +
         "\n"
         "  zookeeper: {hosts: \"" +
         m.zookeeper +
         "\", session_timeout_ms: 4000}\n"
         "  http: {listen_address: 127.0.0.1, port: " +
         std::to_string(p.ports.at("http")) +
         "}\n"
         "  postgres: {user: \"" +
         admin.name + "\", password: \"" + admin.password + "\", database: " + m.database +
         ", connect_timeout_ms: 2000}\n"
         "  health: {interval_ms: 250}\n"
         "  failover: {failover_after_ms: 1000, replica_unhealthy_after_ms: 1000, "
         "pause_max_ms: 30000, promote_timeout_ms: 10000}\n";
}

std::string cluster_proxy_config_text(const ManifestProcess& p, const ClusterManifest& m) {
  std::string shards;
  for (const auto* sp : m.with_role("shard_proxy")) {
    shards += "    \"" + sp->shard.value_or("-") +
              "\": {proxies: [\"127.0.0.1:" + std::to_string(sp->ports.at("pg")) + "\"]}\n";
  }
  return "# Written by tallyctl cluster up for this cluster.\n"
         "cluster_proxy:\n"
         "  id: cluster-proxy\n"
         "  listen: {address: 127.0.0.1, http_port: " +
         std::to_string(p.ports.at("http")) +
         "}\n"
         "  io_threads: 2\n"
         "  zookeeper: {hosts: \"" +
         m.zookeeper +
         "\", session_timeout_ms: 10000}\n"
         "  shards:\n" +
         shards +
         "  backend:\n"
         "    database: " +
         m.database + "\n    user: " + m.users.at("admin").name + "\n    password: \"" +
         m.users.at("admin").password +
         "\"\n"
         "    pool_size: 8\n"
         "  limits: {shard_timeout_ms: 2000, write_timeout_ms: 120000, request_timeout_ms: "
         "125000}\n"
         "  cache: {stats_ttl_ms: 500}\n"
         "  auth:\n"
         "    write_tokens: [\"" +
         m.users.at("rest").password +
         "\"]\n"
         "  analyst: {pg_port: " +
         std::to_string(p.ports.at("pg")) + ", user: " + m.users.at("analyst").name +
         ", password: \"" + m.users.at("analyst").password + "\"}\n";
}

std::string processor_config_text(const ManifestProcess& p, const ClusterManifest& m) {
  std::string text =
      "# Written by tallyctl cluster up for this cluster.\n"
      "processor:\n"
      "  id: p1\n"
      "  data_dir: \"" +
      p.data_dir +
      "\"\n"
      "  partitions: 4\n"
      "  http: {address: 127.0.0.1, port: " +
      std::to_string(p.ports.at("http")) +
      ", threads: 2}\n"
      "  flush: {interval_ms: 1000}\n"
      "  zookeeper: {hosts: \"" +
      m.zookeeper + "\", session_timeout_ms: 10000}\n";
  auto rest = m.endpoints.find("rest");
  if (rest != m.endpoints.end() && rest->second && m.users.count("rest")) {
    text += "  cluster_proxy: {url: \"" + *rest->second + "\", token: \"" +
            m.users.at("rest").password + "\"}\n";
  }
  return text;
}

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr const char* kAdminUser = "tally";
constexpr const char* kAnalystUser = "tally_analyst";
constexpr const char* kReplicationUser = "tally_replicator";

std::string random_password() {
  std::random_device rd;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 24; ++i) out += kHex[rd() % 16];
  return out;
}

double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

std::string format_seconds(double s) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.1f s", s);
  return buf;
}

// The substring of a process's command line that proves a PID is still ours.
std::string process_needle(const ManifestProcess& p) {
  if (p.role == "pg_leader" || p.role == "pg_replica") return p.data_dir;
  return p.config;
}

PostgresCredentials credentials_of(const ClusterManifest& m) {
  PostgresCredentials c;
  c.superuser = m.users.at("admin").name;
  c.superuser_password = m.users.at("admin").password;
  c.replication_user = m.users.at("replication").name;
  c.replication_password = m.users.at("replication").password;
  return c;
}

// Runs SQL as the superuser on one node; the start-up path, so plain libpq is enough.
Status exec_sql(const std::string& conninfo, const std::string& sql, const std::string& what) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(conninfo.c_str()), &PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return make_error(ErrorCode::kUnavailable,
                      what + ": cannot connect: " + PQerrorMessage(conn.get()));
  }
  std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(conn.get(), sql.c_str()), &PQclear);
  auto status = PQresultStatus(res.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return make_error(ErrorCode::kInternal, what + ": " + PQresultErrorMessage(res.get()));
  }
  return ok_status();
}

Result<std::string> query_value(const std::string& conninfo, const std::string& sql) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(conninfo.c_str()), &PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return make_error(ErrorCode::kUnavailable, PQerrorMessage(conn.get()));
  }
  std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(conn.get(), sql.c_str()), &PQclear);
  if (PQresultStatus(res.get()) != PGRES_TUPLES_OK || PQntuples(res.get()) < 1) {
    return make_error(ErrorCode::kInternal, PQresultErrorMessage(res.get()));
  }
  return std::string(PQgetvalue(res.get(), 0, 0));
}

Result<std::optional<SystemUser>> service_account(const std::string& name) {
  if (!running_as_root()) return std::optional<SystemUser>{};
  auto user = ensure_system_user(name);
  if (!user) return user.error();
  return std::optional<SystemUser>(*user);
}

// The servers' account must be able to reach DIR: a root user's cluster under /root would not be.
Status check_reachable(const std::filesystem::path& dir, const std::optional<SystemUser>& user) {
  if (!user) return ok_status();
  SpawnOptions probe;
  probe.argv = {"test", "-x", dir.string()};
  probe.run_as = user;
  auto rc = run_command(probe, std::chrono::seconds(10));
  if (!rc) return rc.error();
  if (*rc != 0) {
    return make_error(
        ErrorCode::kPermissionDenied,
        "the service account '" + user->name + "' cannot enter " + dir.string() +
            " (PostgreSQL refuses to run as root, so it runs as that account); choose "
            "a directory every user can traverse, e.g. under /var/lib or /tmp");
  }
  return ok_status();
}

class Launcher {
 public:
  Launcher(ClusterManifest& manifest, std::filesystem::path dir, std::optional<SystemUser> run_as,
           LocalClusterOptions options, std::ostream& progress)
      : manifest_(manifest),
        dir_(std::move(dir)),
        run_as_(std::move(run_as)),
        options_(std::move(options)),
        progress_(progress) {}

  Status save() { return write_manifest(LocalCluster::manifest_path(dir_), manifest_); }

  ZooKeeperNode zookeeper_node(const ManifestProcess& p) const {
    return ZooKeeperNode({std::filesystem::path(p.config).parent_path(), p.ports.at("zk"),
                          options_.zookeeper_tick_ms, run_as_});
  }

  PostgresNode postgres_node(const ManifestProcess& p) const {
    PostgresNodeOptions o;
    o.data_dir = p.data_dir;
    o.log_file = p.log;
    o.port = p.ports.at("pg");
    o.bin_dir = options_.pg_bin_dir;
    o.run_as = run_as_;
    o.shared_buffers = options_.pg_shared_buffers;
    o.max_connections = options_.pg_max_connections;
    return PostgresNode(o);
  }

  // Starts one recorded process that is not running; records its PID.
  Status start(ManifestProcess& p) {
    auto t0 = SteadyClock::now();
    Result<pid_t> pid = make_error(ErrorCode::kInternal, "unknown role " + p.role);
    if (p.role == "zookeeper") {
      auto node = zookeeper_node(p);
      pid = node.start();
    } else if (p.role == "pg_leader" || p.role == "pg_replica") {
      auto node = postgres_node(p);
      pid = node.start(credentials_of(manifest_));
    } else if (p.role == "shard_proxy") {
      pid = start_service(p, "shard_proxy");
    } else if (p.role == "config_service") {
      pid = start_service(p, "config_service");
    } else if (p.role == "cluster_proxy") {
      pid = start_service(p, "cluster_proxy");
    } else if (p.role == "processor") {
      pid = start_service(p, "processor");
    }
    if (!pid) {
      return make_error(pid.error().code, "starting " + p.name + " failed (log: " + p.log + "):\n" +
                                              pid.error().message);
    }
    p.pid = *pid;
    progress_ << "  started " << p.name << " (pid " << p.pid << ", " << ports_text(p) << ") in "
              << format_seconds(seconds_since(t0)) << "\n";
    return save();
  }

  // A Tally service: `<bin_dir>/<binary> --config <p.config>`, ready when its HTTP /healthz
  // answers 200.
  Result<pid_t> start_service(const ManifestProcess& p, const std::string& binary) const {
    SpawnOptions spawn;
    spawn.argv = {(options_.bin_dir / binary).string(), "--config", p.config};
    spawn.log_file = p.log;
    spawn.run_as = run_as_;
    auto pid = spawn_daemon(spawn);
    if (!pid) return pid.error();
    auto deadline = SteadyClock::now() + std::chrono::seconds(30);
    while (SteadyClock::now() < deadline) {
      if (http_get_status(p.ports.at("http"), "/healthz") == 200) return *pid;
      if (!process_alive(*pid)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    bool alive = process_alive(*pid);
    if (alive) (void)stop_process(*pid, p.config, SIGTERM, std::chrono::seconds(5));
    return make_error(ErrorCode::kUnavailable,
                      p.name +
                          (alive ? " did not answer /healthz in time" : " exited during start-up") +
                          "; log " + p.log + ":\n" + tail_file(p.log));
  }

  static std::string ports_text(const ManifestProcess& p) {
    std::string out;
    for (const auto& [k, v] : p.ports)
      out += (out.empty() ? "" : ", ") + k + " " + std::to_string(v);
    return out;
  }

 private:
  ClusterManifest& manifest_;
  std::filesystem::path dir_;
  std::optional<SystemUser> run_as_;
  LocalClusterOptions options_;
  std::ostream& progress_;
};

Status chown_path(const std::filesystem::path& p, const std::optional<SystemUser>& user) {
  if (user && chown(p.c_str(), user->uid, user->gid) != 0) {
    return make_error(ErrorCode::kInternal, "cannot chown " + p.string() + " to " + user->name);
  }
  return ok_status();
}

ManifestProcess pg_process(const std::filesystem::path& dir, int index, const std::string& range,
                           bool leader, int port) {
  std::string node = leader ? "leader" : "replica";
  auto shard_dir = dir / "shards" / ("shard" + std::to_string(index));
  ManifestProcess p;
  p.name = "pg-shard" + std::to_string(index) + "-" + node;
  p.role = leader ? "pg_leader" : "pg_replica";
  p.shard = range;
  p.ports["pg"] = port;
  p.data_dir = (shard_dir / node).string();
  p.log = (shard_dir / (node + ".log")).string();
  p.config = (shard_dir / node / "tally.conf").string();
  return p;
}

// Writes a generated service config: mode 0600 from creation on (it holds this cluster's
// passwords and tokens) and owned by the service account when there is one.
Status write_private_file(const std::string& path, const std::string& text,
                          const std::optional<SystemUser>& run_as) {
  struct OwnedFd {
    int fd;
    ~OwnedFd() {
      if (fd >= 0) close(fd);
    }
  } file{open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
  if (file.fd < 0) return make_error(ErrorCode::kInternal, "cannot write " + path);
  bool ok = write(file.fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (run_as && fchown(file.fd, run_as->uid, run_as->gid) != 0) ok = false;
  if (!ok) return make_error(ErrorCode::kInternal, "cannot write " + path);
  return ok_status();
}

// The shard proxy's YAML (config/shard-proxy.example.yaml documents every key). Generated per
// cluster: it holds this cluster's passwords, so it is readable by the service account only.
Status write_shard_proxy_config(const ManifestProcess& p, const ShardRecord& record,
                                const ClusterManifest& m, const std::optional<SystemUser>& run_as) {
  const std::string text = shard_proxy_config_text(p, record, m);
  return write_private_file(p.config, text, run_as);
}

// config_service (contract 8): two instances, cs1 and cs2, one leads. Their YAML
// (config/config-service.example.yaml documents every key) holds the admin password, so it is
// readable by the service account only.
Status write_config_service_config(const ManifestProcess& p, const ClusterManifest& m,
                                   const std::optional<SystemUser>& run_as) {
  const std::string text = config_service_config_text(p, m);
  return write_private_file(p.config, text, run_as);
}

// Adds and starts cs1 and cs2 (after the shard proxies: they manage what the proxies serve).
Status start_config_services(ClusterManifest& m, Launcher& launcher,
                             const LocalClusterOptions& options,
                             const std::optional<SystemUser>& run_as) {
  PortLayout ports = port_layout(options.base_port);
  auto dir = options.dir / "config_service";
  std::filesystem::create_directories(dir);
  if (auto st = chown_path(dir, run_as); !st) return st;
  for (int i = 0; i < 2; ++i) {
    ManifestProcess p;
    p.name = "cs" + std::to_string(i + 1);
    p.role = "config_service";
    p.ports["http"] = ports.config_service_http(i);
    p.config = (dir / (p.name + ".yaml")).string();
    p.log = (dir / (p.name + ".log")).string();
    if (auto st = write_config_service_config(p, m, run_as); !st) return st;
    m.processes.push_back(p);
    if (auto st = launcher.start(m.processes.back()); !st) return st;
  }
  return ok_status();
}

// Waits (bounded) until every shard with a replica has sync: true in ZooKeeper, i.e. the leading
// config_service confirmed synchronous replication. Not confirmed in time is a warning only.
void wait_for_sync(const ClusterManifest& m, std::ostream& progress,
                   std::chrono::seconds limit = std::chrono::seconds(20)) {
  if (m.with_role("config_service").empty()) return;
  ZkOptions zk_options;
  zk_options.hosts = m.zookeeper;
  zk_options.connect_timeout = std::chrono::seconds(5);
  auto zk = ZkClient::connect(zk_options);
  if (!zk) {
    progress << "  warning: cannot check synchronous replication: " << zk.error().message << "\n";
    return;
  }
  auto t0 = SteadyClock::now();
  std::vector<std::string> pending;
  while (true) {
    pending.clear();
    auto snap = read_topology(**zk);
    if (!snap) {
      pending.push_back(snap.error().message);
    } else {
      for (const auto& s : snap->shards) {
        if (!s.record.replica.empty() && !s.record.sync) pending.push_back(s.range.name());
      }
    }
    if (pending.empty() || SteadyClock::now() - t0 > limit) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (pending.empty()) {
    progress << "  synchronous replication confirmed on every shard with a replica ("
             << format_seconds(seconds_since(t0)) << ")\n";
    return;
  }
  std::string names;
  for (const auto& n : pending) names += (names.empty() ? "" : ", ") + n;
  progress << "  warning: synchronous replication not confirmed after "
           << format_seconds(seconds_since(t0)) << " for: " << names
           << " (no automatic failover for those shards until it is; see the config_service "
              "logs)\n";
}

// The cluster proxy (REST API, config/cluster-proxy.example.yaml documents every key): after the
// shard proxies, which it reaches through ZooKeeper's registrations (their addresses are also in
// its config as the fallback). Its bearer token for writes is recorded in cluster.json as
// users.rest.password, and its URL as endpoints.rest. The config holds secrets: mode 0600.
Status add_cluster_proxy(ClusterManifest& m, Launcher& launcher, const LocalClusterOptions& options,
                         const std::optional<SystemUser>& run_as) {
  const PortLayout ports = port_layout(options.base_port);
  const auto dir = options.dir / "cluster_proxy";
  std::filesystem::create_directories(dir);
  if (auto st = chown_path(dir, run_as); !st) return st;
  m.users["rest"] = {"bearer", random_password()};
  ManifestProcess p;
  p.name = "cluster-proxy";
  p.role = "cluster_proxy";
  p.ports["http"] = ports.cluster_proxy_http();
  p.ports["pg"] = ports.cluster_proxy_pg();  // analyst SQL
  p.config = (dir / "cluster_proxy.yaml").string();
  p.log = (dir / "cluster_proxy.log").string();
  const std::string text = cluster_proxy_config_text(p, m);
  if (auto st = write_private_file(p.config, text, run_as); !st) return st;
  m.endpoints["rest"] = "http://127.0.0.1:" + std::to_string(p.ports.at("http"));
  // Analyst SQL (issue 7): a libpq conninfo as the analyst user, like conninfo() for PostgreSQL.
  m.endpoints["analyst_pg"] = m.conninfo(p, "analyst");
  m.processes.push_back(p);
  return launcher.start(m.processes.back());
}

// The processor (ingest API, config/processor.example.yaml documents every key), started last.
// It applies its counters through the cluster proxy when cluster.json lists one (endpoints.rest,
// with the write token in users.rest.password); otherwise accepted events stay in its log until a
// cluster proxy is configured. Its URL is recorded as endpoints.ingest. The config may hold the
// token: mode 0600.
Status add_processor(ClusterManifest& m, Launcher& launcher, const LocalClusterOptions& options,
                     const std::optional<SystemUser>& run_as) {
  const PortLayout ports = port_layout(options.base_port);
  const auto dir = options.dir / "processor";
  std::filesystem::create_directories(dir / "data");
  if (auto st = chown_path(dir, run_as); !st) return st;
  if (auto st = chown_path(dir / "data", run_as); !st) return st;
  ManifestProcess p;
  p.name = "processor";
  p.role = "processor";
  p.ports["http"] = ports.processor_http();
  p.data_dir = (dir / "data").string();
  p.config = (dir / "processor.yaml").string();
  p.log = (dir / "processor.log").string();
  const std::string text = processor_config_text(p, m);
  if (auto st = write_private_file(p.config, text, run_as); !st) return st;
  m.endpoints["ingest"] = "http://127.0.0.1:" + std::to_string(p.ports.at("http"));
  m.processes.push_back(p);
  return launcher.start(m.processes.back());
}

namespace {
// Outgoing connections take local ports from the kernel's ephemeral range; a service port inside it
// can be taken by one of them between two starts ("Address already in use" at random). Said once,
// at creation, because the operator chose the base port.
void warn_if_ports_are_ephemeral(const PortLayout& ports, int shards, std::ostream& progress) {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int first = 0;
  int last = 0;
  if (!(in >> first >> last)) return;
  const int highest = ports.shard_proxy_http(shards - 1);
  if (highest >= first && ports.base <= last) {
    progress
        << "  warning: ports " << ports.base << ".." << highest
        << " overlap the kernel's ephemeral range " << first << ".." << last
        << "; a restart may find a port taken by an outgoing connection (pick --base-port below "
        << first << ")\n";
  }
}
}  // namespace

// Creates a new cluster. Processes are recorded in the manifest as soon as they start, so a
// failure part-way is cleaned up by stopping exactly what the manifest lists.
Result<ClusterManifest> create_cluster(const LocalClusterOptions& options,
                                       const std::optional<SystemUser>& run_as,
                                       std::ostream& progress) {
  auto map = ShardMap::uniform(options.shards);
  if (!map) return map.error();
  auto migrations = load_migration_files(options.migrations_dir);
  if (!migrations) return migrations.error();
  PortLayout ports = port_layout(options.base_port);
  warn_if_ports_are_ephemeral(ports, options.shards, progress);

  ClusterManifest m;
  m.database = "tally";
  m.users["admin"] = {kAdminUser, random_password()};
  m.users["analyst"] = {kAnalystUser, random_password()};
  m.users["replication"] = {kReplicationUser, random_password()};
  m.zookeeper = "127.0.0.1:" + std::to_string(ports.zookeeper);
  m.base_port = options.base_port;
  // Services not built yet are listed as null so clients can tell "absent" from "misconfigured".
  m.endpoints["rest"] = std::nullopt;
  m.endpoints["ingest"] = std::nullopt;
  m.endpoints["analyst_pg"] = std::nullopt;
  m.endpoints["zookeeper"] = m.zookeeper;
  for (const auto& r : map->ranges()) m.shards.push_back(r.name());

  Launcher launcher(m, options.dir, run_as, options, progress);
  if (auto st = launcher.save(); !st) return st.error();

  // ZooKeeper.
  {
    ManifestProcess zk;
    zk.name = "zookeeper";
    zk.role = "zookeeper";
    zk.ports["zk"] = ports.zookeeper;
    zk.data_dir = (options.dir / "zookeeper" / "data").string();
    zk.log = (options.dir / "zookeeper" / "zookeeper.0.log").string();  // the server log
    zk.config = (options.dir / "zookeeper" / "zoo.cfg").string();
    std::filesystem::create_directories(options.dir / "zookeeper");
    if (auto st = chown_path(options.dir / "zookeeper", run_as); !st) return st.error();
    m.processes.push_back(zk);
    if (auto st = launcher.start(m.processes.back()); !st) return st.error();
  }

  const auto creds = credentials_of(m);
  std::vector<ShardRecord> records;
  std::vector<MigrationTarget> targets;
  std::filesystem::create_directories(options.dir / "shards");
  if (auto st = chown_path(options.dir / "shards", run_as); !st) return st.error();
  for (size_t i = 0; i < map->size(); ++i) {
    const int index = static_cast<int>(i);
    const std::string range = map->ranges()[i].name();
    auto t0 = SteadyClock::now();

    m.processes.push_back(
        pg_process(options.dir, index, range, /*leader=*/true, ports.pg_leader(index)));
    auto leader = launcher.postgres_node(m.processes.back());
    if (auto st = leader.init_leader(creds); !st) return st.error();
    if (auto st = launcher.start(m.processes.back()); !st) return st.error();

    const std::string admin_postgres =
        leader.conninfo(creds.superuser, creds.superuser_password, "postgres");
    const std::string setup = "CREATE ROLE " + creds.replication_user +
                              " WITH REPLICATION LOGIN PASSWORD '" + creds.replication_password +
                              "';";
    if (auto st = exec_sql(admin_postgres, setup, "shard " + range + " roles"); !st)
      return st.error();
    if (auto st = exec_sql(admin_postgres, "CREATE DATABASE " + m.database,
                           "shard " + range + " database");
        !st) {
      return st.error();
    }
    const std::string admin_tally =
        leader.conninfo(creds.superuser, creds.superuser_password, m.database);
    auto outcome = apply_migrations({range, admin_tally}, *migrations);
    if (!outcome) return outcome.error();
    // The migrations create the analyst role without a login; this cluster gives it one.
    const std::string analyst = "ALTER ROLE " + m.users["analyst"].name + " WITH LOGIN PASSWORD '" +
                                m.users["analyst"].password +
                                "';"
                                "REVOKE ALL ON DATABASE " +
                                m.database +
                                " FROM PUBLIC;"
                                "GRANT CONNECT ON DATABASE " +
                                m.database + " TO " + m.users["analyst"].name + ";";
    if (auto st = exec_sql(admin_tally, analyst, "shard " + range + " analyst role"); !st) {
      return st.error();
    }
    progress << "  shard " << range << ": " << outcome->applied.size() << " migrations applied\n";

    m.processes.push_back(
        pg_process(options.dir, index, range, /*leader=*/false, ports.pg_replica(index)));
    auto replica = launcher.postgres_node(m.processes.back());
    if (auto st = replica.init_replica(leader, creds, "shard" + std::to_string(index) + "_replica");
        !st) {
      return st.error();
    }
    if (auto st = launcher.start(m.processes.back()); !st) return st.error();
    progress << "  shard " << range << " ready in " << format_seconds(seconds_since(t0)) << "\n";

    ShardRecord record;
    record.leader = leader.address();
    record.replica = replica.address();
    record.state_since_ms = wall_clock_ms();
    records.push_back(std::move(record));
    targets.push_back({range, admin_tally});
  }

  // Topology: ranges and node addresses, written once; config_service owns it afterwards.
  ZkOptions zk_options;
  zk_options.hosts = m.zookeeper;
  auto zk = ZkClient::connect(zk_options);
  if (!zk) return zk.error();
  KeyspaceRecord keyspace{1, m.shards};
  auto snapshot = bootstrap_topology(**zk, keyspace, records);
  if (!snapshot) return snapshot.error();
  progress << "  topology written to ZooKeeper " << topology_paths::kKeyspace << "\n";

  // One shard proxy per shard, in front of its leader/replica pair.
  std::filesystem::create_directories(options.dir / "shard_proxy");
  if (auto st = chown_path(options.dir / "shard_proxy", run_as); !st) return st.error();
  for (size_t i = 0; i < map->size(); ++i) {
    const int index = static_cast<int>(i);
    ManifestProcess p;
    p.name = "shard-proxy-shard" + std::to_string(index);
    p.role = "shard_proxy";
    p.shard = map->ranges()[i].name();
    p.ports["pg"] = ports.shard_proxy_pg(index);
    p.ports["http"] = ports.shard_proxy_http(index);
    p.config = (options.dir / "shard_proxy" / ("shard" + std::to_string(index) + ".yaml")).string();
    p.log = (options.dir / "shard_proxy" / ("shard" + std::to_string(index) + ".log")).string();
    if (auto st = write_shard_proxy_config(p, records[i], m, run_as); !st) return st.error();
    m.processes.push_back(p);
    if (auto st = launcher.start(m.processes.back()); !st) return st.error();
  }
  if (auto st = start_config_services(m, launcher, options, run_as); !st) return st.error();
  if (auto st = add_cluster_proxy(m, launcher, options, run_as); !st) return st.error();
  if (auto st = add_processor(m, launcher, options, run_as); !st) return st.error();
  return m;
}

Status stop_one(const ManifestProcess& p, std::ostream& progress) {
  if (p.pid <= 0 || !process_alive(p.pid)) return ok_status();
  int sig = (p.role == "pg_leader" || p.role == "pg_replica") ? SIGINT : SIGTERM;
  auto st = stop_process(p.pid, process_needle(p), sig, std::chrono::seconds(20));
  if (st) progress << "  stopped " << p.name << " (pid " << p.pid << ")\n";
  return st;
}

Status stop_all(const ClusterManifest& m, std::ostream& progress) {
  // Reverse start order: services, then replicas before leaders, ZooKeeper last.
  Status first_error;
  for (auto it = m.processes.rbegin(); it != m.processes.rend(); ++it) {
    auto st = stop_one(*it, progress);
    if (!st && first_error.ok()) first_error = st;
  }
  return first_error;
}

// The restart path after a failover or switchover: PostgreSQL roles in cluster.json follow
// ZooKeeper's topology (the truth once the cluster runs), and the returned fenced nodes (former
// leaders not rejoined yet) must not be started. ZooKeeper unreachable: roles stay as recorded.
std::set<std::string> apply_live_topology(ClusterManifest& m, const std::filesystem::path& dir,
                                          std::ostream& progress) {
  std::set<std::string> fenced;
  ZkOptions zk_options;
  zk_options.hosts = m.zookeeper;
  zk_options.connect_timeout = std::chrono::seconds(5);
  auto zk = ZkClient::connect(zk_options);
  auto topology = zk ? read_topology(**zk) : Result<TopologySnapshot>(zk.error());
  if (!topology) {
    progress << "  ZooKeeper topology unavailable (" << topology.error().message
             << "); PostgreSQL roles as cluster.json records them\n";
    return fenced;
  }
  for (const auto& shard : topology->shards) {
    for (auto& p : m.processes) {
      if ((p.role != "pg_leader" && p.role != "pg_replica") || p.shard != shard.range.name()) {
        continue;
      }
      std::string address = "127.0.0.1:" + std::to_string(p.ports.at("pg"));
      if (address == shard.record.leader) p.role = "pg_leader";
      if (address == shard.record.replica) p.role = "pg_replica";
    }
    fenced.insert(shard.record.fenced.begin(), shard.record.fenced.end());
  }
  // A fenced former leader comes back, once rejoined, as a replica.
  for (auto& p : m.processes) {
    if ((p.role == "pg_leader" || p.role == "pg_replica") &&
        fenced.count("127.0.0.1:" + std::to_string(p.ports.at("pg")))) {
      p.role = "pg_replica";
    }
  }
  (void)write_manifest(LocalCluster::manifest_path(dir), m);
  return fenced;
}

}  // namespace

PortLayout port_layout(int base_port) {
  return PortLayout{base_port, base_port};
}

LocalClusterOptions load_local_cluster_options(const std::filesystem::path& file) {
  LocalClusterOptions o;
  auto root = load_config_file(file);
  auto section = root.section("local_cluster");
  o.shards = static_cast<int>(section.optional_int("shards", o.shards, 1, 16));
  o.base_port = static_cast<int>(section.optional_int("base_port", o.base_port, 1024, 65000));
  o.pg_bin_dir = section.optional_string("pg_bin_dir", o.pg_bin_dir.string(), "a directory path");
  o.service_user = section.optional_string("service_user", o.service_user, "a user name");
  o.zookeeper_tick_ms =
      static_cast<int>(section.optional_int("zookeeper_tick_ms", o.zookeeper_tick_ms, 100, 10000));
  o.pg_shared_buffers =
      section.optional_string("pg_shared_buffers", o.pg_shared_buffers, "a size like 128MB");
  o.pg_max_connections =
      static_cast<int>(section.optional_int("pg_max_connections", o.pg_max_connections, 20, 10000));
  if (section.has("migrations_dir")) {
    o.migrations_dir = section.optional_string("migrations_dir", "", "a directory path");
  }
  section.finish();
  root.finish();
  if (o.shards & (o.shards - 1)) {
    section.fail("shards", "expected a power of two from 1 to 16, got " + std::to_string(o.shards));
  }
  return o;
}

Result<ClusterManifest> LocalCluster::up(const LocalClusterOptions& given, std::ostream& progress) {
  auto t0 = SteadyClock::now();
  LocalClusterOptions options = given;
  if (options.bin_dir.empty()) {
    std::error_code ec;
    options.bin_dir = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  }
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return make_error(ErrorCode::kInternal,
                      "cannot create " + options.dir.string() + ": " + ec.message());
  }
  auto run_as = service_account(options.service_user);
  if (!run_as) return run_as.error();
  if (*run_as) chmod(options.dir.c_str(), 0755);
  if (auto st = check_reachable(options.dir, *run_as); !st) return st.error();

  auto manifest_file = manifest_path(options.dir);
  if (std::filesystem::exists(manifest_file)) {
    // Restart path: start whatever the manifest lists that is not running.
    auto m = read_manifest(manifest_file);
    if (!m) return m.error();
    if (static_cast<int>(m->shards.size()) != options.shards) {
      return make_error(ErrorCode::kConflict, "the cluster in " + options.dir.string() + " has " +
                                                  std::to_string(m->shards.size()) +
                                                  " shards, not " + std::to_string(options.shards) +
                                                  "; use another --dir");
    }
    progress << "cluster in " << options.dir.string() << " exists; starting what is not running\n";
    Launcher launcher(*m, options.dir, *run_as, options, progress);
    int started = 0;
    int fenced = 0;
    std::optional<std::set<std::string>> fenced_nodes;  // read once ZooKeeper (listed first) runs
    for (auto& p : m->processes) {
      bool postgres = p.role == "pg_leader" || p.role == "pg_replica";
      if (postgres && !fenced_nodes) fenced_nodes = apply_live_topology(*m, options.dir, progress);
      if (postgres && fenced_nodes->count("127.0.0.1:" + std::to_string(p.ports.at("pg")))) {
        ++fenced;
        if (p.pid > 0 && process_matches(p.pid, process_needle(p))) continue;  // config_service's
        progress << "  not starting " << p.name << " (127.0.0.1:" << p.ports.at("pg")
                 << "): fenced after failover: run tallyctl shard rejoin " << p.shard.value_or("")
                 << " --dir " << options.dir.string() << "\n";
        continue;
      }
      if (p.pid > 0 && process_matches(p.pid, process_needle(p))) continue;
      if (auto st = launcher.start(p); !st) return st.error();
      ++started;
    }
    progress << "  " << started << " started, " << m->processes.size() - started - fenced
             << " already running" << (fenced ? ", " + std::to_string(fenced) + " fenced" : "")
             << " (" << format_seconds(seconds_since(t0)) << ")\n";
    wait_for_sync(*m, progress);
    return m;
  }

  if (!std::filesystem::is_empty(options.dir)) {
    return make_error(ErrorCode::kAlreadyExists, options.dir.string() +
                                                     " is not empty and holds no cluster.json; "
                                                     "choose an empty or new directory");
  }
  progress << "creating a " << options.shards << "-shard cluster in " << options.dir.string()
           << "\n";
  auto created = create_cluster(options, *run_as, progress);
  if (!created) {
    // Leave nothing running from a half-made cluster; the logs stay for inspection.
    auto partial = read_manifest(manifest_file);
    if (partial) (void)stop_all(*partial, progress);
    return make_error(created.error().code, created.error().message +
                                                "\n(processes started so far were stopped; logs "
                                                "are under " +
                                                options.dir.string() + ")");
  }
  wait_for_sync(*created, progress);
  progress << "cluster up in " << format_seconds(seconds_since(t0)) << "\n";
  return created;
}

Status LocalCluster::down(const std::filesystem::path& dir, std::ostream& progress) {
  auto m = read_manifest(manifest_path(dir));
  if (!m) return m.error();
  return stop_all(*m, progress);
}

Result<std::vector<ProcessHealth>> LocalCluster::status(const std::filesystem::path& dir) {
  auto m = read_manifest(manifest_path(dir));
  if (!m) return m.error();
  std::vector<ProcessHealth> out;
  for (const auto& p : m->processes) {
    ProcessHealth h;
    h.name = p.name;
    h.role = p.role;
    h.shard = p.shard.value_or("");
    h.pid = p.pid;
    h.running = p.pid > 0 && process_matches(p.pid, process_needle(p));
    if (p.role == "zookeeper") {
      h.responding = zk_four_letter(p.ports.at("zk"), "ruok") == "imok";
      h.detail = h.responding ? "imok" : "no answer to ruok";
    } else if (p.role == "shard_proxy" || p.role == "config_service" || p.role == "cluster_proxy" ||
               p.role == "processor") {
      int code = http_get_status(p.ports.at("http"), "/readyz");
      h.responding = code == 200;
      h.detail = code == 200 ? "ready"
                 : code == 0 ? "no answer on /readyz"
                             : "not ready (" + std::to_string(code) + ")";
    } else if (p.role == "pg_leader" || p.role == "pg_replica") {
      std::string info = m->conninfo(p, "admin") + " connect_timeout=2";
      h.responding = PQping(info.c_str()) == PQPING_OK;
      if (h.responding) {
        auto recovery = query_value(info, "SELECT pg_is_in_recovery()");
        if (recovery && *recovery == "t") {
          auto lag = query_value(info,
                                 "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), "
                                 "pg_last_wal_replay_lsn()), 0)::bigint");
          h.detail = "standby, replay lag " + (lag ? *lag : std::string("?")) + " B";
        } else if (recovery) {
          h.detail = "primary";
        } else {
          h.detail = recovery.error().message;
        }
      } else {
        h.detail = "not accepting connections";
      }
    }
    out.push_back(std::move(h));
  }
  return out;
}

}  // namespace tally
