// ZooKeeperNode: one standalone ZooKeeper 3.8 server from Debian's package, on loopback, with its
// data and logs under a directory the caller owns. Writes zoo.cfg (client port bound to 127.0.0.1,
// admin server off), starts the JVM as a detached daemon and stops it by PID.
// Used by `tallyctl cluster` and by tests; call from one control thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>

#include "common/core/result.h"
#include "common/process/system_user.h"

namespace tally {

struct ZooKeeperNodeOptions {
  std::filesystem::path dir;  // config, data and log live here
  int client_port = 2181;
  int tick_ms = 500;  // sessions may time out between 2 and 20 ticks
  std::optional<SystemUser> run_as;
};

class ZooKeeperNode {
 public:
  explicit ZooKeeperNode(ZooKeeperNodeOptions options);

  std::filesystem::path config_file() const { return options_.dir / "zoo.cfg"; }
  // The JVM's own output (stdout, stderr); the server's log is server_log_file() and the files it
  // rotates to, zookeeper.1.log and zookeeper.2.log.
  std::filesystem::path log_file() const { return options_.dir / "zookeeper.log"; }
  std::filesystem::path server_log_file() const { return options_.dir / "zookeeper.0.log"; }
  std::filesystem::path logging_config_file() const { return options_.dir / "logging.properties"; }
  std::filesystem::path data_dir() const { return options_.dir / "data"; }
  int client_port() const { return options_.client_port; }
  std::string connect_string() const;

  // Writes the configuration (idempotent) and starts the server; returns once it answers `ruok`
  // or fails with the log's tail after `timeout`.
  Result<pid_t> start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // True when the server answers the `ruok` four-letter command with `imok`.
  bool responds() const;
  // Stops a server started from this directory (the PID is checked against the config path).
  Status stop(pid_t pid) const;

 private:
  Status write_config() const;
  ZooKeeperNodeOptions options_;
};

// Sends a four-letter command to 127.0.0.1:port and returns the reply ("" on any failure).
std::string zk_four_letter(int port, const std::string& command,
                           std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));

}  // namespace tally
