#include "processor/src/event_batch.h"

#include <cstring>

namespace tally::processor {

namespace {

constexpr uint8_t kVersion = 1;
constexpr size_t kEventFixedBytes = 1 + 1 + 1 + 8 + 8;

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (x86-64, arm64)
  out.append(b, sizeof(T));
}

template <typename T>
T get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

size_t encoded_event_size(const Event& e) {
  return kEventFixedBytes + e.video_id.size() + e.event_id.size();
}

void encode_event_batch(int64_t append_ms, std::span<const Event* const> events, std::string& out) {
  put<uint8_t>(out, kVersion);
  put<int64_t>(out, append_ms);
  put<uint32_t>(out, static_cast<uint32_t>(events.size()));
  for (const Event* e : events) {
    put<uint8_t>(out, static_cast<uint8_t>(e->type));
    put<uint8_t>(out, static_cast<uint8_t>(e->video_id.size()));
    put<uint8_t>(out, static_cast<uint8_t>(e->event_id.size()));
    put<int64_t>(out, e->ts_ms);
    put<int64_t>(out, e->value);
    out.append(e->video_id);
    out.append(e->event_id);
  }
}

Result<EventBatchReader> EventBatchReader::open(std::string_view payload) {
  if (payload.size() < kEventBatchHeaderBytes || static_cast<uint8_t>(payload[0]) != kVersion) {
    return make_error(ErrorCode::kInternal, "log record is not an event batch of version 1 (" +
                                                std::to_string(payload.size()) + " bytes)");
  }
  return EventBatchReader(payload.substr(kEventBatchHeaderBytes), get<int64_t>(payload.data() + 1),
                          get<uint32_t>(payload.data() + 9));
}

bool EventBatchReader::next(EventView& out) {
  if (read_ == count_ || failed_) return false;
  if (rest_.size() < kEventFixedBytes) {
    failed_ = true;
    return false;
  }
  const char* p = rest_.data();
  auto type = static_cast<uint8_t>(p[0]);
  size_t video_len = static_cast<uint8_t>(p[1]);
  size_t id_len = static_cast<uint8_t>(p[2]);
  if (type >= kEventTypeCount || rest_.size() < kEventFixedBytes + video_len + id_len) {
    failed_ = true;
    return false;
  }
  out.type = static_cast<EventType>(type);
  out.ts_ms = get<int64_t>(p + 3);
  out.value = get<int64_t>(p + 11);
  out.video_id = rest_.substr(kEventFixedBytes, video_len);
  out.event_id = rest_.substr(kEventFixedBytes + video_len, id_len);
  rest_.remove_prefix(kEventFixedBytes + video_len + id_len);
  ++read_;
  return true;
}

}  // namespace tally::processor
