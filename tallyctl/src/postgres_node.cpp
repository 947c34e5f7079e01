#include "tallyctl/src/postgres_node.h"

#include <libpq-fe.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "common/pgclient/conninfo.h"
#include "common/process/child_process.h"

namespace tally {
namespace {

constexpr const char* kSettingsFile = "tally.conf";

}  // namespace

PostgresNode::PostgresNode(PostgresNodeOptions options) : options_(std::move(options)) {}

std::string PostgresNode::conninfo(const std::string& user, const std::string& password,
                                   const std::string& dbname) const {
  return build_conninfo({{"host", "127.0.0.1"},
                         {"port", std::to_string(options_.port)},
                         {"dbname", dbname},
                         {"user", user},
                         {"password", password},
                         {"connect_timeout", "5"}});
}

Status PostgresNode::prepare_dir(const std::filesystem::path& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error(ErrorCode::kInternal, "cannot create " + dir.string() + ": " + ec.message());
  if (options_.run_as && chown(dir.c_str(), options_.run_as->uid, options_.run_as->gid) != 0) {
    return make_error(ErrorCode::kInternal,
                      "cannot chown " + dir.string() + " to " + options_.run_as->name);
  }
  return ok_status();
}

Status PostgresNode::run_tool(const std::string& tool, std::vector<std::string> args,
                              const std::vector<std::pair<std::string, std::string>>& env,
                              std::chrono::milliseconds timeout,
                              const std::filesystem::path& output) const {
  SpawnOptions spawn;
  spawn.argv.push_back((options_.bin_dir / tool).string());
  for (auto& a : args) spawn.argv.push_back(std::move(a));
  spawn.log_file = output.empty() ? options_.log_file : output;
  spawn.run_as = options_.run_as;
  spawn.env = env;
  spawn.working_dir = options_.data_dir.parent_path();
  auto rc = run_command(spawn, timeout);
  if (!rc) return rc.error();
  if (*rc != 0) {
    return make_error(ErrorCode::kInternal, tool + " for " + options_.data_dir.string() +
                                                " failed with exit status " + std::to_string(*rc) +
                                                "; log " + options_.log_file.string() + ":\n" +
                                                tail_file(options_.log_file));
  }
  return ok_status();
}

Status PostgresNode::write_settings() const {
  auto file = options_.data_dir / kSettingsFile;
  std::ofstream out(file, std::ios::trunc);
  out << "# Written by tallyctl. Included from postgresql.conf; this node's own settings.\n"
      << "listen_addresses = '127.0.0.1'\n"
      << "port = " << options_.port << "\n"
      << "# TCP only: socket paths under deep temp dirs can exceed the 107-byte limit.\n"
      << "unix_socket_directories = ''\n"
      << "max_connections = " << options_.max_connections << "\n"
      << "shared_buffers = '" << options_.shared_buffers << "'\n"
      << "password_encryption = 'scram-sha-256'\n"
      << "# Every node in UTC: the analyst endpoint answers in the shards' zone and says so.\n"
      << "timezone = 'UTC'\n"
      << "wal_level = replica\n"
      << "max_wal_senders = 10\n"
      << "max_replication_slots = 10\n"
      << "wal_keep_size = '256MB'\n"
      << "hot_standby = on\n"
      << "hot_standby_feedback = on\n"
      << "wal_log_hints = on\n"
      << "wal_receiver_status_interval = '1s'\n"
      << "# A promote that lands after the WAL receiver died otherwise waits up to 5 s for a "
         "retry\n"
      << "# (measured: 2 of 6 manual failovers took 5.2 s instead of 0.3 s).\n"
      << "wal_retrieve_retry_interval = '200ms'\n"
      << "# pg_rewind (tallyctl shard rejoin) needs full page writes; data checksums are on too.\n"
      << "full_page_writes = on\n"
      << "# A statement whose client has gone (a proxy hung up on it) stops within a second\n"
      << "# instead of running on to the end while holding its locks.\n"
      << "client_connection_check_interval = '1s'\n"
      << "# The server log: one file per hour of the day in " << server_log_dir().string() << ",\n"
      << "# each emptied when its hour comes round again (time-based rotation truncates; "
         "size-based\n"
      << "# rotation would only append to the same name, so it is off). Start-up lines before the\n"
      << "# collector runs go to " << options_.log_file.filename().string() << ".\n"
      << "logging_collector = on\n"
      << "log_directory = '" << server_log_dir().string() << "'\n"
      << "log_filename = 'postgresql-%H.log'\n"
      << "log_rotation_age = '1h'\n"
      << "log_rotation_size = 0\n"
      << "log_truncate_on_rotation = on\n"
      << "log_line_prefix = '%m [%p] %q%u@%d '\n"
      << "log_min_duration_statement = 1000\n"
      << "# Slow statements and errors show at most 64 bytes of each bind parameter: an apply's\n"
      << "# rows parameter is megabytes of JSON.\n"
      << "log_parameter_max_length = 64\n"
      << "log_parameter_max_length_on_error = 64\n";
  if (!out) return make_error(ErrorCode::kInternal, "cannot write " + file.string());
  out.close();
  if (options_.run_as && chown(file.c_str(), options_.run_as->uid, options_.run_as->gid) != 0) {
    return make_error(ErrorCode::kInternal, "cannot chown " + file.string());
  }
  return ok_status();
}

Status PostgresNode::init_leader(const PostgresCredentials& credentials) {
  if (std::filesystem::exists(options_.data_dir)) {
    return make_error(ErrorCode::kAlreadyExists,
                      "data directory " + options_.data_dir.string() + " already exists");
  }
  if (auto st = prepare_dir(options_.data_dir.parent_path()); !st) return st;
  // The password reaches initdb through a file readable only by the server's account.
  auto pwfile = options_.data_dir.parent_path() / ".initdb-pw";
  {
    std::ofstream pw(pwfile, std::ios::trunc);
    pw << credentials.superuser_password << "\n";
  }
  chmod(pwfile.c_str(), 0600);
  if (options_.run_as) {
    if (chown(pwfile.c_str(), options_.run_as->uid, options_.run_as->gid) != 0) {
      return make_error(ErrorCode::kInternal, "cannot chown " + pwfile.string());
    }
  }
  auto st =
      run_tool("initdb",
               {"-D", options_.data_dir.string(), "--data-checksums", "--encoding=UTF8",
                "--locale=C", "-U", credentials.superuser, "--pwfile=" + pwfile.string(),
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--no-instructions"},
               {}, std::chrono::seconds(120));
  std::filesystem::remove(pwfile);
  if (!st) return st;

  {
    std::ofstream conf(options_.data_dir / "postgresql.conf", std::ios::app);
    conf << "\ninclude '" << kSettingsFile << "'\n";
  }
  {
    std::ofstream hba(options_.data_dir / "pg_hba.conf", std::ios::trunc);
    hba << "# Written by tallyctl: password authentication, loopback only.\n"
        << "host all all 127.0.0.1/32 scram-sha-256\n"
        << "host replication " << credentials.replication_user << " 127.0.0.1/32 scram-sha-256\n";
  }
  return write_settings();
}

Status PostgresNode::init_replica(const PostgresNode& leader,
                                  const PostgresCredentials& credentials, const std::string& slot) {
  if (std::filesystem::exists(options_.data_dir)) {
    return make_error(ErrorCode::kAlreadyExists,
                      "data directory " + options_.data_dir.string() + " already exists");
  }
  if (auto st = prepare_dir(options_.data_dir.parent_path()); !st) return st;
  auto st = run_tool("pg_basebackup",
                     {"-h", "127.0.0.1", "-p", std::to_string(leader.options().port), "-U",
                      credentials.replication_user, "-D", options_.data_dir.string(), "-R", "-X",
                      "stream", "-C", "-S", slot, "--checkpoint=fast", "--no-password"},
                     {{"PGPASSWORD", credentials.replication_password}}, std::chrono::seconds(300));
  if (!st) return st;
  return write_settings();
}

bool PostgresNode::accepting(const PostgresCredentials& credentials) const {
  std::string info = conninfo(credentials.superuser, credentials.superuser_password, "postgres");
  return PQping(info.c_str()) == PQPING_OK;
}

Result<pid_t> PostgresNode::start(const PostgresCredentials& credentials,
                                  std::chrono::milliseconds timeout) {
  SpawnOptions spawn;
  spawn.argv = {(options_.bin_dir / "postgres").string(), "-D", options_.data_dir.string()};
  spawn.log_file = options_.log_file;
  spawn.run_as = options_.run_as;
  spawn.working_dir = options_.data_dir;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string failure;
  while (std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    auto log_offset = std::filesystem::exists(options_.log_file)
                          ? std::filesystem::file_size(options_.log_file, ec)
                          : 0;
    auto pid = spawn_daemon(spawn);
    if (!pid) return pid.error();
    while (std::chrono::steady_clock::now() < deadline) {
      if (accepting(credentials)) return *pid;
      if (!process_alive(*pid)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (process_alive(*pid)) {
      (void)stop(*pid);
      failure = "did not accept connections in time";
      break;
    }
    // A postmaster killed with SIGKILL leaves its lock file and shared memory to backends that
    // outlive it for a moment (and to a zombie its adopter has not reaped yet); PostgreSQL refuses
    // to start until they are gone. Those refusals are worth retrying, nothing else is.
    std::string attempt_log = read_file_from(options_.log_file, log_offset);
    failure = "exited during start-up";
    if (attempt_log.find("lock file \"postmaster.pid\" already exists") == std::string::npos &&
        attempt_log.find("is still in use") == std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  if (failure.empty()) failure = "did not start in time";
  return make_error(ErrorCode::kUnavailable,
                    "PostgreSQL " + options_.data_dir.string() + " on port " +
                        std::to_string(options_.port) + " " + failure + "; log " +
                        options_.log_file.string() + ":\n" + tail_file(options_.log_file) +
                        "\n(later lines: " + server_log_dir().string() + "/postgresql-HH.log)");
}

std::filesystem::path PostgresNode::server_log_dir() const {
  return options_.log_file.parent_path() / (options_.log_file.stem().string() + "-log");
}

Status PostgresNode::stop(pid_t pid, std::chrono::milliseconds grace) const {
  return stop_process(pid, options_.data_dir.string(), SIGINT, grace);
}

Status PostgresNode::chown_file(const std::filesystem::path& file) const {
  if (options_.run_as && chown(file.c_str(), options_.run_as->uid, options_.run_as->gid) != 0) {
    return make_error(ErrorCode::kInternal,
                      "cannot chown " + file.string() + " to " + options_.run_as->name);
  }
  return ok_status();
}

Status PostgresNode::configure_standby(const PostgresNode& leader,
                                       const PostgresCredentials& credentials,
                                       const std::string& slot) const {
  // postgresql.auto.conf is read after postgresql.conf (and tally.conf), so the values must live
  // there: pg_basebackup -R put the first ones there too.
  auto file = options_.data_dir / "postgresql.auto.conf";
  std::vector<std::string> kept;
  {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
      auto start = line.find_first_not_of(" \t");
      std::string_view body =
          start == std::string::npos ? std::string_view() : std::string_view(line).substr(start);
      // Also dropped: a leader's synchronous replication and config_service's fencing, copied
      // from a former life or by pg_rewind. A standby ignores them, but one promoted later would
      // wait for a standby it does not have, or refuse writes; whoever promotes it sets them.
      bool replaced = false;
      for (const char* key : {"primary_conninfo", "primary_slot_name", "synchronous_standby_names",
                              "default_transaction_read_only"}) {
        replaced = replaced || body.rfind(key, 0) == 0;
      }
      if (replaced) continue;
      kept.push_back(line);
    }
  }
  const std::string conninfo = build_conninfo({{"host", "127.0.0.1"},
                                               {"port", std::to_string(leader.options().port)},
                                               {"user", credentials.replication_user},
                                               {"password", credentials.replication_password},
                                               {"application_name", slot}});
  auto setting = [](const std::string& value) {
    std::string out = "'";
    for (char c : value) {
      if (c == '\'') out += '\'';
      out += c;
    }
    return out + "'";
  };
  {
    std::ofstream out(file, std::ios::trunc);
    for (const auto& line : kept) out << line << "\n";
    out << "# Written by tallyctl: this node is a standby of " << leader.address() << ".\n"
        << "primary_conninfo = " << setting(conninfo) << "\n"
        << "primary_slot_name = " << setting(slot) << "\n";
    if (!out) return make_error(ErrorCode::kInternal, "cannot write " + file.string());
  }
  chmod(file.c_str(), 0600);
  if (auto st = chown_file(file); !st) return st;
  auto signal = options_.data_dir / "standby.signal";
  {
    std::ofstream out(signal, std::ios::trunc);
    if (!out) return make_error(ErrorCode::kInternal, "cannot write " + signal.string());
  }
  return chown_file(signal);
}

Status PostgresNode::restore_settings(const std::string& text) const {
  // The node's own tally.conf (port, memory) as it was; the generated one when there was none.
  if (text.empty()) return write_settings();
  auto file = options_.data_dir / kSettingsFile;
  {
    std::ofstream out(file, std::ios::trunc);
    out << text;
    if (!out) return make_error(ErrorCode::kInternal, "cannot write " + file.string());
  }
  return chown_file(file);
}

Status PostgresNode::rewind_from(const PostgresNode& source,
                                 const PostgresCredentials& credentials) const {
  // pg_rewind copies the source's configuration files, tally.conf (with its port) among them.
  std::string own_settings = read_file_from(options_.data_dir / kSettingsFile, 0);
  // The password goes through the environment, never the command line (ps shows that).
  auto st = run_tool(
      "pg_rewind",
      {"--target-pgdata=" + options_.data_dir.string(),
       "--source-server=" + build_conninfo({{"host", "127.0.0.1"},
                                            {"port", std::to_string(source.options().port)},
                                            {"user", credentials.superuser},
                                            {"dbname", "postgres"},
                                            {"connect_timeout", "5"}}),
       "--progress"},
      {{"PGPASSWORD", credentials.superuser_password}}, std::chrono::seconds(600));
  if (!st) return st;
  return restore_settings(own_settings);
}

Result<std::filesystem::path> PostgresNode::rebuild_from(const PostgresNode& leader,
                                                         const PostgresCredentials& credentials,
                                                         const std::string& slot) {
  auto aside = options_.data_dir;
  aside +=
      ".before-rejoin-" + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
  std::error_code ec;
  std::filesystem::rename(options_.data_dir, aside, ec);
  if (ec) {
    return make_error(ErrorCode::kInternal, "cannot move " + options_.data_dir.string() +
                                                " aside to " + aside.string() + ": " +
                                                ec.message());
  }
  auto st = run_tool("pg_basebackup",
                     {"-h", "127.0.0.1", "-p", std::to_string(leader.options().port), "-U",
                      credentials.replication_user, "-D", options_.data_dir.string(), "-X",
                      "stream", "-S", slot, "--checkpoint=fast", "--no-password"},
                     {{"PGPASSWORD", credentials.replication_password}}, std::chrono::seconds(600));
  if (!st) {
    return make_error(
        st.error().code,
        st.error().message + "\n(the old data directory is kept at " + aside.string() + ")");
  }
  if (auto w = restore_settings(read_file_from(aside / kSettingsFile, 0)); !w) return w.error();
  return aside;
}

Result<std::string> PostgresNode::control_data(const std::string& field) const {
  auto output =
      options_.data_dir.parent_path() / (".controldata-" + std::to_string(options_.port) + ".out");
  std::filesystem::remove(output);
  auto st = run_tool("pg_controldata", {"-D", options_.data_dir.string()}, {},
                     std::chrono::seconds(30), output);
  std::string text = read_file_from(output, 0);
  std::filesystem::remove(output);
  if (!st) return make_error(st.error().code, "pg_controldata: " + text);
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos || line.substr(0, colon) != field) continue;
    auto start = line.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? std::string() : line.substr(start);
  }
  return make_error(ErrorCode::kInternal, "pg_controldata for " + options_.data_dir.string() +
                                              " has no field '" + field + "'");
}

std::optional<pid_t> PostgresNode::postmaster_pid() const {
  std::ifstream in(options_.data_dir / "postmaster.pid");
  long pid = 0;
  if (!(in >> pid) || pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

}  // namespace tally
