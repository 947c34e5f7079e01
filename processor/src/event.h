// Events as producers post them (design brief contract 3) and their validation. parse_events turns
// a POST /v1/events body (a JSON array or NDJSON) into valid Events plus one rejection per bad
// event, naming its index, the field, the value and the expected form; one bad event never fails
// the good ones. Pure functions without shared state: any thread may call them concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/core/result.h"

namespace tally::processor {

// The event types of contract 3, in the order of their one-byte code in the log.
enum class EventType : uint8_t { kView = 0, kLike = 1, kDislike = 2, kShare = 3, kWatchTime = 4 };
inline constexpr int kEventTypeCount = 5;

std::string_view event_type_name(EventType type);
std::optional<EventType> parse_event_type(std::string_view name);

// An event_id is 1-128 characters of [A-Za-z0-9._:-] (UUIDs, ULIDs, "client-42:seq-9" fit). It
// is optional: an event without one is never deduplicated.
inline constexpr size_t kMaxEventIdLength = 128;
Status validate_event_id(std::string_view event_id);

struct Event {
  std::string event_id;  // empty: none given
  std::string video_id;
  EventType type = EventType::kView;
  int64_t ts_ms = 0;  // epoch milliseconds, UTC
  int64_t value = 0;  // e.g. watch time in ms; 0 when absent
};

struct EventLimits {
  // ts must lie in [now - max_age_ms, now + max_future_ms].
  int64_t max_age_ms = 24 * 3600 * 1000;
  int64_t max_future_ms = 5 * 60 * 1000;
  // value must be an integer in [0, max_value] (default: one day of watch time in ms).
  int64_t max_value = 24 * 3600 * 1000;
  // More events than this in one body: the body is refused as a whole (400).
  size_t max_events = 100000;
};

struct Rejection {
  size_t
      index;  // position of the event in the body, from 0 (the line for NDJSON, blank ones skipped)
  std::string reason;
};

struct ParsedEvents {
  std::vector<Event> events;  // the valid ones, in body order
  std::vector<Rejection> rejected;
  size_t total = 0;  // events in the body, valid or not
};

// Parses a body that is a JSON array of event objects or NDJSON (one object per line; blank lines
// are skipped). A body that is neither (malformed array, empty, more than max_events) is an
// kInvalidArgument error as a whole; in NDJSON a malformed line only rejects that line.
Result<ParsedEvents> parse_events(std::string_view body, int64_t now_ms, const EventLimits& limits);

// RFC 3339 date-time ("2025-11-22T10:00:00Z", "2025-11-22T10:00:00.250+01:00", 't'/'z' and a
// space for 'T' allowed) to epoch ms. Fractions beyond milliseconds are truncated; leap second 60
// is refused. std::nullopt for anything else.
std::optional<int64_t> parse_rfc3339_ms(std::string_view text);

// The UTC minute an epoch-ms timestamp falls in, as epoch ms (rounds down, also below 0).
constexpr int64_t minute_of(int64_t ts_ms) {
  int64_t m = ts_ms / 60000;
  if (ts_ms % 60000 < 0) --m;
  return m * 60000;
}

// The log partition of a video: partitions split the keyspace-id space into equal contiguous
// ranges (partition = ksid * partitions / 2^64), so with a power-of-two partition count at least
// the shard count, each partition's events belong to one shard of a uniform keyspace.
int partition_of(std::string_view video_id, int partitions);

}  // namespace tally::processor
