// PostgreSQL's log on a node started the way `tallyctl cluster up` starts it (PostgresNode, real
// PostgreSQL 15): a slow statement and a failing one, each with a 13 MB bind parameter like an
// apply's rows, leave at most a few hundred bytes and none of the parameter past its first 64
// bytes; the server logs into its collector directory under a fixed set of hourly names.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>

#include "common/process/child_process.h"
#include "common/process/system_user.h"
#include "tallyctl/src/postgres_node.h"
#include "tests/support/pg_client.h"
#include "tests/support/test_env.h"

namespace tally {
namespace {

constexpr const char* kMarker = "PARAMETER_BODY_MARKER";

// Everything the server logged: its collector files.
std::string server_log(const std::filesystem::path& dir) {
  std::string all;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    all += read_file_from(entry.path(), 0);
  return all;
}

// About 13 MB of apply-like JSON rows; the marker sits past the first 64 bytes in every row (a
// jsonb parameter is logged with its keys sorted by length: the marker's key is the longest).
std::string big_rows(bool valid) {
  std::string rows = "[";
  const std::string row =
      std::string(
          "{\"video_id\":\"v0000001\",\"event_type\":\"view\",\"marker_field_sorted_last\":\"") +
      kMarker + "\",\"count\":1},";
  while (rows.size() < 13'000'000) rows += row;
  rows.back() = valid ? ']' : '!';
  return rows;
}

class PostgresLogTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>("tally-pglog");
    chmod(dir_->path().c_str(), 0755);  // the server's account must reach its directories
    PostgresNodeOptions options;
    options.data_dir = dir_->path() / "shard0" / "leader";
    options.log_file = dir_->path() / "shard0" / "leader.log";
    options.port = testing::find_free_port_block(1);
    if (running_as_root()) {
      auto user = ensure_system_user("tally");
      ASSERT_TRUE(user.ok()) << user.error().message;
      options.run_as = *user;
    }
    credentials_ = {"admin", "admin-pw", "replicator", "replicator-pw"};
    node_ = std::make_unique<PostgresNode>(options);
    auto init = node_->init_leader(credentials_);
    ASSERT_TRUE(init.ok()) << init.error().message;
    auto pid = node_->start(credentials_);
    ASSERT_TRUE(pid.ok()) << pid.error().message;
    pid_ = *pid;
  }
  static void TearDownTestSuite() {
    if (pid_ > 0) (void)node_->stop(pid_);
    node_.reset();
    dir_.reset();
  }

  testing::PgClient connect() const {
    return testing::PgClient(
        node_->conninfo(credentials_.superuser, credentials_.superuser_password, "postgres"));
  }

  static std::unique_ptr<testing::TempDir> dir_;
  static std::unique_ptr<PostgresNode> node_;
  static PostgresCredentials credentials_;
  static pid_t pid_;
};

std::unique_ptr<testing::TempDir> PostgresLogTest::dir_;
std::unique_ptr<PostgresNode> PostgresLogTest::node_;
PostgresCredentials PostgresLogTest::credentials_;
pid_t PostgresLogTest::pid_ = 0;

TEST_F(PostgresLogTest, ASlowStatementLogsAtMost64BytesOfItsParameter) {
  ASSERT_GT(pid_, 0);
  auto pg = connect();
  ASSERT_TRUE(pg.ok()) << pg.error();
  const auto dir = node_->server_log_dir();
  const size_t before = server_log(dir).size();
  // Over log_min_duration_statement (1 s) by sleeping, with the parameter an apply would carry.
  std::string result = pg.query_params(
      "SELECT pg_sleep(1.1)::text || jsonb_array_length($1::jsonb)", {big_rows(true)});
  ASSERT_EQ(result.find("ERROR"), std::string::npos) << result.substr(0, 300);
  ASSERT_TRUE(testing::wait_until([&] {
    return server_log(dir).find("duration:") != std::string::npos;
  })) << "no slow-statement line in "
      << dir;
  std::string log = server_log(dir);
  EXPECT_EQ(log.find(kMarker), std::string::npos) << "the parameter reached the log";
  EXPECT_NE(log.find("parameters: $1 = '[{\"count\": 1, \"video_id\""), std::string::npos)
      << "its first bytes are still there to recognise it";
  std::printf("[ measure  ] slow statement with a %zu-byte parameter: %zu bytes logged\n",
              big_rows(true).size(), log.size() - before);
  EXPECT_LT(log.size() - before, 4096u);
}

TEST_F(PostgresLogTest, AFailingStatementLogsAtMost64BytesOfItsParameter) {
  ASSERT_GT(pid_, 0);
  auto pg = connect();
  ASSERT_TRUE(pg.ok()) << pg.error();
  const auto dir = node_->server_log_dir();
  const size_t before = server_log(dir).size();
  std::string result = pg.query_params("SELECT jsonb_array_length($1::jsonb)", {big_rows(false)});
  ASSERT_NE(result.find("ERROR 22P02"), std::string::npos) << result.substr(0, 300);
  ASSERT_TRUE(testing::wait_until([&] {
    return server_log(dir).find("STATEMENT:  SELECT jsonb_array_length") != std::string::npos;
  })) << "no error lines in "
      << dir;
  std::string log = server_log(dir);
  size_t logged = log.size() - before;
  std::printf("[ measure  ] failing statement with a 13 MB parameter: %zu bytes logged\n", logged);
  // The JSON error's context quotes the ~50 bytes before the bad token (one marker); the
  // parameter itself holds ~100k of them.
  size_t markers = 0;
  for (size_t at = log.find(kMarker, before); at != std::string::npos;
       at = log.find(kMarker, at + 1)) {
    ++markers;
  }
  EXPECT_LE(markers, 1u) << "the parameter reached the log";
  EXPECT_LT(logged, 4096u);
}

TEST_F(PostgresLogTest, TheServerLogsIntoHourlyFilesOfItsCollectorDirectory) {
  ASSERT_GT(pid_, 0);
  auto pg = connect();
  ASSERT_TRUE(pg.ok()) << pg.error();
  EXPECT_EQ(pg.query("SHOW logging_collector"), "on");
  EXPECT_EQ(pg.query("SHOW log_truncate_on_rotation"), "on");
  EXPECT_EQ(pg.query("SHOW log_rotation_size"), "0");
  EXPECT_EQ(pg.query("SELECT pg_current_logfile()").rfind(node_->server_log_dir().string(), 0), 0u);
  const std::regex hourly("postgresql-[0-2][0-9]\\.log");
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(node_->server_log_dir())) {
    ++files;
    EXPECT_TRUE(std::regex_match(entry.path().filename().string(), hourly)) << entry.path();
  }
  EXPECT_GE(files, 1);
}

}  // namespace
}  // namespace tally
