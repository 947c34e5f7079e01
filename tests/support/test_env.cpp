#include "tests/support/test_env.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>
#include <thread>

namespace tally::testing {

TempDir::TempDir(const std::string& prefix) {
  std::string pattern = "/tmp/" + prefix + "-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
  chmod(path_.c_str(), 0755);
}

TempDir::~TempDir() {
  if (std::getenv("TALLY_KEEP_TEST_DIRS") != nullptr) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

namespace {
bool port_free(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// The first port of the kernel's ephemeral range: outgoing connections (to PostgreSQL, ZooKeeper,
// the proxies) take local ports from it, so a port that is free when we pick it can be taken by one
// before the service that should listen on it starts. Blocks are kept below it.
int ephemeral_range_start() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int first = 0;
  if (in >> first && first > 1024) return first;
  return 32768;  // Linux's default
}
}  // namespace

int find_free_port_block(int span, int low, int high) {
  high = std::min(high, ephemeral_range_start());
  if (high - low < span) {
    throw std::runtime_error("no room for a block of " + std::to_string(span) +
                             " ports below the ephemeral range");
  }
  std::mt19937 rng(static_cast<unsigned>(getpid()) ^ std::random_device{}());
  int slots = (high - low) / span;
  int start = static_cast<int>(rng() % static_cast<unsigned>(slots));
  for (int i = 0; i < slots; ++i) {
    int base = low + ((start + i) % slots) * span;
    bool all = true;
    for (int p = base; p < base + span && all; ++p) all = port_free(p);
    if (all) return base;
  }
  throw std::runtime_error("no free block of " + std::to_string(span) + " ports");
}

CommandResult run(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const auto& a : argv) {
    std::string quoted = "'";
    for (char c : a) quoted += (c == '\'') ? std::string("'\\''") : std::string(1, c);
    cmd += quoted + "' ";
  }
  cmd += "2>&1";
  CommandResult result;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) result.output.append(buf.data(), n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string project_binary(const std::string& name) {
  return std::string(TALLY_BIN_DIR) + "/" + name;
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

}  // namespace tally::testing
