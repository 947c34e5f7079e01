// Unit tests for the processor's partitioned log: CRC-32C, the event batch codec, record framing,
// group commit under concurrent appenders (one fdatasync for many requests), segment rolling,
// restart reading back exactly what was acknowledged, a torn tail (partial record, garbage) and a
// checksum mismatch cut on recovery, and truncation of whole segments below an offset only.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "processor/src/crc32c.h"
#include "processor/src/event_batch.h"
#include "processor/src/log_segment.h"
#include "processor/src/partition_log.h"
#include "tests/support/test_env.h"

namespace tally::processor {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::unique_ptr<PartitionLog> open_log(const fs::path& dir, LogOptions options = {}) {
  auto log = PartitionLog::open(dir, options);
  EXPECT_TRUE(log.ok()) << (log.ok() ? "" : log.error().message);
  return log.ok() ? std::move(*log) : nullptr;
}

// Appends synchronously: waits for the committer's callback.
Result<uint64_t> append_sync(PartitionLog& log, std::string payload) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<uint64_t>> result;
  log.append(std::move(payload), [&](Result<uint64_t> r) {
    std::lock_guard lock(mu);
    result.emplace(std::move(r));
    cv.notify_one();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return result.has_value(); });
  return std::move(*result);
}

std::vector<std::pair<uint64_t, std::string>> read_all(const PartitionLog& log, uint64_t from) {
  std::vector<std::pair<uint64_t, std::string>> out;
  LogReader reader(log, from);
  while (true) {
    auto r = reader.next();
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    if (!r.ok() || !r->has_value()) break;
    out.emplace_back((*r)->offset, std::string((*r)->payload));
  }
  return out;
}

std::string payload_for(uint64_t i) {
  return "record-" + std::to_string(i) + std::string(i % 50, 'x');
}

TEST(Crc32c, KnownVectorAndHardwareMatchesTable) {
  const char* check = "123456789";
  EXPECT_EQ(crc32c(check, 9), 0xE3069283u);
  EXPECT_EQ(crc32c_portable(check, 9), 0xE3069283u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  std::mt19937 rng(7);
  std::string data(4099, '\0');
  for (auto& c : data) c = static_cast<char>(rng());
  for (size_t n : {0, 1, 7, 8, 9, 63, 64, 65, 1000, 4099}) {
    EXPECT_EQ(crc32c(data.data(), n), crc32c_portable(data.data(), n)) << n;
    // Extending a running checksum equals one pass.
    size_t half = n / 2;
    EXPECT_EQ(crc32c(data.data() + half, n - half, crc32c(data.data(), half)),
              crc32c(data.data(), n));
  }
}

TEST(EventBatch, RoundTrip) {
  Event a;
  a.event_id = "id-1";
  a.video_id = "dQw4w9WgXcQ";
  a.type = EventType::kWatchTime;
  a.ts_ms = 1763800000123;
  a.value = 4567;
  Event b;
  b.video_id = std::string(64, 'z');
  b.event_id = std::string(128, 'q');
  b.type = EventType::kShare;
  b.ts_ms = -5;
  std::vector<const Event*> events = {&a, &b};
  std::string payload;
  encode_event_batch(99, events, payload);
  EXPECT_EQ(payload.size(), kEventBatchHeaderBytes + encoded_event_size(a) + encoded_event_size(b));
  auto reader = EventBatchReader::open(payload);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(reader->append_ms(), 99);
  EXPECT_EQ(reader->count(), 2u);
  EventView v;
  ASSERT_TRUE(reader->next(v));
  EXPECT_EQ(v.event_id, "id-1");
  EXPECT_EQ(v.video_id, "dQw4w9WgXcQ");
  EXPECT_EQ(v.type, EventType::kWatchTime);
  EXPECT_EQ(v.ts_ms, 1763800000123);
  EXPECT_EQ(v.value, 4567);
  ASSERT_TRUE(reader->next(v));
  EXPECT_EQ(v.video_id, std::string(64, 'z'));
  EXPECT_EQ(v.event_id, std::string(128, 'q'));
  EXPECT_EQ(v.ts_ms, -5);
  EXPECT_FALSE(reader->next(v));
  EXPECT_FALSE(reader->failed());

  auto cut = EventBatchReader::open(std::string_view(payload).substr(0, payload.size() - 3));
  ASSERT_TRUE(cut.ok());
  ASSERT_TRUE(cut->next(v));
  EXPECT_FALSE(cut->next(v));
  EXPECT_TRUE(cut->failed());
  EXPECT_FALSE(EventBatchReader::open("xyz").ok());
}

TEST(LogRecord, DecodeDetectsEveryKindOfDamage) {
  std::string bytes;
  encode_record(5, "hello", bytes);
  RecordView rec;
  size_t used = 0;
  std::string problem;
  ASSERT_EQ(decode_record(bytes, 5, 100, rec, used, problem), DecodeStatus::kOk);
  EXPECT_EQ(rec.offset, 5u);
  EXPECT_EQ(rec.payload, "hello");
  EXPECT_EQ(used, bytes.size());
  EXPECT_EQ(decode_record(std::string_view(bytes).substr(0, 18), 5, 100, rec, used, problem),
            DecodeStatus::kNeedMore);
  EXPECT_EQ(decode_record(bytes, 6, 100, rec, used, problem), DecodeStatus::kCorrupt);
  EXPECT_NE(problem.find("expected offset 6, found 5"), std::string::npos);
  EXPECT_EQ(decode_record(bytes, 5, 4, rec, used, problem), DecodeStatus::kCorrupt);
  EXPECT_NE(problem.find("impossible length 5"), std::string::npos);
  std::string flipped = bytes;
  flipped.back() ^= 0x01;
  EXPECT_EQ(decode_record(flipped, 5, 100, rec, used, problem), DecodeStatus::kCorrupt);
  EXPECT_NE(problem.find("checksum mismatch"), std::string::npos);
}

TEST(PartitionLog, AppendReadRestart) {
  testing::TempDir dir("proc-log");
  {
    auto log = open_log(dir.path());
    ASSERT_TRUE(log);
    EXPECT_EQ(log->end_offset(), 0u);
    for (uint64_t i = 0; i < 100; ++i) {
      auto r = append_sync(*log, payload_for(i));
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(*r, i);
    }
    EXPECT_EQ(log->end_offset(), 100u);
    auto all = read_all(*log, 0);
    ASSERT_EQ(all.size(), 100u);
    for (uint64_t i = 0; i < 100; ++i) {
      EXPECT_EQ(all[i].first, i);
      EXPECT_EQ(all[i].second, payload_for(i));
    }
    auto tail = read_all(*log, 97);
    ASSERT_EQ(tail.size(), 3u);
    EXPECT_EQ(tail[0].first, 97u);
  }
  auto log = open_log(dir.path());
  ASSERT_TRUE(log);
  EXPECT_EQ(log->end_offset(), 100u);
  EXPECT_EQ(log->recovery().cut_bytes, 0u);
  auto r = append_sync(*log, "after restart");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 100u);
  auto all = read_all(*log, 0);
  ASSERT_EQ(all.size(), 101u);
  EXPECT_EQ(all[100].second, "after restart");
}

