// BackendConnection: one non-blocking libpq connection driven by the io_context of the worker that
// owns it (libpq's socket is watched with Asio; nothing here blocks). The shard proxy uses it for
// its PostgreSQL servers, the cluster proxy for its shard proxies. It connects and runs exchanges
// (a simple query, or a pipeline of extended-protocol steps ending in a sync), handing every
// PGresult to the exchange's sink, in order. In pipeline mode several exchanges may be queued at
// once (a shared connection: each ends at its own sync, so one's error never touches the next);
// they are sent together and answered in order. It also remembers which statements are prepared
// on this server connection. Thread: only the owning worker's io_context thread (an io_context run
// by one thread) touches it.
#pragma once

#include <libpq-fe.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
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
  // `sink` must stay alive until on_exchange_done. In pipeline mode an exchange may be started
  // while others are in flight (their PQsend* calls and sync were issued before this one's): its
  // results come after theirs. (libpq 15's PQpipelineSync sends at once, so each exchange is its
  // own send; what is shared is the server's wake-up and this side's receives.)
  void run_exchange(ResultSink& sink);
  // Exchanges started and not yet done, and when the oldest of them started.
  size_t in_flight() const { return queue_.size(); }
  std::chrono::steady_clock::time_point oldest_started() const;
  // True when `sink`'s exchange is the one the server is working on (the first in line).
  bool first_in_line(const ResultSink* sink) const;

  // Shared by several clients' exchanges at once (see BackendPool::acquire_shared). On a shared
  // connection a statement counts as prepared only once the server confirmed it, so no exchange
  // depends on another's outcome.
  void set_shared(bool shared) { shared_ = shared; }
  bool shared() const { return shared_; }

  // Server-side prepared statements, keyed by (query text, parameter types). Returns the server
  // name when `key` is prepared on this connection (shared: prepared and confirmed).
  const std::string* prepared(const std::string& key) const;
  // Records that `key` is (about to be) prepared and returns the server name to use. On a shared
  // connection where another exchange is preparing `key`, or that holds too many statements, it
  // returns the empty name: the caller prepares the unnamed statement just for its own use.
  const std::string& add_prepared(const std::string& key);
  // The server answered the Parse of `key`: other exchanges may now use its name.
  void confirm_prepared(const std::string& key);
  void forget_prepared(const std::string& key);
  size_t prepared_count() const { return prepared_.size(); }
  static constexpr size_t kMaxSharedPrepared = 1000;

  // libpq grows its send buffer to the largest message batch it was given and never shrinks it:
  // the connection holds that much until it closes. Senders report each exchange's payload
  // (statement texts and parameter values); the pool closes a connection whose largest payload
  // passed PoolOptions::max_retained_send_bytes instead of keeping it.
  void note_sent(size_t bytes) { largest_sent_ = std::max(largest_sent_, bytes); }
  size_t largest_sent() const { return largest_sent_; }

  // Marks the connection unusable (e.g. the node was demoted); the pool drops it.
  void retire() { retired_ = true; }
  // Gives up on the exchanges in flight (a caller's deadline passed): shuts the socket down, so
  // the server side sees the client leave at once (a proxy then cancels the statement; PostgreSQL
  // itself stops at its next write or client_connection_check_interval), ends every exchange in
  // line with kTimeout naming `why`, and retires the connection. Without this, a retired
  // connection stays open until the server answers, and the abandoned statement runs to the end.
  void abort_exchanges(const std::string& why);
  bool retired() const { return retired_; }

  // The backend's process id and a cancel handle, for cancelling a running statement.
  int backend_pid() const;
  std::chrono::steady_clock::time_point last_used() const { return last_used_; }
  void touch() { last_used_ = std::chrono::steady_clock::now(); }

 private:
  struct Pending {
    ResultSink* sink;
    std::chrono::steady_clock::time_point started;
  };
  void poll_connect();
  void wait(bool write, std::function<void()> then);
  void flush();
  void start_reading();
  void on_readable();
  void read_results();
  // Ends the first exchange in line with `status`.
  void finish_front(Status status);
  // The connection broke: every exchange in line ends with `error`.
  void fail_all(Error error);
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
  std::deque<Pending> queue_;
  bool reading_ = false;        // a wait for readability is outstanding
  bool write_waiting_ = false;  // a wait for writability (the rest of a send) is outstanding
  bool broken_ = false;
  bool retired_ = false;
  bool shared_ = false;
  uint64_t next_statement_ = 0;
  size_t largest_sent_ = 0;
  struct PreparedStatement {
    std::string name;
    bool confirmed = false;
  };
  std::unordered_map<std::string, PreparedStatement> prepared_;
  static const std::string kUnnamed;
  std::chrono::steady_clock::time_point last_used_ = std::chrono::steady_clock::now();
};

}  // namespace tally
