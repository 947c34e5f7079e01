// LeaderElection: which config_service instance leads (contract 8, "Election"). Each instance
// holds an ephemeral sequential node /tally/election/config_service/n_<seq> with data
// {"id","http"}; the lowest sequence leads; the others watch the election's children (so they
// notice their predecessor going). After a session expiry the node is gone: a new one is created
// on the new session and the election re-run.
// is_leader() is true only while the session is connected, is the one our node was created on,
// our node was seen as the lowest within the last `lease_ms` (steady clock; so a process that was
// stopped, e.g. SIGSTOP, for longer than that acts on nothing until it has checked again).
// Callers check it right before every action. step() runs on the election's own thread (or a
// test's); is_leader() and leader_id() from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/core/clock.h"
#include "common/zk/zk_client.h"

namespace tally::config_service {

class LeaderElection {
 public:
  // `lease_ms` must be below the ZooKeeper session timeout (a successor may take over after it).
  LeaderElection(ZkClient& zk, const Clock& clock, std::string id, std::string http,
                 int64_t lease_ms);
  ~LeaderElection();
  LeaderElection(const LeaderElection&) = delete;
  LeaderElection& operator=(const LeaderElection&) = delete;

  // Starts the election thread: step() on every watch or session event and at least every
  // lease_ms / 3.
  void start();
  void stop();

  bool is_leader() const;
  // The id of the instance that leads as last seen ("" when unknown).
  std::string leader_id() const;
  // Our node's path ("" while we have none).
  std::string node_path() const;

  // One pass: (re)create our node when needed, read the children, decide.
  void step();

 private:
  bool ensure_node(int64_t session);
  void lose(const std::string& why);

  ZkClient& zk_;
  const Clock& clock_;
  const std::string id_;
  const std::string data_;
  const int64_t lease_ms_;

  mutable std::mutex mu_;
  std::string node_;          // full path of our node
  int64_t node_session_ = 0;  // the session it was created on
  std::string leader_id_;
  std::atomic<bool> leading_{false};
  std::atomic<int64_t> confirmed_ms_{0};

  // Shared with the ZooKeeper callbacks, which may outlive this object (a session listener
  // cannot be unregistered).
  struct Waker {
    std::mutex mu;
    std::condition_variable cv;
    bool woken = false;
    bool stopping = false;
    void wake();
  };
  std::shared_ptr<Waker> waker_ = std::make_shared<Waker>();
  ZkClient::WatchId watch_ = 0;
  bool watching_ = false;
  std::thread thread_;
};

}  // namespace tally::config_service
