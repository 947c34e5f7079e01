#include "config_service/src/shard_supervisor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "common/pgclient/lsn.h"
#include "config_service/src/service_log.h"

namespace tally::config_service {

namespace {

// A node's LSN column; 0 ("not known") for an SQL NULL (a standby before its first replay) or a
// text that is no LSN: the replica's lag is then not computed from LSNs.
uint64_t known_lsn_or_zero(const std::optional<std::string>& text) {
  if (!text) return 0;
  const Result<uint64_t> lsn = parse_lsn(*text);
  return lsn.ok() ? *lsn : 0;
}

bool is_true(const std::optional<std::string>& v) {
  return v && *v == "t";
}

// A decision's reason without its numbers: "down for 457 ms" and "down for 702 ms" are logged once.
std::string reason_key(const std::string& reason) {
  std::string key;
  for (char c : reason) {
    if (c < '0' || c > '9') key += c;
  }
  return key;
}

PolicyOptions policy_options(const ConfigServiceConfig& c) {
  PolicyOptions o;
  o.failover_after_ms = c.failover_after_ms;
  o.replica_unhealthy_after_ms = c.replica_unhealthy_after_ms;
  o.pause_max_ms = c.pause_max_ms;
  o.promote_timeout_ms = c.promote_timeout_ms;
  return o;
}

// The column probe() adds to each probe query (none has a FROM clause): is the postmaster alive?
// A backend whose postmaster was kill -9'd can answer a query or two on its connection before it
// notices; the auxiliary processes exit at once and leave pg_stat_activity, so an answer without
// the checkpointer is an orphan's (measured: gone from the view 20 ms after the kill, while the
// orphan answered for 60 ms more). This replaces a PQping per probe: each ping forked a backend
// (about 30 ms of CPU on this VM), 16 a second for two shards, a quarter of a 2-core machine.
constexpr const char* kPostmasterAliveColumn =
    ", EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'checkpointer')";
// Leader: recovery, current LSN (replay LSN if it is a standby now), its sync setting.
constexpr const char* kLeaderSql =
    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END, current_setting('synchronous_standby_names')";
// The leader's walsenders (base backups excluded); the best one first.
constexpr const char* kReplicationSql =
    "SELECT state, sync_state, replay_lsn FROM pg_stat_replication "
    "WHERE state <> 'backup' ORDER BY (state = 'streaming') DESC, (sync_state = 'sync') DESC";
constexpr const char* kReplicaSql =
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
    "coalesce((extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * "
    "1000)::bigint, -1)";
constexpr const char* kFencedSql =
    "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only'), "
    "current_setting('synchronous_standby_names')";

}  // namespace

ServiceCounters::ServiceCounters(MetricsRegistry& registry)
    : failovers(registry.counter("config_service_failovers_total",
                                 "Failovers started (replica promotions attempted)")),
      sync_changes(registry.counter("config_service_sync_changes_total",
                                    "Synchronous replication enabled or downgraded")),
      fence_actions(
          registry.counter("config_service_fence_actions_total",
                           "Fenced former leaders found running as primaries and fenced")),
      health_rounds(registry.counter("config_service_health_rounds_total",
                                     "Health rounds run (over all shards) while leading")) {}

ShardSupervisor::ShardSupervisor(std::string range, ZkClient& zk, const LeaderElection& election,
                                 const Clock& clock, const ConfigServiceConfig& config,
                                 MetricsRegistry& registry, ServiceCounters& counters)
    : range_(std::move(range)),
      path_(topology_paths::shard(range_)),
      zk_(zk),
      election_(election),
      clock_(clock),
      config_(config),
      counters_(counters),
      policy_(policy_options(config)),
      leader_ok_(registry.gauge("config_service_shard_leader_ok",
                                "1 when the shard's leader answered the last health round",
                                {{"shard", range_}})),
      replica_ok_(registry.gauge("config_service_shard_replica_ok",
                                 "1 when the shard's replica answered the last health round",
                                 {{"shard", range_}})),
      lag_ms_(registry.gauge("config_service_shard_replica_lag_ms",
                             "The replica's replay lag in ms (-1 unknown)", {{"shard", range_}})),
      lag_bytes_(registry.gauge("config_service_shard_replica_lag_bytes",
                                "The replica's replay lag in bytes (-1 unknown)",
                                {{"shard", range_}})),
      sync_(registry.gauge("config_service_shard_sync",
                           "1 while the shard's record says sync: true", {{"shard", range_}})) {
  access_.user = config.pg_user;
  access_.password = config.pg_password;
  access_.database = config.pg_database;
  access_.connect_timeout_ms = config.pg_connect_timeout_ms;
  access_.statement_timeout_ms = std::max(1000, config.health_interval_ms * 4);
  snapshot_.range = range_;
}

ShardSupervisor::~ShardSupervisor() {
  stop();
}

void ShardSupervisor::start() {
  thread_ = std::thread([this] {
    const auto interval = std::chrono::milliseconds(config_.health_interval_ms);
    std::unique_lock lock(wake_mu_);
    while (!stopping_) {
      lock.unlock();
      auto started = std::chrono::steady_clock::now();
      round();
      lock.lock();
      wake_.wait_until(lock, started + interval, [this] { return stopping_; });
    }
  });
}

void ShardSupervisor::stop() {
  {
    std::lock_guard lock(wake_mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

ShardSupervisor::Snapshot ShardSupervisor::snapshot() const {
  std::lock_guard lock(mu_);
  return snapshot_;
}

void ShardSupervisor::note(const std::string& message) {
  log_line("shard " + range_ + ": " + message);
}

PgNodeClient& ShardSupervisor::client(const std::string& address) {
  auto& c = clients_[address];
  if (!c) c = std::make_unique<PgNodeClient>(address, access_);
  return *c;
}

NodeObservation ShardSupervisor::probe(PgNodeClient& node, const std::string& sql,
                                       std::vector<PgNodeClient::Row>* rows) {
  NodeObservation o;
  o.address = node.address();
  auto r = node.query(sql + kPostmasterAliveColumn);
  if (!r || r->empty()) {
    o.error = r ? "no rows" : r.error().message;
    return o;
  }
  if (!is_true((*r)[0].back())) {
    // An orphan backend of a dead postmaster answered: not a live node. Drop the connection so
    // the next round has to connect, which only a live postmaster accepts.
    node.disconnect();
    o.error = "the postmaster is gone (no checkpointer); an orphan backend answered";
    return o;
  }
  o.reachable = true;
  o.in_recovery = is_true((*r)[0][0]);
  *rows = std::move(*r);
  return o;
}

ShardObservation ShardSupervisor::observe(const ShardRecord& record) {
  ShardObservation obs;
  std::vector<PgNodeClient::Row> rows;
  PgNodeClient& leader = client(record.leader);
  obs.leader = probe(leader, kLeaderSql, &rows);
  if (obs.leader.reachable) {
    obs.leader.lsn = known_lsn_or_zero(rows[0][1]);
    obs.leader_sync_names = rows[0][2].value_or("");
    if (!obs.leader.in_recovery) {
      auto repl = leader.query(kReplicationSql);
      if (repl && !repl->empty()) {
        const auto& row = (*repl)[0];
        obs.replica_streaming = row[0].value_or("") == "streaming";
        obs.replica_sync = obs.replica_streaming && row[1].value_or("") == "sync";
      }
    }
  }
  if (!record.replica.empty()) {
    rows.clear();
    obs.replica = probe(client(record.replica), kReplicaSql, &rows);
    if (obs.replica.reachable) {
      uint64_t replayed = known_lsn_or_zero(rows[0][1]);
      int64_t age = std::atoll(rows[0][2].value_or("-1").c_str());
      obs.replica.lsn = replayed;
      if (obs.leader.reachable && obs.leader.lsn != 0 && replayed != 0) {
        obs.lag_bytes =
            replayed >= obs.leader.lsn ? 0 : static_cast<int64_t>(obs.leader.lsn - replayed);
        // Caught up with what the leader had a moment ago: no lag, however old the last commit.
        obs.lag_ms = replayed >= obs.leader.lsn ? 0 : age;
      }
    }
  }
  for (const auto& address : record.fenced) {
    FencedObservation f;
    rows.clear();
    f.node = probe(client(address), kFencedSql, &rows);
    if (f.node.reachable) {
      f.already_fenced =
          rows[0][1].value_or("") == "on" && rows[0][2].value_or("") == "tally_fenced";
    }
    obs.fenced.push_back(std::move(f));
  }
  return obs;
}

void ShardSupervisor::publish(const ShardObservation& obs) {
  HealthRecord h;
  auto report = [](const NodeObservation& n) {
    NodeHealthReport r;
    r.address = n.address;
    r.ok = n.reachable;
    r.in_recovery = n.in_recovery;
    r.error = n.error;
    return r;
  };
  h.leader = report(obs.leader);
  h.replica = report(obs.replica);
  h.replica_streaming = obs.replica_streaming;
  h.replica_sync = obs.replica_sync;
  h.replica_lag_ms = obs.lag_ms;
  h.replica_lag_bytes = obs.lag_bytes;
  for (const auto& f : obs.fenced) {
    if (f.node.reachable && !f.node.in_recovery) h.fenced_running.push_back(f.node.address);
  }
  h.at_ms = clock_.wall_ms();
  h.checked_by = config_.id;

  leader_ok_.set(h.leader.ok ? 1 : 0);
  replica_ok_.set(h.replica.ok ? 1 : 0);
  lag_ms_.set(static_cast<double>(h.replica_lag_ms));
  lag_bytes_.set(static_cast<double>(h.replica_lag_bytes));
  {
    std::lock_guard lock(mu_);
    snapshot_.health = h;
    snapshot_.have_health = true;
  }
  if (!election_.is_leader()) return;
  const std::string path = topology_paths::health(range_);
  const std::string data = encode_health(h);
  if (!health_path_ready_) {
    if (auto st = zk_.ensure_path(topology_paths::kHealth); !st) return;
    health_path_ready_ = true;
  }
  auto st = zk_.set(path, data, -1);
  if (!st && st.error().code == ErrorCode::kNotFound) {
    auto created = zk_.create(path, data);
    if (!created && created.error().code == ErrorCode::kAlreadyExists)
      (void)zk_.set(path, data, -1);
  }
  counters_.health_rounds.inc();
}

void ShardSupervisor::round() {
  if (!election_.is_leader()) {
    if (was_leader_) {
      note("not leading any more: stopping checks and actions");
      policy_.reset();
      clients_.clear();
      was_leader_ = false;
      health_path_ready_ = false;
      last_reason_.clear();
    }
    return;
  }
  if (!was_leader_) {
    note("leading: checking the shard every " + std::to_string(config_.health_interval_ms) + " ms");
    was_leader_ = true;
  }
  auto node = zk_.get(path_);
  if (!node) return;  // ZooKeeper trouble: the election notices too
  auto record = decode_shard(range_, node->data);
  if (!record) {
    if (last_reason_ != record.error().message) note(record.error().message);
    last_reason_ = record.error().message;
    return;
  }
  sync_.set(record->sync ? 1 : 0);
  {
    std::lock_guard lock(mu_);
    snapshot_.record = *record;
    snapshot_.have_record = true;
  }
  ShardObservation obs = observe(*record);
  publish(obs);
  Action action = policy_.decide(obs, *record, clock_.steady_ms(), clock_.wall_ms());
  {
    std::lock_guard lock(mu_);
    snapshot_.reason = action.reason;
  }
  if (action.kind == ActionKind::kNone) {
    if (reason_key(action.reason) != last_reason_ && !action.reason.empty()) note(action.reason);
    last_reason_ = reason_key(action.reason);
    return;
  }
  last_reason_.clear();
  if (!election_.is_leader()) return;
  note(std::string(action_name(action.kind)) + ": " + action.reason);
  {
    std::lock_guard lock(mu_);
    snapshot_.last_action = std::string(action_name(action.kind)) + ": " + action.reason;
  }
  execute(action, *record, node->version, obs);
}

bool ShardSupervisor::cas(const ShardRecord& record, int32_t version, const std::string& what) {
  if (!election_.is_leader()) {
    note(what + ": skipped, not leading any more");
    return false;
  }
  auto st = zk_.set(path_, encode_shard(record), version);
  if (!st) {
    note(what + ": compare-and-set at version " + std::to_string(version) +
         " failed: " + st.error().message);
    return false;
  }
  sync_.set(record.sync ? 1 : 0);
  return true;
}

void ShardSupervisor::execute(const Action& action, const ShardRecord& record, int32_t version,
                              const ShardObservation& obs) {
  switch (action.kind) {
    case ActionKind::kNone:
      return;
    case ActionKind::kEnableSync:
      enable_sync(record);
      return;
    case ActionKind::kConfirmSync: {
      ShardRecord next = record;
      next.sync = true;
      if (cas(next, version, "confirm sync")) {
        counters_.sync_changes.inc();
        note("sync: true (replica " + record.replica + " confirmed as synchronous standby)");
      }
      return;
    }
    case ActionKind::kDowngradeSync:
      downgrade_sync(record, version, obs);
      return;
    case ActionKind::kFailover:
      failover(record, version);
      return;
    case ActionKind::kFinishFailover:
      (void)finish_failover(record, version);
      return;
    case ActionKind::kAbortFailover: {
      ShardRecord next = record;
      next.state = shard_states::kServing;
      next.state_since_ms = clock_.wall_ms();
      if (cas(next, version, "abort failover")) note("failover abandoned: back to serving");
      policy_.reset();
      return;
    }
    case ActionKind::kFence:
      fence(action.target);
      return;
  }
}

void ShardSupervisor::enable_sync(const ShardRecord& record) {
  PgNodeClient& leader = client(record.leader);
  if (!election_.is_leader()) return;
  auto st = leader.exec("ALTER SYSTEM SET synchronous_standby_names = '*'");
  if (st) st = leader.exec("SELECT pg_reload_conf()");
  if (!st) {
    note("enable sync on " + record.leader + " failed: " + st.error().message);
    return;
  }
  counters_.sync_changes.inc();
  note("synchronous_standby_names = '*' on " + record.leader +
       "; sync is written once the replica shows as sync");
}

void ShardSupervisor::downgrade_sync(ShardRecord record, int32_t version,
                                     const ShardObservation& obs) {
  // The licence goes first: from now on no failover relies on the replica having every commit.
  if (record.sync) {
    record.sync = false;
    if (!cas(record, version, "downgrade sync")) return;
    counters_.sync_changes.inc();
    note("sync: false");
  }
  if (!obs.leader.reachable || !election_.is_leader()) return;
  PgNodeClient& leader = client(record.leader);
  auto st = leader.exec("ALTER SYSTEM SET synchronous_standby_names = ''");
  if (st) st = leader.exec("SELECT pg_reload_conf()");
  if (!st) {
    note("clearing synchronous_standby_names on " + record.leader +
         " failed: " + st.error().message);
    return;
  }
  note("synchronous_standby_names cleared on " + record.leader + ": commits no longer wait");
}

void ShardSupervisor::failover(ShardRecord record, int32_t version) {
  record.state = shard_states::kFailingOver;
  record.state_since_ms = clock_.wall_ms();
  // The winner of this compare-and-set is the only promoter.
  if (!cas(record, version, "failover: mark failing_over")) return;
  const int32_t marked = version + 1;
  counters_.failovers.inc();
  const int64_t t0 = clock_.steady_ms();
  note("failover: promoting " + record.replica + " (leader " + record.leader + " is down)");
  if (!election_.is_leader()) return;
  PgNodeClient& replica = client(record.replica);
  const int timeout_s = std::max(1, config_.promote_timeout_ms / 1000);
  auto promoted = replica.query("SELECT pg_promote(true, " + std::to_string(timeout_s) + ")");
  // Whatever pg_promote said, the server's own state decides (a promotion may finish late).
  auto recovery = replica.query("SELECT pg_is_in_recovery()");
  bool done = recovery && !recovery->empty() && !is_true((*recovery)[0][0]);
  if (!done) {
    note("failover: " + record.replica + " is not promoted after " +
         std::to_string(clock_.steady_ms() - t0) + " ms (" +
         (promoted ? std::string("pg_promote returned ") +
                         (promoted->empty() ? "nothing" : (*promoted)[0][0].value_or("null"))
                   : promoted.error().message) +
         "); the shard stays failing_over and the next rounds finish or abandon it");
    return;
  }
  note("failover: " + record.replica + " promoted in " + std::to_string(clock_.steady_ms() - t0) +
       " ms");
  (void)finish_failover(record, marked);
}

bool ShardSupervisor::finish_failover(ShardRecord record, int32_t version) {
  const std::string old_leader = record.leader;
  ShardRecord next = record;
  next.leader = record.replica;
  next.replica = "";
  next.sync = false;
  next.state = shard_states::kServing;
  next.state_since_ms = clock_.wall_ms();
  if (std::find(next.fenced.begin(), next.fenced.end(), old_leader) == next.fenced.end()) {
    next.fenced.push_back(old_leader);
  }
  if (!cas(next, version, "failover: record the new roles")) return false;
  note("failover done: leader " + next.leader + ", old leader " + old_leader + " fenced");
  policy_.reset();
  // It has no standby now: a synchronous_standby_names it kept from an earlier term as leader
  // would hold every commit. Best effort; the policy clears it later otherwise.
  if (election_.is_leader()) {
    PgNodeClient& leader = client(next.leader);
    auto st = leader.exec("ALTER SYSTEM SET synchronous_standby_names = ''");
    if (st) st = leader.exec("SELECT pg_reload_conf()");
    if (!st)
      note("clearing synchronous_standby_names on " + next.leader + ": " + st.error().message);
  }
  return true;
}

void ShardSupervisor::fence(const std::string& address) {
  if (!election_.is_leader()) return;
  PgNodeClient& node = client(address);
  auto st = node.exec("ALTER SYSTEM SET default_transaction_read_only = on");
  if (st) st = node.exec("ALTER SYSTEM SET synchronous_standby_names = 'tally_fenced'");
  if (st) st = node.exec("SELECT pg_reload_conf()");
  if (!st) {
    note("fencing " + address + " failed: " + st.error().message);
    return;
  }
  // Our own backend sees the new settings once the postmaster has re-read them: from then on
  // every new connection gets them too, so the backends we end cannot come back writable.
  for (int i = 0; i < 40; ++i) {
    auto r = node.query("SELECT current_setting('default_transaction_read_only')");
    if (r && !r->empty() && (*r)[0][0].value_or("") == "on") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  auto ended = node.query(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
      "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()");
  counters_.fence_actions.inc();
  note("fenced " + address + ": read-only by default, commits wait for standby 'tally_fenced', " +
       (ended && !ended->empty() ? (*ended)[0][0].value_or("0") : std::string("?")) +
       " client backends terminated");
}

}  // namespace tally::config_service
