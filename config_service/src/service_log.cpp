#include "config_service/src/service_log.h"

#include <cstdio>
#include <ctime>

#include "common/core/clock.h"

namespace tally::config_service {

void log_line(const std::string& message) {
  int64_t now = wall_clock_ms();
  time_t secs = static_cast<time_t>(now / 1000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char stamp[96];
  std::snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(now % 1000));
  // One fprintf per line: stdio locks the stream, so lines of two threads never interleave.
  std::fprintf(stderr, "%s config_service: %s\n", stamp, message.c_str());
}

}  // namespace tally::config_service
