// Worker: one io_context thread of the shard proxy with the client sessions it serves and its own
// server-connection pools (per user: one to the leader, one to the replica), so the hot path never
// takes a lock. Pools follow ShardState's node addresses: a new generation retargets them (at once:
// ShardState's listener posts here). Work held while the shard is paused resumes from here.
// Thread: everything but the constructor runs on the worker's own thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/pgclient/backend_pool.h"
#include "shard_proxy/src/shard_state.h"

namespace tally {
class ResultCache;
}
namespace tally::sql {
class Classifier;
}

namespace tally::shard_proxy {

class ProxyMetrics;

// Shared services a worker hands its sessions; all thread-safe.
struct WorkerServices {
  ShardState* state = nullptr;
  const sql::Classifier* classifier = nullptr;
  ResultCache* cache = nullptr;  // null when caching is off
  ProxyMetrics* metrics = nullptr;
  boost::asio::thread_pool* blocking = nullptr;  // for blocking calls such as PQcancel
  PoolGauges* gauges = nullptr;
};

class Worker {
 public:
  Worker(WorkerServices services, size_t pool_size_per_node);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  boost::asio::io_context& io() { return io_; }
  const WorkerServices& services() const { return services_; }
  ShardState& state() { return *services_.state; }

  // The pool for `user` to the leader or the replica, created on first use and retargeted when the
  // shard's node addresses changed. Null for the replica when the shard has none.
  BackendPool* pool(const ProxyUser& user, bool replica);
  // The leader's address as this worker's pools know it (refreshed first).
  const std::string& leader_address();

  // Leader work held while the shard is paused or failing over: `resume` runs on this thread when
  // the shard serves again (unless unhold() came first, e.g. the session's hold timed out).
  uint64_t hold(std::function<void()> resume);
  void unhold(uint64_t id);

  // Sessions register how to abandon them; after the worker's thread has stopped, shutdown runs
  // every registered function so sessions waiting on a server break their self-references.
  uint64_t track_session(std::function<void()> abandon);
  void untrack_session(uint64_t id);
  void abandon_sessions();

 private:
  struct UserPools {
    std::unique_ptr<BackendPool> leader;
    std::unique_ptr<BackendPool> replica;
  };
  void refresh_targets();
  void topology_changed();

  boost::asio::io_context io_{1};
  WorkerServices services_;
  size_t pool_size_;
  uint64_t generation_ = 0;
  NodeTargets targets_;
  std::map<std::string, UserPools> pools_;
  std::map<uint64_t, std::function<void()>> sessions_;
  uint64_t next_session_ = 0;
  std::map<uint64_t, std::function<void()>> held_;
  uint64_t next_hold_ = 0;
};

}  // namespace tally::shard_proxy
