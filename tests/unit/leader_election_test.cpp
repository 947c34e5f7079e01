// LeaderElection against a small in-memory ZooKeeper (FakeZk): who leads, takeover after a session
// expiry, stepping down when disconnected or when the lease ran out (a stopped process), and the
// node re-created when it vanished. step() is driven by the test; the clock is a ManualClock.
#include "config_service/src/leader_election.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <mutex>

#include "common/topology/topology.h"

namespace tally::config_service {
namespace {

struct FakeZkServer {
  struct Node {
    std::string data;
    int32_t version = 0;
    int64_t owner = 0;
  };
  std::mutex mu;
  std::map<std::string, Node> nodes;
  int sequence = 0;
  int64_t next_session = 100;
};

class FakeZk final : public ZkClient {
 public:
  explicit FakeZk(FakeZkServer& server) : server_(server), session_(++server.next_session) {}

  // The server expired our session: its ephemerals are gone and the client has a new one.
  void expire() {
    std::lock_guard lock(server_.mu);
    for (auto it = server_.nodes.begin(); it != server_.nodes.end();) {
      it = it->second.owner == session_ ? server_.nodes.erase(it) : std::next(it);
    }
    session_ = ++server_.next_session;
  }
  void set_state(ZkSessionState s) { state_ = s; }

  ZkSessionState state() const override { return state_; }
  int64_t session_id() const override { return session_; }
  int sessions_established() const override { return 1; }

  Result<ZkNodeData> get(const std::string& path) override {
    if (auto e = offline()) return *e;
    std::lock_guard lock(server_.mu);
    auto it = server_.nodes.find(path);
    if (it == server_.nodes.end()) return make_error(ErrorCode::kNotFound, path);
    return ZkNodeData{it->second.data, it->second.version, it->second.owner};
  }
  Result<bool> exists(const std::string& path) override {
    if (auto e = offline()) return *e;
    std::lock_guard lock(server_.mu);
    return server_.nodes.count(path) > 0;
  }
  Result<std::vector<std::string>> children(const std::string& path) override {
    if (auto e = offline()) return *e;
    std::lock_guard lock(server_.mu);
    if (!server_.nodes.count(path)) return make_error(ErrorCode::kNotFound, path);
    std::vector<std::string> out;
    for (const auto& [p, n] : server_.nodes) {
      if (p.size() > path.size() + 1 && p.rfind(path + "/", 0) == 0 &&
          p.find('/', path.size() + 1) == std::string::npos) {
        out.push_back(p.substr(path.size() + 1));
      }
    }
    return out;
  }
  Result<std::string> create(const std::string& path, const std::string& data,
                             ZkCreateMode mode) override {
    if (auto e = offline()) return *e;
    std::lock_guard lock(server_.mu);
    std::string name = path;
    if (mode == ZkCreateMode::kEphemeralSequential || mode == ZkCreateMode::kPersistentSequential) {
      char seq[16];
      std::snprintf(seq, sizeof(seq), "%010d", server_.sequence++);
      name += seq;
    }
    if (server_.nodes.count(name)) return make_error(ErrorCode::kAlreadyExists, name);
    bool ephemeral = mode == ZkCreateMode::kEphemeral || mode == ZkCreateMode::kEphemeralSequential;
    server_.nodes[name] = {data, 0, ephemeral ? session_ : 0};
    return name;
  }
  Status ensure_path(const std::string& path) override {
    if (auto e = offline()) return *e;
    std::lock_guard lock(server_.mu);
    for (size_t next = path.find('/', 1);; next = path.find('/', next + 1)) {
      server_.nodes.try_emplace(next == std::string::npos ? path : path.substr(0, next));
      if (next == std::string::npos) return ok_status();
    }
  }
  Status set(const std::string& path, const std::string& data, int32_t version) override {
    if (auto e = offline()) return *e;
    std::lock_guard lock(server_.mu);
    auto it = server_.nodes.find(path);
    if (it == server_.nodes.end()) return make_error(ErrorCode::kNotFound, path);
    if (version >= 0 && version != it->second.version)
      return make_error(ErrorCode::kConflict, path);
    it->second.data = data;
    ++it->second.version;
    return ok_status();
  }
  Status remove(const std::string& path, int32_t) override {
    if (auto e = offline()) return *e;
    std::lock_guard lock(server_.mu);
    if (!server_.nodes.erase(path)) return make_error(ErrorCode::kNotFound, path);
    return ok_status();
  }
  Status hold_ephemeral(const std::string&, const std::string&) override {
    return make_error(ErrorCode::kUnsupported, "fake");
  }
  Status release_ephemeral(const std::string&) override {
    return make_error(ErrorCode::kUnsupported, "fake");
  }
  WatchId watch_data(const std::string&, DataWatcher) override { return ++watches_; }
  WatchId watch_children(const std::string&, ChildrenWatcher) override { return ++watches_; }
  void unwatch(WatchId) override {}
  void on_session_state(SessionListener) override {}

