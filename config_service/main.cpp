// config_service: shard health in ZooKeeper, synchronous-replication management and automatic
// failover (docs/contracts.md, contract 8). Wiring only: read the config, start, wait for
// SIGINT/SIGTERM, stop.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "common/config/yaml_reader.h"
#include "config_service/src/config_service_server.h"

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--config") != 0) {
    std::fprintf(stderr, "usage: config_service --config FILE\n");
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  // Blocked before any thread starts, so only sigwait below sees them.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::optional<tally::config_service::ConfigServiceConfig> config;
  try {
    config = tally::config_service::load_config_service_config(argv[2]);
  } catch (const tally::ConfigError& e) {
    std::fprintf(stderr, "config_service: %s\n", e.what());
    return 2;
  }
  tally::config_service::ConfigService service(std::move(*config));
  if (auto st = service.start(); !st) {
    std::fprintf(stderr, "config_service: cannot start: %s\n", st.error().message.c_str());
    return 1;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "config_service: %s, stopping\n", strsignal(sig));
  service.stop();
  return 0;
}
