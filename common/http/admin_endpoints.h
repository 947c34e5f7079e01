// The endpoints every Tally service serves next to its own API:
//   GET /healthz  200 "ok" while the process runs (liveness)
//   GET /readyz   200 {"ready":true,"reasons":[]} or 503 {"ready":false,"reasons":[...]}
//   GET /metrics  the registry in the Prometheus text format 0.0.4, and the process's resident
//                 memory (process_resident_memory_bytes)
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace tally {

class HttpServer;
class MetricsRegistry;

struct HealthStatus {
  bool ready = true;
  std::vector<std::string> reasons;  // why the service is not ready, e.g. "zookeeper: connecting"
};

// Registers the three routes; call before server.start(). `metrics` must outlive the server.
// `ready` is called on a server thread for each /readyz request: it must not block (report state
// kept up to date elsewhere); an empty function means always ready.
void add_admin_routes(HttpServer& server, const MetricsRegistry& metrics,
                      std::function<HealthStatus()> ready);

}  // namespace tally
