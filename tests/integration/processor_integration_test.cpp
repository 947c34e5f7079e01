// The processor end to end on a real cluster (`tallyctl cluster up`, 2 shards): events posted to
// the ingest API show up through the cluster proxy's stats with exactly the expected counts and
// sums (duplicates dropped, bad events rejected by index, watch time summed), on both shards; a
// kill -9 of the processor mid-stream under a retrying loader loses nothing and counts nothing
// twice; and with the cluster proxy down the processor keeps accepting up to its backlog bound
// (then 503), and the counts converge once the proxy is back. A batch a shard refuses (a CHECK
// constraint added to that shard's table) lands in the dead-letter directory, counted in /metrics
// and listed by `tallyctl dlq list`; after the cause is removed `tallyctl dlq replay` applies it
// exactly once (a second replay of the same file answers already_applied). The processor
// registers itself in ZooKeeper (`tallyctl topology show`) and the node goes when it stops.
// `tallyctl loadgen` runs and audits like the loadgen binary.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/cluster/cluster_manifest.h"
#include "common/http/http_client.h"
#include "common/keyspace/ksid.h"
#include "common/process/child_process.h"
#include "tests/support/pg_client.h"
#include "tests/support/test_env.h"
#include "tools/loadgen/src/loadgen.h"

namespace tally {
namespace {

using json = nlohmann::json;
using testing::project_binary;
using testing::run;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class ProcessorIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>("tally-processor");
    base_port_ = testing::find_free_port_block(50);
    up_ = run({project_binary("tallyctl"), "cluster", "up", "--dir", dir_->path().string(),
               "--shards", "2", "--base-port", std::to_string(base_port_)});
  }

  static void TearDownTestSuite() {
    auto m = read_manifest(dir_->path() / "cluster.json");
    run({project_binary("tallyctl"), "cluster", "down", "--dir", dir_->path().string()});
    if (m) {
      for (const auto& p : m->processes) {
        if (process_alive(p.pid)) {
          (void)stop_process(p.pid, p.role == "zookeeper" ? p.config : p.data_dir, SIGKILL,
                             std::chrono::seconds(5));
        }
      }
    }
    dir_.reset();
  }

  void SetUp() override { ASSERT_EQ(up_.exit_code, 0) << up_.output; }

  static ClusterManifest manifest() {
    auto m = read_manifest(dir_->path() / "cluster.json");
    EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
    return m.ok() ? *m : ClusterManifest{};
  }

  static std::string endpoint(const std::string& name) {
    auto m = manifest();
    auto it = m.endpoints.find(name);
    return it != m.endpoints.end() && it->second ? *it->second : "";
  }

  static ManifestProcess only(const std::string& role) {
    auto m = manifest();
    auto ps = m.with_role(role);
    EXPECT_EQ(ps.size(), 1u) << role;
    return ps.empty() ? ManifestProcess{} : *ps[0];
  }

  static HttpClientResponse request(const std::string& url, const std::string& method,
                                    const std::string& target, const std::string& body = "",
                                    const std::string& content_type = "application/json") {
    auto u = parse_http_url(url);
    EXPECT_TRUE(u.ok()) << url;
    if (!u) return {};
    HttpClient client(u->host, u->port, std::chrono::seconds(30));
    auto r = client.request(method, target, body, {}, content_type);
    EXPECT_TRUE(r.ok()) << method << " " << url << target << ": " << (r ? "" : r.error().message);
    return r ? *r : HttpClientResponse{};
  }

  // count and sum of one (video, type) over the last and next hour, read through the cluster proxy.
  static std::pair<int64_t, int64_t> stats(const std::string& video, const std::string& type,
                                           std::string* shard = nullptr) {
    int64_t now = now_ms();
    auto r = request(endpoint("rest"), "GET",
                     "/v1/videos/" + video + "/stats?event_type=" + type + "&function=sum&start=" +
                         std::to_string(now - 3600000) + "&end=" + std::to_string(now + 3600000));
    if (r.status != 200) {
      ADD_FAILURE() << "stats " << video << " " << type << ": HTTP " << r.status << " " << r.body;
      return {-1, -1};
    }
    auto j = json::parse(r.body);
    if (shard) *shard = j.value("shard", "");
    return {j.at("count").get<int64_t>(), j.at("sum").get<int64_t>()};
  }

