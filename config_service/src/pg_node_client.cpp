#include "config_service/src/pg_node_client.h"

#include <poll.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>

#include "common/core/host_port.h"
#include "common/pgclient/conninfo.h"

namespace tally::config_service {
namespace {

std::string trimmed(const char* message) {
  std::string m = message ? message : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

}  // namespace

std::string pg_conninfo(const std::string& address, const PgAccess& access) {
  const HostPortText node = split_host_port(address, "5432");
  // libpq's connect_timeout is whole seconds, at least 2.
  const int timeout_s = std::max(2, (access.connect_timeout_ms + 999) / 1000);
  return build_conninfo({{"host", node.host},
                         {"port", node.port},
                         {"dbname", access.database},
                         {"user", access.user},
                         {"password", access.password},
                         {"connect_timeout", std::to_string(timeout_s)},
                         {"application_name", "config_service"}});
}

PgNodeClient::PgNodeClient(std::string address, const PgAccess& access)
    : address_(std::move(address)) {
  // The checks must never hang on a wedged node for longer than a round or two.
  conninfo_ = pg_conninfo(address_, access);
  append_conninfo_param(conninfo_, "options",
                        "-c statement_timeout=" + std::to_string(access.statement_timeout_ms));
  // The server cancels a slow statement itself; the client gives up a second after that.
  answer_timeout_ = std::chrono::milliseconds(access.statement_timeout_ms + 1000);
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
    std::unique_ptr<PGresult, decltype(&PQclear)> res(nullptr, &PQclear);
    if (PQsendQuery(*conn, sql.c_str()) == 1) {
      // A frozen node (SIGSTOP, a paused VM) accepts the bytes but never answers, and its own
      // statement_timeout cannot fire; without this deadline the supervisor thread would block
      // for good and stop checking every node of the shard.
      const auto deadline = std::chrono::steady_clock::now() + answer_timeout_;
      auto ready = [&]() -> bool {
        while (PQisBusy(*conn) == 1) {
          auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
          if (left <= 0) return false;
          pollfd p{PQsocket(*conn), POLLIN, 0};
          int rc = ::poll(&p, 1, static_cast<int>(left));
          if (rc < 0 && errno != EINTR) return true;  // PQgetResult reports the broken socket
          if (rc > 0 && PQconsumeInput(*conn) == 0) return true;
        }
        return true;
      };
      if (!ready()) {
        conn_.reset();
        return make_error(ErrorCode::kUnavailable, "no answer within " +
                                                       std::to_string(answer_timeout_.count()) +
                                                       " ms (the node may be frozen)");
      }
      res.reset(PQgetResult(*conn));
      // Drain to the end of the query (single statements: nothing more than the final NULL).
      for (;;) {
        if (!ready()) {
          conn_.reset();
          return make_error(
              ErrorCode::kUnavailable,
              "the answer did not end within " + std::to_string(answer_timeout_.count()) + " ms");
        }
        std::unique_ptr<PGresult, decltype(&PQclear)> more(PQgetResult(*conn), &PQclear);
        if (!more) break;
      }
    }
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
    std::string message = trimmed(res ? PQresultErrorMessage(res.get()) : PQerrorMessage(*conn));
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
