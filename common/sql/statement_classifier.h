// A conservative lexical classifier of SQL statements for the shard proxy's read/write split,
// result cache and transaction pooling: kRead only when sure, kWrite for anything unsure. One
// pass over the text without a parser and without allocating. A built Classifier is immutable:
// any number of threads may classify with it concurrently.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tally::sql {

enum class StatementKind : uint8_t {
  // Only whitespace, comments and semicolons: answer with EmptyQueryResponse.
  kEmpty,
  // Sure to change nothing: SELECT / WITH / VALUES / TABLE without a data-modifying keyword,
  // locking clause, INTO or a call of a function not known to be read-only; SHOW; EXPLAIN
  // without ANALYZE. May run on a replica and may be answered from the result cache. Read-only
  // is not stable: now() and random() are read-only, so caching is the caller's policy (a
  // cache_ttl_ms hint), and the cache key must cover what the result depends on.
  kRead,
  // Everything else, including anything the classifier cannot see through: leader, no cache.
  kWrite,
  // BEGIN, START TRANSACTION.
  kTransactionBegin,
  // COMMIT, END, ROLLBACK, ABORT (also AND CHAIN: see Classification::chain) and PREPARE
  // TRANSACTION. Not COMMIT/ROLLBACK PREPARED or ROLLBACK TO SAVEPOINT: those are kWrite.
  kTransactionEnd,
  // Changes or depends on server session state, which transaction pooling must pin or replay:
  // SET / RESET (not SET LOCAL, SET TRANSACTION, SET CONSTRAINTS: transaction-scoped, kWrite),
  // DISCARD, LISTEN, UNLISTEN, PREPARE, EXECUTE, DEALLOCATE, LOAD, DECLARE, FETCH, MOVE, CLOSE,
  // CREATE TEMP ..., and statements calling set_config, setseed or session advisory locks.
  // Route to the leader and never cache unless the session is pinned elsewhere.
  kSessionState,
};

// "empty", "read", "write", "transaction_begin", "transaction_end", "session_state".
std::string_view statement_kind_name(StatementKind kind);

struct Classification {
  StatementKind kind = StatementKind::kEmpty;
  // More than one non-empty statement outside quotes and comments. The kind then combines them:
  // kEmpty if all are empty; kRead if all are reads; else kSessionState if any is; else the kind
  // of the last transaction statement if any (BEGIN; INSERT ... -> kTransactionBegin); else
  // kWrite. The transaction status a pooler acts on is the one in PostgreSQL's ReadyForQuery.
  bool multi_statement = false;
  // COMMIT/ROLLBACK ... AND CHAIN: the transaction ends and a new one starts at once, so a
  // pooler must keep the server connection.
  bool chain = false;
  // BEGIN/START TRANSACTION ... READ ONLY: the transaction may run on a replica.
  bool read_only_transaction = false;
  // Why the kind was chosen, for logs and tests: a static text such as "calls a function not
  // known to be read-only".
  std::string_view reason;
  // The part of the classified text that decided it (a keyword, a function name, the start of
  // an unterminated string); empty when nothing in particular did. Valid as long as that text.
  std::string_view evidence;
};

// How a SELECT / WITH / VALUES / TABLE statement is judged (EXPLAIN ANALYZE judges the explained
// statement the same way; EXPLAIN without ANALYZE executes nothing and is kRead):
//  - INSERT, UPDATE, DELETE or MERGE anywhere as a bare word (a data-modifying CTE, or a column
//    so named: conservative), INTO anywhere (SELECT INTO), FOR UPDATE / NO KEY UPDATE / SHARE /
//    KEY SHARE: kWrite.
//  - `name (` where name is an identifier, possibly schema-qualified and/or double-quoted, is a
//    call unless name is an unquoted reserved or col_name keyword of PostgreSQL (IN, EXISTS, ANY,
//    CAST, VALUES, ARRAY, ROW, numeric, varchar, ...) or JOIN, or it follows `::` (type
//    modifiers), AS (alias lists, types), WITH / RECURSIVE (CTE column lists), TABLESAMPLE, or a
//    `)` (alias lists after a subquery or function; FILTER / OVER after an aggregate), or is BY
//    after ORDER / GROUP / PARTITION, or SETS after GROUPING. A call of a function outside the
//    allowlist makes the statement kWrite; of set_config, setseed or a session advisory lock,
//    kSessionState.
// What a lexical check cannot see, and the caller must not rely on: side effects hidden in views,
// rules, user-defined operators and casts, or in functions shadowing built-in names through the
// search_path (pg_catalog is assumed to come first, as by default); and reads of temporary tables
// (a session that created one, kSessionState, must stay pinned). A user function named like an
// unquoted non-call keyword (join, say) is not recognized as a call.
class Classifier {
 public:
  // Only the built-in allowlist of read-only functions.
  Classifier();
  // The built-in allowlist plus `extra_read_only_functions`, for functions installed by
  // migrations. Each is matched exactly against a call's name as PostgreSQL resolves it:
  // unquoted parts folded to lower case, quoted parts as written. An unqualified entry matches
  // an unqualified call; "schema.name" matches a call so qualified.
  explicit Classifier(std::vector<std::string> extra_read_only_functions);

  // `sql` is the statement text after any hint comment (see statement_hints.h); comments in it
  // are skipped. Never fails: what the classifier cannot see through is kWrite.
  Classification classify(std::string_view sql) const;

  // Whether a call of `resolved_name` ("count", "pg_catalog.count", "tally.read_stats") is read-
  // only for this classifier. pg_catalog.X is read-only when X is in the built-in allowlist.
  bool is_read_only_function(std::string_view resolved_name) const;

  // The built-in allowlist, sorted: functions (and type names used as casts) that do not write
  // and work on a replica. pg_current_wal_lsn is deliberately absent: it fails during recovery,
  // so a statement calling it goes to the leader.
  static std::span<const std::string_view> builtin_read_only_functions();

 private:
  std::vector<std::string> extra_;  // sorted, unique
};

}  // namespace tally::sql