  // Starts again whatever cluster.json lists as not running (the operator's restart path).
  static void cluster_up_again() {
    auto again = run({project_binary("tallyctl"), "cluster", "up", "--dir", dir_->path().string(),
                      "--shards", "2", "--base-port", std::to_string(base_port_)});
    ASSERT_EQ(again.exit_code, 0) << again.output;
  }

  // SIGKILL the process cluster.json lists under `role`, after checking the PID is that process.
  static void kill_nine(const std::string& role, const std::string& binary) {
    auto p = only(role);
    ASSERT_GT(p.pid, 0);
    std::string cmdline = process_cmdline(p.pid);
    ASSERT_NE(cmdline.find("/" + binary + " "), std::string::npos) << p.pid << ": " << cmdline;
    ASSERT_NE(cmdline.find(p.config), std::string::npos) << cmdline;
    ASSERT_EQ(::kill(p.pid, SIGKILL), 0);
    for (int i = 0; i < 100 && process_alive(p.pid); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_FALSE(process_alive(p.pid)) << role << " pid " << p.pid << " survived SIGKILL";
  }

  static LoadgenOptions loadgen_options(const std::string& run_id) {
    LoadgenOptions o;
    o.ingest_url = endpoint("ingest");
    o.rest_url = endpoint("rest");
    o.rest_token = manifest().users["rest"].password;
    o.run_id = run_id;
    o.rate = 2000;
    o.batch = 50;
    o.producers = 3;
    o.videos = 40;
    o.duplicate_percent = 10;
    o.watch_time_percent = 20;
    o.request_timeout = std::chrono::seconds(5);
    return o;
  }

  static inline std::unique_ptr<testing::TempDir> dir_;
  static inline int base_port_ = 0;
  static inline testing::CommandResult up_;
};

// Videos named prefix_<k>, the first `per_shard` that fall on each of the two shards.
std::vector<std::string> videos_on_both_shards(const std::string& prefix, int per_shard) {
  std::vector<std::string> low;
  std::vector<std::string> high;
  for (int k = 0; static_cast<int>(low.size() + high.size()) < 2 * per_shard; ++k) {
    std::string id = prefix + "_" + std::to_string(k);
    auto& side = ksid_for(id) < (uint64_t{1} << 63) ? low : high;
    if (static_cast<int>(side.size()) < per_shard) side.push_back(id);
  }
  low.insert(low.end(), high.begin(), high.end());
  return low;
}

TEST_F(ProcessorIntegrationTest, CountsAndSumsAreExactWithDuplicatesAndBadEvents) {
  const std::string ingest = endpoint("ingest");
  ASSERT_FALSE(ingest.empty());
  const auto videos = videos_on_both_shards("pit_exact", 3);
  const int64_t ts = now_ms();
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> expected;
  auto event = [&](const std::string& id, const std::string& video, const std::string& type,
                   int64_t value = -1) {
    json e = {{"video_id", video}, {"event_type", type}, {"ts", ts}};
    if (!id.empty()) e["event_id"] = id;
    if (value >= 0) e["value"] = value;
    return e;
  };

  // Request 1 (JSON array): per video 4 views, 2 likes, 3 watch_time values; a repeat of an id
  // inside the request; an event without id; and four bad events.
  json first = json::array();
  std::vector<size_t> bad_first;
  for (size_t v = 0; v < videos.size(); ++v) {
    const auto& vid = videos[v];
    const std::string id = "x" + std::to_string(v);
    for (int i = 0; i < 4; ++i)
      first.push_back(event(id + "-view-" + std::to_string(i), vid, "view"));
    first.push_back(event(id + "-view-0", vid, "view"));  // duplicate inside the request
    first.push_back(event(id + "-like-0", vid, "like"));
    first.push_back(event(id + "-like-1", vid, "like"));
    first.push_back(event(id + "-wt-0", vid, "watch_time", 1000));
    first.push_back(event(id + "-wt-1", vid, "watch_time", 2500 + static_cast<int64_t>(v)));
    first.push_back(event(id + "-wt-2", vid, "watch_time", 40));
    first.push_back(event("", vid, "share"));  // no id: never deduplicated
    expected[{vid, "view"}] = {4, 0};
    expected[{vid, "like"}] = {2, 0};
    expected[{vid, "watch_time"}] = {3, 1000 + 2500 + static_cast<int64_t>(v) + 40};
    expected[{vid, "share"}] = {1, 0};
    expected[{vid, "dislike"}] = {0, 0};
  }
  bad_first.push_back(first.size());
  first.push_back(event("bad-1", videos[0], "vieww"));
  bad_first.push_back(first.size());
  json old = event("bad-2", videos[0], "view");
  old["ts"] = ts - 48 * 3600 * 1000LL;  // outside the accepted window
  first.push_back(old);
  bad_first.push_back(first.size());
  json typo = event("bad-3", videos[0], "watch_time");
  typo["valu"] = 5;  // unknown field
  first.push_back(typo);
  bad_first.push_back(first.size());
  first.push_back(event("bad-4", "no spaces allowed", "view"));

  auto r1 = request(ingest, "POST", "/v1/events", first.dump());
  ASSERT_EQ(r1.status, 200) << r1.body;
  auto a1 = json::parse(r1.body);
  EXPECT_EQ(a1["accepted"].get<size_t>(), first.size() - bad_first.size()) << r1.body;
  std::vector<size_t> rejected;
  for (const auto& r : a1["rejected"]) rejected.push_back(r["index"].get<size_t>());
  EXPECT_EQ(rejected, bad_first) << r1.body;
  EXPECT_NE(r1.body.find("vieww"), std::string::npos) << r1.body;
  EXPECT_NE(r1.body.find("valu"), std::string::npos) << r1.body;

  // Request 2 (NDJSON): every id of request 1 again (duplicates across requests), one new view
  // and one new dislike per video, the id-less share again (counts again), a malformed line.
  std::string ndjson;
  for (const auto& e : first) ndjson += e.dump() + "\n";
  size_t malformed_index = first.size();
  ndjson += "{\"video_id\": \"" + videos[0] + "\", \"event_type\": \n";
  for (size_t v = 0; v < videos.size(); ++v) {
    const std::string id = "x" + std::to_string(v);
    ndjson += event(id + "-view-new", videos[v], "view").dump() + "\n";
    ndjson += event(id + "-dislike-0", videos[v], "dislike").dump() + "\n";
    ++expected[{videos[v], "view"}].first;
    ++expected[{videos[v], "dislike"}].first;
    ++expected[{videos[v], "share"}].first;
  }
  auto r2 = request(ingest, "POST", "/v1/events", ndjson, "application/x-ndjson");
  ASSERT_EQ(r2.status, 200) << r2.body;
  auto a2 = json::parse(r2.body);
  std::vector<size_t> rejected2;
  for (const auto& r : a2["rejected"]) rejected2.push_back(r["index"].get<size_t>());
  std::vector<size_t> expected_rejected2 = bad_first;
  expected_rejected2.push_back(malformed_index);
  EXPECT_EQ(rejected2, expected_rejected2) << r2.body;

  // Stats through the cluster proxy converge to exactly the expected values, on both shards.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> got;
  std::set<std::string> shards;
  do {
    got.clear();
    for (const auto& [key, want] : expected) {
      std::string shard;
      got[key] = stats(key.first, key.second, &shard);
      shards.insert(shard);
    }
    if (got == expected) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  } while (std::chrono::steady_clock::now() < deadline);
  for (const auto& [key, want] : expected) {
    EXPECT_EQ(got[key], want) << key.first << " " << key.second << " (count, sum)";
  }
  EXPECT_EQ(shards, (std::set<std::string>{"-80", "80-"}));
  // And they stay there: nothing arrives late or twice.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  for (const auto& [key, want] : expected) {
    EXPECT_EQ(stats(key.first, key.second), want) << key.first << " " << key.second;
  }
}

