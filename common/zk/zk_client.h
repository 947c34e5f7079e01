// ZkClient: the one owner of a ZooKeeper session (zhandle_t) for a process.
// It re-establishes an expired session by itself, re-creates the ephemeral nodes registered through
// it, and keeps every watch registered through it armed (ZooKeeper watches fire once; the client
// re-arms them after each event and after a new session, and then tells the watcher).
// Synchronous calls block: never call them from an io_context thread. Watch and session callbacks
// run on the client's own event thread, one at a time; they must only hand the event to their owner
// (post to an executor, push to a queue) and return quickly.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/core/result.h"

namespace tally {

enum class ZkSessionState {
  kConnecting,  // no server reachable right now; the session may still be alive
  kConnected,
  kExpired,  // momentary: the client is establishing a new session
  kClosed,
};

std::string_view zk_session_state_name(ZkSessionState state);

// True for errors worth retrying after a pause: connection loss, no session right now.
bool zk_retryable(ErrorCode code);

struct ZkOptions {
  std::string hosts = "127.0.0.1:2181";  // ZooKeeper connect string
  std::chrono::milliseconds session_timeout{10000};
  std::chrono::milliseconds connect_timeout{10000};  // how long create() waits for a first session
};

struct ZkNodeData {
  std::string data;
  int32_t version = 0;  // for compare-and-set
  int64_t ephemeral_owner = 0;
};

// What identifies a session to a ZooKeeper server. Never logged: the password lets anyone take over
// the session.
struct ZkSessionCredentials {
  int64_t session_id = 0;
  std::string password;  // opaque bytes
};

enum class ZkCreateMode { kPersistent, kEphemeral, kPersistentSequential, kEphemeralSequential };

class ZkClient {
 public:
  using WatchId = uint64_t;
  // Called with the node's data after every change (std::nullopt when it does not exist), once
  // right after registration, and again after a new session (changes may have been missed
  // meanwhile).
  using DataWatcher = std::function<void(const std::optional<ZkNodeData>&)>;
  // Called with the sorted child names after every change (empty when the node does not exist).
  using ChildrenWatcher = std::function<void(const std::vector<std::string>&)>;
  using SessionListener = std::function<void(ZkSessionState)>;

  // Connects and waits up to options.connect_timeout for a session: an error if none comes.
  // Start-up path: the caller decides whether to retry or give up.
  static Result<std::unique_ptr<ZkClient>> connect(const ZkOptions& options);

  virtual ~ZkClient() = default;

  virtual ZkSessionState state() const = 0;
  // The current session id (changes after an expiry), 0 when none.
  virtual int64_t session_id() const = 0;
  // How many sessions this client has established (1 after connect; +1 per re-established session).
  virtual int sessions_established() const = 0;
  // The current session's credentials, std::nullopt without a session. For tools and tests that
  // must act on the session itself (e.g. expire it on purpose by closing a second handle opened
  // with them). Not pure, so fakes need not implement it.
  virtual std::optional<ZkSessionCredentials> session_credentials() const { return std::nullopt; }

  // Operations. Errors: kNotFound (no node), kAlreadyExists, kConflict (bad version / not empty),
  // kUnavailable (connection loss / no session; retryable), kInvalidArgument, kInternal.
  virtual Result<ZkNodeData> get(const std::string& path) = 0;
  virtual Result<bool> exists(const std::string& path) = 0;
  virtual Result<std::vector<std::string>> children(const std::string& path) = 0;
  // Returns the created path (differs from `path` for sequential nodes).
  virtual Result<std::string> create(const std::string& path, const std::string& data,
                                     ZkCreateMode mode = ZkCreateMode::kPersistent) = 0;
  // Creates `path` and any missing parents as persistent empty nodes; existing nodes are fine.
  virtual Status ensure_path(const std::string& path) = 0;
  // Compare-and-set when version >= 0; unconditional with -1.
  virtual Status set(const std::string& path, const std::string& data, int32_t version) = 0;
  virtual Status remove(const std::string& path, int32_t version = -1) = 0;

  // An ephemeral node that the client owns: created now and re-created (with its latest data) on
  // every new session until release_ephemeral(). Parents are created as needed. If the node exists
  // under another session (e.g. a dead predecessor's, not yet expired), waits for it to go: up to
  // session_timeout + connect_timeout here, then returns the error (kConflict or kUnavailable)
  // while the client keeps trying in the background. A non-retryable error (kInvalidArgument, a
  // persistent node in the way: kAlreadyExists) drops the hold.
  virtual Status hold_ephemeral(const std::string& path, const std::string& data) = 0;
  virtual Status release_ephemeral(const std::string& path) = 0;

  // Watches stay armed until unwatch(); see the callbacks' contracts above. Once unwatch() returns
  // the watcher is not running and will not be called again (when called from another thread than
  // the event thread it waits for a running callback: do not hold a lock the watcher takes).
  virtual WatchId watch_data(const std::string& path, DataWatcher watcher) = 0;
  virtual WatchId watch_children(const std::string& path, ChildrenWatcher watcher) = 0;
  virtual void unwatch(WatchId id) = 0;
  virtual void on_session_state(SessionListener listener) = 0;
};

}  // namespace tally
