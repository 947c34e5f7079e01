// PgSession: one blocking libpq connection for tallyctl's operator commands (switchover, rejoin,
// status checks): run a statement, read its first value. The connection closes with the object.
// Blocking by design: tallyctl is a command-line tool with one control thread.
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <string>

#include "common/core/result.h"

namespace tally {

class PgSession {
 public:
  // kUnavailable (with libpq's message) when the server does not accept the connection.
  static Result<PgSession> connect(const std::string& conninfo);

  // The first value of the first row; "" when the statement returned no rows or for a command.
  // kInternal with the server's message (and SQLSTATE) when the statement fails.
  Result<std::string> value(const std::string& sql);
  Status exec(const std::string& sql) {
    auto v = value(sql);
    return v ? ok_status() : Status(v.error());
  }

 private:
  explicit PgSession(PGconn* conn) : conn_(conn, &PQfinish) {}
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn_;
};

}  // namespace tally
