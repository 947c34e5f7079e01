#include "tests/support/metrics_text.h"

#include <sstream>

namespace tally::testing {

std::optional<int64_t> metric_value(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
        line[name.size()] == ' ') {
      try {
        return static_cast<int64_t>(std::stod(line.substr(name.size() + 1)));
      } catch (...) {
        return std::nullopt;
      }
    }
  }
  return std::nullopt;
}

}  // namespace tally::testing
