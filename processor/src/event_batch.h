// The payload of one log record: the valid events of one request that fall in one partition, with
// the wall-clock time they were appended (the dedup window runs on that time, so a replay after a
// restart makes the same decisions). Little-endian binary:
//   u8 version (1) | i64 append_ms | u32 count | count x { u8 type | u8 video_len | u8 id_len |
//   i64 ts_ms | i64 value | video bytes | event_id bytes }
// Pure functions and a reader over caller-owned bytes; any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/core/result.h"
#include "processor/src/event.h"

namespace tally::processor {

// An event decoded in place: the views point into the payload.
struct EventView {
  std::string_view event_id;  // empty: none
  std::string_view video_id;
  EventType type = EventType::kView;
  int64_t ts_ms = 0;
  int64_t value = 0;
};

// Appends the encoded batch of `events` (all must be valid: ids within their length bounds).
void encode_event_batch(int64_t append_ms, std::span<const Event* const> events, std::string& out);
// Encoded size of one event, to split large batches into records of bounded size.
size_t encoded_event_size(const Event& e);
inline constexpr size_t kEventBatchHeaderBytes = 1 + 8 + 4;

class EventBatchReader {
 public:
  // Checks the header; kInternal naming the problem when the payload is not a batch.
  static Result<EventBatchReader> open(std::string_view payload);

  int64_t append_ms() const { return append_ms_; }
  uint32_t count() const { return count_; }
  // The next event; false at the end. A payload whose events run past its end is an error,
  // reported by `error()` after next() returned false.
  bool next(EventView& out);
  bool failed() const { return failed_; }

 private:
  EventBatchReader(std::string_view rest, int64_t append_ms, uint32_t count)
      : rest_(rest), append_ms_(append_ms), count_(count) {}
  std::string_view rest_;
  int64_t append_ms_;
  uint32_t count_;
  uint32_t read_ = 0;
  bool failed_ = false;
};

}  // namespace tally::processor
