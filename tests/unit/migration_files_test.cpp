// load_migration_files on temporary directories, and the repository's own migrations directory.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/migrations/migration_runner.h"

namespace tally {
namespace {

namespace fs = std::filesystem;

class MigrationFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tally_migration_files_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void write(const std::string& name, const std::string& contents) {
    std::ofstream out(dir_ / name, std::ios::binary);
    out << contents;
    ASSERT_TRUE(out.good()) << name;
  }

  // The error message of loading dir_, which must fail.
  std::string load_error() {
    auto files = load_migration_files(dir_);
    EXPECT_FALSE(files.ok());
    return files.ok() ? std::string() : files.error().message;
  }

  fs::path dir_;
};

TEST_F(MigrationFilesTest, LoadsAGoodSetSortedByVersion) {
  write("0010_later.sql", "SELECT 10;\n");
  write("0002_second-step.sql", "SELECT 2;\n");
  write("0001_initial_schema.sql", "SELECT 1;\n");
  write("README.md", "docs are skipped\n");
  write(".0003_editor.sql.swp", "hidden files are skipped\n");
  fs::create_directory(dir_ / "archive");

  auto files = load_migration_files(dir_);
  ASSERT_TRUE(files.ok()) << files.error().message;
  ASSERT_EQ(files->size(), 3u);
  EXPECT_EQ((*files)[0].version, 1);
  EXPECT_EQ((*files)[0].name, "0001_initial_schema.sql");
  EXPECT_EQ((*files)[0].path, (dir_ / "0001_initial_schema.sql").string());
  EXPECT_EQ((*files)[0].sql, "SELECT 1;\n");
  EXPECT_EQ((*files)[1].version, 2);
  EXPECT_EQ((*files)[1].name, "0002_second-step.sql");
  EXPECT_EQ((*files)[2].version, 10);
  EXPECT_EQ((*files)[2].name, "0010_later.sql");
  EXPECT_EQ((*files)[2].sql, "SELECT 10;\n");
}

TEST_F(MigrationFilesTest, RejectsBadNamesNamingTheFileAndTheExpectedForm) {
  for (const std::string name :
       {"1_init.sql", "0001-init.sql", "0001_.sql", "0001_init.txt", "abcd_init.sql",
        "00001_init.sql", "0001_init.SQL", "0001_in it.sql", "0000_zero.sql", "init.sql"}) {
    SCOPED_TRACE(name);
    fs::remove_all(dir_);
    fs::create_directory(dir_);
    write("0001_good.sql", "SELECT 1;\n");
    write(name, "SELECT 2;\n");
    std::string message = load_error();
    EXPECT_NE(message.find("\"" + name + "\""), std::string::npos) << message;
    EXPECT_NE(message.find("NNNN_description.sql"), std::string::npos) << message;
  }
}

TEST_F(MigrationFilesTest, RejectsDuplicateVersionsNamingBothFiles) {
  write("0001_a.sql", "SELECT 1;\n");
  write("0002_b.sql", "SELECT 2;\n");
  write("0002_c.sql", "SELECT 3;\n");
  std::string message = load_error();
  EXPECT_NE(message.find("duplicate migration version 2"), std::string::npos) << message;
  EXPECT_NE(message.find("0002_b.sql"), std::string::npos) << message;
  EXPECT_NE(message.find("0002_c.sql"), std::string::npos) << message;
}

TEST_F(MigrationFilesTest, RejectsAnEmptyDirectory) {
  EXPECT_NE(load_error().find("no migration files"), std::string::npos);
  write("README.md", "only docs\n");
  EXPECT_NE(load_error().find("no migration files"), std::string::npos);
}

TEST_F(MigrationFilesTest, RejectsAMissingDirectory) {
  auto files = load_migration_files(dir_ / "nope");
  ASSERT_FALSE(files.ok());
  EXPECT_NE(files.error().message.find("does not exist"), std::string::npos);
}

TEST_F(MigrationFilesTest, RejectsAnUnreadableFile) {
  write("0001_a.sql", "SELECT 1;\n");
  // A dangling symlink: unreadable even for root, unlike a chmod 000 file.
  fs::create_symlink(dir_ / "missing-target", dir_ / "0002_b.sql");
  std::string message = load_error();
  EXPECT_NE(message.find("cannot read migration file"), std::string::npos) << message;
  EXPECT_NE(message.find("0002_b.sql"), std::string::npos) << message;
}

TEST_F(MigrationFilesTest, ChecksumIsXxh64OfTheContentsAndStable) {
  // Golden values from `xxhsum -H64`.
  EXPECT_EQ(migration_checksum(""), "ef46db3751d8e999");
  EXPECT_EQ(migration_checksum("SELECT 1;\n"), "4aa282e457b129e3");

  write("0001_a.sql", "SELECT 1;\n");
  auto first = load_migration_files(dir_);
  auto second = load_migration_files(dir_);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ((*first)[0].checksum, "4aa282e457b129e3");
  EXPECT_EQ((*first)[0].checksum, (*second)[0].checksum);

  // The name does not enter the checksum; any byte of the contents does.
  fs::rename(dir_ / "0001_a.sql", dir_ / "0001_renamed.sql");
  auto renamed = load_migration_files(dir_);
  ASSERT_TRUE(renamed.ok());
  EXPECT_EQ((*renamed)[0].checksum, "4aa282e457b129e3");
  write("0001_renamed.sql", "SELECT 1; \n");
  auto edited = load_migration_files(dir_);
  ASSERT_TRUE(edited.ok());
  EXPECT_NE((*edited)[0].checksum, "4aa282e457b129e3");
}

TEST(RepositoryMigrations, LoadWithVersionsOneToNWithoutGaps) {
  auto files = load_migration_files(TALLY_MIGRATIONS_DIR);
  ASSERT_TRUE(files.ok()) << files.error().message;
  ASSERT_FALSE(files->empty());
  for (std::size_t i = 0; i < files->size(); ++i) {
    const MigrationFile& file = (*files)[i];
    EXPECT_EQ(file.version, static_cast<int>(i) + 1) << file.name;
    EXPECT_FALSE(file.sql.empty()) << file.name;
    EXPECT_EQ(file.checksum.size(), 16u) << file.name;
  }
  EXPECT_EQ((*files)[0].name, "0001_initial_schema.sql");
}

}  // namespace
}  // namespace tally