TEST_F(ProcessorIntegrationTest, LoadgenCommandAuditsAndItsAuditCatchesADisagreement) {
  // The command line: reads cluster.json, sends, audits, exit 0.
  auto cli = run({project_binary("loadgen"), "--dir", dir_->path().string(), "--rate", "1000",
                  "--duration", "3", "--videos", "10", "--run-id", "cli"});
  EXPECT_EQ(cli.exit_code, 0) << cli.output;
  EXPECT_NE(cli.output.find("mismatches"), std::string::npos) << cli.output;
  EXPECT_NE(cli.output.find(": OK"), std::string::npos) << cli.output;

  // The audit is not vacuous: one extra like for a video of the run, posted behind the
  // loadgen's back, must show up as exactly that mismatch.
  auto o = loadgen_options("extra");
  o.duration = std::chrono::seconds(2);
  o.videos = 5;
  auto lg = Loadgen::create(o);
  ASSERT_TRUE(lg.ok()) << lg.error().message;
  (*lg)->run();
  json extra = json::array({{{"event_id", "not-from-loadgen"},
                             {"video_id", (*lg)->video_id(3)},
                             {"event_type", "like"},
                             {"ts", now_ms()}}});
  auto posted = request(endpoint("ingest"), "POST", "/v1/events", extra.dump());
  ASSERT_EQ(posted.status, 200) << posted.body;
  std::this_thread::sleep_for(std::chrono::seconds(4));  // past a flush and the apply
  auto report = (*lg)->audit(std::chrono::seconds(3));
  ASSERT_TRUE(report.ok()) << report.error().message;
  ASSERT_EQ(report->mismatches.size(), 1u) << format_audit((*lg)->stats(), *report);
  const auto& m = report->mismatches[0];
  EXPECT_EQ(m.key.video_id, (*lg)->video_id(3));
  EXPECT_EQ(m.key.event_type, "like");
  EXPECT_EQ(m.got.count, m.expected.count + 1);
  EXPECT_NE(format_audit((*lg)->stats(), *report).find("MISMATCH " + (*lg)->video_id(3) + " like"),
            std::string::npos);
}

