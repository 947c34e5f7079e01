// AnalystSession: one analyst client on the PostgreSQL wire protocol (3.0): startup, md5 password
// authentication of the configured analyst user, then the simple and the extended query protocol
// (Parse/Bind/Describe/Execute/Close/Flush/Sync; named and unnamed statements and portals; text
// and binary parameters, which go to the shards as parameters). Each statement runs through
// analyst_query.h. A portal's result is materialised when it is first described or executed;
// Execute with max_rows pages through it (PortalSuspended). After an error in an extended batch
// every message up to Sync is skipped, as PostgreSQL does.
// Runs on its own thread with blocking socket I/O (the server gives each session one thread).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster_proxy/src/analyst_config.h"
#include "cluster_proxy/src/analyst_executor.h"
#include "cluster_proxy/src/analyst_query.h"
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
  void simple_query(std::string_view sql);

  // Extended protocol. Each returns false after appending an ErrorResponse (then the batch is
  // skipped up to Sync).
  struct Prepared {
    std::string sql;
    std::vector<uint32_t> declared_types;  // from Parse, 0 = unspecified
    int parameter_count = 0;               // max(declared, highest $n in the text)
    std::optional<StatementDescription> description;
  };
  struct Portal {
    std::shared_ptr<Prepared> statement;
    ShardParams params;
    std::vector<int16_t> result_formats;  // as sent in Bind: 0, 1 or one per column
    bool materialised = false;
    StatementOutcome outcome;
    std::vector<int16_t> formats;  // one per result column, after materialising
    std::size_t sent = 0;          // rows already sent by Execute
  };
  bool parse(const pgwire::Parse& m);
  bool bind(const pgwire::Bind& m);
  bool describe(const pgwire::Describe& m);
  bool execute(const pgwire::Execute& m);
  void close(const pgwire::Close& m);
  bool describe_statement(Prepared& statement);
  bool materialise(Portal& portal);
  void fail(const SqlError& error);
  void append_rows_description(const sql::ResultSet& result, const std::vector<int16_t>& formats);

  int fd_;
  const AnalystConfig& config_;
  const TopologyCache& topology_;
  int32_t process_id_;
  pgwire::FrontendDecoder decoder_;
  AnalystExecutor executor_;
  std::string out_;  // responses not sent yet (sent at Sync, Flush, a simple Query, or when large)
  bool skip_to_sync_ = false;
  std::map<std::string, std::shared_ptr<Prepared>, std::less<>> statements_;
  std::map<std::string, std::unique_ptr<Portal>, std::less<>> portals_;
};

}  // namespace tally::cluster_proxy
