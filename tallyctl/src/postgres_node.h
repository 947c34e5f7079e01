// PostgresNode: one PostgreSQL 15 server of a local cluster (a shard's leader or its streaming
// replica), on loopback, with its data directory under the cluster directory. Creates the node
// (initdb with data checksums, so pg_rewind can rejoin a demoted leader later; or pg_basebackup -R
// from the leader), starts the postmaster as a detached daemon and stops it by PID.
// PostgreSQL refuses to run as root: a root caller passes the account to run it as.
// Call from one control thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/core/result.h"
#include "common/process/system_user.h"

namespace tally {

struct PostgresCredentials {
  std::string superuser;  // owns the cluster; the "admin" user of cluster.json
  std::string superuser_password;
  std::string replication_user;
  std::string replication_password;
};

struct PostgresNodeOptions {
  std::filesystem::path data_dir;
  std::filesystem::path log_file;
  int port = 5432;
  std::filesystem::path bin_dir = "/usr/lib/postgresql/15/bin";
  std::optional<SystemUser> run_as;
  std::string shared_buffers = "128MB";
  int max_connections = 200;
};

class PostgresNode {
 public:
  explicit PostgresNode(PostgresNodeOptions options);

  const PostgresNodeOptions& options() const { return options_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(options_.port); }
  // conninfo for `user` on `dbname` over TCP (the nodes listen on 127.0.0.1 only).
  std::string conninfo(const std::string& user, const std::string& password,
                       const std::string& dbname) const;

  // initdb + Tally's settings + pg_hba (password auth on loopback only). Fails if data_dir exists.
  Status init_leader(const PostgresCredentials& credentials);
  // pg_basebackup from `leader` with a replication slot named `slot`; writes standby.signal and
  // primary_conninfo (-R), then sets this node's port.
  Status init_replica(const PostgresNode& leader, const PostgresCredentials& credentials,
                      const std::string& slot);

  // Starts the postmaster and waits until it accepts connections (a standby: hot standby ready).
  Result<pid_t> start(const PostgresCredentials& credentials,
                      std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Where the server logs once it runs (its logging collector): postgresql-HH.log, one file per
  // hour of the day, next to options().log_file as "<log_file stem>-log".
  std::filesystem::path server_log_dir() const;
  // True when the server accepts connections (PQping).
  bool accepting(const PostgresCredentials& credentials) const;
  // Fast shutdown (SIGINT), then SIGKILL after `grace`.
  Status stop(pid_t pid, std::chrono::milliseconds grace = std::chrono::seconds(20)) const;

  // Failover operations (tallyctl shard switchover / rejoin); the node must be stopped.
  // Makes the node a standby of `leader` streaming through replication slot `slot`: standby.signal,
  // and primary_conninfo (the replication user) and primary_slot_name in postgresql.auto.conf,
  // replacing earlier values (a promoted node keeps its old ones, ignored without standby.signal);
  // synchronous_standby_names and default_transaction_read_only (fencing) are removed there.
  Status configure_standby(const PostgresNode& leader, const PostgresCredentials& credentials,
                           const std::string& slot) const;
  // pg_rewind from the running `source` (PostgreSQL 15 first runs crash recovery in single-user
  // mode when the node was not shut down cleanly), then this node's own tally.conf again (pg_rewind
  // copies the source's configuration files).
  Status rewind_from(const PostgresNode& source, const PostgresCredentials& credentials) const;
  // The fallback when a rewind fails: moves the data directory aside (never deletes it; the
  // returned path) and takes a fresh pg_basebackup from `leader` through the existing slot `slot`.
  Result<std::filesystem::path> rebuild_from(const PostgresNode& leader,
                                             const PostgresCredentials& credentials,
                                             const std::string& slot);
  // A field of pg_controldata's output, e.g. "Latest checkpoint location" or
  // "Database cluster state".
  Result<std::string> control_data(const std::string& field) const;
  // The postmaster's PID from postmaster.pid, when the file exists.
  std::optional<pid_t> postmaster_pid() const;

 private:
  Status write_settings() const;
  Status run_tool(const std::string& tool, std::vector<std::string> args,
                  const std::vector<std::pair<std::string, std::string>>& env,
                  std::chrono::milliseconds timeout,
                  const std::filesystem::path& output = {}) const;
  Status prepare_dir(const std::filesystem::path& dir) const;
  Status chown_file(const std::filesystem::path& file) const;
  Status restore_settings(const std::string& text) const;

  PostgresNodeOptions options_;
};

}  // namespace tally
