#include "cluster_proxy/src/analyst_session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <variant>

#include "common/pgwire/backend_encoder.h"
#include "common/pgwire/binary_values.h"
#include "common/pgwire/md5_auth.h"
#include "common/sql/query_planner.h"

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
  // The shards' zone (tallyctl and docker compose set timezone = 'UTC'); a client's own TimeZone
  // startup parameter cannot be carried to them, so it is told the zone its answers are in.
  pgwire::append_parameter_status(out, "TimeZone", "UTC");
  pgwire::append_parameter_status(out, "IntervalStyle", "postgres");
  pgwire::append_parameter_status(out, "integer_datetimes", "on");
  pgwire::append_parameter_status(out, "standard_conforming_strings", "on");
  pgwire::append_parameter_status(out, "default_transaction_read_only", "on");
  pgwire::append_backend_key_data(out, process_id_, 0);
  pgwire::append_ready_for_query(out, pgwire::TransactionStatus::kIdle);
  return send(out);
}

void AnalystSession::fail(const SqlError& error) {
  append_error(out_, error);
  skip_to_sync_ = true;
}

void AnalystSession::simple_query(std::string_view sql_text) {
  // The simple protocol also drops the unnamed statement and portal, as PostgreSQL does.
  statements_.erase("");
  portals_.erase("");
  StatementOutcome o = run_analyst_statement(executor_, topology_, config_, sql_text, nullptr);
  switch (o.kind) {
    case StatementOutcome::Kind::kEmpty:
      pgwire::append_empty_query_response(out_);
      break;
    case StatementOutcome::Kind::kCommand:
      pgwire::append_command_complete(out_, o.command_tag);
      break;
    case StatementOutcome::Kind::kError:
      append_error(out_, o.error);
      break;
    case StatementOutcome::Kind::kRows:
      append_result(out_, o.result, o.command_tag);
      break;
  }
  pgwire::append_ready_for_query(out_, pgwire::TransactionStatus::kIdle);
}

bool AnalystSession::parse(const pgwire::Parse& m) {
  if (!m.statement.empty() && statements_.count(m.statement)) {
    fail(SqlError{"42P05", "prepared statement \"" + std::string(m.statement) + "\" already exists",
                  "", ""});
    return false;
  }
  auto info = sql::statement_parameters(m.query);
  if (!info.ok()) {
    fail(SqlError{"42601", info.error().message, "", ""});
    return false;
  }
  auto p = std::make_shared<Prepared>();
  p->sql = std::string(m.query);
  p->declared_types = m.parameter_types;
  p->parameter_count = std::max(static_cast<int>(m.parameter_types.size()), *info);
  p->declared_types.resize(static_cast<std::size_t>(p->parameter_count), 0);
  statements_[std::string(m.statement)] = std::move(p);
  pgwire::append_parse_complete(out_);
  return true;
}

bool AnalystSession::bind(const pgwire::Bind& m) {
  auto it = statements_.find(m.statement);
  if (it == statements_.end()) {
    fail(SqlError{"26000", "prepared statement \"" + std::string(m.statement) + "\" does not exist",
                  "", ""});
    return false;
  }
  if (!m.portal.empty() && portals_.count(m.portal)) {
    fail(SqlError{"42P03", "portal \"" + std::string(m.portal) + "\" already exists", "", ""});
    return false;
  }
  const Prepared& st = *it->second;
  if (static_cast<int>(m.parameters.size()) != st.parameter_count) {
    fail(SqlError{"08P01",
                  "bind message supplies " + std::to_string(m.parameters.size()) +
                      " parameters, but prepared statement \"" + std::string(m.statement) +
                      "\" requires " + std::to_string(st.parameter_count),
                  "", ""});
    return false;
  }
  auto portal = std::make_unique<Portal>();
  portal->statement = it->second;
  for (std::size_t i = 0; i < m.parameters.size(); ++i) {
    const auto& v = m.parameters[i];
    portal->params.values.push_back(v ? std::optional<std::string>(std::string(*v)) : std::nullopt);
    int format = m.parameter_formats.empty()       ? 0
                 : m.parameter_formats.size() == 1 ? m.parameter_formats[0]
                                                   : m.parameter_formats[i];
    uint32_t type = st.declared_types[i];
    if (type == 0 && st.description && i < st.description->parameter_types.size()) {
      type = st.description->parameter_types[i];
    }
    portal->params.types.push_back(type);
    portal->params.formats.push_back(format);
  }
  portal->result_formats = m.result_formats;
  portals_[std::string(m.portal)] = std::move(portal);
  pgwire::append_bind_complete(out_);
  return true;
}

