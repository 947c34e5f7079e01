// Helpers shared by Tally's tests: temporary directories that clean up after themselves, free
// loopback ports, and running the project's own binaries. Tests call these from their main thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace tally::testing {

// A fresh directory under /tmp (world-traversable, so a root test can hand it to the service
// account), removed with its contents on destruction unless TALLY_KEEP_TEST_DIRS is set.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "tally-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A base port such that [base, base+span) are all free on 127.0.0.1 right now, chosen from
// [low, high) starting at a pseudo-random offset so concurrent runs rarely collide. `high` is
// lowered to the start of the kernel's ephemeral port range, where outgoing connections could take
// a port between this check and the service's bind.
int find_free_port_block(int span, int low = 20000, int high = 40000);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr interleaved
};

// Runs a command (argv[0] looked up in PATH unless absolute) and captures its output.
CommandResult run(const std::vector<std::string>& argv);

// Polls `done` every 5 ms until it holds (true) or `limit` passes (its last answer). Passing tests
// return as soon as the condition holds; the limit only bounds a failing one.
bool wait_until(const std::function<bool()>& done,
                std::chrono::milliseconds limit = std::chrono::seconds(15));

// Absolute path of a binary built by this project (build/bin/NAME).
std::string project_binary(const std::string& name);

}  // namespace tally::testing
