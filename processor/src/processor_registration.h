// ProcessorRegistration: the processor's entry in ZooKeeper, the ephemeral /tally/processors/<id>
// (docs/contracts.md contract 3) holding its ingest address and partitions, shown by `tallyctl
// topology show`. It connects and registers on its own thread, retrying while ZooKeeper is
// unreachable, so ingest never waits for ZooKeeper; after a kill -9 the predecessor's node lasts
// until its session expires and ZkClient::hold_ephemeral takes over once it is gone. ZkClient
// re-creates the node after a session expiry. stop() closes the session, so the node disappears
// at once (a stop during a first connect waits for that connect, at most connect_timeout).
// Threads: start()/stop() from the owner's thread; accessors from any thread.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/topology/topology.h"
#include "common/zk/zk_client.h"

namespace tally::processor {

class ProcessorRegistration {
 public:
  ProcessorRegistration(ZkOptions options, ProcessorRecord record);
  ~ProcessorRegistration();
  ProcessorRegistration(const ProcessorRegistration&) = delete;
  ProcessorRegistration& operator=(const ProcessorRegistration&) = delete;

  void start();
  void stop();
  // "" while registered (or trying for the first time); otherwise why not, for /readyz reasons.
  std::string problem() const;

 private:
  void run();

  const ZkOptions options_;
  const ProcessorRecord record_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::string problem_;
  std::unique_ptr<ZkClient> zk_;  // written by the thread under mu_, closed by stop()
  std::thread thread_;
};

}  // namespace tally::processor
