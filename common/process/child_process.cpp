#include "common/process/child_process.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace tally {
namespace {

// Everything the child needs, prepared before fork so the child only makes async-signal-safe calls.
struct PreparedExec {
  std::vector<std::string> argv_storage;
  std::vector<char*> argv;
  std::vector<std::string> env_storage;
  std::vector<char*> envp;
  std::string exe;
  std::string workdir;
};

PreparedExec prepare(const SpawnOptions& options) {
  PreparedExec p;
  p.argv_storage = options.argv;
  for (auto& a : p.argv_storage) p.argv.push_back(a.data());
  p.argv.push_back(nullptr);

  std::vector<std::pair<std::string, std::string>> env = options.env;
  if (options.run_as) {
    env.emplace_back("HOME", options.run_as->home);
    env.emplace_back("USER", options.run_as->name);
    env.emplace_back("LOGNAME", options.run_as->name);
  }
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    std::string key = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const auto& [k, v] : env) overridden = overridden || k == key;
    if (!overridden) p.env_storage.push_back(entry);
  }
  for (const auto& [k, v] : env) p.env_storage.push_back(k + "=" + v);
  for (auto& e : p.env_storage) p.envp.push_back(e.data());
  p.envp.push_back(nullptr);

  p.exe = options.argv.empty() ? "" : options.argv[0];
  if (!p.exe.empty() && p.exe.find('/') == std::string::npos) {
    // Resolve against PATH here: execvpe would allocate in the child.
    const char* path = getenv("PATH");
    std::stringstream dirs(path ? path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
      std::string candidate = dir + "/" + p.exe;
      if (access(candidate.c_str(), X_OK) == 0) {
        p.exe = candidate;
        break;
      }
    }
  }
  p.workdir = options.working_dir.string();
  return p;
}

// In the child: redirect output, drop privileges, exec. Reports errno through `report_fd`.
[[noreturn]] void exec_child(const PreparedExec& p, const SpawnOptions& options, int log_fd,
                             int report_fd) {
  int devnull = open("/dev/null", O_RDONLY);
  if (devnull >= 0) dup2(devnull, STDIN_FILENO);
  if (log_fd >= 0) {
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
  }
  auto fail = [report_fd](int step) {
    int payload[2] = {step, errno};
    ssize_t ignored = write(report_fd, payload, sizeof(payload));
    (void)ignored;
    _exit(127);
  };
  if (!p.workdir.empty() && chdir(p.workdir.c_str()) != 0) fail(1);
  if (options.run_as && geteuid() == 0) {
    const auto& u = *options.run_as;
    if (setgroups(u.groups.size(), u.groups.data()) != 0) fail(2);
    if (setgid(u.gid) != 0) fail(3);
    if (setuid(u.uid) != 0) fail(4);
  }
  // Children must not inherit our signal mask or ignored signals.
  sigset_t empty;
  sigemptyset(&empty);
  sigprocmask(SIG_SETMASK, &empty, nullptr);
  signal(SIGPIPE, SIG_DFL);
  execve(p.exe.c_str(), p.argv.data(), p.envp.data());
  fail(5);
  _exit(127);  // fail() never returns; this tells the compiler so.
}

std::string step_name(int step) {
  switch (step) {
    case 1:
      return "chdir";
    case 2:
      return "setgroups";
    case 3:
      return "setgid";
    case 4:
      return "setuid";
    case 5:
      return "exec";
    default:
      return "start";
  }
}

Result<int> open_log(const SpawnOptions& options) {
  if (options.log_file.empty()) return -1;
  int fd = open(options.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return make_error(ErrorCode::kInternal,
                      "cannot open log file " + options.log_file.string() + ": " + strerror(errno));
  }
  if (options.run_as && geteuid() == 0) {
    // The child writes to an fd we opened, but a restart may reopen it as the service account.
    if (fchown(fd, options.run_as->uid, options.run_as->gid) != 0) {
      close(fd);
      return make_error(ErrorCode::kInternal, "cannot chown log file " + options.log_file.string() +
                                                  ": " + strerror(errno));
    }
  }
  return fd;
}

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

std::string describe(const SpawnOptions& options) {
  std::string out;
  for (const auto& a : options.argv) {
    if (!out.empty()) out += ' ';
    out += a;
  }
  return out;
}

Status check_exec_report(int read_fd, const SpawnOptions& options) {
  int payload[2] = {0, 0};
  ssize_t n;
  do {
    n = read(read_fd, payload, sizeof(payload));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(payload))) {
    return make_error(ErrorCode::kInternal, "cannot start '" + describe(options) +
                                                "': " + step_name(payload[0]) +
                                                " failed: " + strerror(payload[1]));
  }
  return ok_status();
}

}  // namespace

