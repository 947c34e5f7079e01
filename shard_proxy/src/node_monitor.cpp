#include "shard_proxy/src/node_monitor.h"

#include <chrono>
#include <cstdlib>

#include "common/pgclient/lsn.h"

namespace tally::shard_proxy {

namespace {

// A node's LSN column; 0 ("not known") for an SQL NULL (a standby before its first replay) or a
// text that is no LSN: no min_lsn read is then sent to that node, and its lag is read by time.
uint64_t known_lsn_or_zero(PGresult* result, int column) {
  if (PQgetisnull(result, 0, column)) return 0;
  const Result<uint64_t> lsn = parse_lsn(PQgetvalue(result, 0, column));
  return lsn.ok() ? *lsn : 0;
}

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

NodeMonitor::NodeMonitor(ShardState& state, const ProxyUser& user) : state_(state), user_(user) {}

NodeMonitor::~NodeMonitor() {
  stop();
}

void NodeMonitor::start() {
  thread_ = std::thread([this] { run(); });
}

void NodeMonitor::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

PGconn* NodeMonitor::connection(Probe& probe, const std::string& address) {
  if (probe.address != address) {
    probe.conn.reset();
    probe.address = address;
  }
  if (probe.conn && PQstatus(probe.conn.get()) == CONNECTION_OK) return probe.conn.get();
  std::string info = state_.conninfo(address, user_) + " connect_timeout=2";
  // The checks must never hang on a wedged node for longer than an interval or two.
  info = info.substr(0, info.find(" options=")) + " options='-c statement_timeout=1000'";
  probe.conn.reset(PQconnectdb(info.c_str()));
  if (PQstatus(probe.conn.get()) != CONNECTION_OK) {
    probe.conn.reset();
    return nullptr;
  }
  return probe.conn.get();
}

void NodeMonitor::check_once() {
  NodeTargets targets = state_.targets();
  auto query = [](PGconn* c, const char* sql) {
    std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(c, sql), &PQclear);
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) r.reset();
    return r;
  };

  uint64_t leader_lsn = 0;
  NodeHealth& lh = state_.leader_health();
  if (PGconn* c = connection(leader_, targets.leader)) {
    auto r = query(c, "SELECT pg_is_in_recovery(), pg_current_wal_lsn()");
    if (!r) {
      // Recovery ends pg_current_wal_lsn() with an error: a leader that is a standby now.
      r = query(c, "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()");
    }
    if (r) {
      lh.in_recovery = std::string(PQgetvalue(r.get(), 0, 0)) == "t";
      leader_lsn = known_lsn_or_zero(r.get(), 1);
      lh.lsn = leader_lsn;
      lh.reachable = true;
    } else {
      leader_.conn.reset();
      lh.reachable = false;
    }
  } else {
    lh.reachable = false;
  }
  lh.checked_at_ms = steady_ms();

  NodeHealth& rh = state_.replica_health();
  if (targets.replica.empty()) {
    rh.reachable = false;
  } else if (PGconn* c = connection(replica_, targets.replica)) {
    auto r = query(c,
                   "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
                   "coalesce((extract(epoch from clock_timestamp() - "
                   "pg_last_xact_replay_timestamp()) * 1000)::bigint, -1)");
    if (r) {
      rh.in_recovery = std::string(PQgetvalue(r.get(), 0, 0)) == "t";
      uint64_t replayed = known_lsn_or_zero(r.get(), 1);
      int64_t age = std::atoll(PQgetvalue(r.get(), 0, 2));
      rh.lsn = replayed;
      // Caught up with what the leader had a moment ago: no lag, however old the last commit.
      rh.lag_ms = (leader_lsn != 0 && replayed >= leader_lsn) ? 0 : age;
      rh.reachable = true;
    } else {
      replica_.conn.reset();
      rh.reachable = false;
    }
  } else {
    rh.reachable = false;
  }
  rh.checked_at_ms = steady_ms();
}

void NodeMonitor::run() {
  const auto interval = std::chrono::milliseconds(state_.config().health_interval_ms);
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    check_once();
    lock.lock();
    wake_.wait_for(lock, interval, [this] { return stopping_; });
  }
}

}  // namespace tally::shard_proxy
