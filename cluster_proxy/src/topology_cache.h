// TopologyCache: the cluster proxy's routing table (which shard owns a ksid, and the addresses of
// that shard's proxies), fed by ZooKeeper watches on /tally/keyspace, /tally/shards/<range> and
// /tally/shard_proxies/<range>/*, with per-shard proxy addresses from the config as a fallback.
// Changes take effect without a restart. When ZooKeeper is unreachable the last routing table stays
// in use and health() says so. Readers get an immutable snapshot (any thread, a mutex-guarded
// shared_ptr copy); one background thread does all ZooKeeper calls, so none blocks an io thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/core/clock.h"
#include "common/core/result.h"
#include "common/keyspace/shard_map.h"
#include "common/topology/topology.h"
#include "common/zk/zk_client.h"

namespace tally::cluster_proxy {

struct ShardRoute {
  std::string name;  // canonical range name, "-80"
  ShardRange range = ShardRange::whole();
  ShardRecord record;                // leader/replica/state as ZooKeeper has them (empty if static)
  std::vector<std::string> proxies;  // host:port of the shard proxies' PostgreSQL port, sorted
  std::string proxies_source;        // "zookeeper" or "config"
};

struct Routing {
  ShardMap map;
  std::vector<ShardRoute> shards;  // in key order, parallel to map.ranges()
  int64_t keyspace_version = 0;
  std::string source;  // "zookeeper" or "config"
  int64_t read_at_ms = 0;

  const ShardRoute& for_ksid(KeyspaceId ksid) const { return shards[map.index_for(ksid)]; }
  size_t index_for(KeyspaceId ksid) const { return map.index_for(ksid); }
};

struct TopologyCacheOptions {
  std::string zk_hosts;  // empty: the config's static proxies only
  std::chrono::milliseconds zk_session_timeout{10000};
  std::chrono::milliseconds zk_connect_timeout{5000};
  // Range name -> shard proxy addresses, used for shards ZooKeeper lists no proxy for, and as the
  // whole topology without ZooKeeper.
  std::map<std::string, std::vector<std::string>> static_proxies;
  std::chrono::milliseconds refresh_interval{5000};  // re-read even without a watch firing
};

struct TopologyHealth {
  bool zk_configured = false;
  bool zk_connected = false;
  bool have_routing = false;
  int64_t last_success_ms = 0;  // wall clock of the last read that reached ZooKeeper
  std::string last_error;       // of the last failed read, "" after a success
  int64_t keyspace_version = 0;
};

class TopologyCache {
 public:
  TopologyCache(TopologyCacheOptions options, const Clock& clock);
  ~TopologyCache();
  TopologyCache(const TopologyCache&) = delete;
  TopologyCache& operator=(const TopologyCache&) = delete;

  // Loads the first routing table (from ZooKeeper, else from the config) and starts the refresh
  // thread. An error when neither gives one. Start-up path: may block for the connect timeout.
  Status start();
  void stop();

  // The current table; never null after a successful start().
  std::shared_ptr<const Routing> routing() const;
  TopologyHealth health() const;
  uint64_t refreshes() const { return refreshes_.load(); }

 private:
  void run();
  Status refresh();  // refresh thread (or start())
  Status connect_zk();
  void mark_dirty();
  Result<std::shared_ptr<Routing>> static_routing() const;
  void update_watches(const std::vector<std::string>& ranges);

  TopologyCacheOptions options_;
  const Clock& clock_;
  std::unique_ptr<ZkClient> zk_;
  std::vector<ZkClient::WatchId> watches_;
  std::vector<std::string> watched_ranges_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool dirty_ = false;
  bool stopping_ = false;
  std::shared_ptr<const Routing> routing_;
  TopologyHealth health_;
  std::atomic<bool> zk_connected_{false};
  std::atomic<uint64_t> refreshes_{0};
  std::thread thread_;
};

}  // namespace tally::cluster_proxy
