#include "cluster_proxy/src/cluster_proxy_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>

#include "common/config/yaml_reader.h"
#include "common/keyspace/shard_range.h"

namespace tally::cluster_proxy {
namespace {

std::vector<std::string> tokens(ConfigSection& auth, const std::string& key) {
  auto list = auth.optional_string_list(key);
  for (const auto& t : list) {
    if (t.size() < 16) {
      auth.fail(key,
                "expected tokens of at least 16 characters (a guessable token is no "
                "protection)");
    }
  }
  return list;
}

}  // namespace

ClusterProxyConfig load_cluster_proxy_config(const std::filesystem::path& file) {
  ClusterProxyConfig c;
  c.file = file.string();
  auto root = load_config_file(file);
  auto s = root.section("cluster_proxy");
  c.id = s.optional_string("id", c.id, "a proxy id like cluster-proxy-0");
  c.io_threads = static_cast<int>(s.optional_int("io_threads", c.io_threads, 0, 256));

  auto listen = s.section("listen");
  c.listen_address = listen.optional_string("address", c.listen_address, "an IP address");
  c.http_port = static_cast<int>(listen.required_int("http_port", 0, 65535));
  listen.finish();

  if (auto zk = s.optional_section("zookeeper")) {
    auto zk_settings = read_zookeeper_section(*zk, c.zk_session_timeout_ms);
    c.zk_hosts = zk_settings.hosts;
    c.zk_session_timeout_ms = zk_settings.session_timeout_ms;
  }
  if (s.has("shards")) {
    for (auto& [range, entry] : s.named_sections("shards")) {
      auto parsed = ShardRange::parse(range);
      if (!parsed) s.fail("shards." + range, parsed.error().message);
      auto proxies = entry.optional_string_list("proxies");
      for (const auto& p : proxies) entry.check_host_port("proxies", p);
      if (proxies.empty()) entry.fail("proxies", "expected at least one host:port");
      entry.finish();
      c.shards[parsed->name()] = proxies;
    }
  }
  if (c.zk_hosts.empty() && c.shards.empty()) {
    s.fail("zookeeper", "expected zookeeper.hosts or a shards list (or both)");
  }

  auto backend = s.section("backend");
  c.database = backend.optional_string("database", c.database, "a database name");
  c.user =
      backend.required_string("user", "the user the cluster proxy logs in to shard proxies as");
  c.password = backend.required_string("password", "that user's password");
  c.pool_size = static_cast<int>(backend.optional_int("pool_size", c.pool_size, 1, 1000));
  c.connect_timeout_ms =
      static_cast<int>(backend.optional_int("connect_timeout_ms", c.connect_timeout_ms, 10, 60000));
  backend.finish();

  if (auto limits = s.optional_section("limits")) {
    c.shard_timeout_ms =
        static_cast<int>(limits->optional_int("shard_timeout_ms", c.shard_timeout_ms, 10, 600000));
    c.write_timeout_ms =
        static_cast<int>(limits->optional_int("write_timeout_ms", c.write_timeout_ms, 10, 600000));
    c.request_timeout_ms = static_cast<int>(
        limits->optional_int("request_timeout_ms", c.request_timeout_ms, 10, 600000));
    c.max_body_bytes =
        limits->optional_int("max_body_bytes", c.max_body_bytes, 1024, int64_t{1} << 30);
    c.limits.max_range_ms =
        limits->optional_int("max_range_days", c.limits.max_range_ms / kDayMs, 1, 36600) * kDayMs;
    c.limits.max_series_points =
        limits->optional_int("max_series_points", c.limits.max_series_points, 1, 10000000);
    c.limits.max_batch_items =
        limits->optional_int("max_batch_items", c.limits.max_batch_items, 1, 100000);
    c.limits.max_apply_rows =
        limits->optional_int("max_apply_rows", c.limits.max_apply_rows, 1, 10000000);
    c.limits.max_top_limit =
        limits->optional_int("max_top_limit", c.limits.max_top_limit, 1, 100000);
    limits->finish();
  }
  if (c.request_timeout_ms < std::max(c.shard_timeout_ms, c.write_timeout_ms)) {
    s.fail("limits.request_timeout_ms",
           "expected at least limits.shard_timeout_ms and limits.write_timeout_ms (" +
               std::to_string(std::max(c.shard_timeout_ms, c.write_timeout_ms)) +
               "), or a slow shard would end in the server's 504 instead of a clear error");
  }
  if (auto cache = s.optional_section("cache")) {
    c.stats_cache_ttl_ms =
        static_cast<int>(cache->optional_int("stats_ttl_ms", c.stats_cache_ttl_ms, 0, 3600000));
    c.stats_cache_max_bytes =
        cache->optional_int("local_max_bytes", c.stats_cache_max_bytes, 0, int64_t{64} << 30);
    cache->finish();
    if (c.stats_cache_max_bytes > 0 && c.stats_cache_max_bytes < (int64_t{1} << 20)) {
      s.fail("cache.local_max_bytes", "expected 0 (no local stats cache) or at least 1048576");
    }
  }
  if (auto resilience = s.optional_section("resilience")) {
    c.retry_attempts =
        static_cast<int>(resilience->optional_int("retry_attempts", c.retry_attempts, 0, 10));
    c.retry_backoff_ms = static_cast<int>(
        resilience->optional_int("retry_backoff_ms", c.retry_backoff_ms, 1, 10000));
    c.breaker_failure_threshold = static_cast<int>(resilience->optional_int(
        "breaker_failure_threshold", c.breaker_failure_threshold, 0, 1000));
    c.breaker_open_ms = static_cast<int>(
        resilience->optional_int("breaker_open_ms", c.breaker_open_ms, 10, 600000));
    c.consolidate_reads = resilience->optional_bool("consolidate_reads", c.consolidate_reads);
    resilience->finish();
  }
  auto auth = s.section("auth");
  c.write_tokens = tokens(auth, "write_tokens");
  c.read_tokens = tokens(auth, "read_tokens");
  if (c.write_tokens.empty()) {
    auth.fail("write_tokens", "expected at least one bearer token for the write endpoints");
  }
  auth.finish();
  if (auto analyst = s.optional_section("analyst")) c.analyst = load_analyst_config(*analyst);
  s.finish();
  root.finish();
  return c;
}

}  // namespace tally::cluster_proxy
