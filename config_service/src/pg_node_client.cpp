#include "config_service/src/pg_node_client.h"

#include <cstdlib>

namespace tally::config_service {
namespace {

std::string quote(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string trimmed(const char* message) {
  std::string m = message ? message : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

}  // namespace

std::string pg_conninfo(const std::string& address, const PgAccess& access) {
  auto colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  std::string port = colon == std::string::npos ? "5432" : address.substr(colon + 1);
  // libpq's connect_timeout is whole seconds, at least 2.
  int timeout_s = std::max(2, (access.connect_timeout_ms + 999) / 1000);
  return "host=" + quote(host) + " port=" + quote(port) + " dbname=" + quote(access.database) +
         " user=" + quote(access.user) + " password=" + quote(access.password) +
         " connect_timeout=" + std::to_string(timeout_s) + " application_name=config_service";
}

uint64_t parse_lsn(const char* text) {
  if (text == nullptr || *text == '\0') return 0;
  char* slash = nullptr;
  uint64_t hi = std::strtoull(text, &slash, 16);
  if (slash == nullptr || *slash != '/') return 0;
  uint64_t lo = std::strtoull(slash + 1, nullptr, 16);
  return (hi << 32) | lo;
}

PgNodeClient::PgNodeClient(std::string address, const PgAccess& access)
    : address_(std::move(address)) {
  // The checks must never hang on a wedged node for longer than a round or two.
  conninfo_ = pg_conninfo(address_, access) +
              " options='-c statement_timeout=" + std::to_string(access.statement_timeout_ms) + "'";
}

Result<PGconn*> PgNodeClient::connection() {
  if (conn_ && PQstatus(conn_.get()) == CONNECTION_OK) return conn_.get();
  conn_.reset(PQconnectdb(conninfo_.c_str()));
  if (PQstatus(conn_.get()) != CONNECTION_OK) {
    std::string message = trimmed(PQerrorMessage(conn_.get()));
    conn_.reset();
    return make_error(ErrorCode::kUnavailable, "connect: " + message);
  }
  return conn_.get();
}

Result<std::vector<PgNodeClient::Row>> PgNodeClient::query(const std::string& sql) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto conn = connection();
    if (!conn) return conn.error();
    std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(*conn, sql.c_str()), &PQclear);
    auto status = PQresultStatus(res.get());
    if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
      std::vector<Row> rows;
      for (int r = 0; r < PQntuples(res.get()); ++r) {
        Row row;
        for (int c = 0; c < PQnfields(res.get()); ++c) {
          if (PQgetisnull(res.get(), r, c)) {
            row.emplace_back(std::nullopt);
          } else {
            row.emplace_back(PQgetvalue(res.get(), r, c));
          }
        }
        rows.push_back(std::move(row));
      }
      return rows;
    }
    std::string message = trimmed(PQresultErrorMessage(res.get()));
    if (PQstatus(*conn) == CONNECTION_OK) {
      return make_error(ErrorCode::kInternal, message);  // the server answered with an error
    }
    // The connection broke (a restarted server, a terminated backend): once more on a new one.
    conn_.reset();
    if (attempt == 1) return make_error(ErrorCode::kUnavailable, "query: " + message);
  }
  return make_error(ErrorCode::kUnavailable, "query failed");
}

Status PgNodeClient::exec(const std::string& sql) {
  auto rows = query(sql);
  if (!rows) return rows.error();
  return ok_status();
}

}  // namespace tally::config_service
