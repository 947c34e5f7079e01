#include "cluster_proxy/src/analyst_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cluster_proxy/src/analyst_session.h"
#include "common/pgwire/backend_encoder.h"

namespace tally::cluster_proxy {

AnalystServer::AnalystServer(AnalystConfig config, std::string listen_address, std::string database,
                             int connect_timeout_ms, const TopologyCache& topology)
    : config_(std::move(config)),
      listen_address_(std::move(listen_address)),
      database_(std::move(database)),
      connect_timeout_ms_(connect_timeout_ms),
      topology_(topology) {}

AnalystServer::~AnalystServer() {
  stop();
}

Status AnalystServer::start() {
  const std::string where = listen_address_ + ":" + std::to_string(config_.pg_port);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(config_.pg_port));
  if (inet_pton(AF_INET, listen_address_.c_str(), &addr.sin_addr) != 1) {
    return make_error(
        ErrorCode::kInvalidArgument,
        "analyst endpoint: listen address \"" + listen_address_ + "\" is not an IPv4 address");
  }
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return make_error(ErrorCode::kUnavailable, "analyst endpoint: socket failed");
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 128) != 0) {
    std::string reason = std::strerror(errno);
    ::close(listen_fd_);
    listen_fd_ = -1;
    return make_error(ErrorCode::kUnavailable,
                      "analyst endpoint: cannot listen on " + where + ": " + reason);
  }
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
  return ok_status();
}

void AnalystServer::accept_loop() {
  while (!stopping_.load()) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (stopping_.load()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // EMFILE and friends
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    reap(false);
    std::lock_guard lock(mu_);
    if (stopping_.load() || static_cast<int>(clients_.size()) >= config_.max_sessions) {
      std::string out;
      pgwire::ErrorFields f;
      f.severity = "FATAL";
      f.sqlstate = "53300";
      f.message = "sorry, too many analyst sessions (analyst.max_sessions is " +
                  std::to_string(config_.max_sessions) + ")";
      pgwire::append_error_response(out, f);
      (void)::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
      ::close(fd);
      continue;
    }
    auto client = std::make_unique<Client>();
    Client* c = client.get();
    c->fd = fd;
    int32_t id = next_id_.fetch_add(1);
    c->thread = std::thread([this, c, id] {
      AnalystSession session(c->fd, config_, database_, connect_timeout_ms_, topology_, id);
      session.run();
      ::shutdown(c->fd, SHUT_RDWR);
      c->finished.store(true);
    });
    clients_.push_back(std::move(client));
  }
}

void AnalystServer::reap(bool all) {
  std::list<std::unique_ptr<Client>> done;
  {
    std::lock_guard lock(mu_);
    for (auto it = clients_.begin(); it != clients_.end();) {
      if (all) ::shutdown((*it)->fd, SHUT_RDWR);
      if (all || (*it)->finished.load()) {
        done.push_back(std::move(*it));
        it = clients_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : done) {
    if (c->thread.joinable()) c->thread.join();
    ::close(c->fd);
  }
}

void AnalystServer::stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  reap(true);
}

}  // namespace tally::cluster_proxy
