// BackendPool: the connections of one worker to one PostgreSQL server (or shard proxy) for one
// user.
// Connections are leased exclusively (transaction pooling: for one transaction, then returned);
// at most max_size exist; requests beyond that wait in FIFO order up to wait_timeout and then fail
// with a clear error instead of piling up. Up to max_shared of them may instead be shared: many
// clients' self-contained autocommit reads pipelined on one connection, so one wake-up of the
// server and one receive here serve several requests. A new address (a failover) retires every
// connection to the old one. Thread: only the owning worker's io_context thread calls it.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/core/result.h"
#include "common/pgclient/backend_connection.h"

namespace tally {

// Pool sizes summed over every pool of the process, for /metrics (read from any thread).
struct PoolGauges {
  std::atomic<int64_t> open{0};
  std::atomic<int64_t> idle{0};
  std::atomic<int64_t> waiting{0};
};

struct PoolOptions {
  std::string node;      // "leader 127.0.0.1:5432", for messages
  std::string conninfo;  // libpq connection string
  size_t max_size = 10;
  std::chrono::milliseconds wait_timeout{5000};
  std::chrono::milliseconds connect_timeout{2000};
  size_t max_prepared_per_connection = 1000;
  // A connection that once sent an exchange larger than this (BackendConnection::note_sent) is
  // closed when released rather than kept holding libpq's grown send buffer: the pool's retained
  // send buffers stay within max_size times this.
  size_t max_retained_send_bytes = size_t{1} << 20;
  PoolGauges* gauges = nullptr;  // optional
  // Shared (pipelined) connections, out of max_size; 0: every lease is exclusive.
  size_t max_shared = 0;
  // A shared connection takes no new request while it has this many in flight, or while the
  // oldest has run longer than pipeline_stall (a slow statement must not hold up more reads).
  size_t pipeline_depth = 32;
  std::chrono::milliseconds pipeline_stall{5};
};

class BackendPool {
 public:
  using Lease = std::shared_ptr<BackendConnection>;
  using AcquireCallback = std::function<void(Result<Lease>)>;

  BackendPool(boost::asio::io_context& io, PoolOptions options);
  ~BackendPool();

  // Calls `done` (never inline) with an idle connection, a new one, or an error: kUnavailable when
  // the node refuses connections, kResourceExhausted when none became free within wait_timeout.
  void acquire(AcquireCallback done);
  // Gives a leased connection back. One that is broken, retired, from an old address, inside a
  // transaction or holding too many prepared statements is closed instead of kept.
  void release(Lease connection);

  // A shared connection (in pipeline mode) for one exchange that ends with its own sync, starts
  // and leaves no transaction and changes no session state (an autocommit read); null when none
  // can take it now (none yet, all at pipeline_depth or stalled): then acquire() an exclusive one.
  // The least busy shared connection wins; an idle exclusive connection becomes shared while
  // fewer than max_shared are. Returns at once.
  Lease acquire_shared();
  // The exchange on a shared connection is done; a broken or retired one leaves the shared set.
  void release_shared(const Lease& connection);
  // A new address for this node: idle connections close now, leased ones when returned.
  void set_target(std::string node, std::string conninfo);

  const std::string& node() const { return options_.node; }
  size_t open() const { return open_; }
  size_t idle() const { return idle_.size(); }
  size_t in_use() const { return open_ - idle_.size() - connecting_; }
  size_t waiting() const { return waiters_.size(); }
  size_t shared() const { return shared_.size(); }

 private:
  struct Waiter {
    AcquireCallback done;
    std::unique_ptr<boost::asio::steady_timer> timer;
    uint64_t id;
  };
  void open_one();
  void hand_out(Lease connection);
  void fail_waiters(const Error& error);
  bool keepable(const Lease& c) const;
  void publish();  // moves this pool's contribution to the shared gauges
  void drop_shared(size_t index);
  // Takes a shared connection with nothing in flight out of the shared set, or null.
  Lease unshare_quiet();

  int64_t published_open_ = 0, published_idle_ = 0, published_waiting_ = 0;

  boost::asio::io_context& io_;
  PoolOptions options_;
  uint64_t generation_ = 0;
  std::vector<std::pair<Lease, uint64_t>> idle_;  // LIFO: the warmest connection first
  std::vector<Lease> shared_;
  std::deque<Waiter> waiters_;
  uint64_t next_waiter_ = 0;
  size_t open_ = 0;  // idle + leased + shared + connecting
  size_t connecting_ = 0;
  std::unordered_map<const BackendConnection*, uint64_t> generation_of_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace tally
