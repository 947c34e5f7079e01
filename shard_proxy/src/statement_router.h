// What the proxy needs to know about one SQL statement to route it: whether it is a sure read,
// whether it changes session state or transaction state, and the statement hints of contract 5
// (route, cache TTL, minimum LSN). Pure; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "common/core/result.h"

namespace tally::sql {
class Classifier;
}

namespace tally::shard_proxy {

struct StatementTraits {
  bool read_only = false;           // may go to the replica, may be cached
  bool session_state = false;       // SET, RESET, LISTEN, PREPARE, ...: leaks across clients
  bool begins_transaction = false;  // BEGIN / START TRANSACTION
  bool force_leader = false;        // hint route=leader
  bool copy = false;                // COPY: its data stream is not relayed
  bool multi_statement = false;     // more than one statement in the text (simple query only)
  std::optional<uint32_t> cache_ttl_ms;
  uint64_t min_lsn = 0;  // 0: none

  // One sure read that starts no transaction and touches no session state: in autocommit it may
  // share a pipelined server connection with other clients' reads.
  bool pipelinable() const {
    return read_only && !begins_transaction && !session_state && !multi_statement;
  }
};

// Errors: a malformed hint (kInvalidArgument, sent to the client as 22023).
Result<StatementTraits> analyze_statement(std::string_view sql, const sql::Classifier& classifier);

}  // namespace tally::shard_proxy
