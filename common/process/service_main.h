// run_service: the main() every Tally server shares. `NAME --config FILE`; SIGINT and SIGTERM are
// blocked before any thread starts and awaited with sigwait (so no handler runs on a server
// thread), SIGPIPE is ignored; a ConfigError (it names file, key and expected form) exits 2, a
// server that cannot start exits 1 with the reason; a signal stops the server and exits 0.
// Memory: glibc malloc, left alone, gives each thread that meets a locked arena an arena of its
// own (up to 8 per core), raises its mmap threshold to the largest block freed so far (up to 32
// MiB, so large request buffers then land inside arenas) and hands an arena's free memory back
// only from the top of its heaps; after bursts of large requests the freed memory stays resident.
// So before any thread starts the arenas are capped and the threshold fixed (kMallocPolicy), and
// while it waits for a signal the main thread returns the free pages of every arena every
// kMallocPolicy.trim_interval (malloc_trim).
// While it serves, the main thread also caps the log file stderr goes to (StderrRotation), once a
// second. Called once, from main, on the main thread.
#pragma once

#include <malloc.h>
#include <pthread.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

#include "common/config/yaml_reader.h"
#include "common/core/log.h"
#include "common/process/log_rotation.h"

namespace tally {

struct MallocPolicy {
  int arena_max;       // arenas over all threads (glibc's default: 8 per core)
  int mmap_threshold;  // blocks at least this big get their own mapping, freed at once
  std::chrono::seconds trim_interval;
};
inline constexpr MallocPolicy kMallocPolicy{4, 256 << 10, std::chrono::seconds(10)};

// `Server` is constructed from the loaded config and has `Status start()` and `void stop()`;
// `describe(server)` is the one line logged once it serves (ports, ids).
template <typename Server, typename Load, typename Describe>
int run_service(int argc, char** argv, const char* name, Load load, Describe describe) {
  if (argc != 3 || std::strcmp(argv[1], "--config") != 0) {
    std::fprintf(stderr, "usage: %s --config FILE\n", name);
    return 2;
  }
  mallopt(M_ARENA_MAX, kMallocPolicy.arena_max);
  mallopt(M_MMAP_THRESHOLD, kMallocPolicy.mmap_threshold);  // setting it ends the dynamic raise
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::optional<decltype(load(std::filesystem::path(argv[2])))> config;
  try {
    config.emplace(load(std::filesystem::path(argv[2])));
  } catch (const ConfigError& e) {
    log_line(name, e.what());
    return 2;
  }
  Server server(std::move(*config));
  if (auto st = server.start(); !st) {
    log_line(name, "cannot start: " + st.error().message);
    return 1;
  }
  std::string line = describe(server);
  if (!line.empty()) log_line(name, line);
  auto rotation = StderrRotation::for_current_stderr();
  bool rotation_failed = false;
  const timespec tick{1, 0};
  auto last_trim = std::chrono::steady_clock::now();
  int sig = -1;
  while (sig < 0) {
    sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig >= 0) continue;
    // The tick passed (or EINTR) without SIGINT/SIGTERM.
    if (auto now = std::chrono::steady_clock::now();
        now - last_trim >= kMallocPolicy.trim_interval) {
      malloc_trim(0);
      last_trim = now;
    }
    if (!rotation || rotation_failed) continue;
    if (auto rotated = rotation->check(); !rotated) {
      // Once: a directory the service cannot write to stays that way.
      rotation_failed = true;
      log_line(name, "log rotation stopped: " + rotated.error().message);
    } else if (*rotated) {
      log_line(name,
               "log file rotated; the previous lines are in " + rotation->path().string() + ".1");
    }
  }
  log_line(name, std::string(strsignal(sig)) + ", stopping");
  server.stop();
  return 0;
}

}  // namespace tally
