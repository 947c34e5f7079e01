#include "tallyctl/src/zookeeper_node.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "common/process/child_process.h"
#include "tallyctl/src/http_probe.h"

namespace tally {
namespace {

// Debian's zookeeper.jar names its dependencies in its manifest; slf4j-simple sends the server's
// log to stderr, which we redirect to the node's log file.
constexpr const char* kClassPath = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

}  // namespace

ZooKeeperNode::ZooKeeperNode(ZooKeeperNodeOptions options) : options_(std::move(options)) {}

std::string ZooKeeperNode::connect_string() const {
  return "127.0.0.1:" + std::to_string(options_.client_port);
}

Status ZooKeeperNode::write_config() const {
  std::error_code ec;
  std::filesystem::create_directories(data_dir(), ec);
  if (ec) {
    return make_error(ErrorCode::kInternal,
                      "cannot create " + data_dir().string() + ": " + ec.message());
  }
  std::ofstream cfg(config_file(), std::ios::trunc);
  cfg << "# Written by tallyctl; a standalone ZooKeeper for one local Tally cluster.\n"
      << "tickTime=" << options_.tick_ms << "\n"
      << "dataDir=" << data_dir().string() << "\n"
      << "clientPort=" << options_.client_port << "\n"
      << "clientPortAddress=127.0.0.1\n"
      << "# The admin server would listen on 0.0.0.0:8080.\n"
      << "admin.enableServer=false\n"
      << "4lw.commands.whitelist=ruok,srvr,stat,mntr\n"
      << "maxClientCnxns=200\n"
      << "autopurge.snapRetainCount=3\n"
      << "autopurge.purgeInterval=1\n";
  if (!cfg) {
    return make_error(ErrorCode::kInternal, "cannot write " + config_file().string());
  }
  cfg.close();
  if (options_.run_as) {
    for (const auto& p : {options_.dir, data_dir(), config_file()}) {
      if (chown(p.c_str(), options_.run_as->uid, options_.run_as->gid) != 0) {
        return make_error(ErrorCode::kInternal, "cannot chown " + p.string());
      }
    }
  }
  return ok_status();
}

Result<pid_t> ZooKeeperNode::start(std::chrono::milliseconds timeout) {
  if (auto st = write_config(); !st) return st.error();
  SpawnOptions spawn;
  spawn.argv = {"java",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-Dzookeeper.admin.enableServer=false",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-cp",
                kClassPath,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                config_file().string()};
  spawn.log_file = log_file();
  spawn.run_as = options_.run_as;
  spawn.working_dir = options_.dir;
  auto pid = spawn_daemon(spawn);
  if (!pid) return pid.error();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (responds()) return *pid;
    if (!process_alive(*pid)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  bool alive = process_alive(*pid);
  if (alive) (void)stop(*pid);
  return make_error(ErrorCode::kUnavailable,
                    std::string("ZooKeeper on 127.0.0.1:") + std::to_string(options_.client_port) +
                        (alive ? " did not answer in time" : " exited during start-up") + "; log " +
                        log_file().string() + ":\n" + tail_file(log_file()));
}

bool ZooKeeperNode::responds() const {
  return zk_four_letter(options_.client_port, "ruok") == "imok";
}

Status ZooKeeperNode::stop(pid_t pid) const {
  return stop_process(pid, config_file().string(), SIGTERM, std::chrono::seconds(10));
}

std::string zk_four_letter(int port, const std::string& command,
                           std::chrono::milliseconds timeout) {
  // ZooKeeper answers and closes the connection.
  return loopback_exchange(port, command, timeout);
}

}  // namespace tally
