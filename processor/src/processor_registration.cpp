#include "processor/src/processor_registration.h"

#include <algorithm>
#include <cstdio>

#include "common/core/log.h"

namespace tally::processor {

ProcessorRegistration::ProcessorRegistration(ZkOptions options, ProcessorRecord record)
    : options_(std::move(options)), record_(std::move(record)) {}

ProcessorRegistration::~ProcessorRegistration() {
  stop();
}

void ProcessorRegistration::start() {
  thread_ = std::thread([this] { run(); });
}

void ProcessorRegistration::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::unique_ptr<ZkClient> zk;
  {
    std::lock_guard lock(mu_);
    zk = std::move(zk_);
  }
  zk.reset();  // closes the session: the ephemeral node goes with it
}

std::string ProcessorRegistration::problem() const {
  std::lock_guard lock(mu_);
  return problem_;
}

void ProcessorRegistration::run() {
  const std::string path = topology_paths::processor(record_.id);
  for (int attempt = 0;; ++attempt) {
    auto zk = ZkClient::connect(options_);
    std::unique_lock lock(mu_);
    if (zk.ok()) {
      zk_ = std::move(*zk);
      problem_.clear();
      break;
    }
    problem_ = "zookeeper " + options_.hosts + ": " + zk.error().message + " (not registered in " +
               path + "; retrying)";
    if (attempt % 10 == 0) log_line("processor", problem_);
    auto wait =
        std::chrono::milliseconds(std::min<int64_t>(5000, int64_t{200} << std::min(attempt, 5)));
    if (cv_.wait_for(lock, wait, [&] { return stopping_; })) return;
  }
  // The client keeps the hold (and re-creates the node after a session expiry) even when this
  // first call returns an error because a dead predecessor's node has not expired yet.
  ZkClient* zk = nullptr;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    zk = zk_.get();
  }
  auto st = zk->hold_ephemeral(path, encode_processor(record_));
  std::lock_guard lock(mu_);
  if (!st) {
    problem_ = "zookeeper: " + path + ": " + st.error().message +
               (zk_retryable(st.error().code) || st.error().code == ErrorCode::kConflict
                    ? " (still trying)"
                    : "");
    log_line("processor", problem_);
  } else {
    log_line("processor", "registered in ZooKeeper as " + path);
  }
}

}  // namespace tally::processor
