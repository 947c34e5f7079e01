#include "processor/src/log_segment.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "processor/src/crc32c.h"

namespace tally::processor {

namespace {

template <typename T>
void put(char* p, T v) {
  std::memcpy(p, &v, sizeof(T));  // little-endian hosts only (x86-64, arm64)
}

template <typename T>
T get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

uint32_t record_crc(uint64_t offset, uint32_t len, std::string_view payload) {
  char head[12];
  put<uint64_t>(head, offset);
  put<uint32_t>(head + 8, len);
  return crc32c(payload.data(), payload.size(), crc32c(head, sizeof(head)));
}

Error io_error(const std::string& what, const std::filesystem::path& path) {
  return make_error(ErrorCode::kUnavailable,
                    what + " " + path.string() + ": " + std::strerror(errno));
}

}  // namespace

void encode_record(uint64_t offset, std::string_view payload, std::string& out) {
  char head[kRecordHeaderBytes];
  auto len = static_cast<uint32_t>(payload.size());
  put<uint32_t>(head, len);
  put<uint32_t>(head + 4, record_crc(offset, len, payload));
  put<uint64_t>(head + 8, offset);
  out.append(head, sizeof(head));
  out.append(payload);
}

DecodeStatus decode_record(std::string_view bytes, uint64_t expected_offset,
                           uint32_t max_payload_bytes, RecordView& out, size_t& consumed,
                           std::string& problem) {
  if (bytes.size() < kRecordHeaderBytes) return DecodeStatus::kNeedMore;
  auto len = get<uint32_t>(bytes.data());
  auto crc = get<uint32_t>(bytes.data() + 4);
  auto offset = get<uint64_t>(bytes.data() + 8);
  if (offset != expected_offset) {
    problem =
        "expected offset " + std::to_string(expected_offset) + ", found " + std::to_string(offset);
    return DecodeStatus::kCorrupt;
  }
  if (len == 0 || len > max_payload_bytes) {
    problem = "record " + std::to_string(offset) + ": impossible length " + std::to_string(len);
    return DecodeStatus::kCorrupt;
  }
  if (bytes.size() < kRecordHeaderBytes + len) return DecodeStatus::kNeedMore;
  std::string_view payload = bytes.substr(kRecordHeaderBytes, len);
  if (record_crc(offset, len, payload) != crc) {
    problem = "record " + std::to_string(offset) + ": checksum mismatch";
    return DecodeStatus::kCorrupt;
  }
  out.offset = offset;
  out.payload = payload;
  consumed = kRecordHeaderBytes + len;
  return DecodeStatus::kOk;
}

std::filesystem::path segment_path(const std::filesystem::path& dir, uint64_t base_offset) {
  char name[32];
  std::snprintf(name, sizeof(name), "%020llu.seg", static_cast<unsigned long long>(base_offset));
  return dir / name;
}

Result<LogSegment> LogSegment::create(const std::filesystem::path& dir, uint64_t base_offset) {
  auto path = segment_path(dir, base_offset);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot create segment", path);
  LogSegment seg(path, fd, base_offset, base_offset, 0);
  if (auto st = sync_directory(dir); !st) return st.error();
  return seg;
}

Result<LogSegment> LogSegment::recover(const std::filesystem::path& dir, uint64_t base_offset,
                                       uint32_t max_payload_bytes, Recovery& report) {
  auto path = segment_path(dir, base_offset);
  int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open segment", path);
  LogSegment seg(path, fd, base_offset, base_offset, 0);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return io_error("cannot stat segment", path);
  auto file_size = static_cast<uint64_t>(st.st_size);

  // Scan in chunks; a record never exceeds max_payload_bytes + header.
  std::vector<char> buf(std::max<size_t>(1 << 20, 2 * (max_payload_bytes + kRecordHeaderBytes)));
  uint64_t good = 0;  // bytes of whole valid records
  uint64_t next = base_offset;
  size_t have = 0;  // bytes in buf starting at file position `good`
  std::string problem;
  while (true) {
    ssize_t n = ::pread(fd, buf.data() + have, buf.size() - have, static_cast<off_t>(good + have));
    if (n < 0) return io_error("cannot read segment", path);
    have += static_cast<size_t>(n);
    size_t pos = 0;
    DecodeStatus status = DecodeStatus::kNeedMore;
    while (true) {
      RecordView rec;
      size_t used = 0;
      status = decode_record(std::string_view(buf.data() + pos, have - pos), next,
                             max_payload_bytes, rec, used, problem);
      if (status != DecodeStatus::kOk) break;
      pos += used;
      ++next;
    }
    good += pos;
    std::memmove(buf.data(), buf.data() + pos, have - pos);
    have -= pos;
    if (status == DecodeStatus::kCorrupt) break;
    if (n == 0) {
      if (have > 0) {
        problem = "record " + std::to_string(next) + ": torn (" + std::to_string(have) +
                  " bytes of an incomplete record at the end)";
      }
      break;
    }
  }
  if (good < file_size) {
    report.cut_bytes = file_size - good;
    report.problem = path.filename().string() + " at byte " + std::to_string(good) + ": " + problem;
    if (::ftruncate(fd, static_cast<off_t>(good)) != 0 || ::fdatasync(fd) != 0) {
      return io_error("cannot cut the torn tail of segment", path);
    }
  }
  seg.next_ = next;
  seg.size_ = good;
  return seg;
}

LogSegment::LogSegment(LogSegment&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      base_(other.base_),
      next_(other.next_),
      size_(other.size_) {}

LogSegment& LogSegment::operator=(LogSegment&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    base_ = other.base_;
    next_ = other.next_;
    size_ = other.size_;
  }
  return *this;
}

LogSegment::~LogSegment() {
  if (fd_ >= 0) ::close(fd_);
}

Status LogSegment::append(std::string_view bytes, uint64_t records) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      auto err = io_error("cannot write segment", path_);
      // Leave no partial record behind: the next append would follow garbage.
      if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
        err.message +=
            " (and cutting the partial write failed: " + std::string(std::strerror(errno)) + ")";
      }
      return err;
    }
    done += static_cast<size_t>(n);
  }
  size_ += bytes.size();
  next_ += records;
  return ok_status();
}

Status LogSegment::sync() {
  if (::fdatasync(fd_) != 0) return io_error("cannot fdatasync segment", path_);
  return ok_status();
}

}  // namespace tally::processor
