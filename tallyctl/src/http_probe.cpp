#include "tallyctl/src/http_probe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

namespace tally {

std::string loopback_exchange(int port, const std::string& request,
                              std::chrono::milliseconds timeout,
                              const std::function<bool(const std::string&)>& enough) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return {};
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return {};
  }
  std::string reply;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!enough || !enough(reply)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  return reply;
}

int http_get_status(int port, const std::string& path, std::chrono::milliseconds timeout) {
  std::string reply = loopback_exchange(
      port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout,
      [](const std::string& r) { return r.find("\r\n") != std::string::npos; });
  // "HTTP/1.1 200 OK"
  auto space = reply.find(' ');
  if (reply.rfind("HTTP/1.", 0) != 0 || space == std::string::npos) return 0;
  return std::atoi(reply.c_str() + space + 1);
}

}  // namespace tally
