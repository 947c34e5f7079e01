// AnalystServer: the cluster proxy's PostgreSQL-wire listener for analyst SQL (issue 7). One
// accept thread; each client gets an AnalystSession on its own thread (at most max_sessions; more
// are refused with 53300), so blocking libpq calls never touch the REST server's io threads.
// start()/stop() from the owner's thread; stop() closes every client and joins all threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cluster_proxy/src/analyst_config.h"
#include "cluster_proxy/src/topology_cache.h"
#include "common/core/result.h"

namespace tally::cluster_proxy {

class AnalystServer {
 public:
  AnalystServer(AnalystConfig config, std::string listen_address, std::string database,
                int connect_timeout_ms, const TopologyCache& topology);
  ~AnalystServer();
  AnalystServer(const AnalystServer&) = delete;
  AnalystServer& operator=(const AnalystServer&) = delete;

  // Binds and listens; kUnavailable naming the address if that fails.
  Status start();
  void stop();
  uint16_t port() const { return port_; }

 private:
  struct Client {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> finished{false};
  };
  void accept_loop();
  void reap(bool all);

  AnalystConfig config_;
  std::string listen_address_;
  std::string database_;
  int connect_timeout_ms_;
  const TopologyCache& topology_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int32_t> next_id_{1};
  std::thread acceptor_;
  std::mutex mu_;
  std::list<std::unique_ptr<Client>> clients_;
};

}  // namespace tally::cluster_proxy
