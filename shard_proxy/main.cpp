// shard_proxy: a PostgreSQL-wire proxy in front of one shard's leader/replica pair.
// Wiring only: read the config, start the server, wait for SIGINT/SIGTERM, stop.
#include <string>

#include "common/process/service_main.h"
#include "shard_proxy/src/shard_proxy_server.h"

int main(int argc, char** argv) {
  using namespace tally::shard_proxy;
  return tally::run_service<ShardProxyServer>(
      argc, argv, "shard_proxy", load_shard_proxy_config, [](ShardProxyServer& server) {
        return "serving shard " + server.state().config().shard + " on pg port " +
               std::to_string(server.pg_port()) + ", http port " +
               std::to_string(server.http_port());
      });
}
