#include "processor/src/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace tally::processor {

namespace {

Error io_error(const std::string& what, const std::filesystem::path& path) {
  return make_error(ErrorCode::kUnavailable,
                    what + " " + path.string() + ": " + std::strerror(errno));
}

// Closes the descriptor it holds; close() errors are moot once fdatasync succeeded.
class OwnedFd {
 public:
  explicit OwnedFd(int fd) : fd_(fd) {}
  ~OwnedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// False with errno set when a write fails.
bool write_all(int fd, std::string_view content) {
  while (!content.empty()) {
    ssize_t n = ::write(fd, content.data(), content.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    content.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

Status write_file_durably(const std::filesystem::path& file, std::string_view content) {
  auto tmp = file;
  tmp += ".tmp";
  Status written = [&]() -> Status {
    OwnedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) return io_error("cannot create", tmp);
    if (!write_all(fd.get(), content)) return io_error("cannot write", tmp);
    if (::fdatasync(fd.get()) != 0) return io_error("cannot fdatasync", tmp);
    return ok_status();
  }();
  if (!written) {
    const int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    return written;
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    Error e = io_error("cannot rename " + tmp.string() + " to", file);
    ::unlink(tmp.c_str());
    return e;
  }
  return sync_directory(file.parent_path());
}

Status sync_directory(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open directory", dir);
  int rc = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  errno = saved;
  if (rc != 0) return io_error("cannot fsync directory", dir);
  return ok_status();
}

}  // namespace tally::processor
