// AnalystSession: one analyst client on the PostgreSQL wire protocol (3.0): startup, md5 password
// authentication of the configured analyst user, then the simple query protocol. Each statement is
// planned (common/sql/query_planner), run on its shards in parallel (AnalystExecutor) and merged
// (common/sql/result_merge). The extended protocol is refused with 0A000 per message batch.
// Runs on its own thread with blocking socket I/O (the server gives each session one thread).
#pragma once

#include <atomic>
#include <string>

#include "cluster_proxy/src/analyst_config.h"
#include "cluster_proxy/src/analyst_executor.h"
#include "cluster_proxy/src/topology_cache.h"
#include "common/pgwire/frontend_decoder.h"

namespace tally::cluster_proxy {

class AnalystSession {
 public:
  AnalystSession(int fd, const AnalystConfig& config, const std::string& database,
                 int connect_timeout_ms, const TopologyCache& topology, int32_t process_id);
  // Serves the client until it leaves, the connection breaks or a protocol error ends it.
  void run();

 private:
  bool send(const std::string& bytes);
  // Blocks until the decoder has a message; false on EOF, a socket error or a protocol error
  // (after sending it as FATAL).
  bool next(pgwire::FrontendMessage& out);
  bool startup();
  void simple_query(std::string_view sql, std::string& out);
  void execute(std::string_view sql, std::string& out);

  int fd_;
  const AnalystConfig& config_;
  const TopologyCache& topology_;
  int32_t process_id_;
  pgwire::FrontendDecoder decoder_;
  AnalystExecutor executor_;
};

}  // namespace tally::cluster_proxy
