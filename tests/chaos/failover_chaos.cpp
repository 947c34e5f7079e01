// failover_chaos: the failover measurement, on real servers.
// For each repetition: a bounded write loop through the shard proxy records every acknowledged
// write; the shard leader's postmaster is killed with SIGKILL; the loop measures the time until a
// write is accepted again; every acknowledged write is then looked up on the new leader; the old
// leader is rejoined as a replica (`tallyctl shard rejoin`) for the next round. Then planned
// switchovers under the same loop, measuring the longest gap between acknowledged writes.
// Exits non-zero when an acknowledged write is missing, a write fails during a switchover, or a
// step does not finish within its bound. The 5 s / 3 s median targets are printed as verdicts.
//
// Usage: failover_chaos [--dir DIR] [--reps N] [--switchovers N] [--shard RANGE]
//   Without --dir a 2-shard cluster is started in a temporary directory and stopped at the end.
#include <libpq-fe.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster/cluster_manifest.h"
#include "common/core/host_port.h"
#include "common/process/child_process.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"
#include "tests/support/test_env.h"
#include "tests/support/write_loop.h"

namespace tally {
namespace {

using SteadyClock = std::chrono::steady_clock;
using PgConn = std::unique_ptr<PGconn, decltype(&PQfinish)>;

double seconds_between(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

PgConn connect_pg(const std::string& conninfo) {
  return PgConn(PQconnectdb(conninfo.c_str()), &PQfinish);
}

// One statement; true when it succeeded.
bool exec_ok(PGconn* conn, const std::string& sql, std::string* error = nullptr) {
  std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(conn, sql.c_str()), &PQclear);
  auto status = PQresultStatus(r.get());
  bool ok = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
  if (!ok && error) *error = PQerrorMessage(conn);
  return ok;
}

struct Options {
  std::string dir;
  int reps = 5;
  int switchovers = 3;
  std::string shard;  // default: the first shard
};

class Chaos {
 public:
  explicit Chaos(Options options) : options_(std::move(options)) {}

  int run() {
    if (!set_up()) return 2;
    int rc = 0;
    std::vector<double> outages;
    for (int i = 1; i <= options_.reps; ++i) {
      auto outage = failover_round(i);
      if (!outage) {
        rc = 1;
        break;
      }
      outages.push_back(*outage);
    }
    std::vector<double> pauses;
    for (int i = 1; rc == 0 && i <= options_.switchovers; ++i) {
      auto pause = switchover_round(i);
      if (!pause) {
        rc = 1;
        break;
      }
      pauses.push_back(*pause);
    }
    report(outages, pauses);
    if (rc == 0 && lost_ > 0) rc = 1;
    return rc;
  }

  ~Chaos() {
    if (own_cluster_ && temp_) {
      testing::run({testing::project_binary("tallyctl"), "cluster", "down", "--dir", dir_});
    }
  }

 private:
  bool set_up() {
    if (options_.dir.empty()) {
      temp_ = std::make_unique<testing::TempDir>("tally-chaos");
      dir_ = temp_->path().string();
      own_cluster_ = true;
      int base = testing::find_free_port_block(200);
      std::cout << "starting a 2-shard cluster in " << dir_ << " (base port " << base << ")\n";
      auto up = testing::run({testing::project_binary("tallyctl"), "cluster", "up", "--dir", dir_,
                              "--shards", "2", "--base-port", std::to_string(base)});
      if (up.exit_code != 0) {
        std::cerr << "cluster up failed:\n" << up.output;
        return false;
      }
    } else {
      dir_ = options_.dir;
    }
    if (!reload_manifest()) return false;
    shard_ = options_.shard.empty() ? manifest_.shards.front() : options_.shard;
    ZkOptions zk_options;
    zk_options.hosts = manifest_.zookeeper;
    auto zk = ZkClient::connect(zk_options);
    if (!zk) {
      std::cerr << "zookeeper: " << zk.error().message << "\n";
      return false;
    }
    zk_ = std::move(*zk);
    // The table the write loop fills, created through the proxy so it lands on the leader and
    // replicates; ids are unique per run so several runs can share a cluster.
    auto conn = connect_pg(proxy_conninfo());
    std::string error;
    if (!exec_ok(conn.get(),
                 "CREATE TABLE IF NOT EXISTS tally_chaos_writes (id bigint PRIMARY KEY, "
                 "written_at timestamptz NOT NULL DEFAULT now())",
                 &error)) {
      std::cerr << "cannot create the write table through the shard proxy: " << error;
      return false;
    }
    next_id_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count() *
               1000;
    return true;
  }

  bool reload_manifest() {
    auto m = read_manifest(std::filesystem::path(dir_) / "cluster.json");
    if (!m) {
      std::cerr << m.error().message << "\n";
      return false;
    }
    manifest_ = *m;
    return true;
  }

  std::string proxy_conninfo() const {
    for (const auto* p : manifest_.with_role("shard_proxy")) {
      if (p->shard == shard_) {
        const auto& admin = manifest_.users.at("admin");
        return "host=127.0.0.1 port=" + std::to_string(p->ports.at("pg")) +
               " dbname=tally user=" + admin.name + " password=" + admin.password +
               " connect_timeout=3";
      }
    }
    return {};
  }

