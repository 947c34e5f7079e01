#include "common/migrations/migration_runner.h"

#include <xxhash.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <pqxx/pqxx>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

namespace tally {
namespace {

constexpr std::string_view kExpectedForm =
    "NNNN_description.sql (four digits from 0001, '_', then letters, digits, '_' or '-')";

// Made by the runner itself, before any file, so it can record 0001 too.
constexpr const char* kCreateRecordTable =
    "CREATE TABLE IF NOT EXISTS tally_schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_description_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' || c == '-';
}

// The version of a file named NNNN_description.sql, or 0 if the name has another form.
int parse_version(std::string_view name) {
  constexpr std::string_view kSuffix = ".sql";
  if (name.size() < 4 + 1 + 1 + kSuffix.size() || !name.ends_with(kSuffix) || name[4] != '_') {
    return 0;
  }
  int version = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    if (!is_digit(name[i])) return 0;
    version = version * 10 + (name[i] - '0');
  }
  std::string_view description = name.substr(5, name.size() - 5 - kSuffix.size());
  if (!std::all_of(description.begin(), description.end(), is_description_char)) return 0;
  return version;
}

bool skipped_entry(const std::filesystem::directory_entry& entry) {
  std::error_code ec;
  if (entry.is_directory(ec)) return true;
  std::string name = entry.path().filename().string();
  return name.starts_with(".") || name.ends_with(".md");
}

Result<std::string> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    std::string why = std::filesystem::exists(path, ec) ? "cannot open it" : "it does not exist";
    return make_error(ErrorCode::kInvalidArgument,
                      "cannot read migration file " + path.string() + ": " + why);
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "cannot read migration file " + path.string() + ": read error");
  }
  return contents.str();
}

// PostgreSQL's message without libpq's "ERROR:  " prefix and trailing newline; it keeps the
// "LINE n:" context, whose line numbers are the file's, since a file is sent as one string.
std::string pg_message(const std::exception& e) {
  std::string message = e.what();
  for (std::string_view prefix : {"ERROR:  ", "FATAL:  "}) {
    if (message.starts_with(prefix)) {
      message.erase(0, prefix.size());
      break;
    }
  }
  while (!message.empty() &&
         (message.back() == '\n' || message.back() == ' ' || message.back() == '\r')) {
    message.pop_back();
  }
  return message;
}

ErrorCode code_for_sqlstate(const std::string& sqlstate) {
  if (sqlstate.starts_with("08") || sqlstate.starts_with("57P")) return ErrorCode::kUnavailable;
  if (sqlstate == "57014" || sqlstate == "55P03") return ErrorCode::kTimeout;
  if (sqlstate == "42501") return ErrorCode::kPermissionDenied;
  if (sqlstate.starts_with("28")) return ErrorCode::kUnauthenticated;
  if (sqlstate == "40001" || sqlstate == "40P01") return ErrorCode::kConflict;
  return ErrorCode::kInternal;
}

std::string shard_prefix(const MigrationTarget& target) {
  return "shard \"" + target.shard + "\": ";
}

std::string join_shards(const std::vector<std::string>& shards) {
  if (shards.empty()) return "none";
  std::string out;
  for (const auto& shard : shards) {
    if (!out.empty()) out += ", ";
    out += "\"" + shard + "\"";
  }
  return out;
}

struct Recorded {
  std::string name;
  std::string checksum;
};

}  // namespace

std::string migration_checksum(std::string_view contents) {
  const XXH64_hash_t hash = XXH64(contents.data(), contents.size(), 0);
  constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = kHex[(hash >> (4 * (15 - i))) & 0xf];
  }
  return out;
}