// The processor's /metrics value of one unlabelled counter (-1 when absent).
double metric(const std::string& text, const std::string& name) {
  size_t pos = 0;
  while ((pos = text.find(name, pos)) != std::string::npos) {
    bool line_start = pos == 0 || text[pos - 1] == '\n';
    size_t after = pos + name.size();
    if (line_start && after < text.size() && text[after] == ' ') {
      return std::stod(text.substr(after + 1, text.find('\n', after) - after - 1));
    }
    pos = after;
  }
  return -1;
}

TEST_F(ProcessorIntegrationTest, PoisonBatchGoesToTheDeadLetterQueueAndReplaysExactlyOnce) {
  const std::string ingest = endpoint("ingest");
  const std::string dir = dir_->path().string();
  const std::string dlq_dir = only("processor").data_dir + "/dead_letter";
  // The poison video and a neighbour on shard 80-, one video on shard -80.
  auto low_high = videos_on_both_shards("pit_dlq", 2);
  const std::string ok_low = low_high[0];
  const std::string poison = low_high[2];
  const std::string ok_high = low_high[3];

  // Make shard 80- refuse rows for the poison video for real: a CHECK constraint on its totals.
  const ManifestProcess* leader = nullptr;
  auto m = manifest();
  for (const auto* p : m.with_role("pg_leader")) {
    if (p->shard == "80-") leader = p;
  }
  ASSERT_NE(leader, nullptr);
  testing::PgClient pg(m.conninfo(*leader, "admin"));
  ASSERT_TRUE(pg.ok()) << pg.error();
  ASSERT_EQ(
      pg.query("ALTER TABLE video_totals ADD CONSTRAINT tally_test_poison CHECK (video_id <> '" +
               poison + "') NOT VALID"),
      "OK");

  const double dead_before =
      metric(request(ingest, "GET", "/metrics").body, "tally_processor_dead_letter_batches_total");
  ASSERT_GE(dead_before, 0);
  const int64_t ts = now_ms();
  json events = json::array();
  auto add = [&](const std::string& id, const std::string& video, const std::string& type,
                 int64_t value = 0) {
    events.push_back({{"event_id", id},
                      {"video_id", video},
                      {"event_type", type},
                      {"ts", ts},
                      {"value", value}});
  };
  for (int i = 0; i < 3; ++i) add("dlq-pv-" + std::to_string(i), poison, "view");
  add("dlq-pw-0", poison, "watch_time", 1234);
  for (int i = 0; i < 2; ++i) add("dlq-lv-" + std::to_string(i), ok_low, "view");
  for (int i = 0; i < 2; ++i) add("dlq-hv-" + std::to_string(i), ok_high, "view");
  auto posted = request(ingest, "POST", "/v1/events", events.dump());
  ASSERT_EQ(posted.status, 200) << posted.body;
  ASSERT_EQ(json::parse(posted.body)["accepted"], 8) << posted.body;

  // Dead-lettered (not retried forever), and counted.
  double dead_after = dead_before;
  for (int i = 0; i < 100 && dead_after <= dead_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    dead_after = metric(request(ingest, "GET", "/metrics").body,
                        "tally_processor_dead_letter_batches_total");
  }
  ASSERT_GT(dead_after, dead_before) << "no batch was dead-lettered";
  // The other shard applied its part meanwhile; the poison video's shard holds none of the batch.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (stats(ok_low, "view").first != 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(stats(ok_low, "view"), std::make_pair(int64_t{2}, int64_t{0}));
  EXPECT_EQ(stats(poison, "view").first, 0);

  auto list = run({project_binary("tallyctl"), "dlq", "list", "--dir", dir});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find("tally_test_poison"), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("80-"), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("rejected"), std::string::npos) << list.output;
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dlq_dir))
    files += e.path().extension() == ".json";
  EXPECT_EQ(static_cast<double>(files), dead_after - dead_before) << list.output;

  // While the cause is still there a replay fails and keeps the file.
  auto refused = run({project_binary("tallyctl"), "dlq", "replay", "--dir", dir});
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find("KEPT"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("0 replayed"), std::string::npos) << refused.output;

  // Remove the cause, replay: every batch applied once, the files moved aside.
  ASSERT_EQ(pg.query("ALTER TABLE video_totals DROP CONSTRAINT tally_test_poison"), "OK");
  auto replay = run({project_binary("tallyctl"), "dlq", "replay", "--dir", dir});
  ASSERT_EQ(replay.exit_code, 0) << replay.output;
  EXPECT_NE(replay.output.find("replayed p"), std::string::npos) << replay.output;
  EXPECT_NE(replay.output.find("80- applied"), std::string::npos) << replay.output;
  std::vector<std::filesystem::path> replayed;
  for (const auto& e : std::filesystem::directory_iterator(dlq_dir + "/replayed"))
    replayed.push_back(e.path());
  EXPECT_EQ(static_cast<double>(replayed.size()), dead_after - dead_before);
  for (const auto& e : std::filesystem::directory_iterator(dlq_dir))
    EXPECT_NE(e.path().extension(), ".json") << e.path() << " was not moved aside";

  // A replay that runs again (say it crashed before moving the file) counts nothing twice.
  ASSERT_FALSE(replayed.empty());
  std::filesystem::copy_file(replayed[0], dlq_dir + "/" + replayed[0].filename().string());
  auto again = run({project_binary("tallyctl"), "dlq", "replay", "--dir", dir});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("already_applied"), std::string::npos) << again.output;

  // And the live path keeps working for that video.
  json more = json::array(
      {{{"event_id", "dlq-pv-late"}, {"video_id", poison}, {"event_type", "view"}, {"ts", ts}}});
  ASSERT_EQ(request(ingest, "POST", "/v1/events", more.dump()).status, 200);

  const std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> expected = {
      {{poison, "view"}, {4, 0}},
      {{poison, "watch_time"}, {1, 1234}},
      {{ok_low, "view"}, {2, 0}},
      {{ok_high, "view"}, {2, 0}},
      {{poison, "like"}, {0, 0}}};
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> got;
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  do {
    for (const auto& [k, v] : expected) got[k] = stats(k.first, k.second);
    if (got == expected) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  } while (std::chrono::steady_clock::now() < deadline);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  for (const auto& [k, v] : expected) {
    EXPECT_EQ(stats(k.first, k.second), v) << k.first << " " << k.second << " (count, sum)";
  }
  auto empty = run({project_binary("tallyctl"), "dlq", "list", "--dir", dir});
  EXPECT_EQ(empty.exit_code, 0) << empty.output;
  EXPECT_NE(empty.output.find("no dead-lettered batches"), std::string::npos) << empty.output;
}