  std::optional<ShardRecord> record() {
    auto node = zk_->get(topology_paths::shard(shard_));
    if (!node) return std::nullopt;
    auto r = decode_shard(shard_, node->data);
    if (!r) return std::nullopt;
    return *r;
  }

  const ManifestProcess* process_at(const std::string& address) const {
    int port = std::stoi(std::string(split_host_port(address).port));
    for (const auto& p : manifest_.processes) {
      auto it = p.ports.find("pg");
      if ((p.role == "pg_leader" || p.role == "pg_replica") && it != p.ports.end() &&
          it->second == port) {
        return &p;
      }
    }
    return nullptr;
  }

  // Waits until the shard serves with a synchronous, streaming replica (the failover licence).
  bool wait_for_sync(double bound_s) {
    auto deadline = SteadyClock::now() + std::chrono::duration<double>(bound_s);
    while (SteadyClock::now() < deadline) {
      auto r = record();
      if (r && r->sync && !r->replica.empty() && r->state == shard_states::kServing) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    auto r = record();
    std::cerr << "shard " << shard_ << " did not reach sync:true within " << bound_s
              << " s; record: " << (r ? encode_shard(*r) : std::string("unreadable")) << "\n";
    return false;
  }

  // Every acknowledged id is on `leader` (looked up directly, not through the proxy).
  bool verify(const std::vector<int64_t>& acks, const std::string& leader_address,
              int64_t* missing_out) {
    const ManifestProcess* p = process_at(leader_address);
    if (!p) return false;
    auto conn = connect_pg(manifest_.conninfo(*p, "admin"));
    if (PQstatus(conn.get()) != CONNECTION_OK) {
      std::cerr << "cannot reach the leader " << leader_address << ": "
                << PQerrorMessage(conn.get());
      return false;
    }
    int64_t missing = 0;
    for (size_t i = 0; i < acks.size(); i += 500) {
      std::string list;
      size_t end = std::min(acks.size(), i + 500);
      for (size_t j = i; j < end; ++j) {
        if (!list.empty()) list += ",";
        list += std::to_string(acks[j]);
      }
      std::string sql = "SELECT count(*) FROM tally_chaos_writes WHERE id IN (" + list + ")";
      std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(conn.get(), sql.c_str()), &PQclear);
      if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) return false;
      missing += static_cast<int64_t>(end - i) - std::stoll(PQgetvalue(r.get(), 0, 0));
    }
    *missing_out = missing;
    return true;
  }

