// ZkClient against a real ZooKeeper 3.8 started by the test (tick 500 ms, a port in 21000-21999,
// data in a fresh /tmp directory): CRUD and error mapping, watches that stay armed, held
// ephemerals, a server restart within the session, an outage longer than the session timeout, and a
// forced session expiry. The server is stopped by PID when the suite ends, also when a test fails,
// and killed from a signal handler if the binary crashes.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/zk/zk_client.h"
#include "tallyctl/src/zookeeper_node.h"
#include "tests/support/test_env.h"

namespace tally {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// ----------------------------------------------------------------------------------------------
// The server.

std::atomic<pid_t> g_server_pid{0};

extern "C" void kill_server_and_die(int sig) {
  pid_t pid = g_server_pid.load();
  if (pid > 0) kill(pid, SIGKILL);
  signal(sig, SIG_DFL);
  raise(sig);
}

// A free port (test_env's block finder), never `avoid`.
int pick_port(int avoid = 0) {
  int port = testing::find_free_port_block(1, 21000, 22000);
  return port == avoid ? testing::find_free_port_block(1, avoid + 1, 22000) : port;
}

// One ZooKeeper server in its own temporary directory; stopped and removed on destruction.
class ZkServer {
 public:
  ZkServer() {
    char pattern[] = "/tmp/tally-zk-test-XXXXXX";
    if (char* dir = mkdtemp(pattern)) dir_ = dir;
    port_ = pick_port();
    ZooKeeperNodeOptions options;
    options.dir = dir_;
    options.client_port = port_;
    options.tick_ms = 500;
    node_ = std::make_unique<ZooKeeperNode>(options);
  }
  ~ZkServer() {
    (void)stop();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  ZkServer(const ZkServer&) = delete;
  ZkServer& operator=(const ZkServer&) = delete;

  Status start() {
    if (dir_.empty() || port_ < 0) {
      return make_error(ErrorCode::kInternal, "no temporary directory or free port");
    }
    auto pid = node_->start(30s);
    if (!pid) return pid.error();
    pid_ = *pid;
    g_server_pid.store(pid_);
    return ok_status();
  }
  Status stop() {
    if (pid_ == 0) return ok_status();
    Status st = node_->stop(pid_);
    pid_ = 0;
    g_server_pid.store(0);
    return st;
  }
  bool running() const { return pid_ != 0; }
  int port() const { return port_; }
  std::string hosts() const { return node_->connect_string(); }

 private:
  std::filesystem::path dir_;
  int port_ = -1;
  pid_t pid_ = 0;
  std::unique_ptr<ZooKeeperNode> node_;
};

// ----------------------------------------------------------------------------------------------
// Helpers.

bool eventually(const std::function<bool()>& condition, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

// Values delivered to a callback, in order.
template <typename T>
class Recorder {
 public:
  void add(T value) {
    {
      std::lock_guard lock(mu_);
      values_.push_back(std::move(value));
    }
    cv_.notify_all();
  }
  std::vector<T> values() const {
    std::lock_guard lock(mu_);
    return values_;
  }
  size_t count() const {
    std::lock_guard lock(mu_);
    return values_.size();
  }
  // Waits until more than `after` values were recorded and the last one equals `expected`.
  bool wait_last(const T& expected, size_t after = 0, milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout,
                        [&] { return values_.size() > after && values_.back() == expected; });
  }
  bool wait_count(size_t n, milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return values_.size() >= n; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<T> values_;
};

using DataRecorder = Recorder<std::optional<std::string>>;
using ChildrenRecorder = Recorder<std::vector<std::string>>;
using StateRecorder = Recorder<ZkSessionState>;

ZkClient::DataWatcher record_data(DataRecorder& recorder) {
  return [&recorder](const std::optional<ZkNodeData>& node) {
    recorder.add(node ? std::optional<std::string>(node->data) : std::nullopt);
  };
}

std::string describe(const std::vector<ZkSessionState>& states) {
  std::string out;
  for (auto s : states) out += (out.empty() ? "" : " -> ") + std::string(zk_session_state_name(s));
  return out.empty() ? "(none)" : out;
}

// True when `states` has `first` and, later, `then`.
bool in_order(const std::vector<ZkSessionState>& states, ZkSessionState first,
              ZkSessionState then) {
  auto it = std::find(states.begin(), states.end(), first);
  return it != states.end() && std::find(it + 1, states.end(), then) != states.end();
}

std::string hex(int64_t id) {
  std::ostringstream out;
  out << "0x" << std::hex << static_cast<uint64_t>(id);
  return out.str();
}

// A bare C client handle, for what ZkClient must not do itself: act as another session.
class RawHandle {
 public:
  RawHandle(const std::string& hosts, int timeout_ms, const clientid_t* session = nullptr) {
    handle_ = zookeeper_init(hosts.c_str(), &RawHandle::watcher, timeout_ms, session, this, 0);
  }
  ~RawHandle() { close(); }
  RawHandle(const RawHandle&) = delete;
  RawHandle& operator=(const RawHandle&) = delete;

  zhandle_t* get() const { return handle_; }
  bool wait_connected(milliseconds timeout) {
    return handle_ != nullptr &&
           eventually([&] { return state_.load() == ZOO_CONNECTED_STATE; }, timeout);
  }
  int state() const { return state_.load(); }
  void close() {
    if (handle_ != nullptr) zookeeper_close(handle_);
    handle_ = nullptr;
  }

 private:
  static void watcher(zhandle_t*, int type, int state, const char*, void* context) {
    if (type == ZOO_SESSION_EVENT) static_cast<RawHandle*>(context)->state_.store(state);
  }
  std::atomic<int> state_{0};
  zhandle_t* handle_ = nullptr;
};

// ----------------------------------------------------------------------------------------------
// The fixture: one server for the suite; tests that stop it start it again.

class ZkClientIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGINT, SIGTERM}) {
      signal(sig, &kill_server_and_die);
    }
    server_ = std::make_unique<ZkServer>();
    if (auto st = server_->start(); !st) start_error_ = st.error().message;
  }
  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    ASSERT_TRUE(start_error_.empty()) << "ZooKeeper did not start: " << start_error_;
    if (!server_->running()) {
      auto st = server_->start();  // a previous test failed while the server was down
      ASSERT_TRUE(st.ok()) << st.error().message;
    }
  }

  static std::unique_ptr<ZkClient> connect(milliseconds session_timeout = 2000ms) {
    ZkOptions options;
    options.hosts = server_->hosts();
    options.session_timeout = session_timeout;
    options.connect_timeout = 5000ms;
    auto client = ZkClient::connect(options);
    EXPECT_TRUE(client.ok()) << client.error().message;
    return client.ok() ? std::move(client).value() : nullptr;
  }

  static inline std::unique_ptr<ZkServer> server_;
  static inline std::string start_error_;
};

