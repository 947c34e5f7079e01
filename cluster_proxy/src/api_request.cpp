#include "cluster_proxy/src/api_request.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "common/core/quote.h"
#include "common/keyspace/shard_range.h"

namespace tally::cluster_proxy {

using json = nlohmann::json;
using Query = std::vector<std::pair<std::string, std::string>>;

namespace {

constexpr const char* kVideoIdExpected = "1-64 characters of [A-Za-z0-9_-]";
constexpr const char* kFunctionExpected = "one of count, sum, avg";
constexpr const char* kGranularityExpected = "one of minute, hour, day";

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Query parameters by name: each known at most once, unknown ones refused (a typo must not be
// silently ignored).
ApiResult<std::map<std::string, std::string>> query_map(const Query& q,
                                                        const std::set<std::string>& known) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : q) {
    if (!known.count(k)) {
      std::string list;
      for (const auto& name : known) list += (list.empty() ? "" : ", ") + name;
      return bad_parameter(k, v, "one of the parameters " + list);
    }
    if (!out.emplace(k, v).second) return bad_parameter(k, v, "the parameter at most once");
  }
  return out;
}

bool valid_id(std::string_view id, size_t max_length) {
  if (id.empty() || id.size() > max_length) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

ApiResult<StatFunction> parse_function(const std::string& parameter, std::string_view text,
                                       bool allow_avg) {
  if (text == "count") return StatFunction::kCount;
  if (text == "sum") return StatFunction::kSum;
  if (text == "avg" && allow_avg) return StatFunction::kAvg;
  return bad_parameter(parameter, text, allow_avg ? kFunctionExpected : "one of count, sum");
}

ApiResult<Instant> parse_time(const std::string& parameter, std::string_view text) {
  auto t = parse_instant(text);
  if (!t) return bad_parameter(parameter, text, t.error().message.substr(9));  // drop "expected "
  return *t;
}

// start/end as given -> the minute-rounded span, checked against the limits.
ApiResult<Span> parse_range(const std::string& start_name, std::string_view start_text,
                            const std::string& end_name, std::string_view end_text,
                            const ApiLimits& limits) {
  auto start = parse_time(start_name, start_text);
  if (!start.ok()) return start.error();
  auto end = parse_time(end_name, end_text);
  if (!end.ok()) return end.error();
  if (start->ms > end->ms || (start->ms == end->ms && !(end->sub_ms && !start->sub_ms))) {
    return bad_parameter(end_name, end_text,
                         "a time after " + start_name + " (" + std::string(start_text) + ")");
  }
  Span span = round_to_minutes(*start, *end);
  if (span.end_ms - span.start_ms > limits.max_range_ms) {
    return bad_parameter(end_name, end_text,
                         "a range of at most " + std::to_string(limits.max_range_ms / kDayMs) +
                             " days after " + start_name);
  }
  return span;
}

ApiResult<std::string> parse_event_type(const std::string& parameter, std::string_view text) {
  if (!is_event_type(text)) return bad_parameter(parameter, text, kEventTypesExpected);
  return std::string(text);
}

ApiResult<std::optional<Granularity>> parse_optional_granularity(
    const std::string& parameter, const std::optional<std::string_view>& text, const Span& range,
    const ApiLimits& limits) {
  if (!text) return std::optional<Granularity>();
  auto g = parse_granularity(*text);
  if (!g) return bad_parameter(parameter, *text, kGranularityExpected);
  const int64_t unit = granularity_ms(*g);
  const int64_t first = range.start_ms / unit * unit;
  const int64_t points = (range.end_ms - first + unit - 1) / unit;
  if (points > limits.max_series_points) {
    return bad_parameter(parameter, *text,
                         "a granularity giving at most " +
                             std::to_string(limits.max_series_points) + " points over the range (" +
                             std::string(granularity_name(*g)) + " gives " +
                             std::to_string(points) + ")");
  }
  return std::optional<Granularity>(*g);
}

// JSON field helpers for bodies; `where` is the field's path for messages ("rows[3].count").
std::string json_text(const json& v) {
  return dump(v);
}

ApiResult<std::string> json_string(const json& obj, const std::string& where, const char* key,
                                   const std::string& expected) {
  auto it = obj.find(key);
  if (it == obj.end()) return bad_parameter(where + key, "", expected + " (missing)");
  if (!it->is_string()) return bad_parameter(where + key, json_text(*it), expected);
  return it->get<std::string>();
}

ApiResult<json> parse_object(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return bad_parameter("body", body.substr(0, 60), "a JSON object (the body is not valid JSON)");
  }
  if (!j.is_object()) return bad_parameter("body", body.substr(0, 60), "a JSON object");
  return j;
}

// Refuses keys outside `known` in a body object.
std::optional<ApiError> unknown_keys(const json& obj, const std::string& where,
                                     std::initializer_list<const char*> known) {
  for (const auto& [k, v] : obj.items()) {
    bool ok = false;
    for (const char* name : known) ok = ok || k == name;
    if (!ok) {
      std::string list;
      for (const char* name : known) list += (list.empty() ? "" : ", ") + std::string(name);
      return bad_parameter(where + k, json_text(v), "one of the fields " + list);
    }
  }
  return std::nullopt;
}

ApiResult<StatsRequest> parse_stats_item(const json& item, const std::string& where,
                                         const ApiLimits& limits) {
  if (!item.is_object()) return bad_parameter(where, json_text(item), "a JSON object");
  if (auto e =
          unknown_keys(item, where + ".",
                       {"video_id", "event_type", "function", "start", "end", "granularity"})) {
    return *e;
  }
  const std::string w = where + ".";
  StatsRequest r;
  auto id = json_string(item, w, "video_id", kVideoIdExpected);
  if (!id.ok()) return id.error();
  if (!valid_id(*id, kMaxVideoIdLength))
    return bad_parameter(w + "video_id", *id, kVideoIdExpected);
  r.video_id = *id;
  auto type = json_string(item, w, "event_type", kEventTypesExpected);
  if (!type.ok()) return type.error();
  if (!is_event_type(*type)) return bad_parameter(w + "event_type", *type, kEventTypesExpected);
  r.event_type = *type;
  if (item.contains("function")) {
    auto f = json_string(item, w, "function", kFunctionExpected);
    if (!f.ok()) return f.error();
    auto fn = parse_function(w + "function", *f, true);
    if (!fn.ok()) return fn.error();
    r.function = *fn;
  }
  auto start = json_string(item, w, "start", "an RFC 3339 time or epoch milliseconds as a string");
  if (!start.ok()) return start.error();
  auto end = json_string(item, w, "end", "an RFC 3339 time or epoch milliseconds as a string");
  if (!end.ok()) return end.error();
  auto range = parse_range(w + "start", *start, w + "end", *end, limits);
  if (!range.ok()) return range.error();
  r.range = *range;
  if (item.contains("granularity")) {
    auto g = json_string(item, w, "granularity", kGranularityExpected);
    if (!g.ok()) return g.error();
    auto gran =
        parse_optional_granularity(w + "granularity", std::string_view(*g), r.range, limits);
    if (!gran.ok()) return gran.error();
    r.granularity = *gran;
  }
  return r;
}

}  // namespace

