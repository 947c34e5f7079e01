#include "cluster_proxy/src/analyst_executor.h"

#include <poll.h>

#include <algorithm>

#include "common/core/host_port.h"

namespace tally::cluster_proxy {
namespace {

// A result's column descriptions, as the merge and the wire encoder need them.
std::vector<sql::ResultColumn> columns_of(const PGresult* r) {
  std::vector<sql::ResultColumn> columns;
  for (int f = 0; f < PQnfields(r); ++f) {
    sql::ResultColumn c;
    c.name = PQfname(r, f);
    c.type_oid = PQftype(r, f);
    c.type_size = static_cast<int16_t>(PQfsize(r, f));
    c.type_modifier = PQfmod(r, f);
    columns.push_back(std::move(c));
  }
  return columns;
}

SqlError from_result(const PGresult* r, const std::string& shard) {
  SqlError e;
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char* msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  const char* detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
  const char* hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
  e.sqlstate = state ? state : "XX000";
  e.message = msg ? msg : PQresultErrorMessage(r);
  e.detail = detail ? detail : "";
  if (!shard.empty())
    e.detail += (e.detail.empty() ? "" : " ") + std::string("(shard ") + shard + ")";
  e.hint = hint ? hint : "";
  return e;
}

}  // namespace

AnalystExecutor::AnalystExecutor(std::string database, std::string user, std::string password,
                                 int connect_timeout_ms)
    : database_(std::move(database)),
      user_(std::move(user)),
      password_(std::move(password)),
      connect_timeout_ms_(connect_timeout_ms) {}

PGconn* AnalystExecutor::connection(const ShardTarget& target, SqlError& error) {
  auto it = connections_.find(target.address);
  if (it != connections_.end() && PQstatus(it->second.get()) == CONNECTION_OK &&
      PQtransactionStatus(it->second.get()) == PQTRANS_IDLE) {
    return it->second.get();
  }
  if (it != connections_.end()) connections_.erase(it);
  const HostPortText node = split_host_port(target.address, "5432");
  const std::string host(node.host);
  const std::string port(node.port);
  std::string timeout = std::to_string(std::max(1, (connect_timeout_ms_ + 999) / 1000));
  const char* keys[] = {
      "host", "port", "dbname", "user", "password", "connect_timeout", "application_name", nullptr};
  const char* values[] = {host.c_str(),      port.c_str(),    database_.c_str(), user_.c_str(),
                          password_.c_str(), timeout.c_str(), "tally-analyst",   nullptr};
  Conn conn(PQconnectdbParams(keys, values, 0), &PQfinish);
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    error.sqlstate = "08006";
    error.message = "cannot connect to the shard proxy " + target.address + " of shard " +
                    target.shard + ": " + (conn ? PQerrorMessage(conn.get()) : "out of memory");
    while (!error.message.empty() && error.message.back() == '\n') error.message.pop_back();
    return nullptr;
  }
  PGconn* raw = conn.get();
  connections_.emplace(target.address, std::move(conn));
  return raw;
}

