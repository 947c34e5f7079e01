// The `analyst` section of the cluster proxy's config: the PostgreSQL-wire endpoint for analyst SQL
// (issue 7). Absent section: no endpoint. Parsed at start-up (ConfigError names file and key);
// immutable afterwards.
#pragma once

#include <string>

#include "common/config/yaml_reader.h"

namespace tally::cluster_proxy {

struct AnalystConfig {
  bool enabled = false;
  int pg_port = 0;  // 0: any free port
  // The one login the endpoint accepts (md5 password authentication). The cluster proxy connects
  // to the shard proxies as this same user, the PostgreSQL role with SELECT only
  // (migrations/0003), so PostgreSQL enforces read-only as well.
  std::string user;
  std::string password;
  int max_sessions = 64;              // one thread each
  int statement_timeout_ms = 30000;   // whole statement, all shards
  int64_t max_result_rows = 1000000;  // rows held for one merged result
  // POST /v1/sql: threads running statements (each with its own shard connections) and how many
  // requests may wait for one (more: 503).
  int http_threads = 4;
  int http_queue = 64;
};

// Reads the keys of `section` (pg_port, user, password, max_sessions, statement_timeout_ms,
// max_result_rows, http_threads, http_queue) and finishes it.
AnalystConfig load_analyst_config(ConfigSection& section);

}  // namespace tally::cluster_proxy
