#include "tallyctl/src/zookeeper_node.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <thread>

#include "common/process/child_process.h"
#include "tallyctl/src/http_probe.h"

namespace tally {
namespace {

// Debian's zookeeper.jar names its dependencies in its manifest; slf4j-jdk14 sends the server's
// log to java.util.logging, whose FileHandler rotates it by size (logging.properties below).
constexpr const char* kClassPath = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-jdk14.jar";
constexpr uint64_t kLogFileBytes = 16ull << 20;
constexpr int kLogFiles = 3;

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
  // A record lands in zookeeper.0.log; past the limit the files shift (0 -> 1 -> 2) and the oldest
  // is dropped. A start appends to zookeeper.0.log.
  std::ofstream logging(logging_config_file(), std::ios::trunc);
  logging << "# Written by tallyctl: ZooKeeper's log, " << kLogFiles << " files of at most "
          << kLogFileBytes << " bytes (plus one record).\n"
          << "handlers = java.util.logging.FileHandler\n"
          << ".level = INFO\n"
          << "java.util.logging.FileHandler.pattern = "
          << (options_.dir / "zookeeper.%g.log").string() << "\n"
          << "java.util.logging.FileHandler.limit = " << kLogFileBytes << "\n"
          << "java.util.logging.FileHandler.count = " << kLogFiles << "\n"
          << "java.util.logging.FileHandler.append = true\n"
          << "java.util.logging.FileHandler.formatter = java.util.logging.SimpleFormatter\n"
          << "java.util.logging.SimpleFormatter.format = "
             "%1$tY-%1$tm-%1$tdT%1$tH:%1$tM:%1$tS.%1$tL %4$s %3$s: %5$s%6$s%n\n";
  if (!logging) {
    return make_error(ErrorCode::kInternal, "cannot write " + logging_config_file().string());
  }
  logging.close();
  if (options_.run_as) {
    for (const auto& p : {options_.dir, data_dir(), config_file(), logging_config_file()}) {
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
                "-Djava.util.logging.config.file=" + logging_config_file().string(),
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
                        server_log_file().string() + ":\n" + tail_file(server_log_file()) + "\n" +
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
