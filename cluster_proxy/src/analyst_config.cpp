#include "cluster_proxy/src/analyst_config.h"

namespace tally::cluster_proxy {

AnalystConfig load_analyst_config(ConfigSection& s) {
  AnalystConfig c;
  c.enabled = true;
  c.pg_port = static_cast<int>(s.required_int("pg_port", 0, 65535));
  c.user = s.required_string("user", "the analyst's PostgreSQL role, like tally_analyst");
  c.password = s.required_string("password", "that role's password");
  c.max_sessions = static_cast<int>(s.optional_int("max_sessions", c.max_sessions, 1, 10000));
  c.statement_timeout_ms =
      static_cast<int>(s.optional_int("statement_timeout_ms", c.statement_timeout_ms, 10, 3600000));
  c.max_result_rows = s.optional_int("max_result_rows", c.max_result_rows, 1, 1000000000);
  c.http_threads = static_cast<int>(s.optional_int("http_threads", c.http_threads, 1, 256));
  c.http_queue = static_cast<int>(s.optional_int("http_queue", c.http_queue, 1, 100000));
  s.finish();
  return c;
}

}  // namespace tally::cluster_proxy
