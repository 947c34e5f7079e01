// The loadgen command line, shared by the `loadgen` binary and `tallyctl loadgen`: parses the
// options (errors name the option, the value and the expected form), reads the endpoints and the
// token from a cluster directory's cluster.json, runs the load with a progress line every second
// (rate, totals, retries), then the audit. Blocks the caller's thread.
// Exit status: 0 audit OK (or --no-audit), 1 audit mismatch, 2 bad usage or unusable endpoints.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace tally {

// `program` prefixes messages and the usage text ("loadgen", "tallyctl loadgen").
int run_loadgen_command(const std::vector<std::string>& args, const std::string& program,
                        std::ostream& out, std::ostream& err);

}  // namespace tally