TEST(PartitionLog, GroupCommitSyncsManyConcurrentAppendsAtOnce) {
  testing::TempDir dir("proc-log");
  LogOptions options;
  options.segment_bytes = 64 * 1024;  // also rolls a few segments
  options.max_payload_bytes = 1024;
  std::map<uint64_t, std::string> acked;
  {
    auto log = open_log(dir.path(), options);
    ASSERT_TRUE(log);
    constexpr int kThreads = 16, kPerThread = 200;
    std::mutex mu;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          std::string p = "t" + std::to_string(t) + "-" + std::to_string(i);
          auto r = append_sync(*log, p);
          ASSERT_TRUE(r.ok());
          std::lock_guard lock(mu);
          EXPECT_TRUE(acked.emplace(*r, p).second) << "offset given twice: " << *r;
        }
      });
    }
    for (auto& th : threads) th.join();
    ASSERT_EQ(acked.size(), size_t{kThreads * kPerThread});
    EXPECT_EQ(acked.rbegin()->first, acked.size() - 1);  // consecutive from 0
    // Group commit: far fewer fdatasyncs than appends (16 appenders wait at once).
    EXPECT_LT(log->syncs(), acked.size() / 2) << "syncs " << log->syncs();
    EXPECT_GT(log->segment_bases().size(), 1u);
  }
  // After a restart every acknowledged record is there, exactly, in offset order.
  auto log = open_log(dir.path(), options);
  ASSERT_TRUE(log);
  auto all = read_all(*log, 0);
  ASSERT_EQ(all.size(), acked.size());
  for (const auto& [offset, payload] : all) EXPECT_EQ(acked.at(offset), payload);
}

class TornTail : public ::testing::Test {
 protected:
  void SetUp() override {
    auto log = open_log(dir_.path());
    ASSERT_TRUE(log);
    for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(append_sync(*log, payload_for(i)).ok());
    seg_ = segment_path(dir_.path(), 0);
    clean_size_ = fs::file_size(seg_);
  }
  void expect_recovered_to(uint64_t end, const std::string& problem_part) {
    auto log = open_log(dir_.path());
    ASSERT_TRUE(log);
    EXPECT_EQ(log->end_offset(), end);
    EXPECT_GT(log->recovery().cut_bytes, 0u);
    EXPECT_NE(log->recovery().problem.find(problem_part), std::string::npos)
        << log->recovery().problem;
    auto all = read_all(*log, 0);
    ASSERT_EQ(all.size(), end);
    for (uint64_t i = 0; i < end; ++i) EXPECT_EQ(all[i].second, payload_for(i));
    // Appends continue right after the last good record, and survive another restart.
    auto r = append_sync(*log, "next");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, end);
    log.reset();
    auto again = open_log(dir_.path());
    EXPECT_EQ(again->recovery().cut_bytes, 0u);
    EXPECT_EQ(again->end_offset(), end + 1);
  }
  testing::TempDir dir_{"proc-log"};
  fs::path seg_;
  uint64_t clean_size_ = 0;
};

