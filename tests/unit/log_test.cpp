// The services' log facility: LogThrottle per key and window (driven by a ManualClock), the
// suppression report, the bound on keys and on line length, and StderrRotation of the file stderr
// is appended to (the test points its own stderr at a temp file and back).
#include "common/core/log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/process/child_process.h"
#include "common/process/log_rotation.h"
#include "tests/support/test_env.h"

namespace tally {
namespace {

using Lines = std::vector<std::string>;

// Points stderr at `file` (appending, as `tallyctl cluster up` does) until destroyed.
class StderrToFile {
 public:
  explicit StderrToFile(const std::filesystem::path& file) {
    std::fflush(stderr);
    saved_ = dup(STDERR_FILENO);
    int fd = open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0640);
    dup2(fd, STDERR_FILENO);
    close(fd);
  }
  ~StderrToFile() {
    std::fflush(stderr);
    dup2(saved_, STDERR_FILENO);
    close(saved_);
  }

 private:
  int saved_ = -1;
};

TEST(LogThrottleTest, WritesTheFirstLinesOfAWindowThenReportsWhatItHeldBack) {
  ManualClock clock;
  LogThrottle throttle(clock, "test", {3, 10'000, 16});
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(throttle.admit("apply", "m" + std::to_string(i)).size(), 1u);
  for (int i = 0; i < 7; ++i) EXPECT_TRUE(throttle.admit("apply", "again").empty());
  clock.advance(9'999);
  EXPECT_TRUE(throttle.admit("apply", "still the same window").empty());
  clock.advance(1);
  Lines next = throttle.admit("apply", "new window");
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[0], "suppressed 8 similar messages (apply) in a 10 s window after 3 written");
  EXPECT_EQ(next[1], "new window");
  // The new window starts clean: nothing left to report.
  EXPECT_EQ(throttle.admit("apply", "second of the new window"), Lines{"second of the new window"});
}

TEST(LogThrottleTest, KeysHaveTheirOwnWindows) {
  ManualClock clock;
  LogThrottle throttle(clock, "test", {1, 10'000, 16});
  EXPECT_EQ(throttle.admit("a", "a1").size(), 1u);
  EXPECT_TRUE(throttle.admit("a", "a2").empty());
  EXPECT_EQ(throttle.admit("b", "b1"), Lines{"b1"});
}

TEST(LogThrottleTest, AnEndedWindowIsReportedWithTheNextMessageOfAnyKey) {
  ManualClock clock;
  LogThrottle throttle(clock, "test", {1, 10'000, 16});
  (void)throttle.admit("a", "a1");
  for (int i = 0; i < 4; ++i) (void)throttle.admit("a", "a");
  clock.advance(10'000);
  Lines lines = throttle.admit("b", "b1");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "suppressed 4 similar messages (a) in a 10 s window after 1 written");
  EXPECT_EQ(lines[1], "b1");
  EXPECT_TRUE(throttle.drain_ended().empty());  // reported once
}

TEST(LogThrottleTest, KeysBeyondTheBoundShareOneWindow) {
  ManualClock clock;
  LogThrottle throttle(clock, "test", {2, 10'000, 4});
  int written = 0;
  for (int i = 0; i < 1000; ++i) {
    written += static_cast<int>(throttle.admit("request " + std::to_string(i), "x").size());
  }
  // Four keys of their own (two lines each would be allowed, one each was asked), then one shared.
  EXPECT_EQ(written, 4 + 2);
  clock.advance(10'000);
  Lines lines = throttle.admit("later", "y");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0],
            "suppressed 994 similar messages ((other keys)) in a 10 s window after 2 written");
}

TEST(LogThrottleTest, DestructionReportsWhatIsStillHeldBack) {
  testing::TempDir dir("tally-log");
  auto file = dir.path() / "out.log";
  {
    StderrToFile to_file(file);
    ManualClock clock;
    LogThrottle throttle(clock, "svc", {1, 10'000, 16});
    throttle.log("k", "first");
    throttle.log("k", "second");
    throttle.log("k", "third");
  }
  std::string out = read_file_from(file, 0);
  EXPECT_NE(out.find(" svc: first\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("second"), std::string::npos) << out;
  EXPECT_NE(out.find(" svc: suppressed 2 similar messages (k)"), std::string::npos) << out;
}

TEST(LogLineTest, CutsLongMessages) {
  std::string batch(kMaxLogMessageBytes + 12'345, 'x');
  std::string line = bounded_message(batch);
  EXPECT_EQ(line, std::string(kMaxLogMessageBytes, 'x') + "... (12345 bytes cut)");
  EXPECT_EQ(bounded_message("short"), "short");
}

TEST(StderrRotationTest, RotatesPastTheBoundAndKeepsTheNamedNumberOfFiles) {
  testing::TempDir dir("tally-log");
  auto file = dir.path() / "service.log";
  StderrToFile to_file(file);
  auto rotation = StderrRotation::for_current_stderr({100, 2});
  ASSERT_TRUE(rotation.has_value());
  EXPECT_EQ(std::filesystem::canonical(rotation->path()), std::filesystem::canonical(file));

  auto write_stderr = [](char c, size_t n) {
    std::string text(n, c);
    std::fputs(text.c_str(), stderr);
    std::fflush(stderr);
  };
  write_stderr('a', 100);
  auto at_bound = rotation->check();
  ASSERT_TRUE(at_bound) << at_bound.error().message;
  EXPECT_FALSE(*at_bound);  // not over it yet

  write_stderr('a', 1);
  auto rotated = rotation->check();
  ASSERT_TRUE(rotated) << rotated.error().message;
  EXPECT_TRUE(*rotated);
  EXPECT_EQ(read_file_from(dir.path() / "service.log.1", 0), std::string(101, 'a'));
  write_stderr('b', 5);  // lands in the fresh file
  EXPECT_EQ(read_file_from(file, 0), "bbbbb");

  for (char c : {'c', 'd', 'e'}) {
    write_stderr(c, 150);
    auto again = rotation->check();
    ASSERT_TRUE(again && *again);
  }
  EXPECT_EQ(read_file_from(dir.path() / "service.log.1", 0), std::string(150, 'e'));
  EXPECT_EQ(read_file_from(dir.path() / "service.log.2", 0), std::string(150, 'd'));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "service.log.3"));
  EXPECT_EQ(read_file_from(file, 0), "");
}

TEST(StderrRotationTest, LeavesAPipeAlone) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::fflush(stderr);
  int saved = dup(STDERR_FILENO);
  dup2(fds[1], STDERR_FILENO);
  bool found = StderrRotation::for_current_stderr().has_value();
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fds[0]);
  close(fds[1]);
  EXPECT_FALSE(found);
}

}  // namespace
}  // namespace tally
