#include "tallyctl/src/shard_operations.h"

#include <errno.h>
#include <signal.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <ostream>
#include <thread>

#include "common/cluster/cluster_manifest.h"
#include "common/core/clock.h"
#include "common/core/host_port.h"
#include "common/process/child_process.h"
#include "common/process/system_user.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"
#include "tallyctl/src/local_cluster.h"
#include "tallyctl/src/pg_session.h"
#include "tallyctl/src/postgres_node.h"

namespace tally {
namespace {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int64_t ms_since(SteadyClock::time_point t0) {
  return std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t0).count();
}

// Polls `ready` every `step` until it returns true or `timeout` passes.
bool wait_until(milliseconds timeout, milliseconds step, const std::function<bool()>& ready) {
  auto deadline = SteadyClock::now() + timeout;
  while (true) {
    if (ready()) return true;
    if (SteadyClock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
}

std::string sql_literal(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out.empty() ? "none" : out;
}

// What every shard operation works with: cluster.json, a ZooKeeper session and the shard's node.
class ShardContext {
 public:
  static Result<std::unique_ptr<ShardContext>> open(const ShardOperationOptions& options) {
    auto ctx = std::make_unique<ShardContext>();
    ctx->range_ = options.range;
    ctx->pg_bin_dir_ = options.pg_bin_dir;
    ctx->manifest_file_ = LocalCluster::manifest_path(std::filesystem::absolute(options.dir));
    auto m = read_manifest(ctx->manifest_file_);
    if (!m) return m.error();
    ctx->manifest_ = std::move(*m);
    if (std::find(ctx->manifest_.shards.begin(), ctx->manifest_.shards.end(), options.range) ==
        ctx->manifest_.shards.end()) {
      return make_error(ErrorCode::kNotFound,
                        "the cluster in " + options.dir.string() + " has no shard '" +
                            options.range + "' (shards: " + join(ctx->manifest_.shards) + ")");
    }
    for (const char* user : {"admin", "replication"}) {
      if (!ctx->manifest_.users.count(user)) {
        return make_error(ErrorCode::kInvalidArgument,
                          ctx->manifest_file_.string() + " lists no '" + user + "' user");
      }
    }
    ctx->credentials_.superuser = ctx->manifest_.users.at("admin").name;
    ctx->credentials_.superuser_password = ctx->manifest_.users.at("admin").password;
    ctx->credentials_.replication_user = ctx->manifest_.users.at("replication").name;
    ctx->credentials_.replication_password = ctx->manifest_.users.at("replication").password;
    if (running_as_root()) {
      auto user = lookup_user(options.service_user);
      if (!user) {
        return make_error(user.error().code, "the service account '" + options.service_user +
                                                 "' the servers run as: " + user.error().message);
      }
      ctx->run_as_ = *user;
    }
    ZkOptions zk;
    zk.hosts = ctx->manifest_.zookeeper;
    zk.connect_timeout = std::chrono::seconds(5);
    auto client = ZkClient::connect(zk);
    if (!client) {
      return make_error(client.error().code,
                        "ZooKeeper " + zk.hosts + ": " + client.error().message);
    }
    ctx->zk_ = std::move(*client);
    return ctx;
  }

  const std::string& range() const { return range_; }
  const PostgresCredentials& credentials() const { return credentials_; }

  Result<ShardRecord> read() {
    auto node = zk_->get(topology_paths::shard(range_));
    if (!node) {
      return make_error(node.error().code,
                        topology_paths::shard(range_) + ": " + node.error().message);
    }
    return decode_shard(range_, node->data);
  }

  // Compare-and-set of the shard's node. On a version conflict (config_service wrote meanwhile,
  // e.g. `sync`) it re-reads and applies `change` again; `change` refuses when the record no
  // longer fits what the operation expects.
  Result<ShardRecord> update(const std::function<Status(ShardRecord&)>& change) {
    const std::string path = topology_paths::shard(range_);
    Error last{ErrorCode::kUnavailable, "no attempt"};
    for (int attempt = 0; attempt < 20; ++attempt) {
      auto node = zk_->get(path);
      if (!node) {
        last = node.error();
        if (!zk_retryable(last.code)) break;
        std::this_thread::sleep_for(milliseconds(200));
        continue;
      }
      auto record = decode_shard(range_, node->data);
      if (!record) return record.error();
      if (auto st = change(*record); !st) return st.error();
      auto written = zk_->set(path, encode_shard(*record), node->version);
      if (written) return *record;
      last = written.error();
      if (last.code != ErrorCode::kConflict && !zk_retryable(last.code)) break;
      if (last.code != ErrorCode::kConflict) std::this_thread::sleep_for(milliseconds(200));
    }
    return make_error(last.code, path + ": " + last.message);
  }

  // The shard's PostgreSQL process that listens on `address` (host:port).
  ManifestProcess* pg_process(const std::string& address) {
    const Result<HostPort> parsed = parse_host_port(address);
    const int port = parsed.ok() ? parsed->port : -1;
    for (auto& p : manifest_.processes) {
      if ((p.role == "pg_leader" || p.role == "pg_replica") && p.shard == range_ &&
          p.ports.count("pg") && p.ports.at("pg") == port) {
        return &p;
      }
    }
    return nullptr;
  }
  Result<ManifestProcess*> require_pg_process(const std::string& address, const char* what) {
    if (auto* p = pg_process(address)) return p;
    return make_error(ErrorCode::kNotFound, std::string("the ") + what + " " + address +
                                                " of shard " + range_ + " is not a node " +
                                                manifest_file_.string() + " lists");
  }

  PostgresNode node(const ManifestProcess& p) const {
    PostgresNodeOptions o;
    o.data_dir = p.data_dir;
    o.log_file = p.log;
    o.port = p.ports.at("pg");
    o.bin_dir = pg_bin_dir_;
    o.run_as = run_as_;
    return PostgresNode(o);
  }

  Result<PgSession> admin_session(const PostgresNode& node) const {
    auto s = PgSession::connect(
        node.conninfo(credentials_.superuser, credentials_.superuser_password, "postgres"));
    if (!s) return make_error(s.error().code, node.address() + ": " + s.error().message);
    return s;
  }

  Status save_manifest() { return write_manifest(manifest_file_, manifest_); }

 private:
  ClusterManifest manifest_;
  std::filesystem::path manifest_file_;
  std::unique_ptr<ZkClient> zk_;
  std::string range_;
  std::optional<SystemUser> run_as_;
  std::filesystem::path pg_bin_dir_;
  PostgresCredentials credentials_;
};

// The pid of the walsender streaming on `slot` on `leader`, "" when none.
std::string streaming_walsender(PgSession& leader, const std::string& slot) {
  auto v = leader.value(
      "SELECT s.pid FROM pg_replication_slots r JOIN pg_stat_replication s "
      "ON s.pid = r.active_pid WHERE r.slot_name = " +
      sql_literal(slot) + " AND s.state = 'streaming'");
  return v ? *v : std::string();
}

// True when `leader` lists a walsender on `slot` as streaming, and still the same one a moment
// later: a standby whose WAL went past the leader's fork point connects, streams for an instant
// and is cut off, again every wal_retrieve_retry_interval (500 ms); a single look can catch it.
bool slot_streaming(PgSession& leader, const std::string& slot) {
  std::string first = streaming_walsender(leader, slot);
  if (first.empty()) return false;
  std::this_thread::sleep_for(milliseconds(700));
  return streaming_walsender(leader, slot) == first;
}

// Creates the physical slot `slot` on a leader unless it exists; WAL is reserved at once so a
// standby that starts later still finds what it needs.
Status ensure_slot(PgSession& leader, const std::string& slot) {
  auto exists = leader.value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = " +
                             sql_literal(slot));
  if (!exists) return exists.error();
  if (*exists != "0") return ok_status();
  return leader.exec("SELECT pg_create_physical_replication_slot(" + sql_literal(slot) + ", true)");
}

// Drops the physical slots no node streams from (left from an earlier role: they would hold
// WAL forever), except `keep`.
Status drop_unused_slots(PgSession& session, const std::string& keep) {
  return session.exec(
      "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
      "WHERE slot_type = 'physical' AND NOT active AND slot_name <> " +
      sql_literal(keep));
}

// Stops a node's postmaster (fast shutdown) if it runs: the PID recorded in cluster.json or in
// postmaster.pid, each only after checking its command line names the node's data directory.
Status stop_node(const PostgresNode& node, ManifestProcess& p) {
  std::vector<pid_t> candidates;
  if (p.pid > 0) candidates.push_back(p.pid);
  if (auto pid = node.postmaster_pid()) candidates.push_back(*pid);
  for (pid_t pid : candidates) {
    if (!process_matches(pid, p.data_dir)) continue;
    if (auto st = node.stop(pid, std::chrono::seconds(60)); !st) return st;
  }
  // A postmaster killed with SIGKILL can linger as a zombie until its adopter reaps it, and
  // PostgreSQL (pg_rewind's single-user crash recovery included) refuses to start while the PID
  // in postmaster.pid exists at all.
  if (auto pid = node.postmaster_pid()) {
    wait_until(std::chrono::seconds(10), milliseconds(50),
               [&] { return kill(*pid, 0) != 0 && errno == ESRCH; });
  }
  return ok_status();
}

}  // namespace

std::string replication_slot_for(const std::string& address) {
  std::string out = "node_";
  for (char c : address) {
    out += std::isalnum(static_cast<unsigned char>(c))
               ? static_cast<char>(std::tolower(static_cast<unsigned char>(c)))
               : '_';
  }
  return out.substr(0, 63);
}

Result<SwitchoverOutcome> switchover_shard(const SwitchoverOptions& options,
                                           std::ostream& progress) {
  auto opened = ShardContext::open(options.shard);
  if (!opened) return opened.error();
  ShardContext& ctx = **opened;
  const std::string& range = ctx.range();
  auto current = ctx.read();
  if (!current) return current.error();
  const ShardRecord before = *current;
  if (before.state != shard_states::kServing) {
    return make_error(ErrorCode::kConflict, "shard " + range + " is " + before.state +
                                                ", not serving; a switchover starts from serving");
  }
  if (before.replica.empty()) {
    return make_error(ErrorCode::kConflict, "shard " + range + " has no replica to switch to");
  }
  auto leader_p = ctx.require_pg_process(before.leader, "leader");
  if (!leader_p) return leader_p.error();
  auto replica_p = ctx.require_pg_process(before.replica, "replica");
  if (!replica_p) return replica_p.error();
  PostgresNode leader = ctx.node(**leader_p);
  PostgresNode replica = ctx.node(**replica_p);

  // 1. The replica must stream from the leader: the clean stop then ships it everything.
  auto on_replica = ctx.admin_session(replica);
  if (!on_replica) {
    return make_error(ErrorCode::kConflict, "replica " + before.replica + " is unreachable (" +
                                                on_replica.error().message +
                                                "); a switchover needs a streaming replica");
  }
  auto receiver = on_replica->value(
      "SELECT coalesce(string_agg(status || ' ' || sender_port, ','), 'no WAL receiver') "
      "FROM pg_stat_wal_receiver");
  std::string want = "streaming " + std::to_string(leader.options().port);
  if (!receiver || *receiver != want) {
    return make_error(ErrorCode::kConflict,
                      "replica " + before.replica + " is not streaming from leader " +
                          before.leader + " (" + (receiver ? *receiver : receiver.error().message) +
                          "); a switchover needs a streaming replica");
  }
  {
    auto on_leader = ctx.admin_session(leader);
    if (!on_leader) return on_leader.error();
    auto senders =
        on_leader->value("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'");
    if (!senders || *senders == "0") {
      return make_error(ErrorCode::kConflict, "leader " + before.leader +
                                                  " lists no streaming replica; a switchover "
                                                  "needs one");
    }
    // A checkpoint now leaves the shutdown checkpoint little to write: a shorter pause.
    if (auto st = on_leader->exec("CHECKPOINT"); !st) {
      return make_error(st.error().code,
                        "CHECKPOINT on leader " + before.leader + ": " + st.error().message);
    }
  }

  // 2. Pause: shard proxies hold new leader work from here on.
  const auto t_pause = SteadyClock::now();
  auto paused = ctx.update([&](ShardRecord& r) -> Status {
    if (r.leader != before.leader || r.replica != before.replica ||
        r.state != shard_states::kServing) {
      return make_error(ErrorCode::kConflict, "shard " + range + " changed meanwhile (leader " +
                                                  r.leader + ", replica " + r.replica + ", " +
                                                  r.state + "); nothing was done");
    }
    r.state = shard_states::kPaused;
    r.state_since_ms = wall_clock_ms();
    return ok_status();
  });
  if (!paused) return paused.error();
  progress << "  shard " << range << " paused; leader " << before.leader << ", replica "
           << before.replica << "\n";

  // Any failure before the promotion: serve again with the original roles, and say why.
  auto resume_original = [&](const std::string& why) -> Error {
    auto resumed = ctx.update([&](ShardRecord& r) -> Status {
      r.state = shard_states::kServing;
      r.state_since_ms = wall_clock_ms();
      return ok_status();
    });
    std::string outcome =
        resumed ? "; shard " + range + " serves again with leader " + before.leader + " after " +
                      std::to_string(ms_since(t_pause)) + " ms"
                : "; resuming failed too (" + resumed.error().message + "): set the state of " +
                      topology_paths::shard(range) + " back to serving by hand";
    return make_error(ErrorCode::kUnavailable,
                      "switchover of shard " + range + " aborted: " + why + outcome);
  };

  // 3. Let in-flight transactions end. The proxies' watches fire within milliseconds; the short
  // sleep keeps a request that read the state just before the change from racing the stop.
  std::this_thread::sleep_for(milliseconds(100));
  {
    auto on_leader = ctx.admin_session(leader);
    if (!on_leader) return resume_original(on_leader.error().message);
    std::string busy = "?";
    bool drained = wait_until(options.drain_timeout, milliseconds(10), [&] {
      auto v = on_leader->value(
          "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
          "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction', "
          "'idle in transaction (aborted)')");
      busy = v ? *v : v.error().message;
      return v && *v == "0";
    });
    if (!drained) {
      progress << "  " << busy << " transaction(s) still running on " << before.leader << " after "
               << options.drain_timeout.count()
               << " ms; the fast shutdown rolls them back (none was acknowledged)\n";
    }
  }

  // 4. Stop the leader cleanly: its walsender ships everything up to the shutdown checkpoint.
  auto pid = leader.postmaster_pid();
  if (!pid || !process_matches(*pid, leader.options().data_dir.string())) {
    return resume_original("leader " + before.leader + " is not running");
  }
  auto t_stop = SteadyClock::now();
  if (auto st = leader.stop(*pid, std::chrono::seconds(60)); !st) {
    return resume_original("stopping leader " + before.leader + ": " + st.error().message);
  }
  auto restart_old_and_resume = [&](const std::string& why) -> Error {
    auto started = leader.start(ctx.credentials());
    std::string note;
    if (started) {
      (*leader_p)->pid = *started;
      (void)ctx.save_manifest();
      note = "; leader " + before.leader + " restarted";
    } else {
      note = "; restarting leader " + before.leader + " failed (" + started.error().message +
             "): run tallyctl cluster up";
    }
    return resume_original(why + note);
  };
  auto cluster_state = leader.control_data("Database cluster state");
  if (!cluster_state || *cluster_state != "shut down") {
    return restart_old_and_resume("leader " + before.leader + " did not shut down cleanly (" +
                                  (cluster_state ? *cluster_state : cluster_state.error().message) +
                                  ")");
  }
  auto checkpoint = leader.control_data("Latest checkpoint location");
  if (!checkpoint) return restart_old_and_resume(checkpoint.error().message);
  progress << "  stopped leader " << before.leader << " cleanly in " << ms_since(t_stop)
           << " ms (last checkpoint " << *checkpoint << ")\n";

  // 5. The replica must have replayed the shutdown checkpoint: then it has every commit.
  std::string replayed = "?";
  bool caught_up = wait_until(options.catch_up_timeout, milliseconds(5), [&] {
    auto v = on_replica->value(
        "SELECT pg_last_wal_replay_lsn()::text || ' ' || (pg_last_wal_replay_lsn() > " +
        sql_literal(*checkpoint) + "::pg_lsn)::text");
    replayed = v ? *v : v.error().message;
    return v && v->size() > 5 && v->substr(v->size() - 4) == "true";
  });
  if (!caught_up) {
    return restart_old_and_resume("replica " + before.replica +
                                  " did not replay the leader's last checkpoint " + *checkpoint +
                                  " within " + std::to_string(options.catch_up_timeout.count()) +
                                  " ms (replayed: " + replayed + ")");
  }

  // 6. Promote. pg_promote(true) checks for the end of recovery only every 100 ms: poll instead.
  auto promoted = on_replica->value("SELECT pg_promote(false)");
  std::string recovery = "?";
  bool promoted_in_time = promoted && wait_until(std::chrono::seconds(30), milliseconds(5), [&] {
                            auto v = on_replica->value("SELECT pg_is_in_recovery()");
                            recovery = v ? *v : v.error().message;
                            return v && *v == "f";
                          });
  if (!promoted_in_time) {
    return restart_old_and_resume(
        "pg_promote on " + before.replica + " failed: " +
        (promoted ? "still in recovery after 30 s (" + recovery + ")" : promoted.error().message));
  }
  progress << "  promoted " << before.replica << " (" << ms_since(t_pause)
           << " ms after the pause)\n";

  // 7. The old leader becomes a standby of the new one, streaming through its own slot. Written
  // now, before anything could start it again as a primary.
  const std::string slot = replication_slot_for(before.leader);
  std::string standby_problem;
  if (auto st = leader.configure_standby(replica, ctx.credentials(), slot); !st) {
    standby_problem = st.error().message;
  }
  if (auto st = drop_unused_slots(*on_replica, slot); !st) {
    progress << "  warning: could not drop unused replication slots on " << before.replica << ": "
             << st.error().message << "\n";
  }
  if (auto st = ensure_slot(*on_replica, slot); !st && standby_problem.empty()) {
    standby_problem = "creating replication slot " + slot + ": " + st.error().message;
  }

  // 8. Serve again with the roles swapped. (The old leader's start follows: the write pause need
  // not include it, and shard proxies only read from a replica they have seen replaying.)
  auto resumed = ctx.update([&](ShardRecord& r) -> Status {
    r.leader = before.replica;
    r.replica = standby_problem.empty() ? before.leader : "";
    if (!standby_problem.empty() &&
        std::find(r.fenced.begin(), r.fenced.end(), before.leader) == r.fenced.end()) {
      r.fenced.push_back(before.leader);
    }
    r.sync = false;
    r.state = shard_states::kServing;
    r.state_since_ms = wall_clock_ms();
    return ok_status();
  });
  SwitchoverOutcome out;
  out.old_leader = before.leader;
  out.new_leader = before.replica;
  out.pause_ms = ms_since(t_pause);
  if (!resumed) {
    return make_error(resumed.error().code,
                      "switchover of shard " + range + ": " + before.replica +
                          " is promoted but the topology could not be written (" +
                          resumed.error().message + "); write leader " + before.replica +
                          ", state serving to " + topology_paths::shard(range) + " by hand");
  }
  progress << "  shard " << range << " serves again with leader " << before.replica
           << ": writes were paused " << out.pause_ms << " ms\n";
  (*leader_p)->role = "pg_replica";
  (*replica_p)->role = "pg_leader";
  (*leader_p)->pid = 0;
  if (auto st = ctx.save_manifest(); !st) {
    progress << "  warning: cluster.json not updated: " << st.error().message << "\n";
  }

  // 9. Start the old leader as a standby and wait until the new leader lists it streaming.
  auto fence_old = [&](const std::string& why) {
    (void)ctx.update([&](ShardRecord& r) -> Status {
      if (r.replica == before.leader) r.replica.clear();
      if (std::find(r.fenced.begin(), r.fenced.end(), before.leader) == r.fenced.end()) {
        r.fenced.push_back(before.leader);
      }
      return ok_status();
    });
    progress << "  the old leader " << before.leader << " did not come back as a standby (" << why
             << "); it is fenced: run tallyctl shard rejoin " << range << " --dir "
             << options.shard.dir.string() << "\n";
  };
  if (!standby_problem.empty()) {
    fence_old(standby_problem);
    return out;
  }
  auto started = leader.start(ctx.credentials());
  if (!started) {
    fence_old(started.error().message);
    return out;
  }
  (*leader_p)->pid = *started;
  (void)ctx.save_manifest();
  out.old_leader_streaming = wait_until(milliseconds(30000), milliseconds(50),
                                        [&] { return slot_streaming(*on_replica, slot); });
  if (!out.old_leader_streaming) {
    progress << "  warning: " << before.leader << " runs as a standby but " << before.replica
             << " does not list it streaming yet (see " << leader.server_log_dir().string()
             << ")\n";
  } else {
    progress << "  " << before.leader << " streams from " << before.replica << " (slot " << slot
             << ")\n";
  }
  // Slots the old leader had as a leader are of no use on a standby and would hold its WAL.
  if (auto on_old = ctx.admin_session(leader)) (void)drop_unused_slots(*on_old, "");
  return out;
}

Result<RejoinOutcome> rejoin_shard_node(const RejoinOptions& options, std::ostream& progress) {
  auto opened = ShardContext::open(options.shard);
  if (!opened) return opened.error();
  ShardContext& ctx = **opened;
  const std::string& range = ctx.range();
  auto record = ctx.read();
  if (!record) return record.error();
  std::string address = options.node;
  if (address.empty()) {
    if (record->fenced.empty()) {
      return make_error(ErrorCode::kNotFound,
                        "shard " + range + " has no fenced node to rejoin (leader " +
                            record->leader + ", replica " +
                            (record->replica.empty() ? "none" : record->replica) + ")");
    }
    if (record->fenced.size() > 1) {
      return make_error(ErrorCode::kInvalidArgument,
                        "shard " + range + " has several fenced nodes (" + join(record->fenced) +
                            "): name one with --node host:port");
    }
    address = record->fenced.front();
  }
  if (std::find(record->fenced.begin(), record->fenced.end(), address) == record->fenced.end()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "--node '" + address + "' is not fenced in shard " + range + " (fenced: " +
                          join(record->fenced) + "); only a fenced former leader is rejoined");
  }
  if (record->state != shard_states::kServing) {
    return make_error(ErrorCode::kConflict,
                      "shard " + range + " is " + record->state + "; rejoin when it serves");
  }
  if (!record->replica.empty() && record->replica != address) {
    return make_error(ErrorCode::kConflict, "shard " + range + " already has replica " +
                                                record->replica + "; it takes one");
  }
  const std::string leader_address = record->leader;
  auto leader_p = ctx.require_pg_process(leader_address, "leader");
  if (!leader_p) return leader_p.error();
  auto node_p = ctx.require_pg_process(address, "fenced node");
  if (!node_p) return node_p.error();
  PostgresNode leader = ctx.node(**leader_p);
  PostgresNode target = ctx.node(**node_p);

