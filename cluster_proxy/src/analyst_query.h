// One analyst statement from text to answer, shared by the PostgreSQL-wire sessions (simple and
// extended protocol) and POST /v1/sql: plan (common/sql/query_planner), run on the shards with
// the statement timeout (AnalystExecutor), merge (common/sql/result_merge), and evaluate a
// cross-shard HAVING on the combined groups. Blocking: called on the caller's own thread (a
// session thread or an SQL worker thread), never on an io thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "cluster_proxy/src/analyst_config.h"
#include "cluster_proxy/src/analyst_executor.h"
#include "cluster_proxy/src/topology_cache.h"

namespace tally::cluster_proxy {

struct StatementOutcome {
  enum class Kind {
    kRows,     // a result set (SELECT, SHOW): result, command_tag "SELECT n"
    kCommand,  // no result set (SET, BEGIN, ...): command_tag
    kEmpty,    // an empty query string
    kError,    // error
  };
  Kind kind = Kind::kError;
  sql::ResultSet result;
  std::string command_tag;
  SqlError error;
};

// Plans and runs `sql`. `params` (extended protocol, HTTP) are bound to $1..$n: they pin the
// shard key when they are text (or binary text-like) values, and go to the shards as parameters.
StatementOutcome run_analyst_statement(AnalystExecutor& executor, const TopologyCache& topology,
                                       const AnalystConfig& config, std::string_view sql,
                                       const ShardParams* params);

// Describes `sql` (parameter types, result columns) as a single PostgreSQL would: session
// statements (SET, BEGIN, ...) and empty queries locally (no parameters, no rows), anything else
// by preparing it on one shard it would run on.
bool describe_analyst_statement(AnalystExecutor& executor, const TopologyCache& topology,
                                const AnalystConfig& config, std::string_view sql,
                                const std::vector<uint32_t>& declared_types,
                                StatementDescription& out, SqlError& error);

// The text of each parameter where it is known (for routing): text-format values, and binary
// values of text-like types (their binary form is the text).
std::vector<std::optional<std::string>> routing_values(const ShardParams& params);

}  // namespace tally::cluster_proxy
