// BackendConnection: one non-blocking libpq connection driven by the io_context of the worker that
// owns it (libpq's socket is watched with Asio; nothing here blocks). The shard proxy uses it for
// its PostgreSQL servers, the cluster proxy for its shard proxies. It connects, runs one exchange
// at a time (a simple query, or a pipeline of extended-protocol steps ending in a sync) and hands
// every PGresult to the exchange's sink, in order. It also remembers which statements are prepared
// on this server connection. Thread: only the owning worker's io_context thread (an io_context run
// by one thread) touches it.
#pragma once

#include <libpq-fe.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/core/result.h"

namespace tally {

// Receives the results of one exchange. Results are owned by the connection and valid only during
// the call; a sink copies or encodes what it needs.
class ResultSink {
 public:
  virtual ~ResultSink() = default;
  // A result of the current step (tuples, command, error, pipeline-aborted, pipeline-sync).
  virtual void on_result(const PGresult* result) = 0;
  // The end of one step's results (pipeline mode: the NULL libpq returns between steps).
  virtual void on_step_end() {}
  // The exchange is over: ok, or the connection broke (the error says how).
  virtual void on_exchange_done(Status status) = 0;
  // A NOTICE or WARNING the server sent during the exchange.
  virtual void on_notice(const PGresult* /*notice*/) {}
};

class BackendConnection : public std::enable_shared_from_this<BackendConnection> {
 public:
  BackendConnection(boost::asio::io_context& io, std::string conninfo, std::string node);
  ~BackendConnection();
  BackendConnection(const BackendConnection&) = delete;
  BackendConnection& operator=(const BackendConnection&) = delete;

  // Starts a non-blocking connect; `done` runs on the io_context thread.
  void connect(std::chrono::milliseconds timeout, std::function<void(Status)> done);

  // For issuing PQsend* calls between exchanges. Never call blocking libpq functions on it.
  PGconn* pg() const { return conn_.get(); }
  const std::string& node() const { return node_; }
  bool usable() const;
  bool in_pipeline() const;
  // Pipeline mode is entered and left only between exchanges.
  bool set_pipeline(bool on);

  // Sends what the PQsend* calls queued and delivers results to `sink` until the exchange ends:
  // in pipeline mode at PGRES_PIPELINE_SYNC, otherwise when libpq has no more results.
  // `sink` must stay alive until on_exchange_done.
  void run_exchange(ResultSink& sink);

  // Server-side prepared statements, keyed by (query text, parameter types). Returns the server
  // name when `key` is prepared on this connection.
  const std::string* prepared(const std::string& key) const;
  // Records that `key` is (about to be) prepared and returns the server name to use.
  const std::string& add_prepared(const std::string& key);
  void forget_prepared(const std::string& key);
  size_t prepared_count() const { return prepared_.size(); }

  // Marks the connection unusable (e.g. the node was demoted); the pool drops it.
  void retire() { retired_ = true; }
  bool retired() const { return retired_; }

  // The backend's process id and a cancel handle, for cancelling a running statement.
  int backend_pid() const;
  std::chrono::steady_clock::time_point last_used() const { return last_used_; }
  void touch() { last_used_ = std::chrono::steady_clock::now(); }

 private:
  void poll_connect();
  void wait(bool write, std::function<void()> then);
  void flush_then_read();
  void on_readable();
  void read_results();
  void finish_exchange(Status status);
  void attach_socket();
  void detach_socket();
  static void notice_receiver(void* arg, const PGresult* result);

  boost::asio::io_context& io_;
  std::string conninfo_;
  std::string node_;
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn_{nullptr, &PQfinish};
  std::unique_ptr<boost::asio::posix::stream_descriptor> socket_;
  boost::asio::steady_timer connect_timer_;
  std::function<void(Status)> connect_done_;
  ResultSink* sink_ = nullptr;
  bool broken_ = false;
  bool retired_ = false;
  uint64_t next_statement_ = 0;
  std::unordered_map<std::string, std::string> prepared_;
  std::chrono::steady_clock::time_point last_used_ = std::chrono::steady_clock::now();
};

}  // namespace tally
