// shard_proxy: a PostgreSQL-wire proxy in front of one shard's leader/replica pair.
// Wiring only: read the config, start the server, wait for SIGINT/SIGTERM, stop.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/config/yaml_reader.h"
#include "shard_proxy/src/shard_proxy_server.h"

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--config") != 0) {
    std::fprintf(stderr, "usage: shard_proxy --config FILE\n");
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  // Blocked before any thread starts, so only sigwait below sees them.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::optional<tally::shard_proxy::ShardProxyConfig> config;
  try {
    config = tally::shard_proxy::load_shard_proxy_config(argv[2]);
  } catch (const tally::ConfigError& e) {
    std::fprintf(stderr, "shard_proxy: %s\n", e.what());
    return 2;
  }
  tally::shard_proxy::ShardProxyServer server(std::move(*config));
  if (auto st = server.start(); !st) {
    std::fprintf(stderr, "shard_proxy: cannot start: %s\n", st.error().message.c_str());
    return 1;
  }
  std::fprintf(stderr, "shard_proxy: serving shard %s on pg port %u, http port %u\n",
               server.state().config().shard.c_str(), server.pg_port(), server.http_port());
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "shard_proxy: %s, stopping\n", strsignal(sig));
  server.stop();
  return 0;
}
