#include "common/http/admin_endpoints.h"

#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "common/http/http_server.h"
#include "common/metrics/metrics_registry.h"

namespace tally {
namespace {

// The process's resident set size in the Prometheus process-collector convention. /proc/self/statm
// is kernel memory, not a disk: reading it does not block.
std::string process_metrics() {
  long pages = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    long size = 0;
    if (std::fscanf(f, "%ld %ld", &size, &pages) != 2) pages = 0;
    std::fclose(f);
  }
  const long bytes = pages * sysconf(_SC_PAGESIZE);
  return "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
         "# TYPE process_resident_memory_bytes gauge\n"
         "process_resident_memory_bytes " +
         std::to_string(bytes) + "\n";
}

}  // namespace

void add_admin_routes(HttpServer& server, const MetricsRegistry& metrics,
                      std::function<HealthStatus()> ready) {
  server.route("GET", "/healthz",
               [](HttpRequest&&, Responder respond) { respond(HttpResponse::text(200, "ok\n")); });
  server.route("GET", "/readyz", [ready = std::move(ready)](HttpRequest&&, Responder respond) {
    HealthStatus status = ready ? ready() : HealthStatus{};
    nlohmann::json body = {{"ready", status.ready}, {"reasons", status.reasons}};
    respond(
        HttpResponse::json(status.ready ? 200 : 503,
                           body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  });
  server.route("GET", "/metrics", [&metrics](HttpRequest&&, Responder respond) {
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics.render_prometheus() + process_metrics();
    respond(std::move(r));
  });
}

}  // namespace tally
