// ShardWorker: one io_context thread of the cluster proxy with its own connection pools to the
// shard proxies (one pool per proxy address), so the hot path takes no lock. call() runs a
// ShardCall there: lease a connection (moving to the shard's next proxy when one cannot be
// reached), send each exchange as one pipelined round trip with prepared statements, enforce the
// call's deadline, retry idempotent calls with exponential backoff and jitter, and keep the shard's
// circuit breaker informed. Identical concurrent read-only calls share one execution.
// Thread: construct and start()/stop() from the owner; post() from any thread (it runs the function
// at once when called on the worker's own thread); call() only on the worker's own thread. The
// HTTP server carries its connections on the workers' io_contexts, so a request normally never
// changes threads.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cluster_proxy/src/shard_call.h"
#include "common/core/circuit_breaker.h"
#include "common/pgclient/backend_pool.h"

namespace tally {
class MetricsRegistry;
class Counter;
}  // namespace tally

namespace tally::cluster_proxy {

struct ShardWorkerOptions {
  std::string database = "tally";
  std::string user;
  std::string password;
  size_t pool_size = 8;  // connections per shard proxy and worker
  std::chrono::milliseconds connect_timeout{1000};
  int retry_attempts = 2;  // extra attempts for idempotent calls
  std::chrono::milliseconds retry_backoff{20};
  bool consolidate_reads = true;
};

using ShardCallback = std::function<void(Result<ShardCallResults>)>;

class ShardWorker {
 public:
  ShardWorker(ShardWorkerOptions options, CircuitBreakers& breakers, MetricsRegistry& metrics,
              PoolGauges& gauges);
  ~ShardWorker();
  ShardWorker(const ShardWorker&) = delete;
  ShardWorker& operator=(const ShardWorker&) = delete;

  void start();
  void stop();
  void post(std::function<void()> fn);
  // True on the thread running this worker's io_context.
  bool on_this_thread();
  boost::asio::io_context& io() { return io_; }

  // On the worker thread. `done` runs on the worker thread, exactly once. A call whose key equals
  // a read already in flight (consolidate: true, same statements and parameters) is answered with
  // that read's result instead of reaching the shard again.
  void call(ShardCall call, ShardCallback done, bool consolidate = false);

  // Internal, for the call operations.
  BackendPool& pool(const std::string& address);
  const ShardWorkerOptions& options() const { return options_; }
  CircuitBreakers& breakers() { return breakers_; }
  void count_error(const std::string& shard, const char* kind);

 private:
  ShardWorkerOptions options_;
  CircuitBreakers& breakers_;
  MetricsRegistry& metrics_;
  PoolGauges& gauges_;
  Counter* consolidated_ = nullptr;
  boost::asio::io_context io_{1};
  std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;
  std::unordered_map<std::string, std::unique_ptr<BackendPool>> pools_;
  // Reads in flight by key, with the callbacks of identical reads waiting for them.
  std::unordered_map<std::string, std::vector<ShardCallback>> inflight_;
  uint64_t next_rotation_ = 0;
};

}  // namespace tally::cluster_proxy
