// The tallyctl command line: parses arguments and runs one command, printing to out/err.
// Returns the process exit status (0 ok, 1 the command failed, 2 a usage error).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace tally {

int run_tallyctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace tally
