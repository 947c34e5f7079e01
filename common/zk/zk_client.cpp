#include "common/zk/zk_client.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <utility>

#include "common/core/log.h"
#include "common/zk/zk_client_impl.h"

namespace tally {
namespace {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kMaxReconnectBackoff{5000};
constexpr milliseconds kArmRetryDelay{500};
constexpr milliseconds kEphemeralRetryDelay{500};
constexpr int kInitialDataBuffer = 16 * 1024;

void zk_log(const char* level, const std::string& message) {
  log_line(std::string("tally zk ") + level, message);
}

// The C client logs each reconnect attempt, about thirty lines a second while a server is down.
// Its lines go to stderr through this sink, at most 5 per 10 s (LogThrottle's defaults), then one
// line saying how many were suppressed. Process-wide like the C client's own log level: the C
// client's callback carries no context. Runs on the C client's threads.
void c_client_log(const char* message) {
  static const SystemClock clock;
  static LogThrottle throttle(clock, "ZooKeeper C client");
  throttle.log("c-client", message);
}

std::string hex_session(int64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%" PRIx64, static_cast<uint64_t>(id));
  return buf;
}

Status check_path(std::string_view operation, const std::string& path) {
  bool ok = !path.empty() && path[0] == '/' && (path.size() == 1 || path.back() != '/') &&
            path.find("//") == std::string::npos && path.find('\0') == std::string::npos;
  if (ok) return ok_status();
  return make_error(ErrorCode::kInvalidArgument,
                    "ZooKeeper " + std::string(operation) + " '" + path +
                        "': not an absolute path without empty components");
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

int data_len(const std::string& data) {
  return static_cast<int>(data.size());
}

// zoo_wget without a watcher is zoo_get; with one it registers (watcher, context) for `path`.
Result<ZkNodeData> read_node(zhandle_t* zh, const std::string& path, watcher_fn watcher,
                             void* context) {
  std::string buffer(kInitialDataBuffer, '\0');
  for (int attempt = 0; attempt < 8; ++attempt) {
    int len = static_cast<int>(buffer.size());
    struct Stat stat {};
    int rc = zoo_wget(zh, path.c_str(), watcher, context, buffer.data(), &len, &stat);
    if (rc != ZOK) return zk_error(rc, "get", path);
    if (stat.dataLength > static_cast<int>(buffer.size())) {
      // Truncated: read again with room for all of it (ZooKeeper caps data at about 1 MB).
      buffer.assign(static_cast<size_t>(stat.dataLength), '\0');
      continue;
    }
    ZkNodeData node;
    node.data.assign(buffer.data(), static_cast<size_t>(std::max(len, 0)));
    node.version = stat.version;
    node.ephemeral_owner = stat.ephemeralOwner;
    return node;
  }
  return make_error(ErrorCode::kInternal, "ZooKeeper get " + path + ": data kept growing");
}

Result<std::vector<std::string>> read_children(zhandle_t* zh, const std::string& path,
                                               watcher_fn watcher, void* context) {
  struct String_vector names {};
  int rc = zoo_wget_children(zh, path.c_str(), watcher, context, &names);
  if (rc != ZOK) return zk_error(rc, "get_children", path);
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(names.count));
  for (int32_t i = 0; i < names.count; ++i) out.emplace_back(names.data[i]);
  deallocate_String_vector(&names);
  std::sort(out.begin(), out.end());
  return out;
}

Status ensure_path_on(zhandle_t* zh, const std::string& path) {
  struct Stat stat {};
  int rc = zoo_exists(zh, path.c_str(), 0, &stat);
  if (rc == ZOK) return ok_status();
  if (rc != ZNONODE) return zk_error(rc, "exists", path);
  for (size_t next = path.find('/', 1);; next = path.find('/', next + 1)) {
    std::string prefix = next == std::string::npos ? path : path.substr(0, next);
    rc = zoo_create(zh, prefix.c_str(), nullptr, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, nullptr,
                    0);
    if (rc != ZOK && rc != ZNODEEXISTS) return zk_error(rc, "create", prefix);
    if (next == std::string::npos) return ok_status();
  }
}

void invoke_safely(const char* what, const std::function<void()>& call) {
  try {
    call();
  } catch (const std::exception& e) {
    zk_log("ERROR", std::string(what) + " threw: " + e.what());
  } catch (...) {
    zk_log("ERROR", std::string(what) + " threw a non-standard exception");
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Errors and names.

ErrorCode zk_error_code(int rc) {
  switch (rc) {
    case ZNONODE:
      return ErrorCode::kNotFound;
    case ZNODEEXISTS:
      return ErrorCode::kAlreadyExists;
    case ZBADVERSION:
    case ZNOTEMPTY:
      return ErrorCode::kConflict;
    case ZCONNECTIONLOSS:
    case ZOPERATIONTIMEOUT:
    case ZSESSIONEXPIRED:
    case ZSESSIONMOVED:
    case ZINVALIDSTATE:
    case ZCLOSING:
    case ZTHROTTLEDOP:
      return ErrorCode::kUnavailable;
    case ZBADARGUMENTS:
    case ZNOCHILDRENFOREPHEMERALS:
    case ZINVALIDACL:
      return ErrorCode::kInvalidArgument;
    case ZNOAUTH:
    case ZAUTHFAILED:
      return ErrorCode::kPermissionDenied;
    default:
      return ErrorCode::kInternal;
  }
}

Error zk_error(int rc, std::string_view operation, std::string_view path) {
  return make_error(zk_error_code(rc), "ZooKeeper " + std::string(operation) + " " +
                                           std::string(path) + ": " + zerror(rc));
}

bool zk_retryable(ErrorCode code) {
  return code == ErrorCode::kUnavailable || code == ErrorCode::kTimeout;
}

std::string_view zk_session_state_name(ZkSessionState state) {
  switch (state) {
    case ZkSessionState::kConnecting:
      return "connecting";
    case ZkSessionState::kConnected:
      return "connected";
    case ZkSessionState::kExpired:
      return "expired";
    case ZkSessionState::kClosed:
      return "closed";
  }
  return "unknown";
}

Result<std::unique_ptr<ZkClient>> ZkClient::connect(const ZkOptions& options) {
  if (options.hosts.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "ZooKeeper hosts must not be empty");
  }
  if (options.session_timeout.count() <= 0 || options.connect_timeout.count() <= 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      "ZooKeeper session_timeout and connect_timeout must be positive");
  }
  static std::once_flag quiet_c_client;
  std::call_once(quiet_c_client, [] { zoo_set_debug_level(ZOO_LOG_LEVEL_WARN); });
  auto client = std::make_unique<ZkClientImpl>(options);
  if (auto st = client->start(); !st) return st.error();
  return std::unique_ptr<ZkClient>(std::move(client));
}

// ---------------------------------------------------------------------------------------------
// Life cycle.

ZkClientImpl::ZkClientImpl(ZkOptions options) : options_(std::move(options)) {
  event_thread_ = std::thread([this] { run_event_loop(); });
}

ZkClientImpl::~ZkClientImpl() {
  std::shared_ptr<Connection> last;
  {
    std::lock_guard lock(connection_mu_);
    stopping_ = true;
    last = std::move(connection_);
  }
  // zookeeper_close joins the C client's threads. If the event thread is using this connection
  // right now, it closes it when it lets go, before the join below returns.
  last.reset();
  {
    std::lock_guard lock(queue_mu_);
    queue_stopped_ = true;
  }
  queue_cv_.notify_all();
  if (event_thread_.joinable()) event_thread_.join();
  state_.store(ZkSessionState::kClosed);
}

Status ZkClientImpl::start() {
  post([this] { open_connection(); });
  std::unique_lock lock(state_mu_);
  bool connected = state_cv_.wait_for(lock, options_.connect_timeout,
                                      [this] { return sessions_established_.load() > 0; });
  if (connected) return ok_status();
  std::string message = "no ZooKeeper session with " + options_.hosts + " within " +
                        std::to_string(options_.connect_timeout.count()) + " ms";
  if (!last_error_.empty()) message += " (" + last_error_ + ")";
  return make_error(ErrorCode::kUnavailable, message);
}

// ---------------------------------------------------------------------------------------------
// The event queue.

void ZkClientImpl::on_zk_event(zhandle_t*, int type, int state, const char*, void* context) {
  auto* ctx = static_cast<CallbackContext*>(context);
  if (ctx == nullptr) return;
  bool session_watcher = ctx->watch == 0;
  // Watchers also receive every session event; the global watcher reports those once.
  if (session_watcher != (type == ZOO_SESSION_EVENT)) return;
  ZkClientImpl* client = ctx->client;
  uint64_t generation = ctx->generation;
  WatchId watch = ctx->watch;
  if (session_watcher) {
    client->post([client, generation, state] { client->handle_session_event(generation, state); });
  } else {
    client->post([client, generation, watch] { client->handle_watch_event(generation, watch); });
  }
}

void ZkClientImpl::post(std::function<void()> task) {
  {
    std::lock_guard lock(queue_mu_);
    if (queue_stopped_) return;
    queue_.push_back(std::move(task));
  }
  queue_cv_.notify_one();
}

void ZkClientImpl::post_after(milliseconds delay, std::function<void()> task) {
  {
    std::lock_guard lock(queue_mu_);
    if (queue_stopped_) return;
    timers_.emplace(SteadyClock::now() + delay, std::move(task));
  }
  queue_cv_.notify_one();
}

void ZkClientImpl::run_event_loop() {
  std::unique_lock lock(queue_mu_);
  while (!queue_stopped_) {
    auto now = SteadyClock::now();
    while (!timers_.empty() && timers_.begin()->first <= now) {
      queue_.push_back(std::move(timers_.begin()->second));
      timers_.erase(timers_.begin());
    }
    if (!queue_.empty()) {
      std::function<void()> task = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      invoke_safely("ZooKeeper event handler", task);
      task = nullptr;
      lock.lock();
      continue;
    }
    if (timers_.empty()) {
      queue_cv_.wait(lock);
    } else {
      queue_cv_.wait_until(lock, timers_.begin()->first);
    }
  }
  queue_.clear();
  timers_.clear();
}

// ---------------------------------------------------------------------------------------------
// Sessions (event thread).

std::shared_ptr<ZkClientImpl::Connection> ZkClientImpl::connection() const {
  std::lock_guard lock(connection_mu_);
  return connection_;
}

void ZkClientImpl::open_connection() {
  {
    std::lock_guard lock(connection_mu_);
    if (stopping_) return;
  }
  auto conn = std::make_shared<Connection>();
  conn->generation = ++generation_;
  conn->session_context =
      std::make_unique<CallbackContext>(CallbackContext{this, conn->generation, 0});
  errno = 0;
  zhandle_t* handle = zookeeper_init2(options_.hosts.c_str(), &ZkClientImpl::on_zk_event,
                                      static_cast<int>(options_.session_timeout.count()), nullptr,
                                      conn->session_context.get(), 0, &c_client_log);
  if (handle == nullptr) {
    std::string error = "zookeeper_init(" + options_.hosts + ") failed: " + std::strerror(errno);
    zk_log("WARN", error + "; retrying in " + std::to_string(reconnect_backoff_.count()) + " ms");
    {
      std::lock_guard lock(state_mu_);
      last_error_ = error;
    }
    post_after(reconnect_backoff_, [this] { open_connection(); });
    reconnect_backoff_ = std::min(reconnect_backoff_ * 2, kMaxReconnectBackoff);
    return;
  }
  reconnect_backoff_ = milliseconds(100);
  conn->handle.reset(handle);
  std::shared_ptr<Connection> unused;
  {
    std::lock_guard lock(connection_mu_);
    if (stopping_) {
      unused = std::move(conn);  // closed below, outside the lock
    } else {
      connection_ = std::move(conn);
    }
  }
}

void ZkClientImpl::handle_session_event(uint64_t generation, int zk_state) {
  auto conn = connection();
  if (!conn || conn->generation != generation) return;  // from a handle already replaced

  if (zk_state == ZOO_CONNECTED_STATE) {
    if (!conn->established) {
      on_new_session(conn);
      return;
    }
    // Reconnected within the session: ephemerals and watches survived.
    transition(ZkSessionState::kConnected);
    arm_pending();
    if (!pending_ephemerals_.empty()) retry_pending_ephemerals();
    return;
  }
  if (zk_state == ZOO_EXPIRED_SESSION_STATE) {
    zk_log("WARN", "session " + hex_session(conn->session_id.load()) + " with " + options_.hosts +
                       " expired; opening a new session");
    {
      std::lock_guard lock(connection_mu_);
      if (connection_ == conn) connection_.reset();
    }
    {
      std::lock_guard lock(state_mu_);
      session_id_.store(0);
      credentials_.reset();
    }
    transition(ZkSessionState::kExpired);
    conn.reset();  // zookeeper_close, unless a caller is still in a call on it
    open_connection();
    return;
  }
  if (zk_state == ZOO_AUTH_FAILED_STATE) {
    zk_log("ERROR", "authentication with " + options_.hosts + " failed; the client is closed");
    {
      std::lock_guard lock(connection_mu_);
      if (connection_ == conn) connection_.reset();
    }
    {
      std::lock_guard lock(state_mu_);
      session_id_.store(0);
      credentials_.reset();
    }
    transition(ZkSessionState::kClosed);
    return;
  }
  // CONNECTING, ASSOCIATING, NOTCONNECTED, READONLY: no server usable right now; the session may
  // well be alive, so keep everything as it is and let the C client reconnect.
  if (conn->established) transition(ZkSessionState::kConnecting);
}

void ZkClientImpl::on_new_session(const std::shared_ptr<Connection>& conn) {
  const clientid_t* id = zoo_client_id(conn->handle.get());
  conn->session_id.store(id->client_id);
  conn->established = true;
  ZkSessionCredentials credentials;
  credentials.session_id = id->client_id;
  credentials.password.assign(id->passwd, sizeof(id->passwd));

  // Ephemerals first, so whoever reacts to kConnected or to a watcher finds them back.
  pending_ephemerals_.clear();
  std::vector<std::string> held;
  {
    std::lock_guard lock(ephemerals_mu_);
    for (const auto& [path, data] : ephemerals_) held.push_back(path);
  }
  for (const auto& path : held) {
    if (Status st = attempt_ephemeral(path); !st) {
      zk_log("WARN", "re-creating ephemeral " + path + ": " + st.error().message);
      pending_ephemerals_.insert(path);
    }
  }

  int count = 0;
  {
    std::lock_guard lock(state_mu_);
    session_id_.store(id->client_id);
    credentials_ = std::move(credentials);
    last_error_.clear();
    count = sessions_established_.fetch_add(1) + 1;
  }
  if (count > 1) {
    zk_log("WARN", "new session " + hex_session(id->client_id) + " with " + options_.hosts +
                       " (session #" + std::to_string(count) + ")");
  }
  transition(ZkSessionState::kConnected);

  // Nothing is armed on a new handle: arm every watch and tell each watcher what is there now.
  pending_arms_.clear();
  std::vector<WatchId> ids;
  {
    std::lock_guard lock(watches_mu_);
    for (const auto& [watch_id, watch] : watches_) ids.push_back(watch_id);
  }
  for (WatchId watch_id : ids) arm(conn, watch_id);
  if (!pending_ephemerals_.empty()) schedule_ephemeral_retry();
}

void ZkClientImpl::transition(ZkSessionState next) {
  ZkSessionState previous;
  {
    std::lock_guard lock(state_mu_);
    previous = state_.exchange(next);
  }
  state_cv_.notify_all();
  if (previous == next) return;
  std::vector<std::shared_ptr<const SessionListener>> listeners;
  {
    std::lock_guard lock(listeners_mu_);
    listeners = listeners_;
  }
  for (const auto& listener : listeners) {
    invoke_safely("ZooKeeper session listener", [&] { (*listener)(next); });
  }
}

std::optional<ZkSessionCredentials> ZkClientImpl::session_credentials() const {
  std::lock_guard lock(state_mu_);
  return credentials_;
}

void ZkClientImpl::on_session_state(SessionListener listener) {
  std::lock_guard lock(listeners_mu_);
  listeners_.push_back(std::make_shared<const SessionListener>(std::move(listener)));
}

// ---------------------------------------------------------------------------------------------
// Watches (event thread, except registration).

ZkClient::WatchId ZkClientImpl::watch_data(const std::string& path, DataWatcher watcher) {
  WatchId id = next_watch_id_.fetch_add(1);
  {
    std::lock_guard lock(watches_mu_);
    Watch& watch = watches_[id];
    watch.kind = WatchKind::kData;
    watch.path = path;
    watch.on_data = std::make_shared<const DataWatcher>(std::move(watcher));
  }
  post([this, id] { arm_new_watch(id); });
  return id;
}

ZkClient::WatchId ZkClientImpl::watch_children(const std::string& path, ChildrenWatcher watcher) {
  WatchId id = next_watch_id_.fetch_add(1);
  {
    std::lock_guard lock(watches_mu_);
    Watch& watch = watches_[id];
    watch.kind = WatchKind::kChildren;
    watch.path = path;
    watch.on_children = std::make_shared<const ChildrenWatcher>(std::move(watcher));
  }
  post([this, id] { arm_new_watch(id); });
  return id;
}

void ZkClientImpl::unwatch(WatchId id) {
  {
    std::lock_guard lock(watches_mu_);
    watches_.erase(id);
  }
  // The C client may still deliver an event for it: its context lives as long as the handle, and
  // the event thread finds no watch under the id. Wait for a callback that is running right now.
  if (!on_event_thread()) {
    std::lock_guard wait_for_callback(dispatch_mu_);
  }
}

void ZkClientImpl::arm_new_watch(WatchId id) {
  auto conn = connection();
  // Without a session yet, on_new_session arms every watch.
  if (!conn || !conn->established) return;
  arm(conn, id);
}

void ZkClientImpl::handle_watch_event(uint64_t generation, WatchId id) {
  auto conn = connection();
  if (!conn || conn->generation != generation || !conn->established) return;
  // One-shot: the watch that fired is gone; reading again re-arms it and yields the fresh state.
  arm(conn, id);
}

void ZkClientImpl::arm(const std::shared_ptr<Connection>& conn, WatchId id) {
  Watch watch;
  {
    std::lock_guard lock(watches_mu_);
    auto it = watches_.find(id);
    if (it == watches_.end()) return;
    watch = it->second;
  }
  auto& context = conn->watch_contexts[id];
  if (!context)
    context = std::make_unique<CallbackContext>(CallbackContext{this, conn->generation, id});
  zhandle_t* zh = conn->handle.get();
  watcher_fn fn = &ZkClientImpl::on_zk_event;
  void* ctx = context.get();

  // A missing node is watched with exists, so its creation is noticed. If it appears between the
  // two calls, exists arms a data watch (the same pair; not duplicated) and the loop reads it.
  std::optional<Error> error;
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (watch.kind == WatchKind::kData) {
      auto node = read_node(zh, watch.path, fn, ctx);
      if (node.ok()) {
        pending_arms_.erase(id);
        dispatch(id, [&] { (*watch.on_data)(std::optional<ZkNodeData>(*node)); });
        return;
      }
      if (node.error().code != ErrorCode::kNotFound) {
        error = node.error();
        break;
      }
    } else {
      auto names = read_children(zh, watch.path, fn, ctx);
      if (names.ok()) {
        pending_arms_.erase(id);
        dispatch(id, [&] { (*watch.on_children)(*names); });
        return;
      }
      if (names.error().code != ErrorCode::kNotFound) {
        error = names.error();
        break;
      }
    }
    struct Stat stat {};
    int rc = zoo_wexists(zh, watch.path.c_str(), fn, ctx, &stat);
    if (rc == ZNONODE) {
      pending_arms_.erase(id);
      if (watch.kind == WatchKind::kData) {
        dispatch(id, [&] { (*watch.on_data)(std::nullopt); });
      } else {
        dispatch(id, [&] { (*watch.on_children)({}); });
      }
      return;
    }
    if (rc != ZOK) {
      error = zk_error(rc, "exists", watch.path);
      break;
    }
  }
  if (!error)
    error = make_error(ErrorCode::kUnavailable, "ZooKeeper watch " + watch.path + ": churn");
  if (zk_retryable(error->code)) {
    // Typically a connection loss: retried when the session is back (or after a pause).
    pending_arms_.insert(id);
    schedule_arm_retry();
  } else {
    zk_log("ERROR", "cannot watch " + watch.path + ": " + error->message);
  }
}

void ZkClientImpl::arm_pending() {
  arm_retry_scheduled_ = false;
  auto conn = connection();
  if (!conn || !conn->established) return;  // a new session arms everything
  std::vector<WatchId> ids(pending_arms_.begin(), pending_arms_.end());
  for (WatchId id : ids) arm(conn, id);
}

void ZkClientImpl::schedule_arm_retry() {
  if (arm_retry_scheduled_) return;
  arm_retry_scheduled_ = true;
  post_after(kArmRetryDelay, [this] { arm_pending(); });
}

void ZkClientImpl::dispatch(WatchId id, const std::function<void()>& call) {
  std::lock_guard running(dispatch_mu_);
  {
    std::lock_guard lock(watches_mu_);
    if (watches_.find(id) == watches_.end()) return;  // unwatched meanwhile
  }
  invoke_safely("ZooKeeper watcher", call);
}

// ---------------------------------------------------------------------------------------------
// Synchronous operations (caller's thread).

Error ZkClientImpl::no_session(std::string_view operation, std::string_view path) const {
  return make_error(ErrorCode::kUnavailable,
                    "ZooKeeper " + std::string(operation) + " " + std::string(path) +
                        ": no session with " + options_.hosts + " (" +
                        std::string(zk_session_state_name(state_.load())) + ")");
}

Result<ZkNodeData> ZkClientImpl::get(const std::string& path) {
  if (auto st = check_path("get", path); !st) return st.error();
  auto conn = connection();
  if (!conn) return no_session("get", path);
  return read_node(conn->handle.get(), path, nullptr, nullptr);
}

Result<bool> ZkClientImpl::exists(const std::string& path) {
  if (auto st = check_path("exists", path); !st) return st.error();
  auto conn = connection();
  if (!conn) return no_session("exists", path);
  struct Stat stat {};
  int rc = zoo_exists(conn->handle.get(), path.c_str(), 0, &stat);
  if (rc == ZOK) return true;
  if (rc == ZNONODE) return false;
  return zk_error(rc, "exists", path);
}

Result<std::vector<std::string>> ZkClientImpl::children(const std::string& path) {
  if (auto st = check_path("get_children", path); !st) return st.error();
  auto conn = connection();
  if (!conn) return no_session("get_children", path);
  return read_children(conn->handle.get(), path, nullptr, nullptr);
}

Result<std::string> ZkClientImpl::create(const std::string& path, const std::string& data,
                                         ZkCreateMode mode) {
  if (auto st = check_path("create", path); !st) return st.error();
  auto conn = connection();
  if (!conn) return no_session("create", path);
  int zk_mode = ZOO_PERSISTENT;
  switch (mode) {
    case ZkCreateMode::kPersistent:
      zk_mode = ZOO_PERSISTENT;
      break;
    case ZkCreateMode::kEphemeral:
      zk_mode = ZOO_EPHEMERAL;
      break;
    case ZkCreateMode::kPersistentSequential:
      zk_mode = ZOO_PERSISTENT_SEQUENTIAL;
      break;
    case ZkCreateMode::kEphemeralSequential:
      zk_mode = ZOO_EPHEMERAL_SEQUENTIAL;
      break;
  }
  // Room for the 10-digit sequence suffix and the terminator.
  std::string created(path.size() + 16, '\0');
  int rc =
      zoo_create(conn->handle.get(), path.c_str(), data.data(), data_len(data),
                 &ZOO_OPEN_ACL_UNSAFE, zk_mode, created.data(), static_cast<int>(created.size()));
  if (rc != ZOK) return zk_error(rc, "create", path);
  created.resize(std::strlen(created.c_str()));
  return created;
}

Status ZkClientImpl::ensure_path(const std::string& path) {
  if (auto st = check_path("ensure_path", path); !st) return st;
  if (path == "/") return ok_status();
  auto conn = connection();
  if (!conn) return no_session("ensure_path", path);
  return ensure_path_on(conn->handle.get(), path);
}

Status ZkClientImpl::set(const std::string& path, const std::string& data, int32_t version) {
  if (auto st = check_path("set", path); !st) return st;
  auto conn = connection();
  if (!conn) return no_session("set", path);
  int rc = zoo_set(conn->handle.get(), path.c_str(), data.data(), data_len(data), version);
  if (rc != ZOK) return zk_error(rc, "set", path);
  return ok_status();
}

Status ZkClientImpl::remove(const std::string& path, int32_t version) {
  if (auto st = check_path("delete", path); !st) return st;
  auto conn = connection();
  if (!conn) return no_session("delete", path);
  int rc = zoo_delete(conn->handle.get(), path.c_str(), version);
  if (rc != ZOK) return zk_error(rc, "delete", path);
  return ok_status();
}

// ---------------------------------------------------------------------------------------------
// Held ephemerals.

Status ZkClientImpl::attempt_ephemeral(const std::string& path) {
  std::lock_guard serial(ephemeral_ops_mu_);
  std::string data;
  {
    std::lock_guard lock(ephemerals_mu_);
    auto it = ephemerals_.find(path);
    if (it == ephemerals_.end()) return ok_status();  // released meanwhile
    data = it->second;
  }
  auto conn = connection();
  int64_t ours = conn ? conn->session_id.load() : 0;
  if (!conn || ours == 0) return no_session("create ephemeral", path);
  zhandle_t* zh = conn->handle.get();
  if (std::string parent = parent_of(path); parent != "/") {
    if (auto st = ensure_path_on(zh, parent); !st) return st;
  }
  for (int attempt = 0; attempt < 3; ++attempt) {
    int rc = zoo_create(zh, path.c_str(), data.data(), data_len(data), &ZOO_OPEN_ACL_UNSAFE,
                        ZOO_EPHEMERAL, nullptr, 0);
    if (rc == ZOK) return ok_status();
    if (rc != ZNODEEXISTS) return zk_error(rc, "create ephemeral", path);
    struct Stat stat {};
    rc = zoo_exists(zh, path.c_str(), 0, &stat);
    if (rc == ZNONODE) continue;  // went away in between: create again
    if (rc != ZOK) return zk_error(rc, "exists", path);
    if (stat.ephemeralOwner == 0) {
      return make_error(ErrorCode::kAlreadyExists,
                        "ZooKeeper ephemeral " + path + ": a persistent node is in the way");
    }
    if (stat.ephemeralOwner != ours) {
      return make_error(ErrorCode::kConflict,
                        "ZooKeeper ephemeral " + path + " is held by session " +
                            hex_session(stat.ephemeralOwner) + ", not ours (" + hex_session(ours) +
                            "); waiting for it to expire");
    }
    rc = zoo_set(zh, path.c_str(), data.data(), data_len(data), -1);
    if (rc == ZNONODE) continue;
    if (rc != ZOK) return zk_error(rc, "set", path);
    return ok_status();
  }
  return make_error(ErrorCode::kUnavailable, "ZooKeeper ephemeral " + path + ": keeps vanishing");
}

Status ZkClientImpl::hold_ephemeral(const std::string& path, const std::string& data) {
  if (auto st = check_path("hold_ephemeral", path); !st) return st;
  if (path == "/") {
    return make_error(ErrorCode::kInvalidArgument, "ZooKeeper hold_ephemeral: not on the root");
  }
  {
    std::lock_guard lock(ephemerals_mu_);
    ephemerals_[path] = data;
  }
  auto deadline = SteadyClock::now() + options_.session_timeout + options_.connect_timeout;
  milliseconds backoff{50};
  while (true) {
    Status st = attempt_ephemeral(path);
    if (st.ok()) return st;
    ErrorCode code = st.error().code;
    if (!zk_retryable(code) && code != ErrorCode::kConflict) {
      std::lock_guard lock(ephemerals_mu_);
      ephemerals_.erase(path);
      return st;
    }
    if (SteadyClock::now() + backoff > deadline) {
      // Still held: the event thread keeps trying.
      post([this, path] {
        pending_ephemerals_.insert(path);
        schedule_ephemeral_retry();
      });
      return st;
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, milliseconds(1000));
  }
}

Status ZkClientImpl::release_ephemeral(const std::string& path) {
  if (auto st = check_path("release_ephemeral", path); !st) return st;
  std::lock_guard serial(ephemeral_ops_mu_);
  {
    std::lock_guard lock(ephemerals_mu_);
    ephemerals_.erase(path);
  }
  auto conn = connection();
  int64_t ours = conn ? conn->session_id.load() : 0;
  if (!conn || ours == 0) return no_session("release ephemeral", path);
  zhandle_t* zh = conn->handle.get();
  for (int attempt = 0; attempt < 3; ++attempt) {
    struct Stat stat {};
    int rc = zoo_exists(zh, path.c_str(), 0, &stat);
    if (rc == ZNONODE) return ok_status();
    if (rc != ZOK) return zk_error(rc, "exists", path);
    if (stat.ephemeralOwner != ours) return ok_status();  // not ours: leave it alone
    rc = zoo_delete(zh, path.c_str(), stat.version);
    if (rc == ZOK || rc == ZNONODE) return ok_status();
    if (rc != ZBADVERSION) return zk_error(rc, "delete", path);
  }
  return make_error(ErrorCode::kConflict,
                    "ZooKeeper release_ephemeral " + path + ": keeps changing");
}

void ZkClientImpl::retry_pending_ephemerals() {
  ephemeral_retry_scheduled_ = false;
  for (auto it = pending_ephemerals_.begin(); it != pending_ephemerals_.end();) {
    Status st = attempt_ephemeral(*it);
    if (st.ok()) {
      it = pending_ephemerals_.erase(it);
      continue;
    }
    if (!zk_retryable(st.error().code) && st.error().code != ErrorCode::kConflict) {
      zk_log("ERROR", "giving up ephemeral " + *it + ": " + st.error().message);
      {
        std::lock_guard lock(ephemerals_mu_);
        ephemerals_.erase(*it);
      }
      it = pending_ephemerals_.erase(it);
      continue;
    }
    ++it;
  }
  if (!pending_ephemerals_.empty()) schedule_ephemeral_retry();
}

void ZkClientImpl::schedule_ephemeral_retry() {
  if (ephemeral_retry_scheduled_) return;
  ephemeral_retry_scheduled_ = true;
  post_after(kEphemeralRetryDelay, [this] { retry_pending_ephemerals(); });
}

}  // namespace tally
