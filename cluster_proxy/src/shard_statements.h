// The SQL the cluster proxy sends to shards, one fixed text per kind of request (so each is a
// prepared statement, parsed once per connection), with every client value as a Bind parameter.
// Only statement hints vary the text: a fixed cache hint, or a min_lsn built from a validated LSN.
// Pure functions; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cluster_proxy/src/api_request.h"
#include "cluster_proxy/src/shard_call.h"

namespace tally::cluster_proxy {

// The leading hint of a stats read (contract 5): min_lsn (never cached, never a lagging replica)
// when the read carries a token for this shard, else cache_ttl_ms when caching is on, else none.
std::string read_hint(int cache_ttl_ms, std::optional<uint64_t> min_lsn);

// count and sum over the request's range, read from the coarsest buckets that tile it. One row:
// (count bigint, sum bigint). With a granularity: one row per non-empty bucket of that size,
// (bucket_start_ms bigint, count bigint, sum bigint) in time order.
ShardStatement stats_statement(const StatsRequest& request, const std::string& hint);

// One shard's top `limit` videos by count or sum: rows (video_id, count, sum), best first.
ShardStatement top_statement(const TopRequest& request, const std::string& hint);

// tally_apply_counters for one shard's rows: one row (outcome text, mark bigint).
ShardStatement apply_statement(const ApplyRequest& request, std::string rows_json);
// The leader's current WAL position after the apply committed: one row (lsn text).
ShardStatement current_lsn_statement();
// The shard's marks for a processor: rows (partition int, mark bigint).
ShardStatement marks_statement(const std::string& processor_id);

ShardStatement video_upsert_statement(const VideoPut& video);
// A reference-table row is the same on every shard: created_at (on first insert) and updated_at
// come from `written_at_ms` (the proxy's clock, epoch ms), not from each shard's now(), so any one
// shard answers a report on channels exactly as any other would.
ShardStatement channel_upsert_statement(const ChannelPut& channel, int64_t written_at_ms);

}  // namespace tally::cluster_proxy
