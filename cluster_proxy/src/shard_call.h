// What the cluster proxy asks of one shard, and what comes back: statements sent to one of the
// shard's proxies in pipelined exchanges (each exchange one round trip ending in one Sync, so one
// implicit transaction there), with their rows in text format. Plain values; any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/core/result.h"

namespace tally::cluster_proxy {

// A statement with its parameters, which travel as Bind values (never spliced into the text).
// `prepare`: a named statement, parsed once per connection and reused; otherwise the unnamed
// statement (for texts that vary per call, such as a min_lsn hint).
struct ShardStatement {
  std::string text;
  std::vector<std::optional<std::string>> params;
  bool prepare = true;
};

// One round trip: the statements, then one Sync.
struct ShardExchange {
  std::vector<ShardStatement> statements;
};

struct ShardCall {
  std::string shard;                 // the range, e.g. "-80", for messages, metrics and breakers
  std::vector<std::string> proxies;  // host:port of the shard's proxies, tried in turn
  std::vector<ShardExchange> exchanges;
  // Idempotent calls are retried (with backoff and jitter) after a failure that may have reached
  // the shard; any call moves to the next proxy when a connection could not be made at all.
  bool idempotent = true;
  std::chrono::milliseconds timeout{2000};
};

struct StatementResult {
  bool ok = true;
  std::string sqlstate;  // when !ok
  std::string message;   // when !ok
  int rows = 0;
  int columns = 0;
  std::vector<std::optional<std::string>> cells;  // row-major, text format; nullopt is NULL

  const std::optional<std::string>& at(int row, int column) const {
    return cells[static_cast<size_t>(row * columns + column)];
  }
};

// Per exchange, per statement. A call-level error (kUnavailable: no proxy reachable, the shard's
// nodes are down, the circuit is open; kTimeout) fails the whole call instead.
using ShardCallResults = std::vector<std::vector<StatementResult>>;

// SQLSTATEs that mean "this shard cannot serve right now" rather than "this statement is wrong":
// connection exceptions (08), admin shutdown / cannot connect now (57P01-57P03), too many
// connections (53300), and the proxy's read-only/ paused-shard refusals.
bool shard_unavailable_sqlstate(std::string_view sqlstate);

}  // namespace tally::cluster_proxy
