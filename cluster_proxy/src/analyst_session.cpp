#include "cluster_proxy/src/analyst_session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <variant>

#include "common/pgwire/backend_encoder.h"
#include "common/pgwire/md5_auth.h"
#include "common/sql/query_planner.h"
#include "common/sql/result_merge.h"

namespace tally::cluster_proxy {
namespace {

void append_error(std::string& out, const SqlError& e, std::string_view severity = "ERROR") {
  pgwire::ErrorFields f;
  f.severity = severity;
  f.sqlstate = e.sqlstate;
  f.message = e.message;
  f.detail = e.detail;
  f.hint = e.hint;
  pgwire::append_error_response(out, f);
}

void append_result(std::string& out, const sql::ResultSet& rs, const std::string& tag) {
  std::vector<pgwire::FieldDescription> fields;
  for (const auto& c : rs.columns) {
    pgwire::FieldDescription f;
    f.name = c.name;
    f.type_oid = c.type_oid;
    f.type_size = c.type_size;
    f.type_modifier = c.type_modifier;
    fields.push_back(f);
  }
  pgwire::append_row_description(out, fields);
  std::vector<std::optional<std::string_view>> values;
  for (const auto& row : rs.rows) {
    values.clear();
    for (const auto& v : row) {
      values.push_back(v ? std::optional<std::string_view>(*v) : std::nullopt);
    }
    pgwire::append_data_row(out, values);
  }
  pgwire::append_command_complete(out, tag);
}

}  // namespace

AnalystSession::AnalystSession(int fd, const AnalystConfig& config, const std::string& database,
                               int connect_timeout_ms, const TopologyCache& topology,
                               int32_t process_id)
    : fd_(fd),
      config_(config),
      topology_(topology),
      process_id_(process_id),
      executor_(database, config.user, config.password, connect_timeout_ms) {}

bool AnalystSession::send(const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

bool AnalystSession::next(pgwire::FrontendMessage& out) {
  for (;;) {
    auto m = decoder_.next();
    if (!m.ok()) {
      std::string err;
      pgwire::append_error_response(err, m.error(), "FATAL");
      send(err);
      return false;
    }
    if (*m) {
      out = std::move(**m);
      return true;
    }
    auto buf = decoder_.prepare(std::max<std::size_t>(decoder_.bytes_wanted(), 8192));
    ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    decoder_.commit(static_cast<std::size_t>(n));
  }
}

bool AnalystSession::startup() {
  pgwire::FrontendMessage m;
  std::string out;
  for (;;) {
    if (!next(m)) return false;
    if (std::holds_alternative<pgwire::SslRequest>(m) ||
        std::holds_alternative<pgwire::GssEncRequest>(m)) {
      out.clear();
      pgwire::append_encryption_refused(out);
      if (!send(out)) return false;
      continue;
    }
    if (std::holds_alternative<pgwire::CancelRequest>(m)) return false;
    break;
  }
  auto* start = std::get_if<pgwire::StartupMessage>(&m);
  if (start == nullptr) return false;
  std::string user(start->parameter("user").value_or(""));
  decoder_.set_phase(pgwire::Phase::kNormal);
  auto salt = pgwire::make_md5_salt();
  if (!salt.ok()) return false;
  out.clear();
  pgwire::append_authentication_md5_password(out, *salt);
  if (!send(out)) return false;
  if (!next(m)) return false;
  auto* auth = std::get_if<pgwire::AuthResponse>(&m);
  Status verified = make_error(ErrorCode::kUnauthenticated, pgwire::password_failed_message(user));
  if (auth != nullptr && user == config_.user) {
    auto response = pgwire::parse_password_message(auth->payload);
    if (response.ok()) {
      verified = pgwire::verify_md5_response(
          user, pgwire::md5_password_hash(config_.user, config_.password), *salt, *response);
    }
  }
  out.clear();
  if (!verified) {
    SqlError e;
    e.sqlstate = "28P01";
    e.message = pgwire::password_failed_message(user);
    append_error(out, e, "FATAL");
    send(out);
    return false;
  }
  pgwire::append_authentication_ok(out);
  pgwire::append_parameter_status(out, "server_version", "15.0 (tally cluster proxy)");
  pgwire::append_parameter_status(out, "server_encoding", "UTF8");
  pgwire::append_parameter_status(out, "client_encoding", "UTF8");
  pgwire::append_parameter_status(out, "DateStyle", "ISO, MDY");
  pgwire::append_parameter_status(out, "integer_datetimes", "on");
  pgwire::append_parameter_status(out, "standard_conforming_strings", "on");
  pgwire::append_parameter_status(out, "default_transaction_read_only", "on");
  pgwire::append_backend_key_data(out, process_id_, 0);
  pgwire::append_ready_for_query(out, pgwire::TransactionStatus::kIdle);
  return send(out);
}

void AnalystSession::execute(std::string_view sql_text, std::string& out) {
  auto routing = topology_.routing();
  sql::QueryPlan plan = sql::plan_query(sql_text, routing->map);
  SqlError error;
  switch (plan.kind) {
    case sql::QueryPlan::Kind::kEmpty:
      pgwire::append_empty_query_response(out);
      return;
    case sql::QueryPlan::Kind::kNoop:
      pgwire::append_command_complete(out, plan.command_tag);
      return;
    case sql::QueryPlan::Kind::kError:
      error.sqlstate = plan.error.sqlstate;
      error.message = plan.error.message;
      error.hint = plan.error.hint;
      append_error(out, error);
      return;
    case sql::QueryPlan::Kind::kAnyShard:
      plan.shards = {0};
      break;
    case sql::QueryPlan::Kind::kShards:
      break;
  }
  std::vector<ShardTarget> targets;
  for (std::size_t i : plan.shards) {
    const auto& route = routing->shards.at(i);
    if (route.proxies.empty()) {
      error.sqlstate = "08006";
      error.message = "shard " + route.name + " has no shard proxy";
      append_error(out, error);
      return;
    }
    targets.push_back(ShardTarget{route.name, route.proxies.front()});
  }
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.statement_timeout_ms);
  std::vector<ShardAnswer> answers;
  if (!executor_.run(targets, plan.shard_sql, deadline, answers, error)) {
    append_error(out, error);
    return;
  }
  if (targets.size() == 1 && !plan.merge.combine && plan.merge.hidden_columns == 0) {
    // Verbatim on one shard: its answer as is.
    auto& a = answers.front();
    if (a.result.columns.empty() && a.result.rows.empty() &&
        a.command_tag.rfind("SELECT", 0) != 0 && a.command_tag != "SHOW") {
      pgwire::append_command_complete(out, a.command_tag);
    } else {
      append_result(out, a.result, a.command_tag);
    }
    return;
  }
  std::vector<sql::ResultSet> results;
  for (auto& a : answers) results.push_back(std::move(a.result));
  auto merged = sql::merge_results(plan.merge, std::move(results),
                                   static_cast<std::size_t>(config_.max_result_rows));
  if (!merged.ok()) {
    error.sqlstate = std::string(error_sqlstate(merged.error().code));
    if (merged.error().code == ErrorCode::kResourceExhausted) error.sqlstate = "54000";
    if (merged.error().code == ErrorCode::kInvalidArgument) error.sqlstate = "22003";
    error.message = merged.error().message;
    append_error(out, error);
    return;
  }
  append_result(out, *merged, "SELECT " + std::to_string(merged->rows.size()));
}

void AnalystSession::run() {
  if (!startup()) return;
  pgwire::FrontendMessage m;
  bool skip_to_sync = false;
  while (next(m)) {
    std::string out;
    if (auto* q = std::get_if<pgwire::Query>(&m)) {
      execute(q->sql, out);
      pgwire::append_ready_for_query(out, pgwire::TransactionStatus::kIdle);
    } else if (std::holds_alternative<pgwire::Terminate>(m)) {
      return;
    } else if (std::holds_alternative<pgwire::Sync>(m)) {
      skip_to_sync = false;
      pgwire::append_ready_for_query(out, pgwire::TransactionStatus::kIdle);
    } else if (std::holds_alternative<pgwire::Flush>(m)) {
      continue;
    } else {
      if (skip_to_sync) continue;
      skip_to_sync = true;
      SqlError e;
      e.sqlstate = "0A000";
      e.message = std::string("the analyst endpoint does not support ") +
                  std::string(pgwire::message_name(m)) + " messages (extended query protocol)";
      e.hint =
          "use the simple query protocol (psql does; psycopg2 does by default; JDBC with "
          "preferQueryMode=simple)";
      append_error(out, e);
    }
    if (!send(out)) return;
  }
}

}  // namespace tally::cluster_proxy