Result<std::vector<MigrationFile>> load_migration_files(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return make_error(ErrorCode::kInvalidArgument, "migrations directory " + dir.string() +
                                                       " does not exist or is not a directory");
  }
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) {
    return make_error(ErrorCode::kInvalidArgument,
                      "cannot list migrations directory " + dir.string() + ": " + ec.message());
  }
  std::vector<MigrationFile> files;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (skipped_entry(*it)) continue;
    std::string name = it->path().filename().string();
    const int version = parse_version(name);
    if (version == 0) {
      return make_error(ErrorCode::kInvalidArgument, "bad migration file name \"" + name +
                                                         "\" in " + dir.string() + ": expected " +
                                                         std::string(kExpectedForm));
    }
    Result<std::string> sql = read_file(it->path());
    if (!sql.ok()) return sql.error();
    MigrationFile file;
    file.version = version;
    file.name = std::move(name);
    file.path = it->path().string();
    file.checksum = migration_checksum(*sql);
    file.sql = std::move(sql).value();
    files.push_back(std::move(file));
  }
  if (ec) {
    return make_error(ErrorCode::kInvalidArgument,
                      "cannot list migrations directory " + dir.string() + ": " + ec.message());
  }
  if (files.empty()) {
    return make_error(
        ErrorCode::kInvalidArgument,
        "no migration files in " + dir.string() + " (expected " + std::string(kExpectedForm) + ")");
  }
  std::sort(files.begin(), files.end(), [](const MigrationFile& a, const MigrationFile& b) {
    return a.version != b.version ? a.version < b.version : a.name < b.name;
  });
  for (std::size_t i = 1; i < files.size(); ++i) {
    if (files[i].version == files[i - 1].version) {
      return make_error(ErrorCode::kInvalidArgument, "duplicate migration version " +
                                                         std::to_string(files[i].version) + " in " +
                                                         dir.string() + ": \"" + files[i - 1].name +
                                                         "\" and \"" + files[i].name + "\"");
    }
  }
  return files;
}

