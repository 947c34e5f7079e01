// PgNodeClient: one blocking libpq connection from a supervisor thread to one PostgreSQL node, as
// the cluster's admin superuser: queries on a cached connection, reconnecting once when it broke.
// A cached connection alone is no proof of life (an orphan backend of a kill -9'd postmaster can
// still answer); the supervisor's probe queries carry their own check for that. Only ever used by
// the thread that owns it; never on an io thread.
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/core/result.h"

namespace tally::config_service {

struct PgAccess {
  std::string user;
  std::string password;
  std::string database = "tally";
  int connect_timeout_ms = 2000;
  int statement_timeout_ms = 2000;
};

// libpq conninfo for `address` ("host:port").
std::string pg_conninfo(const std::string& address, const PgAccess& access);

class PgNodeClient {
 public:
  using Row = std::vector<std::optional<std::string>>;

  PgNodeClient(std::string address, const PgAccess& access);

  const std::string& address() const { return address_; }
  // The rows of `sql` (one statement) on the cached connection, connecting first when needed.
  // A broken connection is dropped, so the next call reconnects; so is one that gives no answer
  // within statement_timeout_ms + 1 s (a frozen node), which is then kUnavailable.
  Result<std::vector<Row>> query(const std::string& sql);
  // A command (ALTER SYSTEM, ...): ok or the server's error.
  Status exec(const std::string& sql);
  void disconnect() { conn_.reset(); }

 private:
  Result<PGconn*> connection();

  std::string address_;
  std::string conninfo_;
  std::chrono::milliseconds answer_timeout_{3000};
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn_{nullptr, &PQfinish};
};

}  // namespace tally::config_service
