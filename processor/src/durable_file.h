// Whole-file writes that survive a crash: the file is either its old content or the new one,
// never a torn mix (temporary file, write, fdatasync, rename, fsync of the directory). The
// processor's dedup snapshots and dead letters go through here.
// Pure functions of their arguments and the file system; any thread.
#pragma once

#include <filesystem>
#include <string_view>

#include "common/core/result.h"

namespace tally::processor {

// Replaces `file` with `content` atomically and durably. On failure `file` is unchanged, the
// temporary file (`file` + ".tmp") is removed, and the error (kUnavailable) names the path and
// the failing system call.
Status write_file_durably(const std::filesystem::path& file, std::string_view content);

// fsync of a directory, so a created, renamed or deleted file's entry is durable.
Status sync_directory(const std::filesystem::path& dir);

}  // namespace tally::processor
