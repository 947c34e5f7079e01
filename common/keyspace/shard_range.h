// ShardRange: a half-open range [start, end) of the unsigned 64-bit keyspace, written in Vitess
// notation ("-", "-80", "40-80", "80-"; hex digits are the leading bytes of the 64-bit value).
// Always valid once built (start < end); an immutable value type, safe to share across threads.
#pragma once

#include <compare>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/core/result.h"
#include "common/keyspace/ksid.h"

namespace tally {

class ShardRange {
 public:
  // The whole keyspace, "-".
  static ShardRange whole();

  // Parses Vitess notation "<start>-<end>": each side is empty or an even number (at most 16) of
  // hex digits, the leading bytes of the 64-bit bound ("80" = 0x8000000000000000); an empty start
  // is 0, an empty end is the end of the space (2^64). Uppercase hex is accepted, start < end is
  // required. Errors (kInvalidArgument) quote the text and say what was expected.
  static Result<ShardRange> parse(std::string_view text);

  // [start, end); end == nullopt means "to the end of the space" (2^64). Requires start < end.
  static Result<ShardRange> from_bounds(KeyspaceId start, std::optional<KeyspaceId> end);

  KeyspaceId start() const { return start_; }
  // nullopt: the range runs to the end of the space.
  std::optional<KeyspaceId> end() const { return end_; }
  bool is_whole() const { return start_ == 0 && !end_; }

  // Canonical Vitess notation: lowercase hex, trailing zero bytes stripped, an empty side for
  // 0 / the end of the space: "-", "-80", "4080-80", "c0-". parse(name()) == *this.
  std::string name() const;

  bool contains(KeyspaceId ksid) const { return ksid >= start_ && (!end_ || ksid < *end_); }
  bool overlaps(const ShardRange& other) const;

  // Bounds for SQL over the bigint column (contract 1): the range is
  // `ksid >= sql_lower_bound() AND ksid < *sql_upper_bound()`, the upper part omitted when
  // sql_upper_bound() is nullopt.
  int64_t sql_lower_bound() const { return ksid_to_sql(start_); }
  std::optional<int64_t> sql_upper_bound() const;
  // The same as a ready SQL condition on `column`, leaving out bounds that are always true:
  // "ksid >= 0 AND ksid < 4611686018427387904" for "80-c0", "TRUE" for "-".
  std::string sql_condition(std::string_view column = "ksid") const;

  // The two halves [start, mid) and [mid, end), mid = start + width / 2: "-" -> "-80", "80-";
  // "40-80" -> "40-60", "60-80". kInvalidArgument if the range holds a single ksid.
  Result<std::pair<ShardRange, ShardRange>> split() const;

  // Ordered by start, then by end (the open end last); ranges in a ShardMap sort in key order.
  friend bool operator==(const ShardRange& a, const ShardRange& b) = default;
  friend std::strong_ordering operator<=>(const ShardRange& a, const ShardRange& b);

 private:
  ShardRange(KeyspaceId start, std::optional<KeyspaceId> end) : start_(start), end_(end) {}

  KeyspaceId start_ = 0;
  std::optional<KeyspaceId> end_;
};

// Prints name(), for logs and test failure messages.
std::ostream& operator<<(std::ostream& os, const ShardRange& range);

// Vitess notation of one bound (leading bytes in lowercase hex, trailing zero bytes stripped,
// "" for 0): 0x4080000000000000 -> "4080".
std::string keyspace_bound_hex(KeyspaceId bound);

}  // namespace tally
