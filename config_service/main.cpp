// config_service: shard health in ZooKeeper, synchronous-replication management and automatic
// failover (docs/contracts.md, contract 8). Wiring only: read the config, start, wait for
// SIGINT/SIGTERM, stop.
#include <string>

#include "common/process/service_main.h"
#include "config_service/src/config_service_server.h"

int main(int argc, char** argv) {
  using namespace tally::config_service;
  return tally::run_service<ConfigService>(argc, argv, "config_service", load_config_service_config,
                                           [](ConfigService&) { return std::string(); });
}
