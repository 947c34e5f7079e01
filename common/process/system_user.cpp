#include "common/process/system_user.h"

#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tally {
namespace {

Result<SystemUser> from_passwd(const passwd& pw) {
  SystemUser user;
  user.name = pw.pw_name;
  user.uid = pw.pw_uid;
  user.gid = pw.pw_gid;
  user.home = pw.pw_dir ? pw.pw_dir : "/";
  int count = 32;
  std::vector<gid_t> groups(static_cast<size_t>(count));
  if (getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &count) == -1) {
    groups.resize(static_cast<size_t>(count));
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &count) == -1) {
      return make_error(ErrorCode::kInternal,
                        std::string("getgrouplist failed for user ") + pw.pw_name);
    }
  }
  groups.resize(static_cast<size_t>(count));
  user.groups = std::move(groups);
  return user;
}

Result<SystemUser> lookup_uid(uid_t uid) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  int rc = getpwuid_r(uid, &pw, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr) {
    return make_error(ErrorCode::kNotFound, "no passwd entry for uid " + std::to_string(uid));
  }
  return from_passwd(pw);
}

}  // namespace

bool running_as_root() {
  return geteuid() == 0;
}

Result<SystemUser> current_user() {
  return lookup_uid(geteuid());
}

Result<SystemUser> lookup_user(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  int rc = getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr) {
    return make_error(ErrorCode::kNotFound, "no system user named '" + name + "'");
  }
  return from_passwd(pw);
}

Result<SystemUser> ensure_system_user(const std::string& name) {
  auto existing = lookup_user(name);
  if (existing.ok() || !running_as_root()) return existing;
  // useradd is the portable way to add an account with its group; called with a fixed argv.
  pid_t pid = fork();
  if (pid < 0) return make_error(ErrorCode::kInternal, std::string("fork: ") + strerror(errno));
  if (pid == 0) {
    execlp("useradd", "useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
           "/nonexistent", "--shell", "/usr/sbin/nologin", name.c_str(),
           static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 9)) {
    return make_error(ErrorCode::kInternal,
                      "useradd " + name + " failed (exit status " +
                          std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")");
  }
  return lookup_user(name);
}

}  // namespace tally
