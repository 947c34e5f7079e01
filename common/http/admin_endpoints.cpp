#include "common/http/admin_endpoints.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "common/http/http_server.h"
#include "common/metrics/metrics_registry.h"

namespace tally {

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
    r.body = metrics.render_prometheus();
    respond(std::move(r));
  });
}

}  // namespace tally
