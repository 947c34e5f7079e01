// Unit tests for the PartitionConsumer's dedup snapshots: the consumer keeps reading the log while
// a snapshot is being written (the write is the slow, disk-bound part and runs on its own
// thread), the snapshot offset moves only once the write is durable, a failed write is counted and
// retried at the next interval, and the written file is the cache as load() reads it.
// A real PartitionLog (fsync off) and CounterWriter behind a fake cluster proxy; the snapshot write
// is the injected seam.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/metrics/metrics_registry.h"
#include "processor/src/counter_writer.h"
#include "processor/src/dedup_cache.h"
#include "processor/src/durable_file.h"
#include "processor/src/event_batch.h"
#include "processor/src/partition_consumer.h"
#include "processor/src/partition_log.h"
#include "tests/support/test_env.h"

namespace tally::processor {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

using testing::wait_until;

// A snapshot write that blocks until released, counting calls; fails while `fail` is set.
class HeldSnapshotWrite {
 public:
  SnapshotWrite fn() {
    return [this](const std::filesystem::path& file, std::string_view bytes) -> Status {
      std::unique_lock lock(mu_);
      ++started_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
      if (fail_) return make_error(ErrorCode::kUnavailable, "disk full (test)");
      return write_file_durably(file, bytes);
    };
  }
  void release(bool fail = false) {
    std::lock_guard lock(mu_);
    released_ = true;
    fail_ = fail;
    cv_.notify_all();
  }
  void hold() {
    std::lock_guard lock(mu_);
    released_ = false;
  }
  int started() {
    std::lock_guard lock(mu_);
    return started_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  bool fail_ = false;
  int started_ = 0;
};

class PartitionConsumerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LogOptions lo;
    lo.fsync = false;
    auto log = PartitionLog::open(dir_.path() / "log", lo);
    ASSERT_TRUE(log.ok()) << log.error().message;
    log_ = std::move(*log);
    options_.processor_id = "p1";
    options_.url = HttpUrl{"127.0.0.1", 1, ""};
    options_.min_backoff = 1ms;
    options_.max_backoff = 5ms;
    options_.dead_letter_dir = dir_.path() / "dlq";
    // Every batch is applied on the one shard (its mark: the batch's last offset).
    writer_ = std::make_unique<CounterWriter>(
        0, options_, WriterMetrics{}, backlog_, -1, nullptr,
        [](const std::string&, const std::string& body,
           std::chrono::milliseconds) -> Result<HttpClientResponse> {
          json req = json::parse(body);
          HttpClientResponse r;
          r.status = 200;
          r.body = json{
              {"shards", json::array({json{{"shard", "-"},
                                           {"outcome", "applied"},
                                           {"rows", 1},
                                           {"mark", req["to_offset"]}}})},
              {"token",
               ""}}.dump();
          return r;
        });
    metrics_.snapshots = &registry_.counter("snapshots", "t");
    metrics_.snapshot_failures = &registry_.counter("snapshot_failures", "t");
    metrics_.snapshot_pause_seconds = &registry_.histogram("pause", "t");
    metrics_.snapshot_write_seconds = &registry_.histogram("write", "t");
  }
  void TearDown() override {
    held_.release();
    if (consumer_) consumer_->stop();
    if (writer_) writer_->stop();
  }

  void start(std::chrono::milliseconds snapshot_interval) {
    ConsumerOptions co;
    co.flush_interval = 10ms;
    co.snapshot_interval = snapshot_interval;
    co.snapshot_file = dir_.path() / "dedup.snapshot";
    co.write_snapshot = held_.fn();
    consumer_ =
        std::make_unique<PartitionConsumer>(*log_, *writer_, dedup_, co, metrics_, backlog_);
    consumer_->start({-1});
  }

