#include "tallyctl/src/pg_session.h"

namespace tally {

Result<PgSession> PgSession::connect(const std::string& conninfo) {
  PgSession session(PQconnectdb(conninfo.c_str()));
  if (PQstatus(session.conn_.get()) != CONNECTION_OK) {
    std::string message = PQerrorMessage(session.conn_.get());
    while (!message.empty() && message.back() == '\n') message.pop_back();
    return make_error(ErrorCode::kUnavailable, message);
  }
  return session;
}

Result<std::string> PgSession::value(const std::string& sql) {
  std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(conn_.get(), sql.c_str()), &PQclear);
  auto status = PQresultStatus(res.get());
  if (status == PGRES_COMMAND_OK) return std::string();
  if (status != PGRES_TUPLES_OK) {
    const char* code = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
    std::string message = PQresultErrorMessage(res.get());
    while (!message.empty() && message.back() == '\n') message.pop_back();
    return make_error(ErrorCode::kInternal,
                      (code ? std::string(code) + ": " : std::string()) + message);
  }
  if (PQntuples(res.get()) < 1 || PQnfields(res.get()) < 1) return std::string();
  return std::string(PQgetvalue(res.get(), 0, 0));
}

}  // namespace tally
