// cluster_proxy: the REST API in front of every shard (docs/rest-api.md), routing by keyspace id.
// Wiring only: read the config, start the server, wait for SIGINT/SIGTERM, stop.
#include <string>

#include "cluster_proxy/src/cluster_proxy_server.h"
#include "common/process/service_main.h"

int main(int argc, char** argv) {
  using namespace tally::cluster_proxy;
  return tally::run_service<ClusterProxyServer>(
      argc, argv, "cluster_proxy", load_cluster_proxy_config, [](ClusterProxyServer& server) {
        std::string line =
            "serving the REST API on http port " + std::to_string(server.http_port());
        if (server.analyst_pg_port() != 0) {
          line += ", analyst SQL on port " + std::to_string(server.analyst_pg_port());
        }
        return line;
      });
}
