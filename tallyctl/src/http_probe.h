// Probes of local services over 127.0.0.1 for the control thread of tallyctl and tests: a minimal
// HTTP/1.1 GET for /healthz and /readyz, and the raw request/reply exchange it (and ZooKeeper's
// four-letter commands) are built on. Blocking with a short timeout.
#pragma once

#include <chrono>
#include <functional>
#include <string>

namespace tally {

// Connects to 127.0.0.1:port, sends `request`, and reads until the peer closes, `enough(reply)`
// says so, or `timeout` passes. Whatever arrived ("" when nothing could connect).
std::string loopback_exchange(int port, const std::string& request,
                              std::chrono::milliseconds timeout,
                              const std::function<bool(const std::string&)>& enough = {});

// The response's status code, or 0 when nothing answered within `timeout`.
int http_get_status(int port, const std::string& path,
                    std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));

}  // namespace tally
