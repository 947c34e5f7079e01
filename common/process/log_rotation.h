// StderrRotation: caps the log file a service's stderr is appended to (what `tallyctl cluster up`
// gives each service). Past kServiceLogMaxBytes the file becomes FILE.1 (FILE.1 becomes FILE.2, up
// to kServiceLogKeptFiles) and a fresh FILE takes over stderr, and stdout when it is the same file.
// Bound: (1 + kServiceLogKeptFiles) files of kServiceLogMaxBytes, plus what is written between two
// checks. Call check() from one thread (run_service's main thread, once a second).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>

#include "common/core/result.h"

namespace tally {

inline constexpr uint64_t kServiceLogMaxBytes = 64ull << 20;
inline constexpr int kServiceLogKeptFiles = 2;

struct LogRotationLimits {
  uint64_t max_bytes = kServiceLogMaxBytes;
  int kept_files = kServiceLogKeptFiles;  // at least 1
};

class StderrRotation {
 public:
  // Empty when stderr is not a regular file (a terminal, a pipe to docker's log driver): then
  // whoever reads the output bounds it.
  static std::optional<StderrRotation> for_current_stderr(LogRotationLimits limits = {});

  // Rotates when the file is over max_bytes; true when it did. An error (the directory is not
  // writable, the file was removed) leaves stderr where it was.
  Result<bool> check();

  const std::filesystem::path& path() const { return path_; }

 private:
  StderrRotation(std::filesystem::path path, LogRotationLimits limits, mode_t mode)
      : path_(std::move(path)), limits_(limits), mode_(mode) {}

  std::filesystem::path path_;
  LogRotationLimits limits_;
  mode_t mode_;
};

}  // namespace tally
