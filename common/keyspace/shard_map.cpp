#include "common/keyspace/shard_map.h"

#include <algorithm>
#include <bit>

namespace tally {
namespace {

std::string quoted_name(const ShardRange& range) {
  return "\"" + range.name() + "\"";
}

Error tiling_error(std::string_view problem) {
  return make_error(ErrorCode::kInvalidArgument,
                    "shard ranges do not tile the keyspace exactly: " + std::string(problem));
}

}  // namespace

Result<ShardMap> ShardMap::from_ranges(std::vector<ShardRange> ranges) {
  if (ranges.empty()) {
    return tiling_error("no ranges given; at least one is needed (\"-\" covers the whole space)");
  }
  std::sort(ranges.begin(), ranges.end());
  if (ranges.front().start() != 0) {
    const ShardRange gap = *ShardRange::from_bounds(0, ranges.front().start());
    return tiling_error("gap " + quoted_name(gap) + " between the start of the space and " +
                        quoted_name(ranges.front()));
  }
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    const ShardRange& prev = ranges[i - 1];
    const ShardRange& next = ranges[i];
    if (prev == next) {
      return tiling_error("range " + quoted_name(prev) + " is listed twice");
    }
    // prev.start() <= next.start() after sorting; an open-ended prev overlaps everything after it.
    if (!prev.end() || next.start() < *prev.end()) {
      return tiling_error("ranges " + quoted_name(prev) + " and " + quoted_name(next) + " overlap");
    }
    if (next.start() > *prev.end()) {
      const ShardRange gap = *ShardRange::from_bounds(*prev.end(), next.start());
      return tiling_error("gap " + quoted_name(gap) + " between " + quoted_name(prev) + " and " +
                          quoted_name(next));
    }
  }
  if (const ShardRange& last = ranges.back(); last.end()) {
    const ShardRange gap = *ShardRange::from_bounds(*last.end(), std::nullopt);
    return tiling_error("gap " + quoted_name(gap) + " between " + quoted_name(last) +
                        " and the end of the space");
  }
  return ShardMap(std::move(ranges));
}

Result<ShardMap> ShardMap::from_names(const std::vector<std::string>& names) {
  std::vector<ShardRange> ranges;
  ranges.reserve(names.size());
  for (const std::string& name : names) {
    Result<ShardRange> range = ShardRange::parse(name);
    if (!range.ok()) return range.error();
    ranges.push_back(*range);
  }
  return from_ranges(std::move(ranges));
}

Result<ShardMap> ShardMap::uniform(int n) {
  if (n < 1 || n > kMaxUniformShards || !std::has_single_bit(static_cast<unsigned>(n))) {
    return make_error(ErrorCode::kInvalidArgument,
                      "uniform shard map of " + std::to_string(n) +
                          " shards: expected a power of two from 1 to " +
                          std::to_string(kMaxUniformShards) + " (1, 2, 4, 8, ...)");
  }
  if (n == 1) return ShardMap({ShardRange::whole()});
  const int shift = 64 - std::countr_zero(static_cast<unsigned>(n));
  std::vector<ShardRange> ranges;
  ranges.reserve(static_cast<std::size_t>(n));
  for (uint64_t i = 0; i < static_cast<uint64_t>(n); ++i) {
    const std::optional<KeyspaceId> end = i + 1 < static_cast<uint64_t>(n)
                                              ? std::optional<KeyspaceId>((i + 1) << shift)
                                              : std::nullopt;
    ranges.push_back(*ShardRange::from_bounds(i << shift, end));
  }
  return ShardMap(std::move(ranges));
}

std::size_t ShardMap::index_for(KeyspaceId ksid) const {
  // The first range starting above ksid, minus one; ranges_[0] starts at 0, so one always exists.
  const auto after =
      std::upper_bound(ranges_.begin(), ranges_.end(), ksid,
                       [](KeyspaceId key, const ShardRange& range) { return key < range.start(); });
  return static_cast<std::size_t>(after - ranges_.begin()) - 1;
}

Result<ShardRange> ShardMap::shard_for_video(std::string_view video_id) const {
  if (Status valid = validate_video_id(video_id); !valid.ok()) return valid.error();
  return shard_for(ksid_for(video_id));
}

std::vector<std::string> ShardMap::names() const {
  std::vector<std::string> out;
  out.reserve(ranges_.size());
  for (const ShardRange& range : ranges_) out.push_back(range.name());
  return out;
}

}  // namespace tally
