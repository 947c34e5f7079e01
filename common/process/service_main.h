// run_service: the main() every Tally server shares. `NAME --config FILE`; SIGINT and SIGTERM are
// blocked before any thread starts and awaited with sigwait (so no handler runs on a server
// thread), SIGPIPE is ignored; a ConfigError (it names file, key and expected form) exits 2, a
// server that cannot start exits 1 with the reason; a signal stops the server and exits 0.
// While it serves, the main thread caps the log file stderr goes to (StderrRotation), once a
// second. Called once, from main, on the main thread.
#pragma once

#include <pthread.h>

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

// `Server` is constructed from the loaded config and has `Status start()` and `void stop()`;
// `describe(server)` is the one line logged once it serves (ports, ids).
template <typename Server, typename Load, typename Describe>
int run_service(int argc, char** argv, const char* name, Load load, Describe describe) {
  if (argc != 3 || std::strcmp(argv[1], "--config") != 0) {
    std::fprintf(stderr, "usage: %s --config FILE\n", name);
    return 2;
  }
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
  int sig = -1;
  while (sig < 0) {
    sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig >= 0 || !rotation || rotation_failed) continue;
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
