// Merges the shards' answers to one planned statement (query_planner.h) into the result a single
// PostgreSQL would return: concatenation, merge order by the plan's sort keys (PostgreSQL's
// ordering for numbers, C-collation byte order for text), OFFSET/LIMIT, and the combination of
// partial aggregates (count, sum, min, max; avg from sum and count with numeric's own scale).
// Pure functions over materialised results; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/core/result.h"
#include "common/sql/query_planner.h"

namespace tally::sql {

struct ResultColumn {
  std::string name;
  uint32_t type_oid = 25;
  int16_t type_size = -1;
  int32_t type_modifier = -1;
};

using Row = std::vector<std::optional<std::string>>;  // text format; nullopt is NULL

struct ResultSet {
  std::vector<ResultColumn> columns;
  std::vector<Row> rows;
};

// Type OIDs the merger knows.
inline constexpr uint32_t kInt8Oid = 20;
inline constexpr uint32_t kInt2Oid = 21;
inline constexpr uint32_t kInt4Oid = 23;
inline constexpr uint32_t kFloat4Oid = 700;
inline constexpr uint32_t kFloat8Oid = 701;
inline constexpr uint32_t kNumericOid = 1700;

// Compares two values of one column type as PostgreSQL orders them (NULLs not included).
int compare_values(uint32_t type_oid, const std::string& a, const std::string& b);

// The merged result, without the plan's hidden columns. Errors: kUnsupported for a partial type
// the combiner cannot add exactly, kResourceExhausted when more than max_rows rows would be
// held (the shards' rows count while merging), kInvalidArgument for int8 overflow.
Result<ResultSet> merge_results(const MergePlan& plan, std::vector<ResultSet> shards,
                                std::size_t max_rows);

// merge_results in two steps, for a plan with HAVING: combine_results concatenates or combines the
// partial aggregates (every column, hidden ones included, no order); finish_results sorts,
// applies OFFSET/LIMIT and drops the hidden columns.
Result<ResultSet> combine_results(const MergePlan& plan, std::vector<ResultSet> shards,
                                  std::size_t max_rows);
Result<ResultSet> finish_results(const MergePlan& plan, ResultSet combined);

// A cross-shard HAVING (plan.having) is evaluated by PostgreSQL itself, on one shard, over the
// combined groups passed as arrays: `sql` returns the 1-based numbers of the groups that pass.
// Its parameters: first the statement's own parameters user_parameters (1-based numbers, in
// order), then `arrays` (text array literals of the types array_types), one per HAVING column.
struct HavingQuery {
  std::string sql;
  std::vector<int> user_parameters;
  std::vector<std::string> arrays;
  std::vector<uint32_t> array_types;
};
// kUnsupported for a column type without a known array type, kInvalidArgument when the
// predicate names a parameter beyond `bound_parameters`.
Result<HavingQuery> having_query(const MergePlan& plan, const ResultSet& combined,
                                 std::size_t bound_parameters);
// Keeps the rows of `combined` whose numbers the HAVING query returned (first column).
void filter_groups(ResultSet& combined, const ResultSet& kept);
// The array type of a built-in scalar type (int8 -> int8[]), if known.
std::optional<uint32_t> array_type_of(uint32_t type_oid);

}  // namespace tally::sql
