// loadgen: steady-rate events with unique ids into the processor, then an audit of the counts
// through the cluster proxy. Wiring only: the command line is tools/loadgen/src/loadgen_cli.cpp
// (shared with `tallyctl loadgen`), the logic tools/loadgen/src/loadgen.{h,cpp}.
// Exit codes: 0 audit OK, 1 mismatch, 2 bad usage.
#include <iostream>
#include <string>
#include <vector>

#include "tools/loadgen/src/loadgen_cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return tally::run_loadgen_command(args, "loadgen", std::cout, std::cerr);
}