ApiError bad_parameter(std::string parameter, std::string_view value, std::string expected) {
  ApiError e;
  e.status = 400;
  e.parameter = std::move(parameter);
  e.value = std::string(value);
  e.expected = std::move(expected);
  e.message = e.parameter + (e.value.empty() ? std::string() : " " + quote_for_message(value)) +
              ": expected " + e.expected;
  return e;
}

HttpResponse to_response(const ApiError& error) {
  json err = {{"code", error.status}, {"message", error.message}};
  if (!error.parameter.empty()) {
    err["parameter"] = error.parameter;
    err["value"] = error.value;
    err["expected"] = error.expected;
  }
  if (!error.shards.empty()) err["shards"] = error.shards;
  HttpResponse r = HttpResponse::json(error.status, dump(json{{"error", err}}));
  if (error.retry_after_s > 0)
    r.headers.emplace_back("Retry-After", std::to_string(error.retry_after_s));
  if (error.status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

bool is_event_type(std::string_view name) {
  return name == "view" || name == "like" || name == "dislike" || name == "share" ||
         name == "watch_time";
}

std::string_view function_name(StatFunction f) {
  switch (f) {
    case StatFunction::kCount:
      return "count";
    case StatFunction::kSum:
      return "sum";
    case StatFunction::kAvg:
      return "avg";
  }
  return "count";
}

std::string format_token(const ReadToken& token) {
  std::string out;
  for (const auto& [shard, lsn] : token.lsn_by_shard) {
    if (!out.empty()) out += ',';
    out += shard + "@" + format_lsn(lsn);
  }
  return out;
}

ApiResult<ReadToken> parse_token(std::string_view text, std::string parameter) {
  constexpr const char* kExpected =
      "a read-your-writes token from counters:apply, like -80@0/16B3748,80-@0/1A2B3C0";
  ReadToken token;
  if (text.empty() || text.size() > 4096) return bad_parameter(parameter, text, kExpected);
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string_view part =
        text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos);
    size_t at = part.find('@');
    if (at == std::string_view::npos) return bad_parameter(parameter, text, kExpected);
    auto range = ShardRange::parse(part.substr(0, at));
    auto lsn = parse_lsn(part.substr(at + 1));
    if (!range || !lsn) return bad_parameter(parameter, text, kExpected);
    token.lsn_by_shard[range->name()] = *lsn;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return token;
}

ApiResult<std::string> parse_id_segment(std::string_view segment, std::string parameter,
                                        size_t max_length) {
  std::string expected =
      std::to_string(1) + "-" + std::to_string(max_length) + " characters of [A-Za-z0-9_-]";
  auto decoded = http_percent_decode(segment, false);
  if (!decoded) return bad_parameter(parameter, segment, expected + " (bad percent-escape)");
  if (!valid_id(*decoded, max_length)) return bad_parameter(parameter, *decoded, expected);
  return *decoded;
}

ApiResult<StatsQuery> parse_stats_query(std::string_view video_id, const Query& q,
                                        const ApiLimits& limits) {
  auto params = query_map(q, {"event_type", "function", "start", "end", "granularity", "token"});
  if (!params.ok()) return params.error();
  auto& p = *params;
  StatsQuery out;
  auto id = parse_id_segment(video_id, "video_id", kMaxVideoIdLength);
  if (!id.ok()) return id.error();
  out.request.video_id = *id;
  for (const char* required : {"event_type", "start", "end"}) {
    if (!p.count(required)) {
      return bad_parameter(required, "",
                           std::string(required == std::string_view("event_type")
                                           ? kEventTypesExpected
                                           : "an RFC 3339 time or epoch milliseconds") +
                               " (missing)");
    }
  }
  auto type = parse_event_type("event_type", p["event_type"]);
  if (!type.ok()) return type.error();
  out.request.event_type = *type;
  if (p.count("function")) {
    auto f = parse_function("function", p["function"], true);
    if (!f.ok()) return f.error();
    out.request.function = *f;
  }
  auto range = parse_range("start", p["start"], "end", p["end"], limits);
  if (!range.ok()) return range.error();
  out.request.range = *range;
  std::optional<std::string_view> g;
  if (p.count("granularity")) g = p["granularity"];
  auto gran = parse_optional_granularity("granularity", g, out.request.range, limits);
  if (!gran.ok()) return gran.error();
  out.request.granularity = *gran;
  if (p.count("token")) {
    auto t = parse_token(p["token"]);
    if (!t.ok()) return t.error();
    out.token = std::move(*t);
  }
  return out;
}

ApiResult<BatchGetRequest> parse_batch_get(std::string_view body, const ApiLimits& limits) {
  auto j = parse_object(body);
  if (!j.ok()) return j.error();
  if (auto e = unknown_keys(*j, "", {"requests", "token"})) return *e;
  auto it = j->find("requests");
  if (it == j->end() || !it->is_array() || it->empty()) {
    return bad_parameter("requests", it == j->end() ? "" : json_text(*it),
                         "a non-empty JSON array of stats requests");
  }
  if (static_cast<int64_t>(it->size()) > limits.max_batch_items) {
    return bad_parameter("requests", std::to_string(it->size()) + " items",
                         "at most " + std::to_string(limits.max_batch_items) + " items");
  }
  BatchGetRequest out;
  for (size_t i = 0; i < it->size(); ++i) {
    auto r = parse_stats_item((*it)[i], "requests[" + std::to_string(i) + "]", limits);
    if (!r.ok()) return r.error();
    out.requests.push_back(std::move(*r));
  }
  if (j->contains("token")) {
    const json& t = (*j)["token"];
    if (!t.is_string()) return bad_parameter("token", json_text(t), "a token string");
    auto token = parse_token(t.get<std::string>());
    if (!token.ok()) return token.error();
    out.token = std::move(*token);
  }
  return out;
}

ApiResult<TopRequest> parse_top_query(const Query& q, const ApiLimits& limits) {
  auto params = query_map(q, {"event_type", "function", "start", "end", "limit"});
  if (!params.ok()) return params.error();
  auto& p = *params;
  TopRequest out;
  for (const char* required : {"event_type", "start", "end"}) {
    if (!p.count(required)) {
      return bad_parameter(required, "",
                           std::string(required == std::string_view("event_type")
                                           ? kEventTypesExpected
                                           : "an RFC 3339 time or epoch milliseconds") +
                               " (missing)");
    }
  }
  auto type = parse_event_type("event_type", p["event_type"]);
  if (!type.ok()) return type.error();
  out.event_type = *type;
  if (p.count("function")) {
    auto f = parse_function("function", p["function"], false);
    if (!f.ok()) return f.error();
    out.function = *f;
  }
  auto range = parse_range("start", p["start"], "end", p["end"], limits);
  if (!range.ok()) return range.error();
  out.range = *range;
  if (p.count("limit")) {
    const std::string& text = p["limit"];
    std::string expected = "an integer from 1 to " + std::to_string(limits.max_top_limit);
    if (text.empty() || text.size() > 9) return bad_parameter("limit", text, expected);
    int64_t n = 0;
    for (char c : text) {
      if (c < '0' || c > '9') return bad_parameter("limit", text, expected);
      n = n * 10 + (c - '0');
    }
    if (n < 1 || n > limits.max_top_limit) return bad_parameter("limit", text, expected);
    out.limit = n;
  }
  return out;
}

// counters:apply bodies carry up to limits.max_apply_rows rows (megabytes). simdjson lays the
// body out in a few large buffers that go back to the system when the call returns; a JSON tree
// of small nodes per row would leave tens of MB of heap behind after every large apply.
namespace apply_body {

using Element = simdjson::dom::element;

std::string text(Element v) {
  return simdjson::minify(v);
}

// The fields of one object among `known` (at most 8): unknown names and repeats refused.
class Fields {
 public:
  static ApiResult<Fields> of(simdjson::dom::object object, const std::string& where,
                              std::initializer_list<const char*> known) {
    Fields out;
    for (const simdjson::dom::key_value_pair field : object) {
      size_t i = 0;
      for (const char* name : known) {
        if (field.key == name) break;
        ++i;
      }
      if (i == known.size()) {
        std::string list;
        for (const char* name : known) list += (list.empty() ? "" : ", ") + std::string(name);
        return bad_parameter(where + std::string(field.key), text(field.value),
                             "one of the fields " + list);
      }
      if (out.present_ & (1u << i)) {
        return bad_parameter(where + std::string(field.key), text(field.value),
                             "the field at most once");
      }
      out.present_ |= 1u << i;
      out.values_[i] = field.value;
    }
    return out;
  }
  // The i-th of `known`, if the object has it.
  std::optional<Element> get(size_t i) const {
    if (!(present_ & (1u << i))) return std::nullopt;
    return values_[i];
  }

 private:
  std::array<Element, 8> values_{};
  unsigned present_ = 0;
};

// `where` + `key` names the field in a message ("rows[3]." "count"); built only on an error.
ApiResult<std::string_view> string_field(const Fields& fields, size_t i, std::string_view where,
                                         const char* key, const char* expected) {
  auto v = fields.get(i);
  if (!v) return bad_parameter(std::string(where) + key, "", std::string(expected) + " (missing)");
  std::string_view s;
  if (v->get_string().get(s) != simdjson::SUCCESS) {
    return bad_parameter(std::string(where) + key, text(*v), expected);
  }
  return s;
}

ApiResult<int64_t> int_field(const Fields& fields, size_t i, std::string_view where,
                             const char* key, int64_t min, int64_t max, const char* expected,
                             std::optional<int64_t> fallback = std::nullopt) {
  auto v = fields.get(i);
  if (!v) {
    if (fallback) return *fallback;
    return bad_parameter(std::string(where) + key, "", std::string(expected) + " (missing)");
  }
  // A double (1.5, 1e3) or an integer above INT64_MAX is refused like one out of range.
  int64_t n = 0;
  if (!v->is_int64() || v->get_int64().get(n) != simdjson::SUCCESS || n < min || n > max) {
    return bad_parameter(std::string(where) + key, text(*v), expected);
  }
  return n;
}

}  // namespace apply_body

ApiResult<ApplyRequest> parse_apply(std::string_view body, const ApiLimits& limits) {
  using apply_body::Fields;
  using apply_body::int_field;
  using apply_body::string_field;
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(body.data(), body.size()).get(root) != simdjson::SUCCESS) {
    return bad_parameter("body", body.substr(0, 60), "a JSON object (the body is not valid JSON)");
  }
  simdjson::dom::object top;
  if (root.get_object().get(top) != simdjson::SUCCESS) {
    return bad_parameter("body", body.substr(0, 60), "a JSON object");
  }
  enum { kProcessor, kPartition, kFrom, kTo, kRows, kShards };
  auto fields = Fields::of(
      top, "", {"processor_id", "partition", "from_offset", "to_offset", "rows", "shards"});
  if (!fields.ok()) return fields.error();
  ApplyRequest out;
  constexpr const char* kProcessorExpected = "a processor id of 1-128 characters of [A-Za-z0-9_-]";
  auto pid = string_field(*fields, kProcessor, "", "processor_id", kProcessorExpected);
  if (!pid.ok()) return pid.error();
  if (!valid_id(*pid, 128)) return bad_parameter("processor_id", *pid, kProcessorExpected);
  out.processor_id = std::string(*pid);
  auto part = int_field(*fields, kPartition, "", "partition", 0,
                        std::numeric_limits<int32_t>::max(), "an integer from 0 to 2147483647");
  if (!part.ok()) return part.error();
  out.partition = *part;
  auto from =
      int_field(*fields, kFrom, "", "from_offset", -1, std::numeric_limits<int64_t>::max() - 1,
                "an integer >= -1 (the offset range (from_offset, to_offset])");
  if (!from.ok()) return from.error();
  out.from_offset = *from;
  auto to = int_field(*fields, kTo, "", "to_offset", 0, std::numeric_limits<int64_t>::max(),
                      "an integer > from_offset (the offset range (from_offset, to_offset])");
  if (!to.ok()) return to.error();
  out.to_offset = *to;
  if (out.to_offset <= out.from_offset) {
    return bad_parameter("to_offset", std::to_string(out.to_offset),
                         "an integer > from_offset (" + std::to_string(out.from_offset) + ")");
  }
  if (auto shards = fields->get(kShards)) {
    constexpr const char* kShardsExpected =
        "a non-empty JSON array of distinct shard ranges like \"-80\" (or no \"shards\" for all)";
    simdjson::dom::array list;
    if (shards->get_array().get(list) != simdjson::SUCCESS || list.size() == 0 ||
        list.size() > 256) {
      return bad_parameter("shards", apply_body::text(*shards), kShardsExpected);
    }
    std::vector<std::string> names;
    size_t i = 0;
    for (const simdjson::dom::element name : list) {
      const std::string where = "shards[" + std::to_string(i++) + "]";
      std::string_view s;
      if (name.get_string().get(s) != simdjson::SUCCESS) {
        return bad_parameter(where, apply_body::text(name), "a shard range like \"-80\"");
      }
      auto range = ShardRange::parse(std::string(s));
      if (!range.ok()) return bad_parameter(where, s, "a shard range like \"-80\" or \"80-\"");
      if (std::find(names.begin(), names.end(), range->name()) != names.end()) {
        return bad_parameter(where, s, kShardsExpected);
      }
      names.push_back(range->name());
    }
    out.shards = std::move(names);
  }
  auto rows_value = fields->get(kRows);
  simdjson::dom::array rows;
  if (!rows_value || rows_value->get_array().get(rows) != simdjson::SUCCESS) {
    return bad_parameter("rows", rows_value ? apply_body::text(*rows_value) : "",
                         "a JSON array of minute rows (may be empty)");
  }
  const size_t row_count = rows.size();
  if (static_cast<int64_t>(row_count) > limits.max_apply_rows) {
    return bad_parameter("rows", std::to_string(row_count) + " rows",
                         "at most " + std::to_string(limits.max_apply_rows) + " rows per call");
  }
  out.rows.reserve(row_count);
  enum { kVideo, kType, kMinute, kCount, kSum };
  size_t i = 0;
  for (const simdjson::dom::element row : rows) {
    const std::string w = "rows[" + std::to_string(i++) + "].";  // short: no allocation per row
    simdjson::dom::object object;
    if (row.get_object().get(object) != simdjson::SUCCESS) {
      return bad_parameter(w.substr(0, w.size() - 1), apply_body::text(row), "a JSON object");
    }
    auto f = Fields::of(object, w, {"video_id", "event_type", "minute", "count", "sum"});
    if (!f.ok()) return f.error();
    ApplyRow r;
    auto id = string_field(*f, kVideo, w, "video_id", kVideoIdExpected);
    if (!id.ok()) return id.error();
    if (!valid_id(*id, kMaxVideoIdLength))
      return bad_parameter(w + "video_id", *id, kVideoIdExpected);
    r.video_id = std::string(*id);
    auto type = string_field(*f, kType, w, "event_type", kEventTypesExpected);
    if (!type.ok()) return type.error();
    if (!is_event_type(*type)) return bad_parameter(w + "event_type", *type, kEventTypesExpected);
    r.event_type = std::string(*type);
    auto minute = int_field(*f, kMinute, w, "minute", 0, kMaxInstantMs,
                            "epoch milliseconds of a whole UTC minute");
    if (!minute.ok()) return minute.error();
    if (*minute % kMinuteMs != 0) {
      return bad_parameter(w + "minute", std::to_string(*minute),
                           "epoch milliseconds of a whole UTC minute (a multiple of 60000)");
    }
    r.minute_ms = *minute;
    auto count = int_field(*f, kCount, w, "count", 0, std::numeric_limits<int64_t>::max(),
                           "an integer >= 0");
    if (!count.ok()) return count.error();
    r.count = *count;
    auto sum = int_field(*f, kSum, w, "sum", std::numeric_limits<int64_t>::min(),
                         std::numeric_limits<int64_t>::max(), "an integer", int64_t{0});
    if (!sum.ok()) return sum.error();
    r.sum = *sum;
    r.ksid = ksid_for(r.video_id);
    out.rows.push_back(std::move(r));
  }
  return out;
}