  auto on_leader = ctx.admin_session(leader);
  if (!on_leader) return on_leader.error();
  auto leader_recovery = on_leader->value("SELECT pg_is_in_recovery()");
  if (!leader_recovery || *leader_recovery != "f") {
    return make_error(
        ErrorCode::kConflict,
        "the leader " + leader_address + " of shard " + range + " is not a primary (" +
            (leader_recovery ? "in recovery" : leader_recovery.error().message) + ")");
  }

  // 1. Stop the fenced node if it runs.
  if (auto st = stop_node(target, **node_p); !st) return st.error();
  (*node_p)->pid = 0;
  progress << "  " << address << " is stopped\n";

  // 2. Its slot on the leader, then pg_rewind (a fresh base backup when the rewind fails).
  const std::string slot = replication_slot_for(address);
  if (auto st = ensure_slot(*on_leader, slot); !st) {
    return make_error(st.error().code, "creating replication slot " + slot + " on " +
                                           leader_address + ": " + st.error().message);
  }
  // A promoted node records its new timeline in pg_control only at its next checkpoint; until
  // then pg_rewind reads the old timeline from it, says "no rewind required", and the rejoined
  // node, whose WAL went past the fork point, can never stream (seen in failover_chaos).
  if (auto st = on_leader->exec("CHECKPOINT"); !st) {
    return make_error(st.error().code, "CHECKPOINT on " + leader_address +
                                           " before pg_rewind: " + st.error().message);
  }
  RejoinOutcome out;
  out.node = address;
  out.method = "pg_rewind";
  auto t0 = SteadyClock::now();
  Status rewound = target.rewind_from(leader, ctx.credentials());
  for (int attempt = 1; attempt < 3 && !rewound; ++attempt) {
    // Backends of a killed postmaster can hold its shared memory a moment longer; pg_rewind's
    // crash recovery waits for them.
    progress << "  pg_rewind attempt " << attempt << " failed ("
             << rewound.error().message.substr(0, rewound.error().message.find('\n'))
             << "); retrying in 1 s\n";
    std::this_thread::sleep_for(std::chrono::seconds(1));
    rewound = target.rewind_from(leader, ctx.credentials());
  }
  if (rewound) {
    progress << "  pg_rewind from " << leader_address << " done in " << ms_since(t0) << " ms\n";
  } else {
    std::string why = rewound.error().message.substr(0, rewound.error().message.find('\n'));
    progress << "  pg_rewind failed (" << why << "); taking a fresh base backup instead\n";
    auto aside = target.rebuild_from(leader, ctx.credentials(), slot);
    if (!aside) return aside.error();
    out.method = "pg_basebackup";
    out.moved_aside = aside->string();
    progress << "  base backup from " << leader_address << " done; the old data directory is "
             << out.moved_aside << "\n";
  }

