// config/compose/*.yaml (docker compose) against the local cluster: every file loads with the real
// service's loader (unknown keys and bad values throw), has exactly the keys `tallyctl cluster up`
// writes for that service (plus the documented extras), and the same values except where the
// container network needs others (addresses, hosts, secrets; each listed below with its reason).
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>

#include "cluster_proxy/src/cluster_proxy_config.h"
#include "config_service/src/config_service_config.h"
#include "processor/src/processor_config.h"
#include "shard_proxy/src/shard_proxy_config.h"
#include "tallyctl/src/bootstrap.h"
#include "tallyctl/src/local_cluster.h"

namespace tally {
namespace {

const std::filesystem::path kComposeDir =
    std::filesystem::path(TALLY_SOURCE_DIR) / "config" / "compose";

// Leaf key paths ("shard_proxy.listen.pg_port") with their values as text.
void flatten(const YAML::Node& node, const std::string& prefix,
             std::map<std::string, std::string>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node) {
      flatten(
          kv.second,
          prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(),
          out);
    }
  } else if (node.IsSequence()) {
    std::string joined;
    for (const auto& item : node) joined += (joined.empty() ? "" : ",") + item.as<std::string>();
    out[prefix] = "[" + joined + "]";
  } else {
    out[prefix] = node.IsNull() ? "" : node.as<std::string>();
  }
}

std::map<std::string, std::string> leaves_of_text(const std::string& text) {
  std::map<std::string, std::string> out;
  flatten(YAML::Load(text), "", out);
  return out;
}

std::map<std::string, std::string> leaves_of_file(const std::string& name) {
  std::map<std::string, std::string> out;
  flatten(YAML::LoadFile((kComposeDir / name).string()), "", out);
  return out;
}

// The local cluster's manifest as `cluster up` makes it for 2 shards on base port 16000: the
// compose services publish the same ports.
ClusterManifest local_manifest() {
  ClusterManifest m;
  m.database = "tally";
  m.users["admin"] = {"tally", "local-admin-pw"};
  m.users["analyst"] = {"tally_analyst", "local-analyst-pw"};
  m.users["replication"] = {"tally_replicator", "local-repl-pw"};
  m.users["rest"] = {"bearer", "local-token"};
  m.zookeeper = "127.0.0.1:16000";
  m.endpoints["rest"] = "http://127.0.0.1:16001";
  m.shards = {"-80", "80-"};
  const PortLayout ports = port_layout(16000);
  for (int i = 0; i < 2; ++i) {
    ManifestProcess p;
    p.name = "shard-proxy-shard" + std::to_string(i);
    p.role = "shard_proxy";
    p.shard = m.shards[i];
    p.ports["pg"] = ports.shard_proxy_pg(i);
    p.ports["http"] = ports.shard_proxy_http(i);
    m.processes.push_back(p);
  }
  return m;
}

// Compares key sets exactly and values except for `may_differ` (key -> why).
void expect_same_as_local(const std::string& file, const std::string& local_text,
                          const std::set<std::string>& compose_only,
                          const std::map<std::string, std::string>& may_differ) {
  SCOPED_TRACE("config/compose/" + file);
  auto local = leaves_of_text(local_text);
  auto compose = leaves_of_file(file);
  for (const auto& [key, value] : local) {
    auto it = compose.find(key);
    if (it == compose.end()) {
      ADD_FAILURE() << "key " << key << " (local cluster: " << value << ") is missing";
      continue;
    }
    if (!may_differ.count(key)) {
      EXPECT_EQ(it->second, value) << "key " << key << " differs from the local cluster's";
    }
  }
  for (const auto& [key, value] : compose) {
    if (!local.count(key) && !compose_only.count(key)) {
      ADD_FAILURE() << "key " << key << " (" << value << ") is not in the local cluster's config";
    }
  }
}