TEST_F(TornTail, PartialRecordAtTheEndIsCut) {
  std::string rec;
  encode_record(10, "a record that never finished", rec);
  std::ofstream(seg_, std::ios::app | std::ios::binary) << rec.substr(0, rec.size() - 5);
  expect_recovered_to(10, "torn");
  EXPECT_EQ(fs::file_size(seg_), clean_size_ + kRecordHeaderBytes + 4);  // cut, then "next"
}

TEST_F(TornTail, GarbageAtTheEndIsCut) {
  std::ofstream(seg_, std::ios::app | std::ios::binary) << std::string(37, '\xAB');
  expect_recovered_to(10, "expected offset 10");
}

TEST_F(TornTail, ZeroFilledTailIsCut) {
  std::ofstream(seg_, std::ios::app | std::ios::binary) << std::string(4096, '\0');
  expect_recovered_to(10, "");
}

TEST_F(TornTail, ChecksumMismatchCutsFromThatRecord) {
  // Flip one payload byte of the last record (offset 9).
  std::string last;
  encode_record(9, payload_for(9), last);
  int fd = ::open(seg_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c;
  off_t pos = static_cast<off_t>(clean_size_ - 2);
  ASSERT_EQ(::pread(fd, &c, 1, pos), 1);
  c ^= 0x40;
  ASSERT_EQ(::pwrite(fd, &c, 1, pos), 1);
  ::close(fd);
  expect_recovered_to(9, "record 9: checksum mismatch");
}

TEST(PartitionLog, TruncateDeletesOnlyWholeSegmentsBelowTheOffset) {
  testing::TempDir dir("proc-log");
  LogOptions options;
  options.segment_bytes = 1024;
  options.max_payload_bytes = 200;
  auto log = open_log(dir.path(), options);
  ASSERT_TRUE(log);
  for (uint64_t i = 0; i < 200; ++i) ASSERT_TRUE(append_sync(*log, payload_for(i)).ok());
  auto bases = log->segment_bases();
  ASSERT_GE(bases.size(), 4u);
  // An offset inside segment 2 deletes segments 0 and 1 only.
  uint64_t cut = bases[2] + 1;
  auto deleted = log->truncate_before(cut);
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 2u);
  EXPECT_EQ(log->start_offset(), bases[2]);
  EXPECT_FALSE(fs::exists(segment_path(dir.path(), bases[0])));
  EXPECT_TRUE(fs::exists(segment_path(dir.path(), bases[2])));
  // Everything from the new start is still readable; below it is an error, not silence.
  auto rest = read_all(*log, bases[2]);
  EXPECT_EQ(rest.size(), 200 - bases[2]);
  LogReader gone(*log, 0);
  auto r = gone.next();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("was truncated"), std::string::npos);
  // The active segment is never deleted, even when asked to go past the end.
  ASSERT_TRUE(log->truncate_before(1000000).ok());
  EXPECT_EQ(log->segment_bases().size(), 1u);
  EXPECT_EQ(log->end_offset(), 200u);
  auto r2 = append_sync(*log, "still appending");
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(*r2, 200u);
  // And a restart after truncation finds the same start and end.
  log.reset();
  log = open_log(dir.path(), options);
  EXPECT_EQ(log->end_offset(), 201u);
  EXPECT_EQ(log->start_offset(), log->segment_bases().front());
}

TEST(PartitionLog, ReaderWaitsForDurabilityAndOversizedRecordsFail) {
  testing::TempDir dir("proc-log");
  LogOptions options;
  options.max_payload_bytes = 100;
  auto log = open_log(dir.path(), options);
  ASSERT_TRUE(log);
  LogReader reader(*log, 0);
  auto none = reader.next();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_FALSE(log->wait_for(0, 10ms));
  std::thread writer([&] {
    std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(append_sync(*log, "late").ok());
  });
  EXPECT_TRUE(log->wait_for(0, 5000ms));
  writer.join();
  auto one = reader.next();
  ASSERT_TRUE(one.ok());
  ASSERT_TRUE(one->has_value());
  EXPECT_EQ((*one)->payload, "late");
  auto big = append_sync(*log, std::string(101, 'b'));
  EXPECT_FALSE(big.ok());
  auto empty = append_sync(*log, "");
  EXPECT_FALSE(empty.ok());
  EXPECT_EQ(log->end_offset(), 1u);
  EXPECT_FALSE(PartitionLog::open(dir.path() / "x", LogOptions{100, 200, true}).ok());
}

}  // namespace
}  // namespace tally::processor
