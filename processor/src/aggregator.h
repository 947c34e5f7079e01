// Aggregator: one partition's counts per (video, event type, UTC minute) since the last hand-off,
// in a hash table that take() swaps out (the consumer does so every flush interval). A FlushBatch
// is what the writer sends as one counters:apply call: the rows and the log offset range
// (from, to] they cover (contract 4), with the number of log events behind them.
// Threads: an Aggregator belongs to its partition's consumer thread; a FlushBatch moves to the
// writer thread by value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "processor/src/event.h"

namespace tally::processor {

struct CounterRow {
  std::string video_id;
  EventType type = EventType::kView;
  int64_t minute_ms = 0;  // bucket start, a whole UTC minute in epoch ms
  int64_t count = 0;
  int64_t sum = 0;
};

struct FlushBatch {
  int partition = 0;
  int64_t from_offset = -1;  // exclusive: the shards' mark before this batch
  int64_t to_offset = -1;    // inclusive: the last log offset covered
  std::vector<CounterRow> rows;
  uint64_t events = 0;  // log events covered (duplicates included), for the backlog gauge
};

class Aggregator {
 public:
  void add(std::string_view video_id, EventType type, int64_t ts_ms, int64_t value);
  size_t rows() const { return table_.size(); }
  // Moves the rows out; the table starts empty again.
  std::vector<CounterRow> take();

 private:
  struct Sums {
    int64_t count = 0;
    int64_t sum = 0;
  };
  // key: video_id bytes, one type byte, 8 bytes of the minute
  std::unordered_map<std::string, Sums> table_;
  std::string key_;
};

}  // namespace tally::processor
