// processor: the event ingestion service (POST /v1/events), durable log, dedup, aggregation and
// counters:apply writers. Wiring only: read the config, start the server, wait for SIGINT/SIGTERM,
// stop.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "common/config/yaml_reader.h"
#include "processor/src/processor_server.h"

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--config") != 0) {
    std::fprintf(stderr, "usage: processor --config FILE\n");
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  // Blocked before any thread starts, so only sigwait below sees them.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::optional<tally::processor::ProcessorConfig> config;
  try {
    config = tally::processor::load_processor_config(argv[2]);
  } catch (const tally::ConfigError& e) {
    std::fprintf(stderr, "processor: %s\n", e.what());
    return 2;
  }
  tally::processor::ProcessorServer server(std::move(*config));
  if (auto st = server.start(); !st) {
    std::fprintf(stderr, "processor: cannot start: %s\n", st.error().message.c_str());
    return 1;
  }
  std::fprintf(stderr, "processor: %s serving ingest on http port %u with %d partitions in %s\n",
               server.config().id.c_str(), server.http_port(), server.config().partitions,
               server.config().data_dir.c_str());
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "processor: %s, stopping\n", strsignal(sig));
  server.stop();
  return 0;
}