TEST_F(ProcessorIntegrationTest, ProcessorRegistersInZooKeeperAndGoesAwayWhenItStops) {
  const std::string dir = dir_->path().string();
  auto p = only("processor");
  const std::string ingest_port = std::to_string(p.ports.at("http"));
  auto shown = [&] { return run({project_binary("tallyctl"), "topology", "show", "--dir", dir}); };
  // It registers in the background: allow it a moment after start-up.
  testing::CommandResult t;
  for (int i = 0; i < 50; ++i) {
    t = shown();
    if (t.output.find("ingest 127.0.0.1:" + ingest_port) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(t.exit_code, 0) << t.output;
  EXPECT_NE(t.output.find("p1  ingest 127.0.0.1:" + ingest_port + ", partitions 0-3"),
            std::string::npos)
      << t.output;

  ASSERT_TRUE(stop_process(p.pid, p.config, SIGTERM, std::chrono::seconds(20)).ok());
  t = shown();
  ASSERT_EQ(t.exit_code, 0) << t.output;
  EXPECT_NE(t.output.find("processors  none registered"), std::string::npos) << t.output;
  EXPECT_EQ(t.output.find("ingest 127.0.0.1:" + ingest_port), std::string::npos) << t.output;

  cluster_up_again();
  for (int i = 0; i < 50; ++i) {
    t = shown();
    if (t.output.find("ingest 127.0.0.1:" + ingest_port) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_NE(t.output.find("p1  ingest 127.0.0.1:" + ingest_port), std::string::npos) << t.output;
}

TEST_F(ProcessorIntegrationTest, TallyctlLoadgenShowsProgressAndAudits) {
  auto cli =
      run({project_binary("tallyctl"), "loadgen", "--dir", dir_->path().string(), "--rate", "1000",
           "--duration", "3", "--videos", "50", "--zipf", "1.1", "--run-id", "tctl"});
  EXPECT_EQ(cli.exit_code, 0) << cli.output;
  EXPECT_NE(cli.output.find("tallyctl loadgen: "), std::string::npos) << cli.output;
  EXPECT_NE(cli.output.find("events/s"), std::string::npos) << cli.output;
  EXPECT_NE(cli.output.find(" accepted,"), std::string::npos) << cli.output;  // progress line
  EXPECT_NE(cli.output.find(": OK"), std::string::npos) << cli.output;
  auto bad = run(
      {project_binary("tallyctl"), "loadgen", "--dir", dir_->path().string(), "--rate", "fast"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("--rate: expected a number"), std::string::npos) << bad.output;
}

TEST_F(ProcessorIntegrationTest, KillNineMidStreamLosesNothingAndCountsNothingTwice) {
  auto o = loadgen_options("killnine");
  o.duration = std::chrono::seconds(16);
  auto lg = Loadgen::create(o);
  ASSERT_TRUE(lg.ok()) << lg.error().message;
  std::thread producer([&] { (*lg)->run(); });

  std::this_thread::sleep_for(std::chrono::seconds(4));
  const auto accepted_before = (*lg)->stats().events_accepted;
  const pid_t old_pid = only("processor").pid;
  kill_nine("processor", "processor");
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the loader keeps trying meanwhile
  cluster_up_again();
  const pid_t new_pid = only("processor").pid;
  EXPECT_NE(new_pid, old_pid);
  EXPECT_TRUE(process_matches(new_pid, "processor"));
  producer.join();

  auto s = (*lg)->stats();
  EXPECT_GT(accepted_before, 0);
  EXPECT_GT(s.events_accepted, accepted_before + 5000);  // it kept going after the restart
  EXPECT_GT(s.failures_by_status[0], 0) << "the kill was never seen by the loader";
  EXPECT_EQ(s.events_uncertain, 0);
  EXPECT_EQ(s.events_rejected, 0);
  auto report = (*lg)->audit(std::chrono::seconds(60));
  ASSERT_TRUE(report.ok()) << report.error().message;
  std::printf("[ measure  ] kill -9: %s", format_audit(s, *report).c_str());
  EXPECT_TRUE(report->ok()) << format_audit(s, *report);
  EXPECT_EQ(report->expected_events, s.events_accepted);
  EXPECT_EQ(report->got_events, s.events_accepted);
}

TEST_F(ProcessorIntegrationTest, ClusterProxyDownBacklogBoundThenConverges) {
  // A small backlog bound so the outage reaches it: restart the processor with one.
  auto p = only("processor");
  ASSERT_TRUE(stop_process(p.pid, p.config, SIGTERM, std::chrono::seconds(20)).ok());
  {
    std::ifstream in(p.config);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto pos = text.find("  cluster_proxy: {url:");
    ASSERT_NE(pos, std::string::npos) << text;
    text.insert(text.find("}\n", pos), ", max_backoff_ms: 500");
    text += "  limits: {max_backlog_events: 8000}\n";
    std::ofstream out(p.config, std::ios::trunc);
    out << text;
  }
  cluster_up_again();

  auto o = loadgen_options("proxydown");
  o.duration = std::chrono::seconds(18);
  auto lg = Loadgen::create(o);
  ASSERT_TRUE(lg.ok()) << lg.error().message;
  std::thread producer([&] { (*lg)->run(); });

  std::this_thread::sleep_for(std::chrono::seconds(3));
  kill_nine("cluster_proxy", "cluster_proxy");
  const auto accepted_at_kill = (*lg)->stats().events_accepted;
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const auto accepted_while_down = (*lg)->stats().events_accepted - accepted_at_kill;
  std::this_thread::sleep_for(std::chrono::seconds(6));  // 2000/s for 8 s: past the 8000 bound
  auto ready = request(endpoint("ingest"), "GET", "/readyz");
  auto s_down = (*lg)->stats();
  cluster_up_again();
  producer.join();

  auto s = (*lg)->stats();
  EXPECT_GT(accepted_while_down, 1000) << "events were not accepted while the proxy was down";
  EXPECT_GT(s_down.failures_by_status[503], 0) << "the backlog bound never answered 503";
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_EQ(s.events_uncertain, 0);
  auto report = (*lg)->audit(std::chrono::seconds(60));
  ASSERT_TRUE(report.ok()) << report.error().message;
  std::printf("[ measure  ] cluster proxy down: %s", format_audit(s, *report).c_str());
  EXPECT_TRUE(report->ok()) << format_audit(s, *report);
  EXPECT_EQ(report->got_events, s.events_accepted);
}

}  // namespace
}  // namespace tally