bool AnalystSession::describe_statement(Prepared& st) {
  if (st.description) return true;
  StatementDescription d;
  SqlError error;
  if (!describe_analyst_statement(executor_, topology_, config_, st.sql, st.declared_types, d,
                                  error)) {
    fail(error);
    return false;
  }
  st.description = std::move(d);
  return true;
}

void AnalystSession::append_rows_description(const sql::ResultSet& result,
                                             const std::vector<int16_t>& formats) {
  std::vector<pgwire::FieldDescription> fields;
  for (std::size_t i = 0; i < result.columns.size(); ++i) {
    const auto& c = result.columns[i];
    pgwire::FieldDescription f;
    f.name = c.name;
    f.type_oid = c.type_oid;
    f.type_size = c.type_size;
    f.type_modifier = c.type_modifier;
    f.format = i < formats.size() ? formats[i] : 0;
    fields.push_back(f);
  }
  pgwire::append_row_description(out_, fields);
}

bool AnalystSession::materialise(Portal& portal) {
  if (portal.materialised) return true;
  portal.outcome =
      run_analyst_statement(executor_, topology_, config_, portal.statement->sql, &portal.params);
  if (portal.outcome.kind == StatementOutcome::Kind::kError) {
    fail(portal.outcome.error);
    return false;
  }
  const auto& columns = portal.outcome.result.columns;
  const auto& rf = portal.result_formats;
  if (portal.outcome.kind == StatementOutcome::Kind::kRows && rf.size() > 1 &&
      rf.size() != columns.size()) {
    fail(SqlError{"08P01",
                  "bind message has " + std::to_string(rf.size()) +
                      " result formats but query has " + std::to_string(columns.size()) +
                      " columns",
                  "", ""});
    return false;
  }
  portal.formats.clear();
  for (std::size_t i = 0; i < columns.size(); ++i) {
    int16_t f = rf.empty() ? 0 : rf.size() == 1 ? rf[0] : rf[i];
    if (f == 1 && !pgwire::binary_format_supported(columns[i].type_oid)) {
      fail(SqlError{"0A000",
                    "the analyst endpoint cannot send column \"" + columns[i].name +
                        "\" (type oid " + std::to_string(columns[i].type_oid) + ") in binary",
                    "", "request text format for that column"});
      return false;
    }
    portal.formats.push_back(f);
  }
  portal.materialised = true;
  return true;
}

bool AnalystSession::describe(const pgwire::Describe& m) {
  if (m.kind == pgwire::TargetKind::kStatement) {
    auto it = statements_.find(m.name);
    if (it == statements_.end()) {
      fail(SqlError{"26000", "prepared statement \"" + std::string(m.name) + "\" does not exist",
                    "", ""});
      return false;
    }
    if (!describe_statement(*it->second)) return false;
    const auto& d = *it->second->description;
    // Declared types win; the shard inferred the rest.
    std::vector<uint32_t> types = d.parameter_types;
    const auto& declared = it->second->declared_types;
    types.resize(std::max(types.size(), declared.size()), 0);
    for (std::size_t i = 0; i < declared.size(); ++i) {
      if (declared[i] != 0) types[i] = declared[i];
    }
    pgwire::append_parameter_description(out_, types);
    if (d.returns_rows) {
      sql::ResultSet shape;
      shape.columns = d.columns;
      append_rows_description(shape, {});
    } else {
      pgwire::append_no_data(out_);
    }
    return true;
  }
  auto it = portals_.find(m.name);
  if (it == portals_.end()) {
    fail(SqlError{"34000", "portal \"" + std::string(m.name) + "\" does not exist", "", ""});
    return false;
  }
  Portal& portal = *it->second;
  if (!materialise(portal)) return false;
  if (portal.outcome.kind == StatementOutcome::Kind::kRows) {
    append_rows_description(portal.outcome.result, portal.formats);
  } else {
    pgwire::append_no_data(out_);
  }
  return true;
}

