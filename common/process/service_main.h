// run_service: the main() every Tally server shares. `NAME --config FILE`; SIGINT and SIGTERM are
// blocked before any thread starts and awaited with sigwait (so no handler runs on a server
// thread), SIGPIPE is ignored; a ConfigError (it names file, key and expected form) exits 2, a
// server that cannot start exits 1 with the reason; a signal stops the server and exits 0.
// Called once, from main, on the main thread.
#pragma once

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

#include "common/config/yaml_reader.h"

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
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "%s: %s, stopping\n", name, strsignal(sig));
  server.stop();
  return 0;
}

}  // namespace tally
