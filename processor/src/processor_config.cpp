#include "processor/src/processor_config.h"

#include <set>

#include "common/config/yaml_reader.h"

namespace tally::processor {

namespace {

ProcessorConfig read(ConfigSection root, const std::string& file) {
  ProcessorConfig c;
  c.file = file;
  auto s = root.section("processor");
  c.id =
      s.required_string("id", "a stable processor id like p1 (1-64 characters of [A-Za-z0-9_-])");
  bool id_ok = !c.id.empty() && c.id.size() <= 64;
  for (char ch : c.id) {
    id_ok = id_ok && (isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-');
  }
  if (!id_ok) s.fail("id", "expected 1-64 characters of [A-Za-z0-9_-], got \"" + c.id + "\"");
  // `<id>-dlq` is the identity dead-letter replays apply under (contract 9).
  if (c.id.size() >= 4 && c.id.compare(c.id.size() - 4, 4, "-dlq") == 0) {
    s.fail("id", "expected an id not ending in -dlq (reserved for dead-letter replays), got \"" +
                     c.id + "\"");
  }
  c.data_dir = s.required_string("data_dir", "a directory path");
  c.partitions = static_cast<int>(s.optional_int("partitions", c.partitions, 1, 256));

  auto http = s.section("http");
  c.listen_address = http.optional_string("address", c.listen_address, "an IP address");
  c.advertise_address = http.optional_string(
      "advertise_address", "", "the host name producers reach it by (registered in ZooKeeper)");
  c.http_port = static_cast<int>(http.required_int("port", 0, 65535));
  c.http_threads = static_cast<int>(http.optional_int("threads", c.http_threads, 1, 64));
  c.max_body_bytes = static_cast<size_t>(
      http.optional_int("max_body_bytes", static_cast<int64_t>(c.max_body_bytes), 1024, 1 << 30));
  http.finish();

  if (auto log = s.optional_section("log")) {
    c.segment_bytes = static_cast<uint64_t>(log->optional_int(
        "segment_bytes", static_cast<int64_t>(c.segment_bytes), 8 << 20, int64_t{1} << 34));
    c.fsync = log->optional_bool("fsync", c.fsync);
    log->finish();
  }

  if (auto limits = s.optional_section("limits")) {
    c.event_limits.max_events = static_cast<size_t>(limits->optional_int(
        "max_events_per_request", static_cast<int64_t>(c.event_limits.max_events), 1, 10'000'000));
    c.event_limits.max_age_ms = limits->optional_int("max_event_age_ms", c.event_limits.max_age_ms,
                                                     0, int64_t{366} * 86400 * 1000);
    c.event_limits.max_future_ms = limits->optional_int(
        "max_event_future_ms", c.event_limits.max_future_ms, 0, int64_t{7} * 86400 * 1000);
    c.event_limits.max_value =
        limits->optional_int("max_value", c.event_limits.max_value, 0, int64_t{1} << 53);
    c.max_backlog_events =
        limits->optional_int("max_backlog_events", c.max_backlog_events, 1, int64_t{1} << 40);
    c.retry_after_s = static_cast<int>(limits->optional_int("retry_after_s", 1, 1, 3600));
    limits->finish();
  }

  if (auto dedup = s.optional_section("dedup")) {
    c.dedup_window_ms =
        dedup->optional_int("window_ms", c.dedup_window_ms, 0, int64_t{7} * 86400 * 1000);
    c.dedup_memory_bytes =
        dedup->optional_int("memory_bytes", c.dedup_memory_bytes, 1 << 20, int64_t{1} << 40);
    c.dedup_snapshot_interval_ms =
        dedup->optional_int("snapshot_interval_ms", c.dedup_snapshot_interval_ms, 100, 3600 * 1000);
    dedup->finish();
  }

  if (auto flush = s.optional_section("flush")) {
    c.flush_interval_ms = flush->optional_int("interval_ms", c.flush_interval_ms, 10, 60000);
    c.max_batch_rows = static_cast<size_t>(flush->optional_int(
        "max_batch_rows", static_cast<int64_t>(c.max_batch_rows), 1, 10'000'000));
    flush->finish();
  }

  if (auto proxy = s.optional_section("cluster_proxy")) {
    c.cluster_proxy_url =
        proxy->required_string("url", "the cluster proxy's REST URL like http://127.0.0.1:16001");
    if (c.cluster_proxy_url.rfind("http://", 0) != 0) {
      proxy->fail("url", "expected an http:// URL like http://127.0.0.1:16001, got \"" +
                             c.cluster_proxy_url + "\"");
    }
    c.cluster_proxy_token = proxy->optional_string("token", "", "the bearer token");
    c.cluster_proxy_timeout_ms =
        proxy->optional_int("timeout_ms", c.cluster_proxy_timeout_ms, 10, 600000);
    c.max_backoff_ms = proxy->optional_int("max_backoff_ms", c.max_backoff_ms, 10, 600000);
    c.breaker_failures =
        static_cast<int>(proxy->optional_int("breaker_failures", c.breaker_failures, 0, 1000));
    c.breaker_open_ms = proxy->optional_int("breaker_open_ms", c.breaker_open_ms, 10, 600000);
    proxy->finish();
  }

  if (auto zk = s.optional_section("zookeeper")) {
    auto zk_settings = read_zookeeper_section(*zk, c.zk_session_timeout_ms);
    c.zk_hosts = zk_settings.hosts;
    c.zk_session_timeout_ms = zk_settings.session_timeout_ms;
  }

  std::set<std::string> keys;
  for (auto& [name, k] : s.named_sections("api_keys")) {
    ApiKey key;
    key.name = name;
    key.key = k.required_string("key", "the secret a producer sends as X-Api-Key");
    if (key.key.size() < 8) k.fail("key", "expected at least 8 characters");
    if (!keys.insert(key.key).second) k.fail("key", "the same key is given to two names");
    key.events_per_second =
        static_cast<double>(k.optional_int("events_per_second", 100000, 1, int64_t{1} << 40));
    key.burst = static_cast<double>(k.optional_int(
        "burst", static_cast<int64_t>(2 * key.events_per_second), 1, int64_t{1} << 40));
    k.finish();
    c.api_keys.push_back(std::move(key));
  }
  s.finish();
  root.finish();
  return c;
}

}  // namespace

ProcessorConfig load_processor_config(const std::filesystem::path& file) {
  return read(load_config_file(file), file.string());
}

ProcessorConfig parse_processor_config(const std::string& text, const std::string& name) {
  return read(load_config_text(text, name), name);
}

}  // namespace tally::processor
