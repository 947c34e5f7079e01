// ZkClientImpl: ZkClient on ZooKeeper's multi-threaded C client. Private to common/zk (and tests);
// everything else uses zk_client.h.
//
// Threads. The C client runs an I/O thread and a completion thread per handle. Each callback it
// makes into this class (the global watcher given to zookeeper_init and every watch) only copies
// the event and posts it to the client's own queue; the client's event thread drains that queue: it
// handles session transitions, re-arms watches, re-creates ephemerals and runs user callbacks.
// Synchronous operations run on the caller's thread against the current connection.
//
// Connections. A Connection is one zookeeper_init: the handle plus the callback contexts handed to
// the C client, which live until the handle is closed (zookeeper_close joins the C client's
// threads, so no callback can reach a freed context, even after unwatch()). Each Connection has a
// generation and every event carries the generation of the handle that produced it, so late events
// from a replaced handle are ignored. Connections are shared: a synchronous call in progress keeps
// its handle open, and whoever drops the last reference closes it (never a ZooKeeper thread).
//
// Sessions. CONNECTED on a fresh handle is a new session: held ephemerals are re-created, then
// every watch is re-armed and its watcher called with the current state. CONNECTING changes nothing
// (the session, its ephemerals and server-side watches survive a reconnect within the session
// timeout; the C client re-registers its watches). EXPIRED closes the handle and opens a new one.
#pragma once

#include <zookeeper/zookeeper.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/zk/zk_client.h"

namespace tally {

// The one mapping from a ZooKeeper C client return code to an ErrorCode.
ErrorCode zk_error_code(int rc);
// An Error naming the operation, the path and ZooKeeper's text for `rc`.
Error zk_error(int rc, std::string_view operation, std::string_view path);

class ZkClientImpl final : public ZkClient {
 public:
  explicit ZkClientImpl(ZkOptions options);
  // Closes the handle first (no more C client callbacks), then stops the event thread. Never call
  // from a watcher or session listener.
  ~ZkClientImpl() override;
  ZkClientImpl(const ZkClientImpl&) = delete;
  ZkClientImpl& operator=(const ZkClientImpl&) = delete;

  // Opens the first connection and waits up to connect_timeout for a session.
  Status start();

  ZkSessionState state() const override { return state_.load(); }
  int64_t session_id() const override { return session_id_.load(); }
  int sessions_established() const override { return sessions_established_.load(); }
  std::optional<ZkSessionCredentials> session_credentials() const override;

  Result<ZkNodeData> get(const std::string& path) override;
  Result<bool> exists(const std::string& path) override;
  Result<std::vector<std::string>> children(const std::string& path) override;
  Result<std::string> create(const std::string& path, const std::string& data,
                             ZkCreateMode mode) override;
  Status ensure_path(const std::string& path) override;
  Status set(const std::string& path, const std::string& data, int32_t version) override;
  Status remove(const std::string& path, int32_t version) override;

  Status hold_ephemeral(const std::string& path, const std::string& data) override;
  Status release_ephemeral(const std::string& path) override;

  WatchId watch_data(const std::string& path, DataWatcher watcher) override;
  WatchId watch_children(const std::string& path, ChildrenWatcher watcher) override;
  void unwatch(WatchId id) override;
  void on_session_state(SessionListener listener) override;

 private:
  // What a C client callback needs to route its event: this client, the generation of the handle
  // it was registered on, and the watch (0 for the global session watcher).
  struct CallbackContext {
    ZkClientImpl* client;
    uint64_t generation;
    WatchId watch;
  };
  struct HandleCloser {
    void operator()(zhandle_t* handle) const { zookeeper_close(handle); }
  };
  struct Connection {
    uint64_t generation = 0;
    std::unique_ptr<CallbackContext> session_context;
    // One context per watch and connection, so re-arming registers the same watcher/context pair
    // (the C client keeps one of each pair per path). Event thread only.
    std::map<WatchId, std::unique_ptr<CallbackContext>> watch_contexts;
    std::atomic<int64_t> session_id{0};  // set once the handle reports CONNECTED
    bool established = false;            // event thread only
    std::unique_ptr<zhandle_t, HandleCloser> handle;
    ~Connection() { handle.reset(); }  // close before the contexts are freed
  };
  enum class WatchKind { kData, kChildren };
  struct Watch {
    WatchKind kind = WatchKind::kData;
    std::string path;
    std::shared_ptr<const DataWatcher> on_data;
    std::shared_ptr<const ChildrenWatcher> on_children;
  };

  // Runs on the C client's completion thread: copies the event and posts it, nothing else.
  static void on_zk_event(zhandle_t* handle, int type, int state, const char* path, void* context);

  // The event queue.
  void post(std::function<void()> task);
  void post_after(std::chrono::milliseconds delay, std::function<void()> task);
  void run_event_loop();
  bool on_event_thread() const { return std::this_thread::get_id() == event_thread_.get_id(); }

  // Event thread only.
  void open_connection();
  void handle_session_event(uint64_t generation, int zk_state);
  void handle_watch_event(uint64_t generation, WatchId id);
  void on_new_session(const std::shared_ptr<Connection>& connection);
  void arm_new_watch(WatchId id);
  void arm(const std::shared_ptr<Connection>& connection, WatchId id);
  void arm_pending();
  void schedule_arm_retry();
  void retry_pending_ephemerals();
  void schedule_ephemeral_retry();
  void transition(ZkSessionState next);
  void dispatch(WatchId id, const std::function<void()>& call);

  // Any thread.
  std::shared_ptr<Connection> connection() const;
  Error no_session(std::string_view operation, std::string_view path) const;
  // One attempt to make a held ephemeral exist under the current session with its latest data.
  Status attempt_ephemeral(const std::string& path);

  const ZkOptions options_;

  std::atomic<ZkSessionState> state_{ZkSessionState::kConnecting};
  std::atomic<int64_t> session_id_{0};
  std::atomic<int> sessions_established_{0};
  mutable std::mutex state_mu_;  // guards credentials_, last_error_; pairs with state_cv_
  std::condition_variable state_cv_;
  std::optional<ZkSessionCredentials> credentials_;
  std::string last_error_;

  mutable std::mutex connection_mu_;
  std::shared_ptr<Connection> connection_;
  bool stopping_ = false;  // guarded by connection_mu_

  std::mutex watches_mu_;
  std::map<WatchId, Watch> watches_;
  std::atomic<WatchId> next_watch_id_{1};
  std::mutex dispatch_mu_;  // held while a watcher runs, so unwatch() can wait for it

  std::mutex listeners_mu_;
  std::vector<std::shared_ptr<const SessionListener>> listeners_;

  std::mutex ephemerals_mu_;
  std::map<std::string, std::string> ephemerals_;  // path -> latest data
  std::mutex ephemeral_ops_mu_;                    // serializes the ZooKeeper calls for ephemerals

  // Event thread only.
  uint64_t generation_ = 0;
  std::chrono::milliseconds reconnect_backoff_{100};
  std::set<WatchId> pending_arms_;
  bool arm_retry_scheduled_ = false;
  std::set<std::string> pending_ephemerals_;
  bool ephemeral_retry_scheduled_ = false;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::function<void()>> queue_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> timers_;
  bool queue_stopped_ = false;
  std::thread event_thread_;  // last: started once everything above exists
};

}  // namespace tally
