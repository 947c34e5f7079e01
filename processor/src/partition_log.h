// PartitionLog: one partition's durable append-only log, a directory of fixed-size segment files
// (log_segment.h). Offsets start at 0 and are consecutive. append() queues a record; the
// partition's committer thread writes every queued record with one write() and makes them
// durable with one fdatasync (group commit), then calls each request's callback with its offset
// on that thread. A record is visible to readers (LogReader, end_offset()) only once durable, so
// nothing downstream ever sees an offset that a crash could take back. open() recovers: it cuts
// a torn or corrupt tail off the last segment. truncate_before() deletes only whole segments below
// an offset the caller says is no longer needed. After a write or sync error the log refuses every
// later append (the file state is unknown; a restart recovers it).
// Threads: append(), end_offset(), wait_for(), truncate_before() and LogReader from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/core/result.h"
#include "processor/src/log_segment.h"

namespace tally::processor {

struct LogOptions {
  uint64_t segment_bytes = 64 << 20;     // a segment is rolled before it would exceed this
  uint32_t max_payload_bytes = 4 << 20;  // the largest record; must fit a segment
  bool fsync = true;                     // false: skip fdatasync (tests of logic only)
};

struct LogRecoveryReport {
  uint64_t start_offset = 0;  // the first offset on disk
  uint64_t end_offset = 0;    // one past the last valid record
  size_t segments = 0;
  uint64_t cut_bytes = 0;  // torn or corrupt tail removed from the last segment
  std::string problem;     // why, when cut_bytes > 0
};

class PartitionLog {
 public:
  using AppendDone = std::function<void(Result<uint64_t> offset)>;

  // Opens (creating when absent) the log in `dir`, recovers its last segment and starts the
  // committer. Errors name the directory and the failing system call.
  static Result<std::unique_ptr<PartitionLog>> open(const std::filesystem::path& dir,
                                                    LogOptions options);
  // Commits what is queued, then stops the committer.
  ~PartitionLog();
  PartitionLog(const PartitionLog&) = delete;
  PartitionLog& operator=(const PartitionLog&) = delete;

  // Queues one record (payload 1..max_payload_bytes bytes). `done` runs on the committer thread
  // once the record is durable (with its offset) or failed; it must not block for long.
  void append(std::string payload, AppendDone done);

  // One past the last durable offset (0 for an empty log): every offset below it is durable.
  uint64_t end_offset() const { return end_.load(std::memory_order_acquire); }
  // The first offset still on disk (earlier segments were truncated).
  uint64_t start_offset() const;
  // Waits until end_offset() > offset, the timeout passes or the log stops; true if durable.
  bool wait_for(uint64_t offset, std::chrono::milliseconds timeout) const;
  // Deletes every segment all of whose records are below `offset`; never the active segment.
  // Returns the number of segments deleted.
  Result<size_t> truncate_before(uint64_t offset);

  const std::filesystem::path& dir() const { return dir_; }
  const LogOptions& options() const { return options_; }
  const LogRecoveryReport& recovery() const { return recovery_; }
  // Base offsets of the segments on disk, ascending (for readers).
  std::vector<uint64_t> segment_bases() const;
  // Set after a failed write or sync; every append fails from then on.
  std::optional<std::string> failure() const;

  uint64_t syncs() const { return syncs_.load(std::memory_order_relaxed); }
  uint64_t bytes_written() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  struct Pending {
    std::string payload;
    AppendDone done;
  };
  PartitionLog(std::filesystem::path dir, LogOptions options);
  void run();
  // Writes and syncs one group; on failure sets failure_.
  Status commit(std::vector<Pending>& group, std::vector<uint64_t>& offsets);

  const std::filesystem::path dir_;
  const LogOptions options_;
  LogRecoveryReport recovery_;

  // Committer-thread state.
  std::optional<LogSegment> active_;
  std::string buffer_;

  mutable std::mutex mu_;                       // guards everything below
  mutable std::condition_variable work_cv_;     // committer: pending or stopping
  mutable std::condition_variable durable_cv_;  // readers: end_ advanced or stopping
  std::vector<Pending> pending_;
  std::vector<uint64_t> bases_;
  std::optional<std::string> failure_;
  bool stopping_ = false;

  std::atomic<uint64_t> end_{0};
  std::atomic<uint64_t> syncs_{0};
  std::atomic<uint64_t> bytes_{0};
  std::thread thread_;
};

// Reads a partition's durable records in order from an offset. One reader per thread; it keeps
// its own file descriptor and buffer. A record view stays valid until the next call.
class LogReader {
 public:
  LogReader(const PartitionLog& log, uint64_t from_offset);
  ~LogReader();
  LogReader(const LogReader&) = delete;
  LogReader& operator=(const LogReader&) = delete;

  // The next durable record, std::nullopt when there is none yet, or an error (a missing segment,
  // an unreadable file, a record that fails its checksum: kInternal naming the offset).
  Result<std::optional<RecordView>> next();
  // The offset the next record will have.
  uint64_t position() const { return next_; }

 private:
  Status open_segment_for(uint64_t offset);

  const PartitionLog& log_;
  uint64_t next_;           // the offset the caller gets next
  uint64_t file_next_ = 0;  // the offset of the next record in the open segment
  int fd_ = -1;
  uint64_t file_pos_ = 0;  // file position of buf_[0]
  std::vector<char> buf_;
  size_t begin_ = 0;  // unread bytes are buf_[begin_, end_)
  size_t end_ = 0;
};

}  // namespace tally::processor
