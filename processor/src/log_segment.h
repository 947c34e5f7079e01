// One segment file of a partition's append-only log: records of
//   u32 payload_len | u32 crc32c(offset, payload_len, payload) | u64 offset | payload
// (little-endian, 16-byte header) with consecutive offsets from the segment's base offset, which
// is also its file name (%020llu.seg). A segment is filled up to a fixed size, then the log rolls
// to a new one. recover() scans a segment and cuts a torn or corrupt tail (the first record that
// is short, has the wrong offset, an impossible length or a bad checksum, and everything after it).
// A LogSegment is owned by one thread at a time (the partition's committer); the free functions
// are pure.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/core/result.h"
#include "processor/src/durable_file.h"

namespace tally::processor {

inline constexpr size_t kRecordHeaderBytes = 16;

// Appends one encoded record (header and payload) to `out`.
void encode_record(uint64_t offset, std::string_view payload, std::string& out);

struct RecordView {
  uint64_t offset = 0;
  std::string_view payload;
};

enum class DecodeStatus { kOk, kNeedMore, kCorrupt };

// Decodes the record at the start of `bytes`, expected to carry `expected_offset`. kNeedMore when
// `bytes` holds less than the whole record; kCorrupt (with `problem` set) for a bad length,
// offset or checksum. `consumed` is the record's size when kOk.
DecodeStatus decode_record(std::string_view bytes, uint64_t expected_offset,
                           uint32_t max_payload_bytes, RecordView& out, size_t& consumed,
                           std::string& problem);

std::filesystem::path segment_path(const std::filesystem::path& dir, uint64_t base_offset);

class LogSegment {
 public:
  // Creates a new, empty segment file (fails if it exists) and makes its directory entry durable.
  static Result<LogSegment> create(const std::filesystem::path& dir, uint64_t base_offset);

  struct Recovery {
    uint64_t cut_bytes = 0;  // bytes removed from the end (0: the tail was clean)
    std::string problem;     // why the cut, e.g. "offset 17 at byte 4096: checksum mismatch"
  };
  // Opens an existing segment for appending: scans every record, cuts the file at the first bad
  // one (ftruncate + fdatasync) and reports what was cut.
  static Result<LogSegment> recover(const std::filesystem::path& dir, uint64_t base_offset,
                                    uint32_t max_payload_bytes, Recovery& report);

  LogSegment(LogSegment&& other) noexcept;
  LogSegment& operator=(LogSegment&& other) noexcept;
  LogSegment(const LogSegment&) = delete;
  LogSegment& operator=(const LogSegment&) = delete;
  ~LogSegment();

  uint64_t base_offset() const { return base_; }
  uint64_t next_offset() const { return next_; }  // the offset the next record gets
  uint64_t size_bytes() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

  // Writes `bytes` (whole encoded records carrying offsets next_offset() .. +records-1) at the
  // end. On failure the file is cut back to its previous size so no partial record remains.
  Status append(std::string_view bytes, uint64_t records);
  Status sync();

 private:
  LogSegment(std::filesystem::path path, int fd, uint64_t base, uint64_t next, uint64_t size)
      : path_(std::move(path)), fd_(fd), base_(base), next_(next), size_(size) {}
  std::filesystem::path path_;
  int fd_ = -1;
  uint64_t base_ = 0;
  uint64_t next_ = 0;
  uint64_t size_ = 0;
};

}  // namespace tally::processor
