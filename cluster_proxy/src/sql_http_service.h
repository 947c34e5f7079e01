// SqlHttpService: POST /v1/sql, analyst SQL over HTTP (docs/rest-api.md). The same planner,
// executor, read-only rules, statement timeout and row limit as the PostgreSQL-wire endpoint
// (analyst_query.h). handle() validates the JSON body on the HTTP io thread and queues the
// statement; a small pool of SQL threads (each with its own shard connections, blocking libpq)
// runs it and responds through the Responder (callable from any thread), so no io thread blocks.
// Answers JSON (columns with names and types, rows) or CSV (`Accept: text/csv` or ?format=csv);
// errors as JSON with the SQLSTATE. Thread: start()/stop() from the owner; handle() on io threads.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster_proxy/src/analyst_config.h"
#include "cluster_proxy/src/analyst_query.h"
#include "cluster_proxy/src/topology_cache.h"
#include "common/http/http_server.h"

namespace tally::cluster_proxy {

class SqlHttpService {
 public:
  SqlHttpService(AnalystConfig config, std::string database, int connect_timeout_ms,
                 const TopologyCache& topology);
  ~SqlHttpService();
  SqlHttpService(const SqlHttpService&) = delete;
  SqlHttpService& operator=(const SqlHttpService&) = delete;

  void start();
  // Answers queued requests 503, joins the threads. Idempotent.
  void stop();
  // POST /v1/sql (authentication is the caller's: the REST read rules).
  void handle(HttpRequest&& request, Responder respond);

 private:
  struct Job {
    std::string sql;
    bool has_params = false;
    ShardParams params;
    bool csv = false;
    Responder respond;
  };
  void loop();

  AnalystConfig config_;
  std::string database_;
  int connect_timeout_ms_;
  const TopologyCache& topology_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// The HTTP status for an SQLSTATE: 400 for a bad statement (syntax, undefined objects, data,
// 0A000, 54000), 403 read-only/privileges, 504 statement timeout, 503 a shard unreachable, 500
// otherwise.
int http_status_for_sqlstate(std::string_view sqlstate);

// CSV (RFC 4180): a header of column names, then one line per row; NULL is an empty field, an
// empty string "".
std::string result_to_csv(const sql::ResultSet& result);
// JSON: {"columns":[{"name","type","type_oid"}],"rows":[[...]],"row_count","command_tag"}.
// int2/int4/int8/oid and finite float4/float8 as numbers, bool as true/false, numeric and
// everything else as strings (numeric keeps PostgreSQL's scale), NULL as null.
std::string result_to_json(const sql::ResultSet& result, const std::string& command_tag);

}  // namespace tally::cluster_proxy
