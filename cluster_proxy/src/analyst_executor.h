// AnalystExecutor: one analyst session's connections to the shard proxies (libpq, opened lazily as
// the analyst role, kept for the session) and the parallel run of one statement on a set of
// shards with a deadline. Blocking: called only from that session's own thread, never from an io
// thread. Not thread-safe (one per session).
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
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

// Bound parameters of an extended-protocol statement, sent to the shards as parameters (never
// spliced into the SQL text). All three vectors have one entry per parameter.
struct ShardParams {
  std::vector<std::optional<std::string>> values;  // nullopt: NULL
  std::vector<uint32_t> types;                     // 0: the shard infers it
  std::vector<int> formats;                        // 0 text, 1 binary
};

// What a shard says about a statement: its parameter types and result columns (none: NoData).
struct StatementDescription {
  std::vector<uint32_t> parameter_types;
  std::vector<sql::ResultColumn> columns;
  bool returns_rows = false;
};

class AnalystExecutor {
 public:
  AnalystExecutor(std::string database, std::string user, std::string password,
                  int connect_timeout_ms);

  // Sends `sql` to every target at once and collects the answers in target order. On the first
  // error (a shard's ErrorResponse, a lost connection, the deadline: 57014) the statement fails
  // and the connections involved are dropped if they are not reusable.
  // With `params` the statement goes out in the extended protocol (PQsendQueryParams).
  bool run(const std::vector<ShardTarget>& targets, const std::string& sql,
           const ShardParams* params, std::chrono::steady_clock::time_point deadline,
           std::vector<ShardAnswer>& answers, SqlError& error);

  // Prepares `sql` as the unnamed statement on `target` (parameter types as declared, 0 to
  // infer) and describes it.
  bool describe(const ShardTarget& target, const std::string& sql,
                const std::vector<uint32_t>& parameter_types,
                std::chrono::steady_clock::time_point deadline, StatementDescription& out,
                SqlError& error);

 private:
  using Conn = std::unique_ptr<PGconn, decltype(&PQfinish)>;
  using Res = std::unique_ptr<PGresult, decltype(&PQclear)>;
  PGconn* connection(const ShardTarget& target, SqlError& error);
  // After a PQsend* on one connection: every result up to the terminating null, or false (the
  // first error, the connection dropped on loss or at the deadline).
  bool collect(const ShardTarget& target, PGconn* conn,
               std::chrono::steady_clock::time_point deadline, std::vector<Res>& results,
               SqlError& error);

  std::string database_;
  std::string user_;
  std::string password_;
  int connect_timeout_ms_;
  std::map<std::string, Conn> connections_;  // by address
};

}  // namespace tally::cluster_proxy
