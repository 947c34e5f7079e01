// Starting, watching and stopping the server processes of a local cluster (PostgreSQL, ZooKeeper,
// Tally services). Daemons are double-forked into their own session so they outlive the launcher
// and are never left as zombies; every stop is by recorded PID, checked against the process's
// command line so a recycled PID is never signalled. Call from a single control thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/core/result.h"
#include "common/process/system_user.h"

namespace tally {

struct SpawnOptions {
  std::vector<std::string> argv;     // argv[0] is looked up in PATH if not absolute
  std::filesystem::path log_file;    // stdout and stderr are appended here
  std::optional<SystemUser> run_as;  // switch to this account (root launchers only)
  std::vector<std::pair<std::string, std::string>> env;  // added to (or replacing) the environment
  std::filesystem::path working_dir;                     // empty: inherit
};

// Starts a detached daemon and returns its PID once exec succeeded (an exec failure is an error).
Result<pid_t> spawn_daemon(const SpawnOptions& options);

// Runs a command to completion and returns its exit status; on timeout the command is killed.
// Output goes to options.log_file.
Result<int> run_command(const SpawnOptions& options, std::chrono::milliseconds timeout);

// True while a process with this PID exists and is not a zombie.
bool process_alive(pid_t pid);

// The process's command line, NUL separators replaced by spaces; empty when it is gone.
std::string process_cmdline(pid_t pid);

// True when `pid` is alive and its command line contains `needle`: the guard against signalling
// a recycled PID.
bool process_matches(pid_t pid, const std::string& needle);

// Sends `signal`, waits up to `grace` for the process to exit, then SIGKILLs it and waits again.
// Refuses (kConflict) when the PID no longer belongs to a process whose command line has `needle`.
Status stop_process(pid_t pid, const std::string& needle, int signal,
                    std::chrono::milliseconds grace);

// The contents of a file from byte `offset` on ("" when it is shorter or unreadable).
std::string read_file_from(const std::filesystem::path& file, size_t offset);

// The last `max_bytes` of a file, for error messages that point at a failing process's log.
std::string tail_file(const std::filesystem::path& file, size_t max_bytes = 2000);

}  // namespace tally