  // Appends one record of `n` events with fresh ids; returns its offset.
  int64_t append(int n) {
    std::vector<Event> events;
    for (int i = 0; i < n; ++i) {
      events.push_back(
          Event{"e" + std::to_string(next_id_++), "video1", EventType::kView, 1763800020000, 0});
    }
    std::vector<const Event*> ptrs;
    for (const Event& e : events) ptrs.push_back(&e);
    std::string payload;
    encode_event_batch(1763800020000, ptrs, payload);
    std::promise<int64_t> done;
    log_->append(std::move(payload), [&](Result<uint64_t> offset) {
      done.set_value(offset.ok() ? static_cast<int64_t>(*offset) : -1);
    });
    return done.get_future().get();
  }

  testing::TempDir dir_{"proc-consumer"};
  std::unique_ptr<PartitionLog> log_;
  ClusterProxyOptions options_;
  std::atomic<int64_t> backlog_{0};
  std::unique_ptr<CounterWriter> writer_;
  DedupCache dedup_{600'000, 10'000};
  MetricsRegistry registry_;
  ConsumerMetrics metrics_;
  HeldSnapshotWrite held_;
  std::unique_ptr<PartitionConsumer> consumer_;
  int next_id_ = 0;
};

TEST_F(PartitionConsumerTest, KeepsConsumingWhileASnapshotIsBeingWritten) {
  const int64_t first = append(10);
  start(1ms);
  // The first snapshot is handed over and its write hangs (a slow disk).
  ASSERT_TRUE(wait_until([&] { return held_.started() == 1; }));
  EXPECT_EQ(consumer_->snapshot_offset(), -1);  // not durable yet
  // Reading goes on meanwhile.
  int64_t last = first;
  for (int i = 0; i < 20; ++i) last = append(5);
  ASSERT_TRUE(wait_until([&] { return consumer_->consumed() == last; }))
      << "the consumer stalled behind the snapshot write at " << consumer_->consumed();
  // One write at a time: nothing else was handed over while the first one hangs.
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(held_.started(), 1);

  held_.release();
  ASSERT_TRUE(wait_until([&] { return consumer_->snapshot_offset() >= first; }));
  // The next snapshots cover the records read meanwhile, and the file is the cache load() reads.
  ASSERT_TRUE(wait_until([&] { return consumer_->snapshot_offset() == last; }));
  consumer_->stop();
  DedupCache loaded(600'000, 10'000);
  auto covered = loaded.load(dir_.path() / "dedup.snapshot");
  ASSERT_TRUE(covered.ok()) << covered.error().message;
  EXPECT_EQ(*covered, last);
  EXPECT_EQ(loaded.size(), 110u);
  EXPECT_GE(metrics_.snapshots->value(), 2u);
  EXPECT_GE(metrics_.snapshot_pause_seconds->snapshot().count, 2u);
}

TEST_F(PartitionConsumerTest, AFailedSnapshotWriteIsCountedAndTheNextOneIsTried) {
  const int64_t offset = append(3);
  start(5ms);
  ASSERT_TRUE(wait_until([&] { return held_.started() == 1; }));
  held_.release(/*fail=*/true);
  ASSERT_TRUE(wait_until([&] { return metrics_.snapshot_failures->value() >= 1; }));
  EXPECT_EQ(consumer_->snapshot_offset(), -1);  // a failed write is not a snapshot
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "dedup.snapshot"));
  held_.release(/*fail=*/false);
  ASSERT_TRUE(wait_until([&] { return consumer_->snapshot_offset() == offset; }));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "dedup.snapshot"));
}

TEST(DurableFile, ReplacesTheWholeFileOrLeavesItAlone) {
  testing::TempDir dir("durable-file");
  const auto file = dir.path() / "state";
  ASSERT_TRUE(write_file_durably(file, "first").ok());
  ASSERT_TRUE(write_file_durably(file, "second, longer").ok());
  std::ifstream in(file);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(content, "second, longer");
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "state.tmp"));
  // A directory that does not exist: the error names the path, nothing is left behind.
  auto failed = write_file_durably(dir.path() / "missing" / "state", "x");
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.error().message.find((dir.path() / "missing" / "state.tmp").string()),
            std::string::npos)
      << failed.error().message;
  EXPECT_NE(failed.error().message.find("cannot create"), std::string::npos);
}

}  // namespace
}  // namespace tally::processor
