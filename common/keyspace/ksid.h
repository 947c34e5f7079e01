// Keyspace ids (design brief, contract 1): ksid = XXH64(video_id bytes, seed 0) as an unsigned
// 64-bit value, stored in PostgreSQL as a bigint holding ksid XOR 2^63 so signed order equals
// unsigned order. Pure functions without shared state: any thread may call them concurrently.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/core/quote.h"  // quote_for_message, used in this library's errors
#include "common/core/result.h"

namespace tally {

// The routing key of a row: a point in the unsigned 64-bit space that shards split into ranges.
using KeyspaceId = uint64_t;

// Bounds of a video id (design brief: 1-64 chars of [A-Za-z0-9_-]).
inline constexpr std::size_t kMaxVideoIdLength = 64;

// XXH64 of the id's bytes with seed 0. This is the documented hash of the contract: changing it
// moves every row to another shard, so tests pin it with golden vectors. Does not validate the id.
KeyspaceId ksid_for(std::string_view video_id);

// The bigint PostgreSQL stores for a ksid: (ksid XOR 2^63) reinterpreted as signed. Monotonic:
// a < b (unsigned) iff ksid_to_sql(a) < ksid_to_sql(b) (signed), so the key range [a, b) is the
// predicate `ksid >= ksid_to_sql(a) AND ksid < ksid_to_sql(b)`.
constexpr int64_t ksid_to_sql(KeyspaceId ksid) {
  return std::bit_cast<int64_t>(ksid ^ (uint64_t{1} << 63));
}

// Inverse of ksid_to_sql.
constexpr KeyspaceId ksid_from_sql(int64_t sql_value) {
  return std::bit_cast<uint64_t>(sql_value) ^ (uint64_t{1} << 63);
}

// OK iff the id is 1-64 characters of [A-Za-z0-9_-]. Otherwise kInvalidArgument naming the id
// (quoted with quote_for_message) and what was expected, e.g.
//   video_id "ab c": expected 1-64 characters of [A-Za-z0-9_-], found ' ' at position 2
Status validate_video_id(std::string_view video_id);

}  // namespace tally