std::string apply_rows_json(const ApplyRequest& request, const std::vector<size_t>& row_indexes) {
  // Built by hand from validated fields (ids are [A-Za-z0-9_-], numbers are integers): nothing
  // needs escaping, and a large batch avoids a JSON tree per row.
  std::string out = "[";
  char buf[160];
  bool first = true;
  for (size_t i : row_indexes) {
    const ApplyRow& r = request.rows[i];
    if (!first) out += ',';
    first = false;
    out += "{\"video_id\":\"" + r.video_id + "\",\"event_type\":\"" + r.event_type + "\"";
    snprintf(buf, sizeof(buf),
             ",\"minute\":%" PRId64 ",\"count\":%" PRId64 ",\"sum\":%" PRId64 ",\"ksid\":%" PRId64
             "}",
             r.minute_ms, r.count, r.sum, ksid_to_sql(r.ksid));
    out += buf;
  }
  out += ']';
  return out;
}

ApiResult<std::optional<int64_t>> parse_timeout_header(std::optional<std::string_view> value) {
  if (!value) return std::optional<int64_t>{};
  constexpr const char* kExpected = "a whole number of milliseconds from 1 to 600000";
  int64_t ms = 0;
  auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), ms);
  if (ec != std::errc() || end != value->data() + value->size() || ms < 1 || ms > 600000) {
    return bad_parameter(kTimeoutHeader, *value, kExpected);
  }
  return std::optional<int64_t>{ms};
}

