// The REST API's requests as validated values, and the errors bad input gets. Everything a client
// sends is checked here, before any shard is asked: a bad request is a 400 whose JSON names the
// parameter, the value (quoted safely) and the expected form. Pure functions; any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "cluster_proxy/src/time_range.h"
#include "common/http/http_server.h"
#include "common/keyspace/ksid.h"
#include "common/pgclient/lsn.h"  // parse_lsn, format_lsn: a token's LSNs

namespace tally::cluster_proxy {

// An error answer of the API: {"error": {"code", "message", "parameter"?, "value"?, "expected"?,
// "shard"?/"shards"?}} plus Retry-After when retry_after_s > 0.
struct ApiError {
  int status = 400;
  std::string message;
  std::string parameter;            // for 400s: which parameter or JSON field ("requests[2].start")
  std::string value;                // as given (quoted for the message)
  std::string expected;             // the accepted form
  std::vector<std::string> shards;  // for 503s: the ranges that could not answer
  int retry_after_s = 0;
};

ApiError bad_parameter(std::string parameter, std::string_view value, std::string expected);
HttpResponse to_response(const ApiError& error);

template <typename T>
class ApiResult {
 public:
  ApiResult(T value) : state_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  ApiResult(ApiError error) : state_(std::move(error)) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return std::holds_alternative<T>(state_); }
  T& value() { return std::get<T>(state_); }
  const T& value() const { return std::get<T>(state_); }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }
  const ApiError& error() const { return std::get<ApiError>(state_); }

 private:
  std::variant<T, ApiError> state_;
};

// Bounds from the configuration.
struct ApiLimits {
  int64_t max_range_ms = 3660 * kDayMs;
  int64_t max_series_points = 10000;
  int64_t max_batch_items = 1000;
  int64_t max_apply_rows = 200000;
  int64_t max_top_limit = 1000;
};

// Contract 3's event types.
bool is_event_type(std::string_view name);
inline constexpr const char* kEventTypesExpected = "one of view, like, dislike, share, watch_time";

enum class StatFunction { kCount, kSum, kAvg };
std::string_view function_name(StatFunction f);

// One stats read: a video's count/sum/avg of one event type over a minute-rounded range.
struct StatsRequest {
  std::string video_id;
  std::string event_type;
  StatFunction function = StatFunction::kCount;
  Span range;  // rounded to whole minutes
  std::optional<Granularity> granularity;
};

// Read-your-writes token (contract 9): the commit LSN each shard reported after an apply, written
// "-80@0/16B3748,80-@0/1A2B3C0". A read passing it is served only by a node that has replayed that
// far, never from a cache.
struct ReadToken {
  std::map<std::string, uint64_t> lsn_by_shard;
};
std::string format_token(const ReadToken& token);
ApiResult<ReadToken> parse_token(std::string_view text, std::string parameter = "token");

// GET /v1/videos/{id}/stats?event_type=&function=&start=&end=[&granularity=][&token=]
struct StatsQuery {
  StatsRequest request;
  std::optional<ReadToken> token;
};
ApiResult<StatsQuery> parse_stats_query(std::string_view video_id,
                                        const std::vector<std::pair<std::string, std::string>>& q,
                                        const ApiLimits& limits);

// POST /v1/stats:batchGet {"requests": [{"video_id", "event_type", "function"?, "start", "end",
// "granularity"?}, ...], "token"?: "..."}
struct BatchGetRequest {
  std::vector<StatsRequest> requests;
  std::optional<ReadToken> token;
};
ApiResult<BatchGetRequest> parse_batch_get(std::string_view body, const ApiLimits& limits);

// GET /v1/top?event_type=&start=&end=&limit=N[&function=count|sum]
struct TopRequest {
  std::string event_type;
  StatFunction function = StatFunction::kCount;  // count or sum
  Span range;
  int64_t limit = 10;
};
ApiResult<TopRequest> parse_top_query(const std::vector<std::pair<std::string, std::string>>& q,
                                      const ApiLimits& limits);

// POST /v1/counters:apply (contract 9).
struct ApplyRow {
  std::string video_id;
  std::string event_type;
  int64_t minute_ms = 0;
  int64_t count = 0;
  int64_t sum = 0;
  KeyspaceId ksid = 0;
};
struct ApplyRequest {
  std::string processor_id;
  int64_t partition = 0;
  int64_t from_offset = 0;
  int64_t to_offset = 0;
  std::vector<ApplyRow> rows;
  // Optional "shards": canonical range names the batch goes to (a retry addressing only the
  // shards that failed); absent = every shard of the keyspace.
  std::optional<std::vector<std::string>> shards;
};
ApiResult<ApplyRequest> parse_apply(std::string_view body, const ApiLimits& limits);
// The function's jsonb argument for some of a request's rows: contract 9's rows plus "ksid" (the
// signed form of contract 1), which the shard cannot compute itself.
std::string apply_rows_json(const ApplyRequest& request, const std::vector<size_t>& row_indexes);

// The `Tally-Timeout-Ms` request header (contract 9): how long the caller waits for the answer,
// 1..600000 ms; nullopt when absent. The cluster proxy answers, and has cancelled whatever it
// started on the shards, before that time is up.
inline constexpr const char* kTimeoutHeader = "Tally-Timeout-Ms";
ApiResult<std::optional<int64_t>> parse_timeout_header(std::optional<std::string_view> value);
// The part of a caller's `timeout_ms` the shard calls may use: a margin (a fifth, at least
// 250 ms) is kept for reading the request, queueing and the answer's way back; at least 1 ms.
int64_t shard_budget_ms(int64_t timeout_ms);

// GET /v1/counters:marks?processor_id=p1
ApiResult<std::string> parse_marks_query(const std::vector<std::pair<std::string, std::string>>& q);

// PUT /v1/videos/{id} {"title": string|null, "channel_id": string|null}
struct VideoPut {
  std::string video_id;
  std::optional<std::string> title;
  std::optional<std::string> channel_id;
};
ApiResult<VideoPut> parse_video_put(std::string_view video_id, std::string_view body);

// PUT /v1/channels/{id} {"name": string}
struct ChannelPut {
  std::string channel_id;
  std::string name;
};
ApiResult<ChannelPut> parse_channel_put(std::string_view channel_id, std::string_view body);

// A path segment that must be an id of [A-Za-z0-9_-]{1,max}: percent-decoded and checked.
ApiResult<std::string> parse_id_segment(std::string_view segment, std::string parameter,
                                        size_t max_length);

}  // namespace tally::cluster_proxy
