#include "common/pgclient/backend_connection.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

namespace tally {

namespace asio = boost::asio;

BackendConnection::BackendConnection(asio::io_context& io, std::string conninfo, std::string node)
    : io_(io), conninfo_(std::move(conninfo)), node_(std::move(node)), connect_timer_(io) {}

BackendConnection::~BackendConnection() {
  // Our duplicate goes first (deregistered, then closed); PQfinish then says goodbye on libpq's.
  detach_socket();
}

namespace {

// True when descriptors `a` and `b` name the same socket (not merely the same number).
bool same_socket(int a, int b) {
  struct stat sa {};
  struct stat sb {};
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

}  // namespace

void BackendConnection::attach_socket() {
  // Asio watches a duplicate of libpq's descriptor, never libpq's own number. libpq closes its
  // socket by itself when the server goes away, and the kernel gives that number to the next
  // socket opened, often a replacement connection; deregistering the old number later would
  // silence the new socket (it never heard from its server again). Our duplicate keeps the old
  // socket, and so its number, ours until we let go of it.
  int fd = conn_ ? PQsocket(conn_.get()) : -1;
  if (socket_ && fd >= 0 && same_socket(fd, socket_->native_handle())) return;
  detach_socket();
  if (fd < 0) return;
  int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  // Out of descriptors: no socket, so a connect ends at its timeout and an exchange as lost.
  if (own < 0) return;
  socket_ = std::make_unique<asio::posix::stream_descriptor>(io_, own);
}

void BackendConnection::detach_socket() {
  // Closing an assigned descriptor deregisters it from the reactor first, then closes it.
  socket_.reset();
}

bool BackendConnection::usable() const {
  return conn_ && !broken_ && !retired_ && PQstatus(conn_.get()) == CONNECTION_OK &&
         PQtransactionStatus(conn_.get()) != PQTRANS_UNKNOWN;
}

bool BackendConnection::in_pipeline() const {
  return conn_ && PQpipelineStatus(conn_.get()) != PQ_PIPELINE_OFF;
}

bool BackendConnection::set_pipeline(bool on) {
  if (!conn_) return false;
  if (on == in_pipeline()) return true;
  return on ? PQenterPipelineMode(conn_.get()) == 1 : PQexitPipelineMode(conn_.get()) == 1;
}

int BackendConnection::backend_pid() const {
  return conn_ ? PQbackendPID(conn_.get()) : 0;
}

const std::string BackendConnection::kUnnamed;

const std::string* BackendConnection::prepared(const std::string& key) const {
  auto it = prepared_.find(key);
  if (it == prepared_.end() || (shared_ && !it->second.confirmed)) return nullptr;
  return &it->second.name;
}

const std::string& BackendConnection::add_prepared(const std::string& key) {
  if (shared_ && (prepared_.count(key) != 0 || prepared_.size() >= kMaxSharedPrepared)) {
    return kUnnamed;
  }
  auto [it, inserted] = prepared_.try_emplace(key);
  if (inserted) it->second.name = "tally_s" + std::to_string(++next_statement_);
  return it->second.name;
}

void BackendConnection::confirm_prepared(const std::string& key) {
  auto it = prepared_.find(key);
  if (it != prepared_.end()) it->second.confirmed = true;
}

void BackendConnection::forget_prepared(const std::string& key) {
  prepared_.erase(key);
}

std::chrono::steady_clock::time_point BackendConnection::oldest_started() const {
  return queue_.empty() ? std::chrono::steady_clock::now() : queue_.front().started;
}

bool BackendConnection::first_in_line(const ResultSink* sink) const {
  return !queue_.empty() && queue_.front().sink == sink;
}

void BackendConnection::notice_receiver(void* arg, const PGresult* result) {
  auto* self = static_cast<BackendConnection*>(arg);
  if (!self->queue_.empty()) self->queue_.front().sink->on_notice(result);
}

void BackendConnection::connect(std::chrono::milliseconds timeout,
                                std::function<void(Status)> done) {
  connect_done_ = std::move(done);
  conn_.reset(PQconnectStart(conninfo_.c_str()));
  if (!conn_ || PQstatus(conn_.get()) == CONNECTION_BAD) {
    std::string why = conn_ ? PQerrorMessage(conn_.get()) : "out of memory";
    broken_ = true;
    auto cb = std::move(connect_done_);
    asio::post(io_, [cb = std::move(cb), why, node = node_]() {
      cb(make_error(ErrorCode::kUnavailable, "cannot connect to " + node + ": " + why));
    });
    return;
  }
  PQsetnonblocking(conn_.get(), 1);
  connect_timer_.expires_after(timeout);
  connect_timer_.async_wait([self = shared_from_this(), timeout](boost::system::error_code ec) {
    if (ec || !self->connect_done_) return;
    self->broken_ = true;
    self->detach_socket();
    auto cb = std::move(self->connect_done_);
    self->connect_done_ = nullptr;
    cb(make_error(ErrorCode::kUnavailable, "connecting to " + self->node_ + " timed out after " +
                                               std::to_string(timeout.count()) + " ms"));
  });
  poll_connect();
}

void BackendConnection::poll_connect() {
  if (!connect_done_) return;  // timed out meanwhile
  attach_socket();
  switch (PQconnectPoll(conn_.get())) {
    case PGRES_POLLING_READING:
      wait(false, [this] { poll_connect(); });
      return;
    case PGRES_POLLING_WRITING:
      wait(true, [this] { poll_connect(); });
      return;
    case PGRES_POLLING_OK: {
      attach_socket();
      connect_timer_.cancel();
      PQsetNoticeReceiver(conn_.get(), &BackendConnection::notice_receiver, this);
      auto cb = std::move(connect_done_);
      connect_done_ = nullptr;
      cb(ok_status());
      return;
    }
    default: {
      broken_ = true;
      connect_timer_.cancel();
      std::string why = PQerrorMessage(conn_.get());
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      auto cb = std::move(connect_done_);
      connect_done_ = nullptr;
      cb(make_error(ErrorCode::kUnavailable, "cannot connect to " + node_ + ": " + why));
      return;
    }
  }
}

void BackendConnection::wait(bool write, std::function<void()> then) {
  // Only the connect handshake waits through here; exchanges use flush() and start_reading().
  if (!socket_) {
    broken_ = true;
    return;
  }
  auto kind = write ? asio::posix::stream_descriptor::wait_write
                    : asio::posix::stream_descriptor::wait_read;
  socket_->async_wait(
      kind, [self = shared_from_this(), then = std::move(then)](boost::system::error_code ec) {
        if (ec) {
          self->broken_ = true;
          return;
        }
        then();
      });
}

void BackendConnection::run_exchange(ResultSink& sink) {
  queue_.push_back(Pending{&sink, std::chrono::steady_clock::now()});
  last_used_ = queue_.back().started;
  if (broken_ || !socket_) {
    fail_all(make_error(ErrorCode::kUnavailable, "connection to " + node_ + " lost"));
    return;
  }
  // PQpipelineSync / PQsendQuery have already sent what fits; flush() pushes out the rest (a full
  // socket) and makes sure the answer is awaited. With nothing left it makes no syscall.
  flush();
}

void BackendConnection::flush() {
  if (broken_ || !conn_) return;
  int rc = PQflush(conn_.get());
  if (rc < 0) {
    fail_all(make_error(ErrorCode::kUnavailable,
                        "sending to " + node_ + " failed: " + PQerrorMessage(conn_.get())));
    return;
  }
  if (rc == 1 && !write_waiting_ && socket_) {
    // The socket is full: send the rest when it drains. Reading goes on meanwhile, so a server
    // blocked on writing its answers never blocks us.
    write_waiting_ = true;
    socket_->async_wait(
        asio::posix::stream_descriptor::wait_write,
        [self = shared_from_this()](boost::system::error_code ec) {
          self->write_waiting_ = false;
          if (ec == asio::error::operation_aborted && !self->broken_) {
            self->flush();  // cancelled (see finish_front): send whatever is still queued
            return;
          }
          if (ec) {
            self->fail_all(make_error(ErrorCode::kUnavailable,
                                      "connection to " + self->node_ + " lost: " + ec.message()));
            return;
          }
          self->flush();
        });
  }
  // The request is out (or going); the answer cannot be there yet: wait instead of a recv that
  // would only say EAGAIN.
  start_reading();
}

void BackendConnection::start_reading() {
  if (reading_ || queue_.empty() || broken_) return;
  if (!socket_) {
    fail_all(make_error(ErrorCode::kUnavailable, "connection to " + node_ + " lost"));
    return;
  }
  reading_ = true;
  socket_->async_wait(asio::posix::stream_descriptor::wait_read, [self = shared_from_this()](
                                                                     boost::system::error_code ec) {
    self->reading_ = false;
    if (ec == asio::error::operation_aborted && !self->broken_) {
      self->start_reading();  // cancelled while idle (see finish_front); maybe needed again
      return;
    }
    if (ec) {
      self->fail_all(make_error(ErrorCode::kUnavailable,
                                "connection to " + self->node_ + " lost: " + ec.message()));
      return;
    }
    self->on_readable();
  });
}

void BackendConnection::on_readable() {
  if (broken_ || queue_.empty()) return;
  if (PQconsumeInput(conn_.get()) == 0) {
    fail_all(make_error(ErrorCode::kUnavailable,
                        "connection to " + node_ + " lost: " + PQerrorMessage(conn_.get())));
    return;
  }
  read_results();
}

void BackendConnection::read_results() {
  PGconn* c = conn_.get();
  int empty_in_a_row = 0;
  while (!queue_.empty() && !broken_) {
    if (PQisBusy(c)) {
      if (PQconsumeInput(c) == 0) {
        fail_all(make_error(ErrorCode::kUnavailable,
                            "connection to " + node_ + " lost: " + PQerrorMessage(c)));
        return;
      }
      if (PQisBusy(c)) {
        start_reading();
        return;
      }
    }
    PGresult* raw = PQgetResult(c);
    if (raw == nullptr) {
      if (PQpipelineStatus(c) != PQ_PIPELINE_OFF && PQstatus(c) == CONNECTION_OK &&
          ++empty_in_a_row < 2) {
        queue_.front().sink->on_step_end();
        continue;
      }
      if (PQpipelineStatus(c) != PQ_PIPELINE_OFF) {
        // Two NULLs in a row: nothing is queued, yet no sync came. Never spin on it.
        fail_all(
            make_error(ErrorCode::kInternal,
                       "pipeline to " + node_ + " ended without a sync: " + PQerrorMessage(c)));
        return;
      }
      if (PQstatus(c) != CONNECTION_OK) {
        fail_all(make_error(ErrorCode::kUnavailable,
                            "connection to " + node_ + " lost: " + PQerrorMessage(c)));
        return;
      }
      finish_front(ok_status());
      continue;
    }
    empty_in_a_row = 0;
    std::unique_ptr<PGresult, decltype(&PQclear)> result(raw, &PQclear);
    ExecStatusType status = PQresultStatus(raw);
    if (status == PGRES_COPY_IN) {
      // COPY FROM STDIN needs a client data stream the proxy does not relay: end it with an error
      // the server reports back like any other.
      PQputCopyEnd(c, "COPY FROM STDIN is not supported through the Tally shard proxy");
      PQflush(c);
      continue;
    }
    if (status == PGRES_COPY_OUT) {
      char* buffer = nullptr;
      int n;
      while ((n = PQgetCopyData(c, &buffer, 1)) > 0) PQfreemem(buffer);
      if (n == 0) {
        start_reading();  // consume first, or PQgetCopyData spins
        return;
      }
      continue;
    }
    queue_.front().sink->on_result(raw);
    if (status == PGRES_PIPELINE_SYNC) {
      finish_front(ok_status());
      continue;
    }
    if (PQstatus(c) == CONNECTION_BAD) {
      fail_all(make_error(ErrorCode::kUnavailable,
                          "connection to " + node_ + " lost: " + PQerrorMessage(c)));
      return;
    }
  }
}

void BackendConnection::finish_front(Status status) {
  if (queue_.empty()) return;
  auto self = shared_from_this();  // the sink may drop the last lease of this connection
  ResultSink* sink = queue_.front().sink;
  queue_.pop_front();
  touch();
  // The sink may start its next exchange on this connection from here: it queues behind the rest.
  sink->on_exchange_done(std::move(status));
  if (queue_.empty() && reading_ && socket_) {
    // Nothing is expected any more: a wait left from reading ahead must not keep this connection
    // (and its server backend) alive after its pool has let it go.
    boost::system::error_code ignored;
    socket_->cancel(ignored);
  }
}

void BackendConnection::abort_exchanges(const std::string& why) {
  retired_ = true;
  if (conn_ && PQsocket(conn_.get()) >= 0) {
    // shutdown(), not close(): libpq still owns the descriptor; further reads see EOF.
    ::shutdown(PQsocket(conn_.get()), SHUT_RDWR);
  }
  if (!queue_.empty()) fail_all(make_error(ErrorCode::kTimeout, why));
  broken_ = true;
}

void BackendConnection::fail_all(Error error) {
  broken_ = true;
  touch();
  auto self = shared_from_this();  // a sink may drop the last lease of this connection
  while (!queue_.empty()) {
    ResultSink* sink = queue_.front().sink;
    queue_.pop_front();
    sink->on_exchange_done(error);
  }
}

}  // namespace tally
