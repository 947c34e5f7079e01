#include "common/pgclient/backend_pool.h"

#include <boost/asio/post.hpp>

namespace tally {

namespace asio = boost::asio;

BackendPool::BackendPool(asio::io_context& io, PoolOptions options)
    : io_(io), options_(std::move(options)) {}

BackendPool::~BackendPool() {
  *alive_ = false;
  // Waiters hear that the pool is gone rather than waiting forever.
  fail_waiters(make_error(ErrorCode::kUnavailable, "the pool for " + options_.node + " closed"));
  open_ = 0;
  connecting_ = 0;
  idle_.clear();
  shared_.clear();
  publish();
}

void BackendPool::publish() {
  if (options_.gauges == nullptr) return;
  auto move = [](std::atomic<int64_t>& total, int64_t& mine, int64_t now) {
    total.fetch_add(now - mine, std::memory_order_relaxed);
    mine = now;
  };
  move(options_.gauges->open, published_open_, static_cast<int64_t>(open_));
  move(options_.gauges->idle, published_idle_, static_cast<int64_t>(idle_.size()));
  move(options_.gauges->waiting, published_waiting_, static_cast<int64_t>(waiters_.size()));
}

bool BackendPool::keepable(const Lease& c) const {
  if (!c->usable() || PQtransactionStatus(c->pg()) != PQTRANS_IDLE) return false;
  if (c->prepared_count() > options_.max_prepared_per_connection) return false;
  if (c->largest_sent() > options_.max_retained_send_bytes) return false;
  auto it = generation_of_.find(c.get());
  return it != generation_of_.end() && it->second == generation_;
}

void BackendPool::acquire(AcquireCallback done) {
  while (!idle_.empty()) {
    Lease c = std::move(idle_.back().first);
    idle_.pop_back();
    if (keepable(c)) {
      asio::post(io_, [done = std::move(done), c = std::move(c)]() mutable { done(std::move(c)); });
      publish();
      return;
    }
    generation_of_.erase(c.get());
    --open_;
  }
  if (open_ >= options_.max_size) {
    // Every connection is taken: a shared one with nothing in flight goes back to exclusive use,
    // so pipelined reads never starve transactions of the pool.
    if (Lease c = unshare_quiet()) {
      asio::post(io_, [done = std::move(done), c = std::move(c)]() mutable { done(std::move(c)); });
      publish();
      return;
    }
  }
  Waiter w;
  w.done = std::move(done);
  w.id = ++next_waiter_;
  w.timer = std::make_unique<asio::steady_timer>(io_, options_.wait_timeout);
  w.timer->async_wait([this, alive = alive_, id = w.id](boost::system::error_code ec) {
    if (ec || !*alive) return;
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
      if (it->id != id) continue;
      auto cb = std::move(it->done);
      waiters_.erase(it);
      publish();
      cb(make_error(ErrorCode::kResourceExhausted,
                    "no server connection to " + options_.node + " became free within " +
                        std::to_string(options_.wait_timeout.count()) + " ms (pool size " +
                        std::to_string(options_.max_size) + ", " + std::to_string(waiters_.size()) +
                        " still waiting)"));
      return;
    }
  });
  waiters_.push_back(std::move(w));
  if (open_ < options_.max_size && connecting_ < waiters_.size()) open_one();
  publish();
}

void BackendPool::open_one() {
  ++open_;
  ++connecting_;
  auto c = std::make_shared<BackendConnection>(io_, options_.conninfo, options_.node);
  c->connect(options_.connect_timeout, [this, alive = alive_, c, gen = generation_](Status status) {
    if (!*alive) return;
    --connecting_;
    if (!status) {
      --open_;
      // The node refuses connections: everyone waiting for it learns now, not at the
      // end of their wait.
      fail_waiters(status.error());
      publish();
      return;
    }
    generation_of_[c.get()] = gen;
    hand_out(c);
  });
}

