// cluster_proxy: the REST API in front of every shard (docs/rest-api.md), routing by keyspace id.
// Wiring only: read the config, start the server, wait for SIGINT/SIGTERM, stop.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "cluster_proxy/src/cluster_proxy_server.h"
#include "common/config/yaml_reader.h"

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--config") != 0) {
    std::fprintf(stderr, "usage: cluster_proxy --config FILE\n");
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  // Blocked before any thread starts, so only sigwait below sees them.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::optional<tally::cluster_proxy::ClusterProxyConfig> config;
  try {
    config = tally::cluster_proxy::load_cluster_proxy_config(argv[2]);
  } catch (const tally::ConfigError& e) {
    std::fprintf(stderr, "cluster_proxy: %s\n", e.what());
    return 2;
  }
  tally::cluster_proxy::ClusterProxyServer server(std::move(*config));
  if (auto st = server.start(); !st) {
    std::fprintf(stderr, "cluster_proxy: cannot start: %s\n", st.error().message.c_str());
    return 1;
  }
  std::fprintf(stderr, "cluster_proxy: serving the REST API on http port %u\n", server.http_port());
  if (server.analyst_pg_port() != 0) {
    std::fprintf(stderr, "cluster_proxy: serving analyst SQL on port %u\n", server.analyst_pg_port());
  }
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "cluster_proxy: %s, stopping\n", strsignal(sig));
  server.stop();
  return 0;
}
