// Statement hints (design brief, contract 5): a leading `/*tally: route=leader, cache_ttl_ms=500,
// min_lsn=0/16B3748*/` comment carrying per-statement wishes. Parsing is exact (unknown keys, bad
// values, duplicates are errors naming the key, the value and the expected form) and allocates
// only on failure. Pure functions without shared state: any thread may call them concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/core/result.h"
#include "common/pgclient/lsn.h"  // parse_lsn, format_lsn: min_lsn's text form

namespace tally::sql {

// Where a statement may run. kAny lets the proxy choose (its read/write split decides).
enum class Route : uint8_t { kLeader, kReplica, kAny };

// "leader", "replica", "any": the spelling the hint uses.
std::string_view route_name(Route route);

// cache_ttl_ms accepts 0 (do not cache) up to one day.
inline constexpr uint32_t kMaxCacheTtlMs = 86'400'000;

// The wishes of one statement; a key that was not given is nullopt.
struct StatementHints {
  std::optional<Route> route;
  std::optional<uint32_t> cache_ttl_ms;
  // A PostgreSQL LSN as (X << 32) | Y for the text form X/Y. A statement with min_lsn is never
  // answered from the cache or from a replica that has not replayed that far.
  std::optional<uint64_t> min_lsn;

  bool empty() const { return !route && !cache_ttl_ms && !min_lsn; }
  bool operator==(const StatementHints&) const = default;
};

struct HintedStatement {
  StatementHints hints;
  // True when at least one hint comment was found (even an empty `/*tally:*/`).
  bool has_hint_comment = false;
  // Where the statement proper begins: the first byte after the leading whitespace and comments
  // (hint or not); sql.size() when there is nothing else. The hint comments stay in the text, so
  // the whole string may be forwarded to PostgreSQL as it is.
  std::size_t body_offset = 0;
};

// Parses the hints of a statement. The statement may start with any mix of whitespace, `--` line
// comments and (nested) block comments; each block comment among them that starts exactly with
// `/*tally:` is a hint comment, any other comment is skipped. The first other byte ends the
// leading part: a hint comment after it is an ordinary comment, never a hint. Several hint
// comments merge; a key given twice is an error.
//
// Hint comment body: `key=value` pairs separated by commas; spaces, tabs and newlines are allowed
// around keys, values, '=' and ','; keys and the route value are case-insensitive.
//   route         leader | replica | any
//   cache_ttl_ms  decimal integer from 0 to 86400000
//   min_lsn       PostgreSQL LSN X/Y, each side 1-8 hex digits
// Errors are kInvalidArgument (sent to clients as SQLSTATE 22023), for example
//   statement hint cache_ttl_ms="abc": expected an integer from 0 to 86400000
// A leading block comment without its closing */ is an error when it is a hint comment; an
// unterminated ordinary comment ends the leading part there (body_offset points at it), so the
// statement reaches PostgreSQL, which reports it.
//
// Cost: a scan of the leading bytes only; no allocation unless an error is returned.
Result<HintedStatement> parse_statement_hints(std::string_view sql);

}  // namespace tally::sql
