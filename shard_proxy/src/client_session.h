// ClientSession: one client connection to the shard proxy, from the startup packet to Terminate.
// It authenticates the client (SCRAM-SHA-256, md5 or trust), then turns its simple and extended
// query protocol messages into libpq calls on a pooled server connection (transaction pooling: a
// server connection is held from the first statement of a transaction to its end), routes sure
// reads to the replica when it is fresh enough, serves cacheable reads from the result cache, and
// encodes every result back into protocol messages. Prepared statements live in the session and
// are re-prepared on whichever server connection runs them.
// Thread: all of it runs on its worker's io_context thread.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "common/pgclient/backend_connection.h"
#include "common/pgclient/backend_pool.h"
#include "common/pgwire/backend_encoder.h"
#include "common/pgwire/frontend_decoder.h"
#include "common/pgwire/scram.h"
#include "shard_proxy/src/statement_router.h"
#include "shard_proxy/src/worker.h"

namespace tally::shard_proxy {

class ClientSession : public std::enable_shared_from_this<ClientSession>, private ResultSink {
 public:
  ClientSession(Worker& worker, boost::asio::ip::tcp::socket socket);
  ~ClientSession() override;
  void start();

 private:
  // Owned copies of the extended-protocol messages of one batch (up to Sync).
  struct ParseMsg {
    std::string name, query;
    std::vector<uint32_t> types;
  };
  struct BindMsg {
    std::string portal, statement;
    std::vector<int16_t> parameter_formats;
    std::vector<std::optional<std::string>> parameters;
    std::vector<int16_t> result_formats;
  };
  struct DescribeMsg {
    pgwire::TargetKind kind = pgwire::TargetKind::kStatement;
    std::string name;
  };
  struct ExecuteMsg {
    std::string portal;
    int32_t max_rows = 0;
  };
  struct CloseMsg {
    pgwire::TargetKind kind = pgwire::TargetKind::kStatement;
    std::string name;
  };
  using BatchMessage = std::variant<ParseMsg, BindMsg, DescribeMsg, ExecuteMsg, CloseMsg>;

  struct Statement {
    std::string query;
    std::vector<uint32_t> types;
    std::string key;  // identity on server connections: query + parameter types
    Result<StatementTraits> traits{StatementTraits{}};  // analysed once, at Parse
  };
  struct Portal {
    std::shared_ptr<const Statement> statement;
    std::vector<int16_t> parameter_formats;
    std::vector<std::optional<std::string>> parameters;
    int result_format = 0;
    // Rows beyond an Execute's max_rows, kept here (encoded DataRows) for the next Execute.
    bool suspended = false;
    std::vector<std::string> pending_rows;
    size_t rows_sent = 0;
  };

  enum class StepKind { kLocal, kError, kPrepare, kDescribeStatement, kDescribePortal, kExecute };
  struct Step {
    StepKind kind = StepKind::kLocal;
    std::string bytes;  // kLocal / kError: what goes out when the step's turn comes
    std::shared_ptr<const Statement> statement;
    std::string statement_name;  // kPrepare: the client's name, undone if the prepare fails
    std::shared_ptr<Portal> portal;
    int32_t max_rows = 0;
    bool describe_rows = false;  // kExecute: the client sent Describe for this portal
    bool on_server = false;      // issued to the server (else emitted locally)
    bool implicit = false;       // a prepare the client did not ask for: its success is silent
    std::string prepared_key;    // the server-side statement this step registered, if any
  };

  // I/O.
  void read_more();
  void process();
  void flush_output();
  void close();
  void protocol_error(const Error& error);
  void fatal(std::string_view sqlstate, const std::string& message);

  // Startup and authentication.
  void on_startup(const pgwire::StartupMessage& message);
  void on_auth_response(std::string_view payload);
  void authenticated();

  // Requests.
  void on_query(std::string sql);
  void on_sync();
  void append_error(const Error& error);
  void append_error(std::string_view sqlstate, std::string_view message);
  pgwire::TransactionStatus transaction_status() const;

