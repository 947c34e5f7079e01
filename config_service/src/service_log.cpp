#include "config_service/src/service_log.h"

#include "common/core/log.h"

namespace tally::config_service {

void log_line(const std::string& message) {
  tally::log_line("config_service", message);
}

}  // namespace tally::config_service