// ----------------------------------------------------------------------------------------------
// Operations.

TEST_F(ZkClientIntegrationTest, CrudVersionsSequencesAndErrorMapping) {
  auto zk = connect();
  ASSERT_TRUE(zk);
  EXPECT_EQ(zk->state(), ZkSessionState::kConnected);
  EXPECT_NE(zk->session_id(), 0);
  EXPECT_EQ(zk->sessions_established(), 1);

  ASSERT_TRUE(zk->ensure_path("/crud/a/b").ok());
  ASSERT_TRUE(zk->ensure_path("/crud/a/b").ok()) << "existing nodes are fine";
  const std::string path = "/crud/a/b/n";
  auto created = zk->create(path, "x");
  ASSERT_TRUE(created.ok()) << created.error().message;
  EXPECT_EQ(*created, path);
  auto duplicate = zk->create(path, "y");
  ASSERT_FALSE(duplicate.ok());
  EXPECT_EQ(duplicate.error().code, ErrorCode::kAlreadyExists);

  auto node = zk->get(path);
  ASSERT_TRUE(node.ok()) << node.error().message;
  EXPECT_EQ(node->data, "x");
  EXPECT_EQ(node->version, 0);
  EXPECT_EQ(node->ephemeral_owner, 0);

  // Compare-and-set.
  EXPECT_TRUE(zk->set(path, "x1", 0).ok());
  auto stale = zk->set(path, "x2", 0);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict);
  EXPECT_NE(stale.error().message.find(path), std::string::npos) << stale.error().message;
  node = zk->get(path);
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->data, "x1");
  EXPECT_EQ(node->version, 1);
  EXPECT_TRUE(zk->set(path, "x3", -1).ok());
  node = zk->get(path);
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->version, 2);

  auto kids = zk->children("/crud/a/b");
  ASSERT_TRUE(kids.ok());
  EXPECT_EQ(*kids, std::vector<std::string>{"n"});

  auto not_empty = zk->remove("/crud/a/b");
  ASSERT_FALSE(not_empty.ok());
  EXPECT_EQ(not_empty.error().code, ErrorCode::kConflict);
  auto stale_delete = zk->remove(path, 0);
  ASSERT_FALSE(stale_delete.ok());
  EXPECT_EQ(stale_delete.error().code, ErrorCode::kConflict);
  EXPECT_TRUE(zk->remove(path, 2).ok());

  auto missing = zk->get(path);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message.find(path), std::string::npos) << missing.error().message;
  auto gone = zk->exists(path);
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(*gone);
  auto there = zk->exists("/crud/a/b");
  ASSERT_TRUE(there.ok());
  EXPECT_TRUE(*there);
  EXPECT_EQ(zk->children("/crud/none").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(zk->set("/crud/none", "", -1).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(zk->remove("/crud/none").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(zk->create("/crud/none/child", "").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(zk->get("relative").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(zk->create("/crud/", "").error().code, ErrorCode::kInvalidArgument);

  // Sequential nodes: ten-digit increasing suffixes.
  ASSERT_TRUE(zk->ensure_path("/crud/seq").ok());
  std::vector<std::string> sequential;
  for (int i = 0; i < 3; ++i) {
    auto seq = zk->create("/crud/seq/job-", std::to_string(i), ZkCreateMode::kPersistentSequential);
    ASSERT_TRUE(seq.ok()) << seq.error().message;
    ASSERT_EQ(seq->size(), std::string("/crud/seq/job-").size() + 10) << *seq;
    sequential.push_back(seq->substr(std::string("/crud/seq/").size()));
  }
  EXPECT_TRUE(std::is_sorted(sequential.begin(), sequential.end()));
  EXPECT_NE(sequential[0], sequential[1]);
  auto seq_kids = zk->children("/crud/seq");
  ASSERT_TRUE(seq_kids.ok());
  EXPECT_EQ(*seq_kids, sequential);

  // Data larger than the first read buffer, and empty data.
  std::string big(size_t{600} * 1024, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  ASSERT_TRUE(zk->create("/crud/big", big).ok());
  auto big_node = zk->get("/crud/big");
  ASSERT_TRUE(big_node.ok()) << big_node.error().message;
  EXPECT_TRUE(big_node->data == big) << "size " << big_node->data.size();
  ASSERT_TRUE(zk->create("/crud/empty", "").ok());
  auto empty = zk->get("/crud/empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->data, "");

  auto eph = zk->create("/crud/eph", "e", ZkCreateMode::kEphemeral);
  ASSERT_TRUE(eph.ok());
  auto eph_node = zk->get("/crud/eph");
  ASSERT_TRUE(eph_node.ok());
  EXPECT_EQ(eph_node->ephemeral_owner, zk->session_id());
}

TEST_F(ZkClientIntegrationTest, ConnectWithoutServerIsUnavailableAndNamesTheHosts) {
  ZkOptions options;
  options.hosts = "127.0.0.1:" + std::to_string(pick_port(server_->port()));
  options.connect_timeout = 1000ms;
  options.session_timeout = 2000ms;
  auto started = Clock::now();
  auto client = ZkClient::connect(options);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(client.error().message.find(options.hosts), std::string::npos)
      << client.error().message;
  EXPECT_LT(Clock::now() - started, 5s);
}

// ----------------------------------------------------------------------------------------------
// Watches.

TEST_F(ZkClientIntegrationTest, DataWatchSeesEveryChangeAndStaysArmedUntilUnwatch) {
  // Declared before the clients: their callbacks record here until the clients are gone.
  DataRecorder seen;
  DataRecorder also;  // a second watcher on the same path: its own registration
  auto zk = connect();
  ASSERT_TRUE(zk);
  ASSERT_TRUE(zk->ensure_path("/dw").ok());
  const std::string path = "/dw/node";
  auto id = zk->watch_data(path, record_data(seen));
  auto other = zk->watch_data(path, record_data(also));
  ASSERT_TRUE(seen.wait_count(1)) << "called once right after registration";
  EXPECT_EQ(seen.values()[0], std::nullopt);

  ASSERT_TRUE(zk->create(path, "v0").ok());
  ASSERT_TRUE(seen.wait_last("v0")) << "creation of a missing node is noticed";
  // Each change waits for the previous one to be seen: one fire per arming, so every step
  // observed proves the watch was armed again after each event.
  for (int i = 1; i <= 6; ++i) {
    std::string value = "v" + std::to_string(i);
    ASSERT_TRUE(zk->set(path, value, -1).ok());
    ASSERT_TRUE(seen.wait_last(value)) << "change " << i << " not observed";
  }
  size_t before_delete = seen.count();
  ASSERT_TRUE(zk->remove(path).ok());
  ASSERT_TRUE(seen.wait_last(std::nullopt, before_delete)) << "deletion not observed";
  ASSERT_TRUE(zk->create(path, "again").ok());
  ASSERT_TRUE(seen.wait_last("again")) << "creation after deletion not observed";
  ASSERT_TRUE(zk->set(path, "again2", -1).ok());
  ASSERT_TRUE(seen.wait_last("again2"));
  EXPECT_GE(seen.count(), 11u);  // initial + create + 6 sets + delete + create + set
  ASSERT_TRUE(also.wait_last("again2"));

  // Every value arrived, in order.
  std::vector<std::optional<std::string>> expected = {
      std::nullopt, "v0", "v1", "v2", "v3", "v4", "v5", "v6", std::nullopt, "again", "again2"};
  auto values = seen.values();
  values.erase(std::unique(values.begin(), values.end()), values.end());
  EXPECT_EQ(values, expected);

  // unwatch: no more calls for that watcher, the other one keeps going.
  zk->unwatch(id);
  size_t frozen = seen.count();
  ASSERT_TRUE(zk->set(path, "after-unwatch", -1).ok());
  ASSERT_TRUE(also.wait_last("after-unwatch"));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(seen.count(), frozen) << "an unwatched watcher was called";
  zk->unwatch(other);
  size_t other_frozen = also.count();
  ASSERT_TRUE(zk->set(path, "after-both", -1).ok());
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(also.count(), other_frozen);
}

TEST_F(ZkClientIntegrationTest, ChildrenWatchSeesAddsRemovesAndParentLifecycle) {
  // Declared before the clients: their callbacks record here until the clients are gone.
  ChildrenRecorder seen;
  auto zk = connect();
  ASSERT_TRUE(zk);
  const std::string parent = "/cw/parent";
  ASSERT_TRUE(zk->ensure_path(parent).ok());
  auto id =
      zk->watch_children(parent, [&](const std::vector<std::string>& names) { seen.add(names); });
  using Names = std::vector<std::string>;
  ASSERT_TRUE(seen.wait_last(Names{}));

  auto step = [&](const std::function<Status()>& change,
                  const Names& expected) -> ::testing::AssertionResult {
    size_t before = seen.count();
    Status st = change();
    if (!st.ok()) return ::testing::AssertionFailure() << st.error().message;
    if (!seen.wait_last(expected, before)) {
      return ::testing::AssertionFailure() << "children change not observed";
    }
    return ::testing::AssertionSuccess();
  };
  auto create = [&](const std::string& name) -> Status {
    auto created = zk->create(parent + "/" + name, "");
    return created.ok() ? ok_status() : Status(created.error());
  };
  ASSERT_TRUE(step([&] { return create("a"); }, Names{"a"}));
  ASSERT_TRUE(step([&] { return create("b"); }, Names{"a", "b"}));
  ASSERT_TRUE(step([&] { return zk->remove(parent + "/a"); }, Names{"b"}));
  ASSERT_TRUE(step([&] { return zk->remove(parent + "/b"); }, Names{}));
  ASSERT_TRUE(step([&] { return zk->remove(parent); }, Names{}));       // the parent itself goes
  ASSERT_TRUE(step([&] { return zk->ensure_path(parent); }, Names{}));  // and comes back: noticed
  ASSERT_TRUE(step([&] { return create("c"); }, Names{"c"}));

  zk->unwatch(id);
  size_t frozen = seen.count();
  ASSERT_TRUE(zk->create(parent + "/d", "").ok());
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(seen.count(), frozen);
}

// ----------------------------------------------------------------------------------------------
// Ephemerals.

TEST_F(ZkClientIntegrationTest, HeldEphemeralVanishesWhenItsClientIsDestroyed) {
  // Declared before the clients: their callbacks record here until the clients are gone.
  DataRecorder seen;
  auto a = connect();
  auto b = connect();
  ASSERT_TRUE(a && b);
  const std::string path = "/eph/members/a";
  ASSERT_TRUE(a->hold_ephemeral(path, "alive").ok());
  auto node = b->get(path);
  ASSERT_TRUE(node.ok()) << node.error().message;
  EXPECT_EQ(node->data, "alive");
  EXPECT_EQ(node->ephemeral_owner, a->session_id());
  ASSERT_TRUE(a->hold_ephemeral(path, "alive2").ok()) << "holding again updates the data";
  node = b->get(path);
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->data, "alive2");

  b->watch_data(path, record_data(seen));
  ASSERT_TRUE(seen.wait_last("alive2"));
  a.reset();
  ASSERT_TRUE(seen.wait_last(std::nullopt, 0, 5s)) << "B did not see A's ephemeral go";
  auto exists = b->exists(path);
  ASSERT_TRUE(exists.ok());
  EXPECT_FALSE(*exists);
}

TEST_F(ZkClientIntegrationTest, HoldEphemeralWaitsForAnotherSessionsNodeToGo) {
  auto zk = connect();
  ASSERT_TRUE(zk);
  ASSERT_TRUE(zk->ensure_path("/eph").ok());
  const std::string path = "/eph/contested";
  RawHandle predecessor(server_->hosts(), 10000);
  ASSERT_TRUE(predecessor.wait_connected(5s));
  ASSERT_EQ(zoo_create(predecessor.get(), path.c_str(), "old", 3, &ZOO_OPEN_ACL_UNSAFE,
                       ZOO_EPHEMERAL, nullptr, 0),
            ZOK);

  auto started = Clock::now();
  auto held = std::async(std::launch::async, [&] { return zk->hold_ephemeral(path, "mine"); });
  EXPECT_EQ(held.wait_for(1500ms), std::future_status::timeout)
      << "hold_ephemeral took over another session's node";
  predecessor.close();  // the predecessor's session ends: its node goes
  Status st = held.get();
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_GE(Clock::now() - started, 1400ms);
  auto node = zk->get(path);
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->data, "mine");
  EXPECT_EQ(node->ephemeral_owner, zk->session_id());

  ASSERT_TRUE(zk->release_ephemeral(path).ok());
  auto exists = zk->exists(path);
  ASSERT_TRUE(exists.ok());
  EXPECT_FALSE(*exists);
}

// ----------------------------------------------------------------------------------------------
// Server restarts and session expiry.

TEST_F(ZkClientIntegrationTest, ServerRestartWithinSessionTimeoutKeepsTheSession) {
  // Declared before the clients: their callbacks record here until the clients are gone.
  StateRecorder states;
  DataRecorder seen;
  auto zk = connect(8000ms);
  ASSERT_TRUE(zk);
  zk->on_session_state([&](ZkSessionState s) { states.add(s); });
  ASSERT_TRUE(zk->hold_ephemeral("/rs/me", "here").ok());
  ASSERT_TRUE(zk->create("/rs/node", "0").ok());
  zk->watch_data("/rs/node", record_data(seen));
  ASSERT_TRUE(seen.wait_last("0"));
  const int64_t session = zk->session_id();

  auto stopped_at = Clock::now();
  ASSERT_TRUE(server_->stop().ok());
  ASSERT_TRUE(states.wait_last(ZkSessionState::kConnecting, 0, 10s))
      << "states: " << describe(states.values());
  // While no server answers, operations fail as retryable.
  auto during = zk->get("/rs/node");
  ASSERT_FALSE(during.ok());
  EXPECT_EQ(during.error().code, ErrorCode::kUnavailable) << during.error().message;
  EXPECT_TRUE(zk_retryable(during.error().code));
  auto st = server_->start();
  ASSERT_TRUE(st.ok()) << st.error().message;
  std::cout << "[observed] server down for "
            << std::chrono::duration_cast<milliseconds>(Clock::now() - stopped_at).count()
            << " ms (session timeout 8000 ms)\n";
  ASSERT_TRUE(eventually([&] { return zk->state() == ZkSessionState::kConnected; }, 20s))
      << "states: " << describe(states.values());

  auto observed = states.values();
  EXPECT_TRUE(in_order(observed, ZkSessionState::kConnecting, ZkSessionState::kConnected))
      << describe(observed);
  EXPECT_EQ(std::count(observed.begin(), observed.end(), ZkSessionState::kExpired), 0)
      << describe(observed);
  EXPECT_EQ(zk->session_id(), session);
  EXPECT_EQ(zk->sessions_established(), 1);
  auto me = zk->get("/rs/me");
  ASSERT_TRUE(me.ok()) << me.error().message;
  EXPECT_EQ(me->ephemeral_owner, session);

  // The watch armed before the restart still fires, for this client's and another's changes.
  ASSERT_TRUE(zk->set("/rs/node", "1", -1).ok());
  ASSERT_TRUE(seen.wait_last("1")) << "watch lost across the restart";
  auto other = connect();
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->set("/rs/node", "2", -1).ok());
  ASSERT_TRUE(seen.wait_last("2"));
}

TEST_F(ZkClientIntegrationTest, ServerDownLongerThanSessionTimeoutRecovers) {
  // Declared before the clients: their callbacks record here until the clients are gone.
  StateRecorder states;
  DataRecorder seen;
  auto zk = connect(2000ms);
  ASSERT_TRUE(zk);
  zk->on_session_state([&](ZkSessionState s) { states.add(s); });
  ASSERT_TRUE(zk->hold_ephemeral("/lo/me", "here").ok());
  ASSERT_TRUE(zk->create("/lo/node", "0").ok());
  zk->watch_data("/lo/node", record_data(seen));
  ASSERT_TRUE(seen.wait_last("0"));
  const int64_t session = zk->session_id();

  ASSERT_TRUE(server_->stop().ok());
  std::this_thread::sleep_for(6s);  // three session timeouts
  auto st = server_->start();
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto restarted = Clock::now();

  // Whatever the server and the C client decide, within a bounded time: connected, the ephemeral
  // back under the current session, and the watch alive.
  ASSERT_TRUE(eventually(
      [&] {
        if (zk->state() != ZkSessionState::kConnected) return false;
        auto me = zk->get("/lo/me");
        return me.ok() && me->ephemeral_owner == zk->session_id() && me->data == "here";
      },
      30s))
      << "states: " << describe(states.values());
  auto recovered_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - restarted).count();
  std::cout << "[observed] down 6000 ms with a 2000 ms session: states "
            << describe(states.values()) << "; session " << hex(session) << " -> "
            << hex(zk->session_id()) << " (" << (zk->session_id() == session ? "kept" : "new")
            << "); sessions established " << zk->sessions_established() << "; recovered "
            << recovered_ms << " ms after the server answered\n";
  RecordProperty("long_outage_session_kept", zk->session_id() == session ? "yes" : "no");
  RecordProperty("long_outage_states", describe(states.values()));

  size_t before = seen.count();
  ASSERT_TRUE(zk->set("/lo/node", "1", -1).ok());
  ASSERT_TRUE(seen.wait_last("1", before)) << "watch lost after the outage";
  auto other = connect();
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->set("/lo/node", "2", -1).ok());
  ASSERT_TRUE(seen.wait_last("2"));
}

// The classic way to expire a session on purpose: open a second handle with its id and password
// and close it; the server ends the session, and the client learns on reconnect that it expired.
TEST_F(ZkClientIntegrationTest, ForcedSessionExpiryGetsANewSessionEphemeralsAndWatches) {
  // Declared before the clients: their callbacks record here until the clients are gone.
  StateRecorder states;
  DataRecorder seen;
  ChildrenRecorder members;
  auto zk = connect(2000ms);
  ASSERT_TRUE(zk);
  zk->on_session_state([&](ZkSessionState s) { states.add(s); });
  ASSERT_TRUE(zk->hold_ephemeral("/fe/members/me", "payload").ok());
  ASSERT_TRUE(zk->create("/fe/node", "0").ok());
  zk->watch_data("/fe/node", record_data(seen));
  zk->watch_children("/fe/members", [&](const std::vector<std::string>& n) { members.add(n); });
  ASSERT_TRUE(seen.wait_last("0"));
  ASSERT_TRUE(members.wait_last({"me"}));
  const int64_t old_session = zk->session_id();
  auto credentials = zk->session_credentials();
  ASSERT_TRUE(credentials.has_value());
  ASSERT_EQ(credentials->session_id, old_session);
  ASSERT_EQ(credentials->password.size(), sizeof(clientid_t::passwd));
  const size_t data_calls = seen.count();
  const size_t member_calls = members.count();

  clientid_t id{};
  id.client_id = credentials->session_id;
  std::memcpy(id.passwd, credentials->password.data(), sizeof(id.passwd));
  bool expired = false;
  for (int attempt = 0; attempt < 3 && !expired; ++attempt) {
    {
      RawHandle killer(server_->hosts(), 2000, &id);
      ASSERT_TRUE(killer.wait_connected(10s)) << "could not attach to the session";
      killer.close();
    }
    expired = eventually([&] { return zk->sessions_established() >= 2; }, 15s);
  }
  ASSERT_TRUE(expired) << "states: " << describe(states.values());
  EXPECT_EQ(zk->sessions_established(), 2);
  const int64_t new_session = zk->session_id();
  EXPECT_NE(new_session, 0);
  EXPECT_NE(new_session, old_session);
  auto observed = states.values();
  EXPECT_TRUE(in_order(observed, ZkSessionState::kExpired, ZkSessionState::kConnected))
      << describe(observed);
  std::cout << "[observed] forced expiry: states " << describe(observed) << "; session "
            << hex(old_session) << " -> " << hex(new_session) << "\n";

  // The ephemeral is back, owned by the new session, with its data.
  ASSERT_TRUE(eventually(
      [&] {
        auto me = zk->get("/fe/members/me");
        return me.ok() && me->ephemeral_owner == zk->session_id();
      },
      10s));
  EXPECT_EQ(zk->get("/fe/members/me")->data, "payload");

  // Watchers were told the current state after the new session, then keep firing.
  ASSERT_TRUE(seen.wait_count(data_calls + 1)) << "data watcher not called after new session";
  EXPECT_EQ(seen.values().back(), std::optional<std::string>("0"));
  ASSERT_TRUE(members.wait_last({"me"}, member_calls)) << "children watcher not re-armed";
  auto other = connect();
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->set("/fe/node", "after-expiry", -1).ok());
  ASSERT_TRUE(seen.wait_last("after-expiry")) << "watch not re-armed on the new session";
  ASSERT_TRUE(zk->set("/fe/node", "after-expiry-2", -1).ok());
  ASSERT_TRUE(seen.wait_last("after-expiry-2"));
  ASSERT_TRUE(other->create("/fe/members/other", "").ok());
  ASSERT_TRUE(members.wait_last({"me", "other"}));
}

}  // namespace
}  // namespace tally
