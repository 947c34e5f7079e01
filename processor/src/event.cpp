#include "processor/src/event.h"

#include <simdjson.h>

#include <array>
#include <cctype>
#include <string>

#include "common/core/calendar.h"
#include "common/core/quote.h"
#include "common/keyspace/ksid.h"

namespace tally::processor {

namespace {

using Element = simdjson::dom::element;
using ElementType = simdjson::dom::element_type;

constexpr std::array<std::string_view, kEventTypeCount> kTypeNames = {"view", "like", "dislike",
                                                                      "share", "watch_time"};

// A JSON value for an error message: strings quoted safely, everything else as compact JSON,
// both cut at 80 bytes.
std::string show(const Element& v) {
  std::string_view text;
  if (v.get_string().get(text) == simdjson::SUCCESS) return quote_for_message(text);
  std::string s = simdjson::minify(v);
  if (s.size() > 80) s = s.substr(0, 80) + "...";
  return s;
}

std::string_view type_of(const Element& v) {
  switch (v.type()) {
    case ElementType::NULL_VALUE:
      return "null";
    case ElementType::OBJECT:
      return "an object";
    case ElementType::ARRAY:
      return "an array";
    case ElementType::STRING:
      return "a string";
    case ElementType::BOOL:
      return "a boolean";
    case ElementType::DOUBLE:
      return "a fractional number";
    default:
      return "a number";
  }
}

std::string format_utc(int64_t ms);

// Validates one event object; on success fills `e`, otherwise returns the reason.
std::optional<std::string> validate(const Element& v, int64_t now_ms, const EventLimits& limits,
                                    Event& e) {
  simdjson::dom::object object;
  if (v.get_object().get(object) != simdjson::SUCCESS) {
    return "expected an event object, got " + std::string(type_of(v));
  }
  bool have_video = false, have_type = false, have_ts = false;
  for (const simdjson::dom::key_value_pair field_pair : object) {
    const std::string_view key = field_pair.key;
    const Element& field = field_pair.value;
    const ElementType kind = field.type();
    std::string_view text;
    if (kind == ElementType::STRING && field.get_string().get(text) != simdjson::SUCCESS) {
      return "unreadable string in field " + quote_for_message(key);
    }
    if (key == "event_id") {
      if (kind == ElementType::NULL_VALUE) continue;
      if (kind != ElementType::STRING) {
        return "event_id: expected a string of 1-128 characters of [A-Za-z0-9._:-], got " +
               show(field);
      }
      if (auto st = validate_event_id(text); !st) return st.error().message;
      e.event_id = text;
    } else if (key == "video_id") {
      if (kind != ElementType::STRING) {
        return "video_id: expected a string of 1-64 characters of [A-Za-z0-9_-], got " +
               show(field);
      }
      const std::string_view id = text;
      if (auto st = validate_video_id(id); !st) return st.error().message;
      e.video_id = id;
      have_video = true;
    } else if (key == "event_type") {
      auto t = kind == ElementType::STRING ? parse_event_type(text) : std::nullopt;
      if (!t) {
        return "event_type: expected one of view, like, dislike, share, watch_time, got " +
               show(field);
      }
      e.type = *t;
      have_type = true;
    } else if (key == "ts") {
      // An integer simdjson types UINT64 is above INT64_MAX: out of any window.
      std::optional<int64_t> ts;
      if (kind == ElementType::INT64) {
        int64_t n = 0;
        if (field.get_int64().get(n) == simdjson::SUCCESS) ts = n;
      } else if (kind == ElementType::STRING) {
        ts = parse_rfc3339_ms(text);
      }
      if (!ts) {
        return "ts: expected epoch milliseconds as an integer or an RFC 3339 date-time like "
               "\"2025-11-22T10:00:00.250Z\", got " +
               show(field);
      }
      if (*ts < now_ms - limits.max_age_ms || *ts > now_ms + limits.max_future_ms) {
        return "ts: " + show(field) + " (" + format_utc(*ts) +
               ") is outside the accepted window: expected between now - " +
               std::to_string(limits.max_age_ms) + " ms and now + " +
               std::to_string(limits.max_future_ms) + " ms (now is " + format_utc(now_ms) + ")";
      }
      e.ts_ms = *ts;
      have_ts = true;
    } else if (key == "value") {
      if (kind == ElementType::NULL_VALUE) continue;
      // UINT64 is above INT64_MAX, so above any max_value too.
      int64_t value = -1;
      if (kind == ElementType::INT64 && field.get_int64().get(value) != simdjson::SUCCESS) {
        value = -1;
      }
      if (value < 0 || value > limits.max_value) {
        return "value: expected an integer from 0 to " + std::to_string(limits.max_value) +
               " (watch_time in ms), got " + show(field);
      }
      e.value = value;
    } else {
      return "unknown field " + quote_for_message(key) +
             ": expected only event_id, video_id, event_type, ts, value";
    }
  }
  if (!have_video) return "video_id: missing (a string of 1-64 characters of [A-Za-z0-9_-])";
  if (!have_type) {
    return "event_type: missing (one of view, like, dislike, share, watch_time)";
  }
  if (!have_ts) return "ts: missing (epoch milliseconds or an RFC 3339 date-time)";
  return std::nullopt;
}

void add_event(const Element& v, size_t index, int64_t now_ms, const EventLimits& limits,
               ParsedEvents& out) {
  Event e;
  if (auto reason = validate(v, now_ms, limits, e)) {
    out.rejected.push_back(Rejection{index, std::move(*reason)});
  } else {
    out.events.push_back(std::move(e));
  }
}

Error too_many(const EventLimits& limits) {
  return make_error(ErrorCode::kInvalidArgument, "too many events in one body: expected at most " +
                                                     std::to_string(limits.max_events));
}

std::string format_utc(int64_t ms) {
  int64_t days = ms / 86400000;
  int64_t rem = ms % 86400000;
  if (rem < 0) {
    rem += 86400000;
    --days;
  }
  const CivilDate date = civil_from_days(days);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ",
                static_cast<long long>(date.year), date.month, date.day,
                static_cast<long long>(rem / 3600000), static_cast<long long>(rem / 60000 % 60),
                static_cast<long long>(rem / 1000 % 60), static_cast<long long>(rem % 1000));
  return buf;
}

bool digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

}  // namespace