void BackendPool::hand_out(Lease c) {
  if (!keepable(c)) {
    generation_of_.erase(c.get());
    --open_;
    if (!c->usable() && !c->retired()) {
      // A connection that broke says the node died or restarted: the idle ones are suspect too.
      for (auto& [idle, gen] : idle_) generation_of_.erase(idle.get());
      open_ -= idle_.size();
      idle_.clear();
    }
    if (!waiters_.empty() && open_ < options_.max_size) open_one();
    publish();
    return;
  }
  if (waiters_.empty()) {
    idle_.emplace_back(std::move(c), generation_);
    publish();
    return;
  }
  Waiter w = std::move(waiters_.front());
  waiters_.pop_front();
  w.timer->cancel();
  asio::post(io_, [done = std::move(w.done), c = std::move(c)]() mutable { done(std::move(c)); });
  publish();
}

void BackendPool::release(Lease c) {
  if (!c) return;
  hand_out(std::move(c));
}

BackendPool::Lease BackendPool::acquire_shared() {
  if (options_.max_shared == 0) return nullptr;
  auto now = std::chrono::steady_clock::now();
  Lease best;
  for (size_t i = 0; i < shared_.size();) {
    const Lease& c = shared_[i];
    auto gen = generation_of_.find(c.get());
    if (!c->usable() || gen == generation_of_.end() || gen->second != generation_) {
      drop_shared(i);
      continue;
    }
    ++i;
    size_t depth = c->in_flight();
    if (depth == 0) return c;
    if (depth >= options_.pipeline_depth || now - c->oldest_started() > options_.pipeline_stall) {
      continue;
    }
    if (!best || depth < best->in_flight()) best = c;
  }
  while (shared_.size() < options_.max_shared && !idle_.empty()) {
    Lease c = std::move(idle_.back().first);
    idle_.pop_back();
    if (!keepable(c) || !c->set_pipeline(true)) {
      generation_of_.erase(c.get());
      --open_;
      continue;
    }
    c->set_shared(true);
    shared_.push_back(c);
    publish();
    return c;
  }
  return best;
}

void BackendPool::release_shared(const Lease& c) {
  if (!c) return;
  if (c->usable() && c->prepared_count() <= options_.max_prepared_per_connection &&
      c->largest_sent() <= options_.max_retained_send_bytes) {
    if (waiters_.empty() || c->in_flight() != 0) return;
    // Exclusive work is waiting for a connection: this one has nothing in flight, so it serves it.
    if (Lease quiet = unshare_quiet()) hand_out(std::move(quiet));
    return;
  }
  for (size_t i = 0; i < shared_.size(); ++i) {
    if (shared_[i] == c) {
      drop_shared(i);
      return;
    }
  }
}

BackendPool::Lease BackendPool::unshare_quiet() {
  for (size_t i = 0; i < shared_.size(); ++i) {
    if (shared_[i]->in_flight() != 0 || !shared_[i]->usable()) continue;
    Lease c = std::move(shared_[i]);
    shared_.erase(shared_.begin() + static_cast<std::ptrdiff_t>(i));
    c->set_shared(false);
    return c;
  }
  return nullptr;
}

void BackendPool::drop_shared(size_t index) {
  // Exchanges still in flight on it keep it alive through their leases; it closes after them.
  generation_of_.erase(shared_[index].get());
  shared_[index]->retire();
  shared_.erase(shared_.begin() + static_cast<std::ptrdiff_t>(index));
  --open_;
  publish();
}

void BackendPool::fail_waiters(const Error& error) {
  auto waiters = std::move(waiters_);
  waiters_.clear();
  for (auto& w : waiters) {
    w.timer->cancel();
    asio::post(io_, [done = std::move(w.done), error]() { done(error); });
  }
  publish();
}

void BackendPool::set_target(std::string node, std::string conninfo) {
  if (conninfo == options_.conninfo) return;
  options_.node = std::move(node);
  options_.conninfo = std::move(conninfo);
  ++generation_;
  for (auto& [c, gen] : idle_) {
    generation_of_.erase(c.get());
    --open_;
  }
  idle_.clear();
  while (!shared_.empty()) drop_shared(shared_.size() - 1);
  publish();
}

}  // namespace tally
