// SystemUser: an operating-system account that child processes can run as.
// PostgreSQL refuses to run as root, so a root launcher drops to a dedicated account for it;
// a normal user runs everything as itself. Pure lookups; safe from any thread.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/core/result.h"

namespace tally {

struct SystemUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::vector<gid_t> groups;  // supplementary groups, resolved before any fork
};

// The account this process runs as.
Result<SystemUser> current_user();
// Looks up an account by name; kNotFound when it does not exist.
Result<SystemUser> lookup_user(const std::string& name);
// Returns the account, creating it as a locked system account (no login shell) when the caller is
// root and it does not exist yet.
Result<SystemUser> ensure_system_user(const std::string& name);

bool running_as_root();

}  // namespace tally
