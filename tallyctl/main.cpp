// tallyctl: the operator's command line. Wiring only; the commands live in src/commands.cpp.
#include <iostream>
#include <string>
#include <vector>

#include "tallyctl/src/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return tally::run_tallyctl(args, std::cout, std::cerr);
}