  std::optional<double> failover_round(int round) {
    if (!reload_manifest() || !wait_for_sync(60)) return std::nullopt;
    auto before = record();
    const ManifestProcess* leader = process_at(before->leader);
    if (!leader) {
      std::cerr << "no process listens at " << before->leader << "\n";
      return std::nullopt;
    }
    testing::WriteLoop writes(proxy_conninfo(), "tally_chaos_writes", next_id_);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    auto pid = read_postmaster_pid(leader->data_dir);
    if (!pid) {
      std::cerr << "no postmaster.pid in " << leader->data_dir << "\n";
      return std::nullopt;
    }
    auto killed_at = SteadyClock::now();
    ::kill(*pid, SIGKILL);
    // Backends of the killed postmaster can go on committing on the connections they have (their
    // walsender still ships to the synchronous replica) until the new leader is in place, so
    // "the first acknowledgement after the kill" can come from the old node. The outage is the
    // longest time without an acknowledgement from the kill on, measured once writes have been
    // accepted through the new leader.
    std::optional<SteadyClock::time_point> promoted;
    while (!promoted && SteadyClock::now() - killed_at < std::chrono::seconds(30)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      auto r = record();
      if (r && r->leader != before->leader) promoted = SteadyClock::now();
    }
    std::optional<SteadyClock::time_point> back;
    while (promoted && !back && SteadyClock::now() - *promoted < std::chrono::seconds(30)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      back = writes.first_ok_started_after(*promoted);
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
    writes.stop();
    auto acks = writes.acked();
    next_id_ += static_cast<int64_t>(acks.size() + writes.failed_count()) + 10;
    if (!promoted || !back) {
      std::cerr << "round " << round << ": "
                << (promoted ? "no write accepted within 30 s of the new leader"
                             : "no new leader in the topology within 30 s of the kill")
                << "; last error: " << writes.last_error();
      return std::nullopt;
    }
    double outage = writes.longest_gap_after(killed_at);
    double to_topology = seconds_between(killed_at, *promoted);
    auto after = record();
    int64_t missing = -1;
    if (!after || after->leader == before->leader || !verify(acks, after->leader, &missing)) {
      std::cerr << "round " << round << ": cannot verify on a new leader\n";
      return std::nullopt;
    }
    lost_ += missing;
    std::printf(
        "failover %d: killed %s (pid %d), new leader in ZooKeeper after %.2f s, longest time "
        "without an acknowledged write %.2f s, %zu acknowledged, %d failed attempts, %lld lost; "
        "new leader %s\n",
        round, before->leader.c_str(), static_cast<int>(*pid), to_topology, outage, acks.size(),
        static_cast<int>(writes.failed_count()), static_cast<long long>(missing),
        after->leader.c_str());
    std::fflush(stdout);
    // Back to a leader/replica pair for the next round.
    auto t0 = SteadyClock::now();
    auto rejoin = testing::run(
        {testing::project_binary("tallyctl"), "shard", "rejoin", shard_, "--dir", dir_});
    if (rejoin.exit_code != 0) {
      std::cerr << "rejoin failed:\n" << rejoin.output;
      return std::nullopt;
    }
    std::printf("           rejoined %s as a replica in %.1f s\n", before->leader.c_str(),
                seconds_between(t0, SteadyClock::now()));
    return outage;
  }

  std::optional<double> switchover_round(int round) {
    if (!reload_manifest() || !wait_for_sync(60)) return std::nullopt;
    auto before = record();
    testing::WriteLoop writes(proxy_conninfo(), "tally_chaos_writes", next_id_);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    auto t0 = SteadyClock::now();
    auto sw = testing::run(
        {testing::project_binary("tallyctl"), "shard", "switchover", shard_, "--dir", dir_});
    auto t1 = SteadyClock::now();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    writes.stop();
    auto acks = writes.acked();
    next_id_ += static_cast<int64_t>(acks.size()) + static_cast<int>(writes.failed_count()) + 10;
    if (sw.exit_code != 0) {
      std::cerr << "switchover failed:\n" << sw.output;
      return std::nullopt;
    }
    // The client-visible pause: the longest gap between acknowledgements from the start of the
    // switchover on.
    double gap = writes.longest_gap_after(t0);
    auto after = record();
    int64_t missing = -1;
    if (!after || after->leader != before->replica || !verify(acks, after->leader, &missing)) {
      std::cerr << "switchover " << round << ": roles not swapped or cannot verify\n";
      return std::nullopt;
    }
    lost_ += missing;
    switchover_failures_ += static_cast<int>(writes.failed_count());
    std::printf(
        "switchover %d: %s -> %s in %.2f s (tallyctl), longest write gap %.3f s, %zu acknowledged, "
        "%d failed, %lld lost\n",
        round, before->leader.c_str(), after->leader.c_str(), seconds_between(t0, t1), gap,
        acks.size(), static_cast<int>(writes.failed_count()), static_cast<long long>(missing));
    std::fflush(stdout);
    if (static_cast<int>(writes.failed_count()) > 0) {
      std::cerr << "a write failed during the switchover: " << writes.last_error();
      return std::nullopt;
    }
    return gap;
  }

  static std::optional<pid_t> read_postmaster_pid(const std::string& data_dir) {
    std::ifstream in(std::filesystem::path(data_dir) / "postmaster.pid");
    long pid = 0;
    if (!(in >> pid) || pid <= 0) return std::nullopt;
    return static_cast<pid_t>(pid);
  }

  static double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }

  void report(const std::vector<double>& outages, const std::vector<double>& pauses) const {
    std::printf("\n| measure | runs | median | max |\n|---|---|---|---|\n");
    if (!outages.empty()) {
      std::printf(
          "| failover: longest time without an acknowledged write after kill -9 of the leader (s) "
          "| %zu | %.2f | %.2f |\n",
          outages.size(), median(outages), *std::max_element(outages.begin(), outages.end()));
    }
    if (!pauses.empty()) {
      std::printf(
          "| switchover: longest gap between acknowledged writes (s) | %zu | %.3f | %.3f |\n",
          pauses.size(), median(pauses), *std::max_element(pauses.begin(), pauses.end()));
    }
    std::printf("acknowledged writes lost: %lld\n", static_cast<long long>(lost_));
    if (!outages.empty()) {
      bool every = *std::max_element(outages.begin(), outages.end()) <= 5.0;
      std::printf("target 'within 5 s every time': %s; target 'median 3 s or better': %s\n",
                  every ? "met" : "MISSED", median(outages) <= 3.0 ? "met" : "MISSED");
    }
  }

  Options options_;
  std::unique_ptr<testing::TempDir> temp_;
  bool own_cluster_ = false;
  std::string dir_;
  std::string shard_;
  ClusterManifest manifest_;
  std::unique_ptr<ZkClient> zk_;
  int64_t next_id_ = 0;
  int64_t lost_ = 0;
  int switchover_failures_ = 0;
};

}  // namespace
}  // namespace tally

int main(int argc, char** argv) {
  tally::Options options;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--dir") {
      options.dir = value();
    } else if (a == "--reps") {
      options.reps = std::stoi(value());
    } else if (a == "--switchovers") {
      options.switchovers = std::stoi(value());
    } else if (a == "--shard") {
      options.shard = value();
    } else {
      std::cerr << "unknown argument '" << a
                << "'; usage: failover_chaos [--dir DIR] [--reps N] [--switchovers N] "
                   "[--shard RANGE]\n";
      return 2;
    }
  }
  return tally::Chaos(std::move(options)).run();
}