  struct Route {
    bool want_replica = false;
    // Autocommit reads only, ending at their own sync: may share a pipelined server connection.
    bool shareable = false;
    uint64_t min_lsn = 0;
    std::optional<uint32_t> cache_ttl_ms;
  };
  void run_on_server(Route route, std::function<void(BackendPool::Lease)> issue);
  // Waits (without blocking the thread) while the shard is paused, then runs on the leader; past
  // pause_hold_ms the request fails with 57P03.
  void hold_for_leader(Route route, std::function<void(BackendPool::Lease)> issue);
  void issue_batch(BackendPool::Lease& conn);
  const std::string* ensure_prepared(BackendConnection& conn, const Statement& statement,
                                     size_t before_step);
  void emit_locals_until(size_t step);
  void emit_suspended(Portal& portal, int32_t max_rows);
  // RowDescription of a result; `format` overrides the column formats when >= 0.
  void append_row_description(const PGresult* result, int16_t format = -1);
  void append_tuples(const PGresult* result, bool describe, Portal* portal, int32_t max_rows);
  void append_result_error(const PGresult* result);
  // True (and remembered) when a replica's answer says the replica is going away before anything
  // was sent to the client: the read is then replayed on the leader instead.
  bool replica_going_away(const PGresult* result);
  void exchange_finished(Status status);
  // Gives lease_ back to its pool (exclusive or shared).
  void give_back_lease();

  // ResultSink.
  void on_result(const PGresult* result) override;
  void on_step_end() override;
  void on_exchange_done(Status status) override;
  void on_notice(const PGresult* notice) override;

  void cancel_running();
  // Shutdown only (the worker's thread has stopped): drop the self-reference and the lease.
  void abandon();
  uint64_t tracking_id_ = 0;

  Worker& worker_;
  boost::asio::ip::tcp::socket socket_;
  pgwire::FrontendDecoder decoder_;
  std::string out_;
  std::string writing_;
  bool write_pending_ = false;
  bool reading_ = false;
  bool closing_ = false;

  enum class Phase { kStartup, kAuthenticating, kReady } phase_ = Phase::kStartup;
  const ProxyUser* user_ = nullptr;
  std::string user_name_;
  std::optional<pgwire::ScramServerExchange> scram_;
  bool scram_initial_sent_ = false;
  std::array<uint8_t, 4> md5_salt_{};
  int32_t process_id_ = 0;
  int32_t secret_key_ = 0;
  bool counted_ = false;

  // Request state.
  bool busy_ = false;
  bool dirty_ = false;  // the held server connection's session state was changed
  bool skip_until_sync_ = false;
  std::vector<BatchMessage> batch_;
  std::unordered_map<std::string, std::shared_ptr<const Statement>> statements_;
  std::unordered_map<std::string, std::shared_ptr<Portal>> portals_;

  // The exchange in flight. The session keeps itself alive until it ends: the server connection
  // delivers results to it even if the client hung up meanwhile.
  std::shared_ptr<ClientSession> keep_alive_;
  BackendPool::Lease lease_;
  BackendPool* lease_pool_ = nullptr;
  bool shared_lease_ = false;  // lease_ is a shared (pipelined) connection, for this exchange only
  bool simple_query_ = false;
  std::vector<Step> steps_;
  std::vector<size_t> server_steps_;
  size_t server_pos_ = 0;
  size_t emitted_until_ = 0;
  bool failed_ = false;
  size_t response_start_ = 0;
  std::string cache_key_;
  std::optional<uint32_t> cache_ttl_ms_;
  bool on_replica_ = false;
  // To replay a read on the leader when its replica connection breaks before any answer.
  Route route_;
  bool retry_on_leader_ = false;
  std::function<void(BackendPool::Lease)> issue_;
  std::vector<Step> original_steps_;
  std::chrono::steady_clock::time_point started_;
  // Held while the shard is paused: the worker's hold id (0: not held) and the deadline timer.
  uint64_t hold_id_ = 0;
  boost::asio::steady_timer hold_timer_;
  // The SQLSTATE a failed exchange reports when not the default for its error code.
  std::string failure_sqlstate_;
};

}  // namespace tally::shard_proxy
