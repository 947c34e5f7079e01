// NodeMonitor: checks the shard's leader and replica every interval on its own thread (blocking
// libpq is fine there, never on an io thread) and publishes reachability, recovery state, LSNs and
// the replica's replay lag in ShardState for the routers. Lag is 0 when the replica has replayed
// the leader's current LSN, else the age of its last replayed transaction.
#pragma once

#include <libpq-fe.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "shard_proxy/src/shard_state.h"

namespace tally::shard_proxy {

class NodeMonitor {
 public:
  NodeMonitor(ShardState& state, const ProxyUser& user);
  ~NodeMonitor();
  NodeMonitor(const NodeMonitor&) = delete;
  NodeMonitor& operator=(const NodeMonitor&) = delete;

  void start();
  void stop();
  // Runs one round of checks now, on the caller's thread (start-up and tests).
  void check_once();

 private:
  struct Probe {
    std::string address;
    std::unique_ptr<PGconn, decltype(&PQfinish)> conn{nullptr, &PQfinish};
  };
  void run();
  PGconn* connection(Probe& probe, const std::string& address);

  ShardState& state_;
  const ProxyUser& user_;
  Probe leader_;
  Probe replica_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tally::shard_proxy
