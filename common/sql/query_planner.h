// The analyst SQL planner (issue 7): parses a statement with PostgreSQL's own parser (libpg_query)
// and decides where it runs and how the cluster proxy merges the shards' answers: pinned to the
// shard(s) owning the video_id values in WHERE, any one shard (catalog and reference tables only),
// or every shard with a merge plan (concatenate; merge-sort with LIMIT/OFFSET pushed down;
// partial aggregates combined). What it cannot answer exactly is refused with SQLSTATE 0A000
// naming the construct; writes and DDL with 25006. Pure: no I/O, any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/core/result.h"
#include "common/keyspace/shard_map.h"

namespace tally::sql {

// Tables split by video_id (contract 1); every other table is a reference table, whole on each
// shard.
bool is_sharded_table(std::string_view name);

enum class AggregateKind { kCount, kSum, kMin, kMax, kAvg };

// One column of the merged result when partial aggregates are combined.
struct FinalColumn {
  std::string name;  // as PostgreSQL would name it
  // A group value copied from partial column `partial`, or an aggregate over partial column
  // `partial` (avg: the sum there, the count in `partial + 1`).
  bool aggregate = false;
  AggregateKind kind = AggregateKind::kCount;
  int partial = 0;
};

struct SortKey {
  int column = 0;         // index into the row
  bool from_end = false;  // column counts back from the last column (hidden sort columns)
  bool descending = false;
  bool nulls_first = false;
};

// A cross-shard HAVING: evaluated after combining, by PostgreSQL on one shard, over the combined
// groups (result_merge.h, having_query). `predicate` is the HAVING condition with each aggregate
// and GROUP BY expression replaced by __tally_h.c<k> (k indexes `columns`, final column indices)
// and the statement's parameters renumbered: $i is the statement's parameter parameters[i-1].
struct HavingPlan {
  std::string predicate;
  std::vector<int> columns;
  std::vector<int> parameters;
};

struct MergePlan {
  // false: rows concatenate (then sort/offset/limit). true: combine partial aggregates.
  bool combine = false;
  std::vector<int> group_columns;    // partial columns forming the group key (combine only)
  std::vector<FinalColumn> columns;  // combine only: the final columns, hidden ones last
  std::vector<SortKey> sort;         // over the final row; empty: no order
  int hidden_columns = 0;            // trailing columns dropped before sending
  std::optional<int64_t> limit;
  int64_t offset = 0;
  std::optional<HavingPlan> having;  // combine only
};

struct PlanError {
  std::string sqlstate;
  std::string message;
  std::string hint;
};

struct QueryPlan {
  enum class Kind {
    kAnyShard,  // no sharded table: run verbatim on one shard
    kShards,    // run shard_sql on `shards`, then merge
    kNoop,      // session statements answered by the proxy itself (SET, BEGIN, ...): command_tag
    kEmpty,     // an empty query string
    kError,     // refused: error
  };
  Kind kind = Kind::kError;
  std::vector<std::size_t> shards;  // indices into ShardMap::ranges(), sorted
  std::string shard_sql;
  MergePlan merge;
  std::string command_tag;
  PlanError error;
  bool single_shard() const { return kind == Kind::kShards && shards.size() == 1; }
};

// Plans one statement. `params` are the values of $1..$n when known (extended protocol), used
// only to pin the shard key. Several statements in one string: kError 0A000 (send them one by one).
QueryPlan plan_query(std::string_view sql, const ShardMap& map,
                     const std::vector<std::optional<std::string>>& params = {});

// For Parse: the highest parameter number ($n) the statement uses, 0 if none. kInvalidArgument
// with PostgreSQL's message for a syntax error or several statements.
Result<int> statement_parameters(std::string_view sql);
// The parameter numbers ($n) that occur in `sql` (a rewritten shard statement may drop some).
std::set<int> parameters_used(std::string_view sql);

}  // namespace tally::sql
