#include "cluster_proxy/src/shard_statements.h"

namespace tally::cluster_proxy {
namespace {

// UNION ALL of the five parts of a tiling (time order: minute, hour, day, hour, minute), each an
// index range scan; `columns` are the selected columns, `filter` the leading conditions, and
// parameters $first .. $first+9 the parts' bounds.
std::string tiled_union(const std::string& columns, const std::string& filter, int first) {
  static const char* kTables[] = {"video_stats_minute", "video_stats_hour", "video_stats_day",
                                  "video_stats_hour", "video_stats_minute"};
  std::string sql;
  for (int i = 0; i < 5; ++i) {
    if (i > 0) sql += " UNION ALL ";
    int lo = first + 2 * i;
    sql += "SELECT " + columns + " FROM " + kTables[i] + " WHERE " + filter +
           " AND bucket_start >= $" + std::to_string(lo) + "::timestamptz AND bucket_start < $" +
           std::to_string(lo + 1) + "::timestamptz";
  }
  return sql;
}

void add_tiling(ShardStatement& st, const Tiling& t) {
  for (const Span* s : {&t.minute_lo, &t.hour_lo, &t.day, &t.hour_hi, &t.minute_hi}) {
    st.params.emplace_back(format_sql_timestamptz(s->start_ms));
    st.params.emplace_back(format_sql_timestamptz(s->end_ms));
  }
}

}  // namespace

std::string read_hint(int cache_ttl_ms, std::optional<uint64_t> min_lsn) {
  if (min_lsn) return "/*tally: min_lsn=" + format_lsn(*min_lsn) + "*/ ";
  if (cache_ttl_ms > 0) return "/*tally: cache_ttl_ms=" + std::to_string(cache_ttl_ms) + "*/ ";
  return "";
}

ShardStatement stats_statement(const StatsRequest& request, const std::string& hint) {
  ShardStatement st;
  const std::string filter = "video_id = $1 AND event_type = $2";
  if (request.granularity) {
    st.text = hint +
              "SELECT (extract(epoch FROM date_trunc($13, b.bucket_start, 'UTC')) * 1000)::bigint, "
              "sum(b.count)::bigint, sum(b.sum)::bigint FROM (" +
              tiled_union("bucket_start, count, sum", filter, 3) + ") AS b GROUP BY 1 ORDER BY 1";
  } else {
    st.text = hint +
              "SELECT coalesce(sum(b.count), 0)::bigint, coalesce(sum(b.sum), 0)::bigint FROM (" +
              tiled_union("count, sum", filter, 3) + ") AS b";
  }
  st.params.emplace_back(request.video_id);
  st.params.emplace_back(request.event_type);
  add_tiling(st, tile(request.range, request.granularity.value_or(Granularity::kDay)));
  if (request.granularity)
    st.params.emplace_back(std::string(granularity_name(*request.granularity)));
  st.prepare = hint.find("min_lsn") == std::string::npos;
  return st;
}

ShardStatement top_statement(const TopRequest& request, const std::string& hint) {
  ShardStatement st;
  const char* order = request.function == StatFunction::kSum ? "3" : "2";
  st.text = hint + "SELECT b.video_id, sum(b.count)::bigint, sum(b.sum)::bigint FROM (" +
            tiled_union("video_id, count, sum", "event_type = $1", 2) +
            ") AS b GROUP BY b.video_id ORDER BY " + order + " DESC, 1 LIMIT $12::bigint";
  st.params.emplace_back(request.event_type);
  add_tiling(st, tile(request.range, Granularity::kDay));
  st.params.emplace_back(std::to_string(request.limit));
  return st;
}

ShardStatement apply_statement(const ApplyRequest& request, std::string rows_json) {
  ShardStatement st;
  st.text =
      "SELECT outcome, mark FROM tally_apply_counters($1::text, $2::integer, $3::bigint, "
      "$4::bigint, $5::jsonb)";
  st.params.emplace_back(request.processor_id);
  st.params.emplace_back(std::to_string(request.partition));
  st.params.emplace_back(std::to_string(request.from_offset));
  st.params.emplace_back(std::to_string(request.to_offset));
  st.params.emplace_back(std::move(rows_json));
  return st;
}

ShardStatement current_lsn_statement() {
  ShardStatement st;
  st.text = "/*tally: route=leader*/ SELECT pg_current_wal_lsn()::text";
  return st;
}

ShardStatement marks_statement(const std::string& processor_id) {
  ShardStatement st;
  // From the leader: a replica's older mark would make the processor replay applied batches.
  st.text =
      "/*tally: route=leader*/ SELECT partition, mark FROM apply_marks WHERE processor_id = "
      "$1::text ORDER BY partition";
  st.params.emplace_back(processor_id);
  return st;
}

ShardStatement video_upsert_statement(const VideoPut& video) {
  ShardStatement st;
  st.text =
      "INSERT INTO videos (video_id, title, channel_id, ksid) VALUES ($1::text, $2::text, "
      "$3::text, $4::bigint) ON CONFLICT (video_id) DO UPDATE SET title = excluded.title, "
      "channel_id = excluded.channel_id, updated_at = now()";
  st.params.emplace_back(video.video_id);
  st.params.emplace_back(video.title);
  st.params.emplace_back(video.channel_id);
  st.params.emplace_back(std::to_string(ksid_to_sql(ksid_for(video.video_id))));
  return st;
}

ShardStatement channel_upsert_statement(const ChannelPut& channel, int64_t written_at_ms) {
  ShardStatement st;
  st.text =
      "INSERT INTO channels (channel_id, name, created_at, updated_at) SELECT $1::text, $2::text, "
      "w, w FROM (SELECT timestamptz 'epoch' + $3::bigint * interval '1 millisecond' AS w) AS t "
      "ON CONFLICT (channel_id) DO UPDATE SET name = excluded.name, updated_at = "
      "excluded.updated_at";
  st.params.emplace_back(channel.channel_id);
  st.params.emplace_back(channel.name);
  st.params.emplace_back(std::to_string(written_at_ms));
  return st;
}

}  // namespace tally::cluster_proxy
