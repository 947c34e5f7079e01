#include "processor/src/partition_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace tally::processor {

namespace {

Error log_error(const std::filesystem::path& dir, const std::string& what) {
  return make_error(ErrorCode::kUnavailable, "partition log " + dir.string() + ": " + what);
}

}  // namespace

PartitionLog::PartitionLog(std::filesystem::path dir, LogOptions options)
    : dir_(std::move(dir)), options_(options) {}

Result<std::unique_ptr<PartitionLog>> PartitionLog::open(const std::filesystem::path& dir,
                                                         LogOptions options) {
  if (options.segment_bytes < kRecordHeaderBytes + options.max_payload_bytes) {
    return log_error(dir, "segment_bytes " + std::to_string(options.segment_bytes) +
                              " cannot hold a record of max_payload_bytes " +
                              std::to_string(options.max_payload_bytes));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return log_error(dir, "cannot create the directory: " + ec.message());
  std::unique_ptr<PartitionLog> log(new PartitionLog(dir, options));  // private constructor

  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    if (name.size() != 24 || name.substr(20) != ".seg") continue;
    if (!std::all_of(name.begin(), name.begin() + 20,
                     [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    log->bases_.push_back(std::stoull(name.substr(0, 20)));
  }
  if (ec) return log_error(dir, "cannot list the directory: " + ec.message());
  std::sort(log->bases_.begin(), log->bases_.end());

  if (log->bases_.empty()) {
    auto seg = LogSegment::create(dir, 0);
    if (!seg) return seg.error();
    log->active_.emplace(std::move(*seg));
    log->bases_.push_back(0);
  } else {
    LogSegment::Recovery rec;
    auto seg = LogSegment::recover(dir, log->bases_.back(), options.max_payload_bytes, rec);
    if (!seg) return seg.error();
    log->active_.emplace(std::move(*seg));
    log->recovery_.cut_bytes = rec.cut_bytes;
    log->recovery_.problem = rec.problem;
  }
  log->recovery_.start_offset = log->bases_.front();
  log->recovery_.end_offset = log->active_->next_offset();
  log->recovery_.segments = log->bases_.size();
  log->end_.store(log->active_->next_offset(), std::memory_order_release);
  log->thread_ = std::thread([raw = log.get()] { raw->run(); });
  return log;
}

PartitionLog::~PartitionLog() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  durable_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PartitionLog::append(std::string payload, AppendDone done) {
  if (payload.empty() || payload.size() > options_.max_payload_bytes) {
    done(make_error(ErrorCode::kInternal, "log record of " + std::to_string(payload.size()) +
                                              " bytes: expected 1-" +
                                              std::to_string(options_.max_payload_bytes)));
    return;
  }
  std::unique_lock lock(mu_);
  if (failure_ || stopping_) {
    auto message = failure_ ? *failure_ : std::string("the log is stopping");
    lock.unlock();
    done(log_error(dir_, message));
    return;
  }
  pending_.push_back(Pending{std::move(payload), std::move(done)});
  lock.unlock();
  work_cv_.notify_one();
}

uint64_t PartitionLog::start_offset() const {
  std::lock_guard lock(mu_);
  return bases_.front();
}

std::vector<uint64_t> PartitionLog::segment_bases() const {
  std::lock_guard lock(mu_);
  return bases_;
}

std::optional<std::string> PartitionLog::failure() const {
  std::lock_guard lock(mu_);
  return failure_;
}

bool PartitionLog::wait_for(uint64_t offset, std::chrono::milliseconds timeout) const {
  if (end_offset() > offset) return true;
  std::unique_lock lock(mu_);
  durable_cv_.wait_for(lock, timeout, [&] { return end_offset() > offset || stopping_; });
  return end_offset() > offset;
}

Result<size_t> PartitionLog::truncate_before(uint64_t offset) {
  std::vector<uint64_t> doomed;
  {
    std::lock_guard lock(mu_);
    size_t n = 0;
    // Segment i holds offsets [bases_[i], bases_[i+1]); the last one is active and stays.
    while (n + 1 < bases_.size() && bases_[n + 1] <= offset) ++n;
    doomed.assign(bases_.begin(), bases_.begin() + static_cast<std::ptrdiff_t>(n));
    bases_.erase(bases_.begin(), bases_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  for (uint64_t base : doomed) {
    auto path = segment_path(dir_, base);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return log_error(dir_, "cannot delete " + path.string() + ": " + std::strerror(errno));
    }
  }
  if (!doomed.empty()) {
    if (auto st = sync_directory(dir_); !st) return st.error();
  }
  return doomed.size();
}

Status PartitionLog::commit(std::vector<Pending>& group, std::vector<uint64_t>& offsets) {
  buffer_.clear();
  uint64_t in_buffer = 0;
  for (auto& p : group) {
    size_t record = kRecordHeaderBytes + p.payload.size();
    uint64_t used = active_->size_bytes() + buffer_.size();
    if (used > 0 && used + record > options_.segment_bytes) {
      if (in_buffer > 0) {
        if (auto st = active_->append(buffer_, in_buffer); !st) return st;
        bytes_.fetch_add(buffer_.size(), std::memory_order_relaxed);
        buffer_.clear();
        in_buffer = 0;
      }
      if (options_.fsync) {
        if (auto st = active_->sync(); !st) return st;
        syncs_.fetch_add(1, std::memory_order_relaxed);
      }
      auto next = LogSegment::create(dir_, active_->next_offset());
      if (!next) return next.error();
      active_.emplace(std::move(*next));
      std::lock_guard lock(mu_);
      bases_.push_back(active_->base_offset());
    }
    uint64_t offset = active_->next_offset() + in_buffer;
    encode_record(offset, p.payload, buffer_);
    offsets.push_back(offset);
    ++in_buffer;
  }
  if (in_buffer > 0) {
    if (auto st = active_->append(buffer_, in_buffer); !st) return st;
    bytes_.fetch_add(buffer_.size(), std::memory_order_relaxed);
  }
  if (options_.fsync) {
    if (auto st = active_->sync(); !st) return st;
    syncs_.fetch_add(1, std::memory_order_relaxed);
  }
  return ok_status();
}

void PartitionLog::run() {
  std::vector<Pending> group;
  std::vector<uint64_t> offsets;
  while (true) {
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (pending_.empty()) return;  // stopping, nothing left to commit
      group.swap(pending_);
    }
    offsets.clear();
    std::optional<std::string> failed = failure();
    if (!failed) {
      if (auto st = commit(group, offsets); !st) {
        failed = st.error().message;
        std::lock_guard lock(mu_);
        failure_ = failed;
      }
    }
    if (failed) {
      for (auto& p : group) p.done(log_error(dir_, "append failed: " + *failed));
    } else {
      {
        std::lock_guard lock(mu_);
        end_.store(active_->next_offset(), std::memory_order_release);
      }
      durable_cv_.notify_all();
      for (size_t i = 0; i < group.size(); ++i) group[i].done(offsets[i]);
    }
    group.clear();
  }
}

// ---------------------------------------------------------------------------------------------

LogReader::LogReader(const PartitionLog& log, uint64_t from_offset)
    : log_(log), next_(from_offset) {
  buf_.resize(
      std::max<size_t>(1 << 20, 2 * (log.options().max_payload_bytes + kRecordHeaderBytes)));
}

LogReader::~LogReader() {
  if (fd_ >= 0) ::close(fd_);
}

Status LogReader::open_segment_for(uint64_t offset) {
  auto bases = log_.segment_bases();
  auto it = std::upper_bound(bases.begin(), bases.end(), offset);
  if (it == bases.begin()) {
    return make_error(ErrorCode::kInternal,
                      "partition log " + log_.dir().string() + ": offset " +
                          std::to_string(offset) + " was truncated (the log starts at " +
                          std::to_string(bases.empty() ? 0 : bases.front()) + ")");
  }
  uint64_t base = *std::prev(it);
  if (fd_ >= 0) ::close(fd_);
  auto path = segment_path(log_.dir(), base);
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    return make_error(ErrorCode::kInternal,
                      "cannot open " + path.string() + ": " + std::strerror(errno));
  }
  file_next_ = base;
  file_pos_ = 0;
  begin_ = end_ = 0;
  return ok_status();
}

Result<std::optional<RecordView>> LogReader::next() {
  if (next_ >= log_.end_offset()) return std::optional<RecordView>();
  if (fd_ < 0) {
    if (auto st = open_segment_for(next_); !st) return st.error();
  }
  while (true) {
    RecordView rec;
    size_t used = 0;
    std::string problem;
    auto status = decode_record(std::string_view(buf_.data() + begin_, end_ - begin_), file_next_,
                                log_.options().max_payload_bytes, rec, used, problem);
    if (status == DecodeStatus::kOk) {
      begin_ += used;
      ++file_next_;
      if (rec.offset < next_) continue;  // skipping up to the requested start
      ++next_;
      return std::optional<RecordView>(rec);
    }
    if (status == DecodeStatus::kCorrupt) {
      return make_error(ErrorCode::kInternal,
                        "partition log " + log_.dir().string() + ": " + problem);
    }
    // Need more bytes: keep the unread part at the front and read after it.
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      file_pos_ += begin_;
      end_ -= begin_;
      begin_ = 0;
    }
    ssize_t n =
        ::pread(fd_, buf_.data() + end_, buf_.size() - end_, static_cast<off_t>(file_pos_ + end_));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return make_error(ErrorCode::kInternal, "cannot read partition log " + log_.dir().string() +
                                                  ": " + std::strerror(errno));
    }
    if (n > 0) {
      end_ += static_cast<size_t>(n);
      continue;
    }
    if (end_ > 0) {
      return make_error(ErrorCode::kInternal, "partition log " + log_.dir().string() + ": record " +
                                                  std::to_string(file_next_) +
                                                  " is cut short although durable");
    }
    // This segment is exhausted: the durable record must start the next one.
    uint64_t wanted = file_next_;
    if (auto st = open_segment_for(wanted); !st) return st.error();
    if (file_next_ != wanted) {
      return make_error(ErrorCode::kInternal, "partition log " + log_.dir().string() +
                                                  ": no segment starts at offset " +
                                                  std::to_string(wanted));
    }
  }
}

}  // namespace tally::processor