int partition_of(std::string_view video_id, int partitions) {
  __extension__ using u128 = unsigned __int128;
  auto wide = static_cast<u128>(ksid_for(video_id)) * static_cast<unsigned>(partitions);
  return static_cast<int>(wide >> 64);
}

std::string_view event_type_name(EventType type) {
  return kTypeNames[static_cast<size_t>(type)];
}

std::optional<EventType> parse_event_type(std::string_view name) {
  for (size_t i = 0; i < kTypeNames.size(); ++i) {
    if (kTypeNames[i] == name) return static_cast<EventType>(i);
  }
  return std::nullopt;
}

Status validate_event_id(std::string_view id) {
  auto fail = [&](const std::string& found) {
    return make_error(ErrorCode::kInvalidArgument,
                      "event_id " + quote_for_message(id) +
                          ": expected 1-128 characters of [A-Za-z0-9._:-], " + found);
  };
  if (id.empty()) return fail("got an empty string");
  if (id.size() > kMaxEventIdLength)
    return fail("got " + std::to_string(id.size()) + " characters");
  for (size_t i = 0; i < id.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(id[i]);
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-')) {
      std::string shown =
          c >= 0x20 && c < 0x7f ? std::string("'") + static_cast<char>(c) + "'" : "byte 0x";
      if (shown == "byte 0x") append_hex_byte(shown, c);
      return fail("found " + shown + " at position " + std::to_string(i));
    }
  }
  return ok_status();
}

std::optional<int64_t> parse_rfc3339_ms(std::string_view s) {
  int year, month, day, hour, minute, second;
  if (!digits(s, 0, 4, year) || s.size() < 20 || s[4] != '-' || !digits(s, 5, 2, month) ||
      s[7] != '-' || !digits(s, 8, 2, day) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !digits(s, 11, 2, hour) || s[13] != ':' || !digits(s, 14, 2, minute) || s[16] != ':' ||
      !digits(s, 17, 2, second)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 ||
      static_cast<unsigned>(day) > days_in_month(year, static_cast<unsigned>(month)) || hour > 23 ||
      minute > 59 || second > 59) {
    return std::nullopt;
  }
  size_t pos = 19;
  int64_t millis = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t start = pos;
    int64_t scale = 100;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      millis += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  int64_t offset_min = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om;
    if (!digits(s, pos + 1, 2, oh) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
        !digits(s, pos + 4, 2, om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_min = (oh * 60 + om) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  int64_t days = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  int64_t secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_min * 60;
  return secs * 1000 + millis;
}

Result<ParsedEvents> parse_events(std::string_view body, int64_t now_ms,
                                  const EventLimits& limits) {
  ParsedEvents out;
  size_t first = body.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) {
    return make_error(ErrorCode::kInvalidArgument,
                      "empty body: expected a JSON array of events or NDJSON (one event object "
                      "per line)");
  }
  // simdjson's DOM parser: the whole body is validated (strict JSON, UTF-8) and laid out once,
  // without an allocation per value; one parser per body (it owns the parsed document).
  simdjson::dom::parser parser;
  if (body[first] == '[') {
    Element root;
    if (auto err = parser.parse(body.data(), body.size()).get(root)) {
      return make_error(
          ErrorCode::kInvalidArgument,
          std::string("body is not a valid JSON array of events: ") + simdjson::error_message(err));
    }
    simdjson::dom::array events;
    if (root.get_array().get(events)) {
      return make_error(
          ErrorCode::kInvalidArgument,
          "body is not a valid JSON array of events: got " + std::string(type_of(root)));
    }
    const size_t n = events.size();
    if (n > limits.max_events) return too_many(limits);
    out.total = n;
    out.events.reserve(n);
    size_t i = 0;
    for (const Element v : events) add_event(v, i++, now_ms, limits, out);
    return out;
  }
  size_t index = 0;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find('\n', pos);
    if (end == std::string_view::npos) end = body.size();
    std::string_view line = body.substr(pos, end - pos);
    pos = end + 1;
    size_t a = line.find_first_not_of(" \t\r");
    if (a == std::string_view::npos) continue;
    size_t b = line.find_last_not_of(" \t\r");
    line = line.substr(a, b - a + 1);
    if (index >= limits.max_events) return too_many(limits);
    Element v;
    if (auto err = parser.parse(line.data(), line.size()).get(v)) {
      out.rejected.push_back(Rejection{
          index, std::string("not a valid JSON object: ") + simdjson::error_message(err)});
    } else {
      add_event(v, index, now_ms, limits, out);
    }
    ++index;
  }
  out.total = index;
  return out;
}

}  // namespace tally::processor
