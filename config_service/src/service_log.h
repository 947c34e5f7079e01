// One timestamped line per event on stderr (the service's log file under `cluster up`), so the
// order and timing of elections, failovers and sync changes can be read back. Thread-safe.
#pragma once

#include <string>

namespace tally::config_service {

void log_line(const std::string& message);

}  // namespace tally::config_service
