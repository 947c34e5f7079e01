#include "processor/src/aggregator.h"

#include <cstring>

namespace tally::processor {

void Aggregator::add(std::string_view video_id, EventType type, int64_t ts_ms, int64_t value) {
  int64_t minute = minute_of(ts_ms);
  key_.assign(video_id);
  key_.push_back(static_cast<char>(type));
  char m[8];
  std::memcpy(m, &minute, 8);
  key_.append(m, 8);
  auto it = table_.find(key_);
  if (it == table_.end()) it = table_.emplace(key_, Sums{}).first;
  it->second.count += 1;
  it->second.sum += value;
}

std::vector<CounterRow> Aggregator::take() {
  std::vector<CounterRow> rows;
  rows.reserve(table_.size());
  for (const auto& [key, sums] : table_) {
    CounterRow r;
    size_t video_len = key.size() - 9;
    r.video_id = key.substr(0, video_len);
    r.type = static_cast<EventType>(key[video_len]);
    std::memcpy(&r.minute_ms, key.data() + video_len + 1, 8);
    r.count = sums.count;
    r.sum = sums.sum;
    rows.push_back(std::move(r));
  }
  std::unordered_map<std::string, Sums> fresh;
  fresh.reserve(table_.size());
  table_.swap(fresh);
  return rows;
}

}  // namespace tally::processor
