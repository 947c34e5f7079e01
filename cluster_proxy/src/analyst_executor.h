// AnalystExecutor: one analyst session's connections to the shard proxies (libpq, opened lazily as
// the analyst role, kept for the session) and the parallel run of one statement on a set of
// shards with a deadline. Blocking: called only from that session's own thread, never from an io
// thread. Not thread-safe (one per session).
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/sql/result_merge.h"

namespace tally::cluster_proxy {

// An error to send to the client as ErrorResponse.
struct SqlError {
  std::string sqlstate;
  std::string message;
  std::string detail;
  std::string hint;
};

struct ShardTarget {
  std::string shard;    // range name, for messages
  std::string address;  // host:port of one of its shard proxies
};

struct ShardAnswer {
  sql::ResultSet result;
  std::string command_tag;  // PQcmdStatus, e.g. "SELECT 3" or "SHOW"
};

class AnalystExecutor {
 public:
  AnalystExecutor(std::string database, std::string user, std::string password,
                  int connect_timeout_ms);

  // Sends `sql` to every target at once and collects the answers in target order. On the first
  // error (a shard's ErrorResponse, a lost connection, the deadline: 57014) the statement fails
  // and the connections involved are dropped if they are not reusable.
  bool run(const std::vector<ShardTarget>& targets, const std::string& sql,
           std::chrono::steady_clock::time_point deadline, std::vector<ShardAnswer>& answers,
           SqlError& error);

 private:
  using Conn = std::unique_ptr<PGconn, decltype(&PQfinish)>;
  PGconn* connection(const ShardTarget& target, SqlError& error);

  std::string database_;
  std::string user_;
  std::string password_;
  int connect_timeout_ms_;
  std::map<std::string, Conn> connections_;  // by address
};

}  // namespace tally::cluster_proxy