 private:
  std::optional<Error> offline() const {
    if (state_ == ZkSessionState::kConnected) return std::nullopt;
    return make_error(ErrorCode::kUnavailable, "not connected");
  }
  FakeZkServer& server_;
  int64_t session_;
  ZkSessionState state_ = ZkSessionState::kConnected;
  WatchId watches_ = 0;
};

constexpr int64_t kLease = 2000;

class LeaderElectionTest : public ::testing::Test {
 protected:
  LeaderElectionTest()
      : zk1_(server_),
        zk2_(server_),
        e1_(zk1_, clock_, "cs1", "127.0.0.1:1", kLease),
        e2_(zk2_, clock_, "cs2", "127.0.0.1:2", kLease) {}
  void step_both() {
    e1_.step();
    e2_.step();
  }
  FakeZkServer server_;
  ManualClock clock_;
  FakeZk zk1_, zk2_;
  LeaderElection e1_, e2_;
};

TEST_F(LeaderElectionTest, LowestSequenceLeadsTheOtherKnowsWho) {
  EXPECT_FALSE(e1_.is_leader());
  step_both();
  EXPECT_TRUE(e1_.is_leader());
  EXPECT_FALSE(e2_.is_leader());
  EXPECT_EQ(e1_.leader_id(), "cs1");
  EXPECT_EQ(e2_.leader_id(), "cs1");
  EXPECT_EQ(e1_.node_path(), std::string(topology_paths::kConfigServiceElection) + "/n_0000000000");
  auto node = zk1_.get(e1_.node_path());
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->data, R"({"http":"127.0.0.1:1","id":"cs1"})");
  EXPECT_NE(node->ephemeral_owner, 0);
}

TEST_F(LeaderElectionTest, SessionExpiryHandsOverAndTheOldLeaderRejoinsBehind) {
  step_both();
  ASSERT_TRUE(e1_.is_leader());
  zk1_.expire();
  // Not leading from the moment the session changed, before any step.
  EXPECT_FALSE(e1_.is_leader());
  e2_.step();
  EXPECT_TRUE(e2_.is_leader());
  e1_.step();  // a new node on the new session, behind cs2's
  EXPECT_FALSE(e1_.is_leader());
  EXPECT_EQ(e1_.leader_id(), "cs2");
  EXPECT_EQ(e1_.node_path(), std::string(topology_paths::kConfigServiceElection) + "/n_0000000002");
  auto names = zk1_.children(topology_paths::kConfigServiceElection);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names->size(), 2u);
}

TEST_F(LeaderElectionTest, DisconnectedLeaderDoesNotActAndResumesWithItsSession) {
  step_both();
  zk1_.set_state(ZkSessionState::kConnecting);
  EXPECT_FALSE(e1_.is_leader());
  e1_.step();
  EXPECT_FALSE(e1_.is_leader());
  zk1_.set_state(ZkSessionState::kConnected);  // the same session came back
  e1_.step();
  EXPECT_TRUE(e1_.is_leader());
  EXPECT_EQ(e1_.node_path(), std::string(topology_paths::kConfigServiceElection) + "/n_0000000000");
}

TEST_F(LeaderElectionTest, LeaseRunsOutWithoutAConfirmingStep) {
  step_both();
  ASSERT_TRUE(e1_.is_leader());
  clock_.advance(kLease - 1);
  EXPECT_TRUE(e1_.is_leader());
  clock_.advance(1);  // e.g. the process was stopped: act on nothing until checked again
  EXPECT_FALSE(e1_.is_leader());
  e1_.step();
  EXPECT_TRUE(e1_.is_leader());
}

TEST_F(LeaderElectionTest, VanishedNodeIsRecreated) {
  step_both();
  ASSERT_TRUE(zk2_.remove(e1_.node_path(), -1).ok());
  e1_.step();  // notices
  EXPECT_FALSE(e1_.is_leader());
  e2_.step();
  EXPECT_TRUE(e2_.is_leader());
  e1_.step();  // re-creates, behind
  EXPECT_FALSE(e1_.is_leader());
  EXPECT_FALSE(e1_.node_path().empty());
  auto names = zk1_.children(topology_paths::kConfigServiceElection);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names->size(), 2u);
}

TEST_F(LeaderElectionTest, AdoptsANodeItsSessionAlreadyHas) {
  // A create whose answer was lost: the node exists on our session; no second one is made.
  ASSERT_TRUE(zk1_.ensure_path(topology_paths::kConfigServiceElection).ok());
  auto made = zk1_.create(std::string(topology_paths::kConfigServiceElection) + "/n_", "{}",
                          ZkCreateMode::kEphemeralSequential);
  ASSERT_TRUE(made.ok());
  e1_.step();
  EXPECT_EQ(e1_.node_path(), *made);
  EXPECT_TRUE(e1_.is_leader());
}

}  // namespace
}  // namespace tally::config_service
