#include "tests/support/pg_client.h"

namespace tally::testing {

PgClient::PgClient(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str()), &PQfinish) {}

std::string PgClient::first_value(PGresult* raw) {
  std::unique_ptr<PGresult, decltype(&PQclear)> r(raw, &PQclear);
  auto st = PQresultStatus(r.get());
  if (st == PGRES_COMMAND_OK) return "OK";
  if (st != PGRES_TUPLES_OK) {
    const char* code = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    return std::string("ERROR ") + (code ? code : "?") + ": " + PQresultErrorMessage(r.get());
  }
  if (PQntuples(r.get()) == 0) return "";
  return PQgetvalue(r.get(), 0, 0);
}

std::string PgClient::query(const std::string& sql) {
  return first_value(PQexec(conn_.get(), sql.c_str()));
}

std::string PgClient::query_params(const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  return first_value(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()),
                                  nullptr, values.data(), nullptr, nullptr, 0));
}

std::string PgClient::prepare(const std::string& name, const std::string& sql, int n_params) {
  return first_value(PQprepare(conn_.get(), name.c_str(), sql.c_str(), n_params, nullptr));
}

std::string PgClient::exec_prepared(const std::string& name,
                                    const std::vector<std::string>& params) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  return first_value(PQexecPrepared(conn_.get(), name.c_str(), static_cast<int>(values.size()),
                                    values.data(), nullptr, nullptr, 0));
}

}  // namespace tally::testing
