// A small libpq client for tests: connect, run a statement, get the first value or the error's
// SQLSTATE. Blocking; tests only.
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <vector>

namespace tally::testing {

class PgClient {
 public:
  explicit PgClient(const std::string& conninfo);
  bool ok() const { return PQstatus(conn_.get()) == CONNECTION_OK; }
  std::string error() const { return PQerrorMessage(conn_.get()); }
  PGconn* raw() const { return conn_.get(); }

  // The first value of the first row ("" when no rows), "OK" for a command, or
  // "ERROR <sqlstate>: <message>".
  std::string query(const std::string& sql);
  // Same, through the extended protocol with text parameters (the unnamed statement).
  std::string query_params(const std::string& sql, const std::vector<std::string>& params);
  // PQprepare / PQexecPrepared: named statements.
  std::string prepare(const std::string& name, const std::string& sql, int n_params);
  std::string exec_prepared(const std::string& name, const std::vector<std::string>& params);

 private:
  static std::string first_value(PGresult* result);
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn_;
};

}  // namespace tally::testing