  // 3. Start it as a standby and wait until the leader lists it streaming.
  if (auto st = target.configure_standby(leader, ctx.credentials(), slot); !st) return st.error();
  auto started = target.start(ctx.credentials());
  if (!started) return started.error();
  (*node_p)->pid = *started;
  (*node_p)->role = "pg_replica";
  if (auto st = ctx.save_manifest(); !st) return st.error();
  if (!wait_until(options.streaming_timeout, milliseconds(50),
                  [&] { return slot_streaming(*on_leader, slot); })) {
    return make_error(ErrorCode::kTimeout, address + " runs as a standby but " + leader_address +
                                               " does not list it streaming after " +
                                               std::to_string(options.streaming_timeout.count()) +
                                               " ms (log " + target.server_log_dir().string() +
                                               "); it stays fenced");
  }
  if (auto on_node = ctx.admin_session(target)) (void)drop_unused_slots(*on_node, "");
  progress << "  " << address << " streams from " << leader_address << " (slot " << slot << ")\n";

  // 4. The topology: it is the replica now, no longer fenced.
  auto written = ctx.update([&](ShardRecord& r) -> Status {
    if (r.leader != leader_address) {
      return make_error(ErrorCode::kConflict, "the leader of shard " + range + " changed to " +
                                                  r.leader + " meanwhile; run rejoin again");
    }
    r.replica = address;
    r.fenced.erase(std::remove(r.fenced.begin(), r.fenced.end(), address), r.fenced.end());
    return ok_status();
  });
  if (!written) return written.error();
  return out;
}

}  // namespace tally