Result<pid_t> spawn_daemon(const SpawnOptions& options) {
  if (options.argv.empty()) return make_error(ErrorCode::kInvalidArgument, "empty argv");
  auto log = open_log(options);
  if (!log) return log.error();
  FdCloser log_closer(*log);
  PreparedExec prepared = prepare(options);

  int pid_pipe[2];
  int report_pipe[2];
  if (pipe2(pid_pipe, O_CLOEXEC) != 0) {
    return make_error(ErrorCode::kInternal, std::string("pipe: ") + strerror(errno));
  }
  FdCloser pid_r(pid_pipe[0]);
  if (pipe2(report_pipe, O_CLOEXEC) != 0) {
    close(pid_pipe[1]);
    return make_error(ErrorCode::kInternal, std::string("pipe: ") + strerror(errno));
  }
  FdCloser report_r(report_pipe[0]);

  pid_t middle = fork();
  if (middle < 0) {
    close(pid_pipe[1]);
    close(report_pipe[1]);
    return make_error(ErrorCode::kInternal, std::string("fork: ") + strerror(errno));
  }
  if (middle == 0) {
    // Intermediate: new session, fork the daemon, report its PID, exit so init adopts it.
    setsid();
    pid_t daemon_pid = fork();
    if (daemon_pid == 0) exec_child(prepared, options, *log, report_pipe[1]);
    ssize_t ignored = write(pid_pipe[1], &daemon_pid, sizeof(daemon_pid));
    (void)ignored;
    _exit(daemon_pid < 0 ? 1 : 0);
  }
  close(pid_pipe[1]);
  close(report_pipe[1]);
  int status = 0;
  while (waitpid(middle, &status, 0) < 0 && errno == EINTR) {
  }
  pid_t daemon_pid = -1;
  ssize_t n;
  do {
    n = read(pid_pipe[0], &daemon_pid, sizeof(daemon_pid));
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(daemon_pid)) || daemon_pid <= 0) {
    return make_error(ErrorCode::kInternal,
                      "cannot start '" + describe(options) + "': fork failed");
  }
  auto report = check_exec_report(report_pipe[0], options);
  if (!report) return report.error();
  return daemon_pid;
}

Result<int> run_command(const SpawnOptions& options, std::chrono::milliseconds timeout) {
  if (options.argv.empty()) return make_error(ErrorCode::kInvalidArgument, "empty argv");
  auto log = open_log(options);
  if (!log) return log.error();
  FdCloser log_closer(*log);
  PreparedExec prepared = prepare(options);
  int report_pipe[2];
  if (pipe2(report_pipe, O_CLOEXEC) != 0) {
    return make_error(ErrorCode::kInternal, std::string("pipe: ") + strerror(errno));
  }
  FdCloser report_r(report_pipe[0]);
  pid_t pid = fork();
  if (pid < 0) {
    close(report_pipe[1]);
    return make_error(ErrorCode::kInternal, std::string("fork: ") + strerror(errno));
  }
  if (pid == 0) exec_child(prepared, options, *log, report_pipe[1]);
  close(report_pipe[1]);
  auto report = check_exec_report(report_pipe[0], options);

  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (true) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      return make_error(ErrorCode::kInternal, std::string("waitpid: ") + strerror(errno));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return make_error(ErrorCode::kTimeout, "'" + describe(options) + "' did not finish within " +
                                                 std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!report) return report.error();
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  // Field 3, after the parenthesised command name, is the state; Z and X are dead.
  auto close_paren = line.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= line.size()) return false;
  char state = line[close_paren + 2];
  return state != 'Z' && state != 'X';
}

std::string process_cmdline(pid_t pid) {
  if (pid <= 0) return {};
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (char& c : raw) {
    if (c == '\0') c = ' ';
  }
  while (!raw.empty() && raw.back() == ' ') raw.pop_back();
  return raw;
}

bool process_matches(pid_t pid, const std::string& needle) {
  return process_alive(pid) && process_cmdline(pid).find(needle) != std::string::npos;
}

Status stop_process(pid_t pid, const std::string& needle, int signal,
                    std::chrono::milliseconds grace) {
  if (!process_alive(pid)) return ok_status();
  if (!process_matches(pid, needle)) {
    return make_error(ErrorCode::kConflict, "pid " + std::to_string(pid) +
                                                " is no longer the expected process (" + needle +
                                                "); not signalling it");
  }
  auto wait_gone = [pid](std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      // Reap it if it happens to be our own child.
      waitpid(pid, nullptr, WNOHANG);
      if (!process_alive(pid)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return !process_alive(pid);
  };
  kill(pid, signal);
  if (wait_gone(grace)) return ok_status();
  kill(pid, SIGKILL);
  if (wait_gone(std::chrono::seconds(5))) return ok_status();
  return make_error(ErrorCode::kTimeout,
                    "pid " + std::to_string(pid) + " survived SIGKILL for 5 s");
}

std::string read_file_from(const std::filesystem::path& file, size_t offset) {
  std::ifstream in(file, std::ios::binary | std::ios::ate);
  if (!in) return {};
  auto size = static_cast<size_t>(in.tellg());
  if (offset >= size) return {};
  in.seekg(static_cast<std::streamoff>(offset));
  std::string out(size - offset, '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

std::string tail_file(const std::filesystem::path& file, size_t max_bytes) {
  std::ifstream in(file, std::ios::binary | std::ios::ate);
  if (!in) return {};
  auto size = static_cast<size_t>(in.tellg());
  size_t start = size > max_bytes ? size - max_bytes : 0;
  in.seekg(static_cast<std::streamoff>(start));
  std::string out(size - start, '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

}  // namespace tally