Result<MigrationOutcome> apply_migrations(const MigrationTarget& target,
                                          const std::vector<MigrationFile>& files) {
  for (std::size_t i = 1; i < files.size(); ++i) {
    if (files[i].version <= files[i - 1].version) {
      return make_error(ErrorCode::kInvalidArgument,
                        shard_prefix(target) +
                            "migration files must be sorted by version without duplicates, got \"" +
                            files[i - 1].name + "\" before \"" + files[i].name + "\"");
    }
  }

  MigrationOutcome outcome;
  outcome.shard = target.shard;
  // What the runner was doing when an exception arrived, for the message.
  std::string step = "connecting";
  const MigrationFile* current = nullptr;
  try {
    pqxx::connection conn{target.conninfo};
    // Notices ("relation already exists, skipping", RAISE NOTICE in a file) must not reach stderr:
    // this is a library.
    pqxx::quiet_errorhandler quiet{conn};
    {
      pqxx::nontransaction tx{conn};
      tx.exec("SET application_name = 'tally-migrations'");
      step = "waiting for the migration lock";
      tx.exec("SELECT pg_advisory_lock(" + std::to_string(kMigrationLockKey) + ")");
      step = "creating tally_schema_migrations";
      tx.exec(kCreateRecordTable);
    }

    step = "reading tally_schema_migrations";
    std::map<int, Recorded> recorded;
    {
      pqxx::nontransaction tx{conn};
      for (const auto& row :
           tx.exec("SELECT version, name, checksum FROM tally_schema_migrations")) {
        recorded[row[0].as<int>()] = Recorded{row[1].as<std::string>(), row[2].as<std::string>()};
      }
    }

    // Check every recorded file before applying any, so a changed file stops the run up front.
    for (const MigrationFile& file : files) {
      auto found = recorded.find(file.version);
      if (found == recorded.end()) continue;
      if (found->second.checksum != file.checksum) {
        return make_error(ErrorCode::kConflict,
                          shard_prefix(target) + "migration " + file.name +
                              " was applied with checksum " + found->second.checksum +
                              " (recorded as \"" + found->second.name +
                              "\") but the file now has checksum " + file.checksum +
                              "; applied migrations must not change: add a new migration instead");
      }
      ++outcome.already_applied;
    }

    for (const MigrationFile& file : files) {
      if (recorded.count(file.version) != 0) continue;
      current = &file;
      step = "applying";
      pqxx::work tx{conn};
      const std::string xid_query = "SELECT pg_current_xact_id()::text";
      const auto xid_before = tx.exec1(xid_query)[0].as<std::string>();
      tx.exec(file.sql, file.name);
      // A COMMIT or ROLLBACK inside the file would end this transaction and break the promise
      // that a file and its record commit together.
      const auto xid_after = tx.exec1(xid_query)[0].as<std::string>();
      if (xid_after != xid_before) {
        return make_error(
            ErrorCode::kInvalidArgument,
            shard_prefix(target) + "migration " + file.name +
                " ended the runner's transaction (BEGIN/COMMIT/ROLLBACK are not allowed "
                "in migration files); it was not recorded, but some of its statements "
                "may have been kept: check the shard by hand");
      }
      tx.exec_params(
          "INSERT INTO tally_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
          file.version, file.name, file.checksum);
      step = "committing";
      tx.commit();
      outcome.applied.push_back(file.name);
    }
    current = nullptr;

    step = "releasing the migration lock";
    {
      pqxx::nontransaction tx{conn};
      tx.exec("SELECT pg_advisory_unlock(" + std::to_string(kMigrationLockKey) + ")");
    }
  } catch (const pqxx::in_doubt_error& e) {
    return make_error(ErrorCode::kUnavailable,
                      shard_prefix(target) + "lost the connection while committing migration " +
                          (current != nullptr ? current->name : std::string("?")) +
                          ": it may or may not have been applied; run again (it is applied only "
                          "if it is not recorded): " +
                          pg_message(e));
  } catch (const pqxx::broken_connection& e) {
    std::string what = step == "connecting" ? "cannot connect"
                       : current != nullptr ? "lost the connection while " + step + " migration " +
                                                  current->name + " (not applied, not recorded)"
                                            : "lost the connection while " + step;
    return make_error(ErrorCode::kUnavailable, shard_prefix(target) + what + ": " + pg_message(e));
  } catch (const pqxx::sql_error& e) {
    const std::string sqlstate = e.sqlstate().empty() ? "unknown" : e.sqlstate();
    std::string what = current != nullptr
                           ? "migration " + current->name +
                                 " failed; nothing of it was kept and it is not recorded"
                           : step + " failed";
    return make_error(code_for_sqlstate(e.sqlstate()), shard_prefix(target) + what + " (SQLSTATE " +
                                                           sqlstate + "): " + pg_message(e));
  } catch (const std::exception& e) {
    std::string what = current != nullptr ? step + " migration " + current->name : step;
    return make_error(ErrorCode::kInternal,
                      shard_prefix(target) + "unexpected error while " + what + ": " + e.what());
  }
  return outcome;
}

Result<std::vector<MigrationOutcome>> apply_migrations_to_all(
    const std::vector<MigrationTarget>& targets, const std::vector<MigrationFile>& files) {
  if (targets.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "no shards to apply migrations to");
  }
  std::set<std::string> names;
  for (const auto& target : targets) {
    if (!names.insert(target.shard).second) {
      return make_error(ErrorCode::kInvalidArgument,
                        "shard \"" + target.shard + "\" is listed twice");
    }
  }
  std::vector<MigrationOutcome> outcomes;
  std::vector<std::string> done;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    Result<MigrationOutcome> outcome = apply_migrations(targets[i], files);
    if (!outcome.ok()) {
      std::vector<std::string> not_attempted;
      for (std::size_t j = i + 1; j < targets.size(); ++j)
        not_attempted.push_back(targets[j].shard);
      // The summary goes first: PostgreSQL's message may end in a multi-line LINE/caret context.
      return make_error(outcome.error().code, "stopped at shard \"" + targets[i].shard +
                                                  "\" (shards done: " + join_shards(done) +
                                                  "; not attempted: " + join_shards(not_attempted) +
                                                  "): " + outcome.error().message);
    }
    done.push_back(targets[i].shard);
    outcomes.push_back(std::move(outcome).value());
  }
  return outcomes;
}

}  // namespace tally
