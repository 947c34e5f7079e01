// metric_value: one value out of a Prometheus text exposition (a service's /metrics body), for the
// chaos and bench harnesses that follow a counter or gauge over a run. Pure parsing; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace tally::testing {

// The value of the unlabelled series `name` ("name 123" on a line of its own), truncated to an
// integer; nullopt when absent or unparsable.
std::optional<int64_t> metric_value(const std::string& text, const std::string& name);

}  // namespace tally::testing
