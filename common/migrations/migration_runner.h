// Schema migrations: numbered SQL files (NNNN_description.sql) applied in order to every shard and
// recorded per shard in tally_schema_migrations. Each file runs in one transaction with its record,
// under an advisory lock, so a file is applied once or not at all; errors come back as Result, and
// nothing is printed (tallyctl prints).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/core/result.h"

namespace tally {

struct MigrationFile {
  int version = 0;       // NNNN, from 1
  std::string name;      // the file name, e.g. "0001_initial_schema.sql"; recorded per shard
  std::string path;      // where it was read from
  std::string sql;       // the contents, executed as one multi-statement string
  std::string checksum;  // migration_checksum(sql)
};

// XXH64 (seed 0) of the bytes as 16 lowercase hex digits.
std::string migration_checksum(std::string_view contents);

// Reads the migrations of `dir`, sorted by version. Every entry must be a file named
// NNNN_description.sql (four digits from 0001, then '_', then [A-Za-z0-9_-]+); subdirectories,
// hidden files (editor state) and *.md (docs) are skipped. Errors: a missing or empty directory, a
// bad file name, two files with the same version, a file that cannot be read.
Result<std::vector<MigrationFile>> load_migration_files(const std::filesystem::path& dir);

struct MigrationTarget {
  std::string shard;  // the shard's name in messages, e.g. "-80"
  std::string
      conninfo;  // libpq connection string; never echoed in messages (it may hold a password)
};

struct MigrationOutcome {
  std::string shard;
  std::vector<std::string> applied;  // names of the files applied by this run, in order
  int already_applied = 0;           // files that were recorded before this run
};

// Session advisory lock key taken by apply_migrations ("tallymig" in ASCII): two runners never
// interleave on one shard; the second waits for the first.
inline constexpr std::int64_t kMigrationLockKey = 0x74616c6c796d6967;

// Applies to one shard the files (sorted by version, as load_migration_files returns them) that
// tally_schema_migrations does not record yet, each in its own transaction together with its
// record. Before applying anything, every recorded file is compared with its checksum: a difference
// is an error (a file is never re-applied). Versions recorded but absent from `files` (a newer
// shard than this binary) are left alone. On failure nothing of the failing file remains and it is
// not recorded; files applied before it stay. Files must not contain BEGIN/COMMIT/ROLLBACK.
Result<MigrationOutcome> apply_migrations(const MigrationTarget& target,
                                          const std::vector<MigrationFile>& files);

// apply_migrations on each target in turn, stopping at the first failing shard; the error then
// names the shards already done and those not attempted. An empty target list is an error.
Result<std::vector<MigrationOutcome>> apply_migrations_to_all(
    const std::vector<MigrationTarget>& targets, const std::vector<MigrationFile>& files);

}  // namespace tally