int64_t shard_budget_ms(int64_t timeout_ms) {
  return std::max<int64_t>(1, timeout_ms - std::max<int64_t>(250, timeout_ms / 5));
}

ApiResult<std::string> parse_marks_query(const Query& q) {
  auto params = query_map(q, {"processor_id"});
  if (!params.ok()) return params.error();
  constexpr const char* kExpected = "a processor id of 1-128 characters of [A-Za-z0-9_-]";
  auto it = params->find("processor_id");
  if (it == params->end())
    return bad_parameter("processor_id", "", std::string(kExpected) + " (missing)");
  if (!valid_id(it->second, 128)) return bad_parameter("processor_id", it->second, kExpected);
  return it->second;
}

ApiResult<VideoPut> parse_video_put(std::string_view video_id, std::string_view body) {
  auto id = parse_id_segment(video_id, "video_id", kMaxVideoIdLength);
  if (!id.ok()) return id.error();
  auto j = parse_object(body);
  if (!j.ok()) return j.error();
  if (auto e = unknown_keys(*j, "", {"title", "channel_id"})) return *e;
  VideoPut out;
  out.video_id = *id;
  if (j->contains("title") && !(*j)["title"].is_null()) {
    const json& t = (*j)["title"];
    if (!t.is_string() || t.get<std::string>().size() > 1000) {
      return bad_parameter("title", json_text(t), "a string of at most 1000 bytes, or null");
    }
    out.title = t.get<std::string>();
  }
  if (j->contains("channel_id") && !(*j)["channel_id"].is_null()) {
    const json& c = (*j)["channel_id"];
    constexpr const char* kExpected = "1-128 characters of [A-Za-z0-9_-], or null";
    if (!c.is_string() || !valid_id(c.get<std::string>(), 128)) {
      return bad_parameter("channel_id", c.is_string() ? c.get<std::string>() : json_text(c),
                           kExpected);
    }
    out.channel_id = c.get<std::string>();
  }
  return out;
}

ApiResult<ChannelPut> parse_channel_put(std::string_view channel_id, std::string_view body) {
  auto id = parse_id_segment(channel_id, "channel_id", 128);
  if (!id.ok()) return id.error();
  auto j = parse_object(body);
  if (!j.ok()) return j.error();
  if (auto e = unknown_keys(*j, "", {"name"})) return *e;
  auto name = json_string(*j, "", "name", "a non-empty string of at most 1000 bytes");
  if (!name.ok()) return name.error();
  if (name->empty() || name->size() > 1000) {
    return bad_parameter("name", *name, "a non-empty string of at most 1000 bytes");
  }
  return ChannelPut{*id, *name};
}

}  // namespace tally::cluster_proxy
