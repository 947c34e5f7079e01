#include "common/process/log_rotation.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

namespace tally {
namespace {

std::filesystem::path numbered(const std::filesystem::path& path, int n) {
  return path.string() + "." + std::to_string(n);
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace

std::optional<StderrRotation> StderrRotation::for_current_stderr(LogRotationLimits limits) {
  struct stat err {};
  if (fstat(STDERR_FILENO, &err) != 0 || !S_ISREG(err.st_mode)) return std::nullopt;
  std::error_code ec;
  auto path = std::filesystem::read_symlink("/proc/self/fd/2", ec);
  struct stat named {};
  // A file already removed or renamed has no name to rotate under.
  if (ec || stat(path.c_str(), &named) != 0 || !same_file(err, named)) return std::nullopt;
  return StderrRotation(std::move(path), limits, err.st_mode & 0777);
}

Result<bool> StderrRotation::check() {
  struct stat err {};
  if (fstat(STDERR_FILENO, &err) != 0) {
    return make_error(ErrorCode::kInternal, std::string("fstat(stderr): ") + std::strerror(errno));
  }
  if (static_cast<uint64_t>(err.st_size) <= limits_.max_bytes) return false;
  struct stat named {};
  if (stat(path_.c_str(), &named) != 0 || !same_file(err, named)) {
    return make_error(ErrorCode::kNotFound,
                      path_.string() + " is no longer the file stderr writes to");
  }
  std::error_code ec;
  std::filesystem::remove(numbered(path_, limits_.kept_files), ec);
  for (int n = limits_.kept_files - 1; n >= 1; --n) {
    std::filesystem::rename(numbered(path_, n), numbered(path_, n + 1), ec);  // may not exist yet
  }
  std::filesystem::rename(path_, numbered(path_, 1), ec);
  if (ec) {
    return make_error(ErrorCode::kInternal,
                      "cannot rotate " + path_.string() + ": " + ec.message());
  }
  int fd = open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, mode_);
  if (fd < 0) {
    return make_error(ErrorCode::kInternal,
                      "cannot open " + path_.string() + ": " + std::strerror(errno));
  }
  struct stat out {};
  bool stdout_too = fstat(STDOUT_FILENO, &out) == 0 && same_file(out, err);
  std::fflush(stdout);
  std::fflush(stderr);
  // dup2 swaps the descriptor atomically: a write of another thread lands in one file or the other.
  dup2(fd, STDERR_FILENO);
  if (stdout_too) dup2(fd, STDOUT_FILENO);
  close(fd);
  return true;
}

}  // namespace tally
