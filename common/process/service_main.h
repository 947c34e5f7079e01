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
// Called once, from main, on the main thread.
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
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 2;
  }
  Server server(std::move(*config));
  if (auto st = server.start(); !st) {
    std::fprintf(stderr, "%s: cannot start: %s\n", name, st.error().message.c_str());
    return 1;
  }
  std::string line = describe(server);
  if (!line.empty()) std::fprintf(stderr, "%s: %s\n", name, line.c_str());
  const timespec trim_interval{static_cast<time_t>(kMallocPolicy.trim_interval.count()), 0};
  int sig = -1;
  while (sig < 0) {
    sig = sigtimedwait(&signals, nullptr, &trim_interval);
    if (sig < 0) malloc_trim(0);  // the interval passed (or EINTR) without SIGINT/SIGTERM
  }
  std::fprintf(stderr, "%s: %s, stopping\n", name, strsignal(sig));
  server.stop();
  return 0;
}

}  // namespace tally