bool AnalystSession::execute(const pgwire::Execute& m) {
  auto it = portals_.find(m.portal);
  if (it == portals_.end()) {
    fail(SqlError{"34000", "portal \"" + std::string(m.portal) + "\" does not exist", "", ""});
    return false;
  }
  Portal& portal = *it->second;
  if (!materialise(portal)) return false;
  switch (portal.outcome.kind) {
    case StatementOutcome::Kind::kEmpty:
      pgwire::append_empty_query_response(out_);
      return true;
    case StatementOutcome::Kind::kCommand:
      pgwire::append_command_complete(out_, portal.outcome.command_tag);
      return true;
    case StatementOutcome::Kind::kError:  // materialise() failed already
      return false;
    case StatementOutcome::Kind::kRows:
      break;
  }
  const auto& rows = portal.outcome.result.rows;
  const auto& columns = portal.outcome.result.columns;
  std::size_t stop = rows.size();
  if (m.max_rows > 0) stop = std::min(stop, portal.sent + static_cast<std::size_t>(m.max_rows));
  std::vector<std::string> binary(columns.size());
  std::vector<std::optional<std::string_view>> values;
  for (std::size_t r = portal.sent; r < stop; ++r) {
    values.clear();
    for (std::size_t c = 0; c < columns.size(); ++c) {
      const auto& v = rows[r][c];
      if (!v) {
        values.emplace_back(std::nullopt);
      } else if (portal.formats[c] == 1) {
        auto b = pgwire::text_to_binary(columns[c].type_oid, *v);
        if (!b.ok()) {
          fail(SqlError{std::string(error_sqlstate(b.error().code)), b.error().message, "", ""});
          return false;
        }
        binary[c] = std::move(*b);
        values.emplace_back(binary[c]);
      } else {
        values.emplace_back(*v);
      }
    }
    pgwire::append_data_row(out_, values);
    if (out_.size() > (std::size_t{1} << 20)) {
      if (!send(out_)) return false;
      out_.clear();
    }
  }
  const std::size_t sent_now = stop - portal.sent;
  portal.sent = stop;
  if (stop < rows.size()) {
    pgwire::append_portal_suspended(out_);
  } else {
    // PostgreSQL's tag counts the rows this Execute returned.
    pgwire::append_command_complete(out_, portal.outcome.command_tag.rfind("SELECT", 0) == 0
                                              ? "SELECT " + std::to_string(sent_now)
                                              : portal.outcome.command_tag);
  }
  return true;
}

void AnalystSession::close(const pgwire::Close& m) {
  if (m.kind == pgwire::TargetKind::kStatement) {
    statements_.erase(std::string(m.name));
  } else {
    portals_.erase(std::string(m.name));
  }
  pgwire::append_close_complete(out_);
}

void AnalystSession::run() {
  if (!startup()) return;
  pgwire::FrontendMessage m;
  while (next(m)) {
    bool flush = false;
    if (std::holds_alternative<pgwire::Terminate>(m)) {
      return;
    } else if (skip_to_sync_ && !std::holds_alternative<pgwire::Sync>(m)) {
      continue;  // PostgreSQL discards everything after an extended-protocol error until Sync
    } else if (auto* q = std::get_if<pgwire::Query>(&m)) {
      simple_query(q->sql);
      flush = true;
    } else if (std::holds_alternative<pgwire::Sync>(m)) {
      skip_to_sync_ = false;
      portals_.erase("");  // the implicit transaction ends: its unnamed portal goes
      pgwire::append_ready_for_query(out_, pgwire::TransactionStatus::kIdle);
      flush = true;
    } else if (std::holds_alternative<pgwire::Flush>(m)) {
      flush = true;
    } else if (auto* p = std::get_if<pgwire::Parse>(&m)) {
      parse(*p);
    } else if (auto* b = std::get_if<pgwire::Bind>(&m)) {
      bind(*b);
    } else if (auto* d = std::get_if<pgwire::Describe>(&m)) {
      describe(*d);
    } else if (auto* e = std::get_if<pgwire::Execute>(&m)) {
      execute(*e);
    } else if (auto* c = std::get_if<pgwire::Close>(&m)) {
      close(*c);
    } else {
      fail(SqlError{"08P01",
                    "unexpected " + std::string(pgwire::message_name(m)) +
                        " message (COPY and function calls are not supported)",
                    "", ""});
    }
    if (flush || out_.size() > (std::size_t{1} << 20)) {
      if (!send(out_)) return;
      out_.clear();
    }
  }
}

}  // namespace tally::cluster_proxy
