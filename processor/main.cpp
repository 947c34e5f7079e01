// processor: the event ingestion service (POST /v1/events), durable log, dedup, aggregation and
// counters:apply writers. Wiring only: read the config, start the server, wait for SIGINT/SIGTERM,
// stop.
#include <string>

#include "common/process/service_main.h"
#include "processor/src/processor_server.h"

int main(int argc, char** argv) {
  using namespace tally::processor;
  return tally::run_service<ProcessorServer>(
      argc, argv, "processor", load_processor_config, [](ProcessorServer& server) {
        return server.config().id + " serving ingest on http port " +
               std::to_string(server.http_port()) + " with " +
               std::to_string(server.config().partitions) + " partitions in " +
               server.config().data_dir.string();
      });
}