bool AnalystExecutor::run(const std::vector<ShardTarget>& targets, const std::string& sql,
                          const ShardParams* params, std::chrono::steady_clock::time_point deadline,
                          std::vector<ShardAnswer>& answers, SqlError& error) {
  std::vector<const char*> param_values;
  std::vector<int> lengths;
  std::vector<Oid> types;
  if (params != nullptr) {
    for (std::size_t i = 0; i < params->values.size(); ++i) {
      const auto& v = params->values[i];
      param_values.push_back(v ? v->data() : nullptr);
      lengths.push_back(v ? static_cast<int>(v->size()) : 0);
      types.push_back(params->types[i]);
    }
  }
  answers.assign(targets.size(), ShardAnswer{});
  std::vector<PGconn*> conns(targets.size(), nullptr);
  for (std::size_t i = 0; i < targets.size(); ++i) {
    conns[i] = connection(targets[i], error);
    if (conns[i] == nullptr) return false;
  }
  std::vector<bool> done(targets.size(), false);
  std::vector<bool> sent(targets.size(), false);
  bool failed = false;
  auto drop = [&](std::size_t i) {
    connections_.erase(targets[i].address);
    conns[i] = nullptr;
    done[i] = true;
  };
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const int rc = params == nullptr ? PQsendQuery(conns[i], sql.c_str())
                                     : PQsendQueryParams(conns[i], sql.c_str(),
                                                         static_cast<int>(param_values.size()),
                                                         types.data(), param_values.data(),
                                                         lengths.data(), params->formats.data(), 0);
    if (rc != 1) {
      error.sqlstate = "08006";
      error.message =
          "lost the connection to shard " + targets[i].shard + ": " + PQerrorMessage(conns[i]);
      drop(i);
      failed = true;
      break;
    }
    sent[i] = true;
  }
  // Collect every sent query's results, even after a failure, so reused connections are idle.
  std::size_t remaining = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (!sent[i]) done[i] = true;
    if (!done[i]) ++remaining;
  }
  while (remaining > 0) {
    for (std::size_t i = 0; i < targets.size(); ++i) {
      if (done[i]) continue;
      if (PQconsumeInput(conns[i]) != 1) {
        if (!failed) {
          error.sqlstate = "08006";
          error.message = "lost the connection to shard " + targets[i].shard;
        }
        failed = true;
        drop(i);
        --remaining;
        continue;
      }
      while (!done[i] && PQisBusy(conns[i]) == 0) {
        PGresult* r = PQgetResult(conns[i]);
        if (r == nullptr) {
          done[i] = true;
          --remaining;
          break;
        }
        std::unique_ptr<PGresult, decltype(&PQclear)> res(r, &PQclear);
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
          auto& a = answers[i];
          a.command_tag = PQcmdStatus(r);
          const int nf = PQnfields(r);
          a.result.columns = columns_of(r);
          const int nr = PQntuples(r);
          a.result.rows.reserve(nr);
          for (int row = 0; row < nr; ++row) {
            sql::Row values(nf);
            for (int f = 0; f < nf; ++f) {
              if (!PQgetisnull(r, row, f)) {
                values[f] = std::string(PQgetvalue(r, row, f), PQgetlength(r, row, f));
              }
            }
            a.result.rows.push_back(std::move(values));
          }
        } else if (!failed) {
          failed = true;
          error = from_result(r, targets.size() > 1 ? targets[i].shard : "");
        }
      }
    }
    if (remaining == 0) break;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      if (!failed) {
        error.sqlstate = "57014";
        error.message = "canceling statement due to statement timeout";
        error.hint = "narrow the query or raise analyst.statement_timeout_ms";
      }
      failed = true;
      for (std::size_t i = 0; i < targets.size(); ++i) {
        if (!done[i]) drop(i);  // closing the connection abandons the query
      }
      break;
    }
    std::vector<pollfd> fds;
    for (std::size_t i = 0; i < targets.size(); ++i) {
      if (!done[i]) fds.push_back(pollfd{PQsocket(conns[i]), POLLIN, 0});
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    poll(fds.data(), fds.size(), static_cast<int>(std::min<int64_t>(wait + 1, 1000)));
  }
  return !failed;
}

bool AnalystExecutor::collect(const ShardTarget& target, PGconn* conn,
                              std::chrono::steady_clock::time_point deadline,
                              std::vector<Res>& results, SqlError& error) {
  bool failed = false;
  for (;;) {
    if (PQconsumeInput(conn) != 1) {
      error.sqlstate = "08006";
      error.message = "lost the connection to shard " + target.shard;
      connections_.erase(target.address);
      return false;
    }
    while (PQisBusy(conn) == 0) {
      PGresult* r = PQgetResult(conn);
      if (r == nullptr) return !failed;
      Res res(r, &PQclear);
      ExecStatusType st = PQresultStatus(r);
      if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        if (!failed) error = from_result(r, "");
        failed = true;
      } else {
        results.push_back(std::move(res));
      }
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      error.sqlstate = "57014";
      error.message = "canceling statement due to statement timeout";
      error.hint = "narrow the query or raise analyst.statement_timeout_ms";
      connections_.erase(target.address);
      return false;
    }
    pollfd fd{PQsocket(conn), POLLIN, 0};
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    poll(&fd, 1, static_cast<int>(std::min<int64_t>(wait + 1, 1000)));
  }
}

bool AnalystExecutor::describe(const ShardTarget& target, const std::string& sql,
                               const std::vector<uint32_t>& parameter_types,
                               std::chrono::steady_clock::time_point deadline,
                               StatementDescription& out, SqlError& error) {
  PGconn* conn = connection(target, error);
  if (conn == nullptr) return false;
  std::vector<Oid> types(parameter_types.begin(), parameter_types.end());
  std::vector<Res> results;
  if (PQsendPrepare(conn, "", sql.c_str(), static_cast<int>(types.size()), types.data()) != 1) {
    error.sqlstate = "08006";
    error.message = "lost the connection to shard " + target.shard + ": " + PQerrorMessage(conn);
    connections_.erase(target.address);
    return false;
  }
  if (!collect(target, conn, deadline, results, error)) return false;
  results.clear();
  if (PQsendDescribePrepared(conn, "") != 1) {
    error.sqlstate = "08006";
    error.message = "lost the connection to shard " + target.shard + ": " + PQerrorMessage(conn);
    connections_.erase(target.address);
    return false;
  }
  if (!collect(target, conn, deadline, results, error)) return false;
  if (results.empty()) {
    error.sqlstate = "XX000";
    error.message = "shard " + target.shard + " sent no statement description";
    return false;
  }
  const PGresult* r = results.front().get();
  out.parameter_types.clear();
  for (int i = 0; i < PQnparams(r); ++i) out.parameter_types.push_back(PQparamtype(r, i));
  out.columns = columns_of(r);
  out.returns_rows = !out.columns.empty();
  return true;
}

}  // namespace tally::cluster_proxy