TEST(ComposeConfigTest, ShardProxiesMatchTheLocalClusterAndLoad) {
  const auto m = local_manifest();
  for (int i = 0; i < 2; ++i) {
    const std::string file = "shard-proxy-s" + std::to_string(i) + ".yaml";
    ShardRecord record;
    record.leader = "127.0.0.1:" + std::to_string(16010 + 2 * i);
    record.replica = "127.0.0.1:" + std::to_string(16011 + 2 * i);
    expect_same_as_local(
        file, shard_proxy_config_text(m.processes[i], record, m),
        // Registered in ZooKeeper instead of 0.0.0.0: the cluster proxy dials what is there.
        {"shard_proxy.listen.advertise_address"},
        {{"shard_proxy.listen.address", "0.0.0.0: reachable from the other containers"},
         {"shard_proxy.zookeeper.hosts", "the zookeeper container"},
         {"shard_proxy.backend.leader", "the pg-sN-leader container"},
         {"shard_proxy.backend.replica", "the pg-sN-replica container"},
         {"shard_proxy.auth.users.tally.password", "docker/tally.env"},
         {"shard_proxy.auth.users.tally_analyst.password", "docker/tally.env"}});
    auto c = shard_proxy::load_shard_proxy_config(kComposeDir / file);
    EXPECT_EQ(c.listen_address, "0.0.0.0");
    EXPECT_EQ(c.advertise_address, "shard-proxy-s" + std::to_string(i));
    EXPECT_EQ(c.shard, m.shards[i]);
    EXPECT_EQ(c.leader, "pg-s" + std::to_string(i) + "-leader:5432");
  }
}

TEST(ComposeConfigTest, ConfigServicesMatchTheLocalClusterAndLoad) {
  const auto m = local_manifest();
  const PortLayout ports = port_layout(16000);
  for (int i = 0; i < 2; ++i) {
    ManifestProcess p;
    p.name = "cs" + std::to_string(i + 1);
    p.role = "config_service";
    p.ports["http"] = ports.config_service_http(i);
    const std::string file = "config-service-" + std::to_string(i + 1) + ".yaml";
    expect_same_as_local(file, config_service_config_text(p, m), {},
                         {{"config_service.http.listen_address", "0.0.0.0"},
                          {"config_service.zookeeper.hosts", "the zookeeper container"},
                          {"config_service.postgres.password", "docker/tally.env"}});
    auto c = config_service::load_config_service_config(kComposeDir / file);
    EXPECT_EQ(c.id, p.name);
    EXPECT_EQ(c.zk_hosts, "zookeeper:2181");
  }
}

TEST(ComposeConfigTest, ClusterProxyMatchesTheLocalClusterAndLoads) {
  const auto m = local_manifest();
  ManifestProcess p;
  p.name = "cluster-proxy";
  p.role = "cluster_proxy";
  p.ports["http"] = port_layout(16000).cluster_proxy_http();
  p.ports["pg"] = port_layout(16000).cluster_proxy_pg();
  expect_same_as_local("cluster-proxy.yaml", cluster_proxy_config_text(p, m), {},
                       {{"cluster_proxy.listen.address", "0.0.0.0"},
                        {"cluster_proxy.zookeeper.hosts", "the zookeeper container"},
                        {"cluster_proxy.shards.-80.proxies", "the shard-proxy-s0 container"},
                        {"cluster_proxy.shards.80-.proxies", "the shard-proxy-s1 container"},
                        {"cluster_proxy.backend.password", "docker/tally.env"},
                        {"cluster_proxy.auth.write_tokens", "docker/tally.env"},
                        {"cluster_proxy.analyst.password", "docker/tally.env"}});
  auto c = cluster_proxy::load_cluster_proxy_config(kComposeDir / "cluster-proxy.yaml");
  EXPECT_EQ(c.http_port, 16001);
  ASSERT_EQ(c.shards.count("-80"), 1u);
  EXPECT_EQ(c.shards.at("-80"), std::vector<std::string>{"shard-proxy-s0:16100"});
}

