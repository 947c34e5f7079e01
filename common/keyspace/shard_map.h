// ShardMap: the immutable set of shard ranges of one keyspace, checked at construction to tile
// the whole 64-bit space exactly (no gap, no overlap), so every ksid has exactly one owner.
// Lookups are O(log n) and const; a built map may be read from any number of threads at once.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/core/result.h"
#include "common/keyspace/ksid.h"
#include "common/keyspace/shard_range.h"

namespace tally {

class ShardMap {
 public:
  // Sorts the ranges and checks that they tile the space. kInvalidArgument on an empty set, a gap
  // (names the uncovered interval in Vitess notation and its neighbours) or an overlap (names
  // both).
  static Result<ShardMap> from_ranges(std::vector<ShardRange> ranges);
  // The same from Vitess names such as {"-80", "80-"} (the /tally/keyspace "shards" list).
  static Result<ShardMap> from_names(const std::vector<std::string>& names);
  // n equal ranges, n a power of two in [1, kMaxUniformShards]:
  // 1 -> "-"; 2 -> "-80", "80-"; 4 -> "-40", "40-80", "80-c0", "c0-".
  static Result<ShardMap> uniform(int n);
  static constexpr int kMaxUniformShards = 1 << 16;

  // The range owning `ksid` (exactly one exists), by binary search.
  const ShardRange& shard_for(KeyspaceId ksid) const { return ranges_[index_for(ksid)]; }
  // Position of that range in ranges(), for per-shard arrays.
  std::size_t index_for(KeyspaceId ksid) const;
  // Validates the id (validate_video_id), then routes ksid_for(video_id).
  Result<ShardRange> shard_for_video(std::string_view video_id) const;

  // Sorted in key order, tiling the space; never empty.
  const std::vector<ShardRange>& ranges() const { return ranges_; }
  std::size_t size() const { return ranges_.size(); }
  // Names in key order, e.g. {"-80", "80-"}.
  std::vector<std::string> names() const;

  friend bool operator==(const ShardMap& a, const ShardMap& b) = default;

 private:
  explicit ShardMap(std::vector<ShardRange> ranges) : ranges_(std::move(ranges)) {}

  std::vector<ShardRange> ranges_;
};

}  // namespace tally
