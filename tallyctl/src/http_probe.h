// A minimal HTTP/1.1 GET against 127.0.0.1 for health probes of local services (/healthz,
// /readyz). Blocking with a short timeout; for the control thread of tallyctl and tests only.
#pragma once

#include <chrono>
#include <string>

namespace tally {

// The response's status code, or 0 when nothing answered within `timeout`.
int http_get_status(int port, const std::string& path,
                    std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));

}  // namespace tally