TEST(ComposeConfigTest, ProcessorMatchesTheLocalClusterAndLoads) {
  const auto m = local_manifest();
  ManifestProcess p;
  p.name = "processor";
  p.role = "processor";
  p.ports["http"] = port_layout(16000).processor_http();
  p.data_dir = "/var/tmp/tally-cluster/processor/data";
  expect_same_as_local("processor.yaml", processor_config_text(p, m),
                       // Registered in ZooKeeper instead of 0.0.0.0.
                       {"processor.http.advertise_address"},
                       {{"processor.data_dir", "the processor-data volume"},
                        {"processor.http.address", "0.0.0.0"},
                        {"processor.zookeeper.hosts", "the zookeeper container"},
                        {"processor.cluster_proxy.url", "the cluster-proxy container"},
                        {"processor.cluster_proxy.token", "docker/tally.env"}});
  auto c = processor::load_processor_config(kComposeDir / "processor.yaml");
  EXPECT_EQ(c.cluster_proxy_url, "http://cluster-proxy:16001");
  EXPECT_EQ(c.data_dir, "/var/lib/tally/processor");
}

// The comparison itself must be able to fail: a key the local cluster does not write is caught.
TEST(ComposeConfigTest, AnExtraKeyIsReported) {
  auto local = leaves_of_text("a: {b: 1, c: 2}\n");
  auto other = leaves_of_text("a: {b: 1, c: 2, d: 3}\n");
  std::set<std::string> extra;
  for (const auto& [k, v] : other) {
    if (!local.count(k)) extra.insert(k);
  }
  EXPECT_EQ(extra, std::set<std::string>{"a.d"});
}

// The example files docs/operations.md lists the keys from load with the real loaders too.
TEST(ComposeConfigTest, ExampleConfigsLoad) {
  const auto dir = std::filesystem::path(TALLY_SOURCE_DIR) / "config";
  EXPECT_NO_THROW(shard_proxy::load_shard_proxy_config(dir / "shard-proxy.example.yaml"));
  EXPECT_NO_THROW(config_service::load_config_service_config(dir / "config-service.example.yaml"));
  EXPECT_NO_THROW(cluster_proxy::load_cluster_proxy_config(dir / "cluster-proxy.example.yaml"));
  EXPECT_NO_THROW(processor::load_processor_config(dir / "processor.example.yaml"));
  EXPECT_NO_THROW(load_local_cluster_options(dir / "local-cluster.yaml"));
}

// The compose `init` service's --shards argument, as tallyctl bootstrap parses it.
TEST(ComposeConfigTest, BootstrapShardsParse) {
  auto shards = parse_bootstrap_shards(
      "-80=pg-s0-leader:5432/pg-s0-replica:5432,80-=pg-s1-leader:5432/pg-s1-replica:5432");
  ASSERT_TRUE(shards) << shards.error().message;
  ASSERT_EQ(shards->size(), 2u);
  EXPECT_EQ((*shards)[0].range, "-80");
  EXPECT_EQ((*shards)[0].leader, "pg-s0-leader:5432");
  EXPECT_EQ((*shards)[1].replica, "pg-s1-replica:5432");

  auto no_replica = parse_bootstrap_shards("-=db:5432");
  ASSERT_TRUE(no_replica) << no_replica.error().message;
  EXPECT_EQ((*no_replica)[0].replica, "");
}

TEST(ComposeConfigTest, BootstrapShardsErrorsNameTheEntry) {
  auto bad_port = parse_bootstrap_shards("-80=pg:54x2,80-=pg:5432");
  ASSERT_FALSE(bad_port);
  EXPECT_NE(bad_port.error().message.find("'-80=pg:54x2'"), std::string::npos)
      << bad_port.error().message;
  EXPECT_NE(bad_port.error().message.find("not host:port"), std::string::npos);

  auto no_range = parse_bootstrap_shards("pg:5432");
  ASSERT_FALSE(no_range);
  EXPECT_NE(no_range.error().message.find("no RANGE= prefix"), std::string::npos);

  auto gap = parse_bootstrap_shards("-80=a:1");  // 80- missing: the keyspace is not covered
  ASSERT_FALSE(gap);
  EXPECT_NE(gap.error().message.find("do not cover the keyspace"), std::string::npos)
      << gap.error().message;

  auto bad_replica = parse_bootstrap_shards("-=a:1/b");
  ASSERT_FALSE(bad_replica);
  EXPECT_NE(bad_replica.error().message.find("replica 'b'"), std::string::npos);
}

}  // namespace
}  // namespace tally
