// The cluster proxy against a real 2-shard cluster from `tallyctl cluster up` (ZooKeeper, per
// shard a PostgreSQL leader and replica and a shard proxy, and the cluster proxy). Covers the
// apply function of migration 0004 directly on a leader, routing across both shards (rows checked
// on the owning leader), idempotent re-apply, stats over ranges mixing minute/hour/day buckets
// against a direct SQL sum over the minute table, batchGet, top, metadata PUTs, bad input, access,
// read-your-writes, a shard with both nodes down, and ZooKeeper down.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/cluster/cluster_manifest.h"
#include "common/keyspace/ksid.h"
#include "common/keyspace/shard_map.h"
#include "common/process/child_process.h"
#include "tests/support/http_client.h"
#include "tests/support/pg_client.h"
#include "tests/support/test_env.h"

namespace tally {
namespace {

using json = nlohmann::json;
using testing::http;
using testing::HttpReply;
using testing::PgClient;
using testing::project_binary;
using testing::run;
using Clock = std::chrono::steady_clock;

constexpr int64_t kMinute = 60'000;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;
constexpr int64_t k2025_11_22 = 1763769600000;  // 2025-11-22T00:00:00Z

std::string iso(int64_t ms) {
  time_t s = static_cast<time_t>(ms / 1000);
  tm t{};
  gmtime_r(&s, &t);
  char buf[32];
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &t);
  return buf;
}

std::string sql_ts(int64_t ms) {
  return "to_timestamp(" + std::to_string(ms / 1000) + ")";
}

class ClusterProxyTest : public ::testing::Test {
 protected:
  static void cluster_up() {
    auto up = run({project_binary("tallyctl"), "cluster", "up", "--dir", dir_->path().string(),
                   "--shards", "2", "--base-port", std::to_string(base_)});
    ASSERT_EQ(up.exit_code, 0) << up.output;
    auto m = read_manifest(dir_->path() / "cluster.json");
    ASSERT_TRUE(m.ok());
    manifest_ = *m;
  }

  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>("tally-cproxy");
    base_ = testing::find_free_port_block(200);
    ASSERT_NO_FATAL_FAILURE(cluster_up());
    auto map = ShardMap::from_names(manifest_.shards);
    ASSERT_TRUE(map.ok());
    map_ = std::make_unique<ShardMap>(*map);
    // Ids on each shard, found by hashing: routing must send each to its owner.
    for (int i = 0; ids_[0].size() < 6 || ids_[1].size() < 6; ++i) {
      std::string id = "vid_" + std::to_string(i);
      size_t shard = map_->index_for(ksid_for(id));
      if (ids_[shard].size() < 6) ids_[shard].push_back(id);
    }
  }

  static void TearDownTestSuite() {
    run({project_binary("tallyctl"), "cluster", "down", "--dir", dir_->path().string()});
    for (const auto& p : manifest_.processes) {
      std::string needle = p.role == "pg_leader" || p.role == "pg_replica" ? p.data_dir : p.config;
      if (process_alive(p.pid)) (void)stop_process(p.pid, needle, SIGKILL, std::chrono::seconds(5));
    }
    dir_.reset();
  }

  static int rest_port() { return manifest_.with_role("cluster_proxy")[0]->ports.at("http"); }
  static std::string token() { return manifest_.users.at("rest").password; }
  static const ManifestProcess& pg(const std::string& role, size_t shard) {
    for (const auto* p : manifest_.with_role(role)) {
      if (p->shard == manifest_.shards[shard]) return *p;
    }
    throw std::logic_error("no " + role);
  }
  static std::string leader_info(size_t shard) {
    return manifest_.conninfo(pg("pg_leader", shard), "admin");
  }
  static HttpReply get(const std::string& target) { return http(rest_port(), "GET", target); }
  static HttpReply apply(const json& body) {
    return http(rest_port(), "POST", "/v1/counters:apply", body.dump(), token());
  }
  static std::string stats_target(const std::string& id, int64_t start, int64_t end,
                                  const std::string& extra = "") {
    return "/v1/videos/" + id + "/stats?event_type=view&start=" + iso(start) + "&end=" + iso(end) +
           extra;
  }
  // Waits for a stats read of `id` to answer 200 (e.g. after a restart).
  static bool eventually_200(const std::string& id, int tries = 150) {
    for (int i = 0; i < tries; ++i) {
      if (get(stats_target(id, k2025_11_22, k2025_11_22 + kDay)).status == 200) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  static inline std::unique_ptr<testing::TempDir> dir_;
  static inline int base_ = 0;
  static inline ClusterManifest manifest_;
  static inline std::unique_ptr<ShardMap> map_;
  static inline std::vector<std::string> ids_[2];
};

TEST_F(ClusterProxyTest, ApplyFunctionOnALeaderIsIdempotentAndRollsUp) {
  PgClient c(leader_info(0));
  ASSERT_TRUE(c.ok()) << c.error();
  // Two minutes in one hour, one in the next hour, one on the next day; the same minute twice.
  const int64_t m0 = k2025_11_22 + 10 * kHour + 5 * kMinute;
  auto row = [](int64_t minute, int count, int sum) {
    return json{{"video_id", "direct_v"}, {"event_type", "view"}, {"minute", minute},
                {"count", count},         {"sum", sum},           {"ksid", 42}};
  };
  json rows = json::array({row(m0, 3, 30), row(m0, 2, 20), row(m0 + kMinute, 1, 1),
                           row(m0 + kHour, 4, 0), row(m0 + kDay, 5, 5)});
  const std::string call =
      "SELECT outcome || ' ' || mark FROM tally_apply_counters($1, $2, $3, $4, $5)";
  EXPECT_EQ(c.query_params(call, {"direct", "7", "-1", "100", rows.dump()}), "applied 100");
  EXPECT_EQ(c.query_params(call, {"direct", "7", "-1", "100", rows.dump()}), "already_applied 100");
  EXPECT_EQ(c.query_params(call, {"direct", "7", "50", "150", rows.dump()}), "overlap 100");
  EXPECT_EQ(c.query_params(call, {"direct", "7", "100", "150", "[]"}), "applied 150");
  EXPECT_EQ(c.query_params(call, {"direct", "7", "120", "150", "[]"}), "already_applied 150");
  EXPECT_EQ(c.query_params(call, {"direct", "8", "5", "6", "[]"}), "applied 6");  // gaps are fine
  EXPECT_EQ(c.query_params(call, {"direct", "7", "150", "140", "[]"}).substr(0, 11), "ERROR 22023");
  // Roll-ups: counted once despite the re-sends.
  auto q = [&](const std::string& sql) { return c.query(sql); };
  EXPECT_EQ(q("SELECT string_agg(count || '/' || sum, ',' ORDER BY bucket_start) FROM "
              "video_stats_minute WHERE video_id = 'direct_v'"),
            "5/50,1/1,4/0,5/5");
  EXPECT_EQ(q("SELECT string_agg(count || '/' || sum, ',' ORDER BY bucket_start) FROM "
              "video_stats_hour WHERE video_id = 'direct_v'"),
            "6/51,4/0,5/5");
  EXPECT_EQ(q("SELECT string_agg(count || '/' || sum, ',' ORDER BY bucket_start) FROM "
              "video_stats_day WHERE video_id = 'direct_v'"),
            "10/51,5/5");
  EXPECT_EQ(q("SELECT count || '/' || sum FROM video_totals WHERE video_id = 'direct_v'"), "15/56");
  EXPECT_EQ(q("SELECT mark FROM apply_marks WHERE processor_id = 'direct' AND partition = 7"),
            "150");
  // A row that breaks a constraint fails the whole call: no counts, no mark.
  json bad = json::array({row(m0, 1, 1), row(m0 + 1, 1, 1)});  // not a whole minute
  EXPECT_EQ(c.query_params(call, {"direct", "7", "150", "160", bad.dump()}).substr(0, 11),
            "ERROR 23514");
  EXPECT_EQ(q("SELECT mark FROM apply_marks WHERE processor_id = 'direct' AND partition = 7"),
            "150");
  EXPECT_EQ(q("SELECT count FROM video_totals WHERE video_id = 'direct_v'"), "15");
  // The video id format (migrations 0001 and 0005) guards the counter tables too: a row whose id
  // has a space, is empty, is 65 characters long or ends in a newline fails the whole call; 64
  // characters are fine.
  for (const std::string& id :
       {std::string("a b"), std::string(), std::string(65, 'v'), std::string("direct_v\n")}) {
    json one = row(m0, 1, 1);
    one["video_id"] = id;
    EXPECT_EQ(c.query_params(call, {"direct", "7", "150", "160", json::array({one}).dump()})
                  .substr(0, 11),
              "ERROR 23514")
        << id;
  }
  json longest = row(m0, 1, 1);
  longest["video_id"] = std::string(64, 'v');
  EXPECT_EQ(c.query_params(call, {"direct", "7", "150", "160", json::array({longest}).dump()}),
            "applied 160");
  EXPECT_EQ(q("SELECT count FROM video_totals WHERE video_id = 'direct_v'"), "15");
}

TEST_F(ClusterProxyTest, ApplyRoutesRowsToTheirShardAndReapplyIsIdempotent) {
  const int64_t minute = k2025_11_22 + 3 * kHour;
  json rows = json::array();
  for (size_t s = 0; s < 2; ++s) {
    for (const auto& id : ids_[s]) {
      rows.push_back({{"video_id", id}, {"event_type", "like"}, {"minute", minute}, {"count", 2}});
    }
  }
  json body = {{"processor_id", "route"},
               {"partition", 0},
               {"from_offset", -1},
               {"to_offset", 10},
               {"rows", rows}};
  auto r = apply(body);
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.j();
  ASSERT_EQ(j["shards"].size(), 2u) << r.body;
  for (const auto& s : j["shards"]) {
    EXPECT_EQ(s["outcome"], "applied") << r.body;
    EXPECT_EQ(s["mark"], 10);
    EXPECT_EQ(s["rows"], 6);
  }
  EXPECT_FALSE(j["token"].get<std::string>().empty());
  // Each row is on its owner's leader and nowhere else.
  for (size_t s = 0; s < 2; ++s) {
    PgClient leader(leader_info(s));
    ASSERT_TRUE(leader.ok());
    for (const auto& id : ids_[s]) {
      EXPECT_EQ(leader.query_params("SELECT count FROM video_stats_minute WHERE video_id = $1 AND "
                                    "event_type = 'like'",
                                    {id}),
                "2")
          << id << " on shard " << manifest_.shards[s];
      EXPECT_EQ(leader.query_params("SELECT ksid FROM video_totals WHERE video_id = $1", {id}),
                std::to_string(ksid_to_sql(ksid_for(id))));
    }
    for (const auto& id : ids_[1 - s]) {
      EXPECT_EQ(
          leader.query_params("SELECT count(*) FROM video_stats_minute WHERE video_id = $1", {id}),
          "0")
          << id << " must not be on shard " << manifest_.shards[s];
    }
  }
  // The same batch again: already applied, nothing counted twice.
  r = apply(body);
  ASSERT_EQ(r.status, 200);
  for (json parsed_reply = r.j(); const auto& s : parsed_reply["shards"])
    EXPECT_EQ(s["outcome"], "already_applied") << r.body;
  // A batch straddling the mark: overlap, nothing counted.
  body["from_offset"] = 5;
  body["to_offset"] = 20;
  r = apply(body);
  ASSERT_EQ(r.status, 200);
  for (json parsed_reply = r.j(); const auto& s : parsed_reply["shards"]) {
    EXPECT_EQ(s["outcome"], "overlap") << r.body;
    EXPECT_EQ(s["mark"], 10);
  }
  PgClient leader(leader_info(0));
  EXPECT_EQ(leader.query_params("SELECT count FROM video_totals WHERE video_id = $1 AND "
                                "event_type = 'like'",
                                {ids_[0][0]}),
            "2");
  // Marks from every shard.
  auto marks = http(rest_port(), "GET", "/v1/counters:marks?processor_id=route", "", token());
  ASSERT_EQ(marks.status, 200) << marks.body;
  ASSERT_EQ(marks.j()["shards"].size(), 2u);
  for (json parsed_reply = marks.j(); const auto& s : parsed_reply["shards"])
    EXPECT_EQ(s["marks"]["0"], 10) << marks.body;
  // Reads through the REST API find the rows on either shard.
  for (size_t s = 0; s < 2; ++s) {
    auto g = get("/v1/videos/" + ids_[s][0] + "/stats?event_type=like&start=" + iso(k2025_11_22) +
                 "&end=" + iso(k2025_11_22 + kDay));
    ASSERT_EQ(g.status, 200) << g.body;
    EXPECT_EQ(g.j()["value"], 2);
    EXPECT_EQ(g.j()["shard"], manifest_.shards[s]);
  }
}

TEST_F(ClusterProxyTest, ApplyWithShardsGoesOnlyToTheNamedShards) {
  const int64_t minute = k2025_11_22 + 5 * kHour;
  json rows = json::array();
  // ids_[s][5] only: the other videos' shares are read by later tests.
  for (size_t s = 0; s < 2; ++s) {
    rows.push_back(
        {{"video_id", ids_[s][5]}, {"event_type", "share"}, {"minute", minute}, {"count", 3}});
  }
  json body = {{"processor_id", "retry"}, {"partition", 0}, {"from_offset", -1},
               {"to_offset", 10},         {"rows", rows},   {"shards", {manifest_.shards[1]}}};
  auto r = apply(body);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["shards"].size(), 1u) << r.body;
  EXPECT_EQ(r.j()["shards"][0]["shard"], manifest_.shards[1]);
  EXPECT_EQ(r.j()["shards"][0]["outcome"], "applied") << r.body;
  EXPECT_EQ(r.j()["shards"][0]["rows"], 1);
  // The other shard was not asked: no rows, no mark.
  auto marks = http(rest_port(), "GET", "/v1/counters:marks?processor_id=retry", "", token());
  ASSERT_EQ(marks.status, 200) << marks.body;
  // Named, not a range over marks.j()["shards"]: that would iterate a destroyed temporary.
  const json marks_json = marks.j();
  for (const auto& s : marks_json["shards"]) {
    if (s["shard"] == manifest_.shards[0]) {
      EXPECT_FALSE(s["marks"].contains("0")) << marks.body;
    } else {
      EXPECT_EQ(s["marks"]["0"], 10) << marks.body;
    }
  }
  PgClient l0(leader_info(0));
  EXPECT_EQ(l0.query_params("SELECT count(*) FROM video_stats_minute WHERE video_id = $1 AND "
                            "event_type = 'share'",
                            {ids_[0][5]}),
            "0");
  // The whole batch again (an old-style request): the skipped shard applies, the other answers
  // already_applied, and nothing counts twice.
  body.erase("shards");
  r = apply(body);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["shards"].size(), 2u) << r.body;
  const json answer = r.j();
  for (const auto& s : answer["shards"]) {
    EXPECT_EQ(s["outcome"], s["shard"] == manifest_.shards[0] ? "applied" : "already_applied")
        << r.body;
  }
  for (size_t s = 0; s < 2; ++s) {
    PgClient leader(leader_info(s));
    EXPECT_EQ(leader.query_params("SELECT count FROM video_totals WHERE video_id = $1 AND "
                                  "event_type = 'share'",
                                  {ids_[s][5]}),
              "3")
        << manifest_.shards[s];
  }
  // A range the keyspace does not have: 409 naming it, nothing applied.
  body["shards"] = {"-40"};
  body["from_offset"] = 10;
  body["to_offset"] = 20;
  r = apply(body);
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body.find("-40"), std::string::npos) << r.body;
  EXPECT_EQ(r.j()["error"]["parameter"], "shards") << r.body;
}

TEST_F(ClusterProxyTest, StatsOverMixedBucketsEqualADirectSumOverMinutes) {
  // One video per shard with counts spread over three days at uneven minutes.
  json rows = json::array();
  const std::string a = ids_[0][1];
  const std::string b = ids_[1][1];
  for (int i = 0; i < 300; ++i) {
    int64_t minute = k2025_11_22 + static_cast<int64_t>((i * 7919) % (3 * 1440)) * kMinute;
    rows.push_back({{"video_id", i % 2 ? a : b},
                    {"event_type", "view"},
                    {"minute", minute},
                    {"count", 1 + i % 5},
                    {"sum", i * 10}});
  }
  auto r = apply({{"processor_id", "stats"},
                  {"partition", 1},
                  {"from_offset", 0},
                  {"to_offset", 300},
                  {"rows", rows}});
  ASSERT_EQ(r.status, 200) << r.body;
  for (json parsed_reply = r.j(); const auto& s : parsed_reply["shards"])
    ASSERT_EQ(s["outcome"], "applied") << r.body;
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // past the stats cache TTL

  struct Range {
    int64_t start, end;
  };
  const std::vector<Range> ranges = {
      {k2025_11_22, k2025_11_22 + 3 * kDay},                                       // days only
      {k2025_11_22 + 7 * kMinute, k2025_11_22 + 2 * kDay + 13 * kMinute},          // all five
      {k2025_11_22 + 5 * kHour + 59 * kMinute, k2025_11_22 + kDay + 1 * kMinute},  // no whole day
      {k2025_11_22 + 10 * kHour, k2025_11_22 + 10 * kHour + 17 * kMinute},         // minutes
      {k2025_11_22 + 23 * kHour, k2025_11_22 + 26 * kHour},                        // hours
      {k2025_11_22 - kDay, k2025_11_22 + 5 * kDay},                                // beyond data
  };
  for (size_t s = 0; s < 2; ++s) {
    const std::string& id = s == 0 ? a : b;
    PgClient leader(leader_info(s));
    ASSERT_TRUE(leader.ok());
    for (const auto& range : ranges) {
      SCOPED_TRACE(id + " " + iso(range.start) + " .. " + iso(range.end));
      std::string want_count = leader.query_params(
          "SELECT coalesce(sum(count), 0) FROM video_stats_minute WHERE video_id = $1 AND "
          "event_type = 'view' AND bucket_start >= " +
              sql_ts(range.start) + " AND bucket_start < " + sql_ts(range.end),
          {id});
      std::string want_sum = leader.query_params(
          "SELECT coalesce(sum(sum), 0) FROM video_stats_minute WHERE video_id = $1 AND "
          "event_type = 'view' AND bucket_start >= " +
              sql_ts(range.start) + " AND bucket_start < " + sql_ts(range.end),
          {id});
      auto count = get(stats_target(id, range.start, range.end));
      ASSERT_EQ(count.status, 200) << count.body;
      EXPECT_EQ(std::to_string(count.j()["value"].get<int64_t>()), want_count) << count.body;
      auto sum = get(stats_target(id, range.start, range.end, "&function=sum"));
      EXPECT_EQ(std::to_string(sum.j()["value"].get<int64_t>()), want_sum) << sum.body;
      auto avg = get(stats_target(id, range.start, range.end, "&function=avg"));
      if (want_count == "0") {
        EXPECT_TRUE(avg.j()["value"].is_null()) << avg.body;
      } else {
        EXPECT_NEAR(avg.j()["value"].get<double>(), std::stod(want_sum) / std::stod(want_count),
                    1e-9);
      }
      // The hourly series adds up to the same total, bucket by bucket from the minute table.
      if (range.end - range.start <= 3 * kDay) {
        auto series = get(stats_target(id, range.start, range.end, "&granularity=hour"));
        ASSERT_EQ(series.status, 200) << series.body;
        json j = series.j();
        EXPECT_EQ(std::to_string(j["value"].get<int64_t>()), want_count);
        int64_t total = 0;
        for (const auto& p : j["series"]) total += p["count"].get<int64_t>();
        EXPECT_EQ(std::to_string(total), want_count);
        std::string want_series = leader.query_params(
            "SELECT coalesce(string_agg(c::text, ',' ORDER BY h), '') FROM (SELECT "
            "date_trunc('hour', bucket_start, 'UTC') h, sum(count) c FROM video_stats_minute "
            "WHERE video_id = $1 AND event_type = 'view' AND bucket_start >= " +
                sql_ts(range.start) + " AND bucket_start < " + sql_ts(range.end) + " GROUP BY 1) t",
            {id});
        std::string got_series;
        for (const auto& p : j["series"]) {
          if (p["count"].get<int64_t>() == 0) continue;
          got_series += (got_series.empty() ? "" : ",") + std::to_string(p["count"].get<int64_t>());
        }
        EXPECT_EQ(got_series, want_series);
      }
    }
  }
  // A video never seen counts 0.
  auto none = get(stats_target("never_seen_video", k2025_11_22, k2025_11_22 + kDay));
  ASSERT_EQ(none.status, 200);
  EXPECT_EQ(none.j()["value"], 0);
  // The echoed range is rounded to whole minutes.
  auto rounded = get("/v1/videos/" + a + "/stats?event_type=view&start=2025-11-22T00:00:30Z" +
                     "&end=2025-11-22T00:10:00.5Z");
  EXPECT_EQ(rounded.j()["start"], "2025-11-22T00:00:00Z");
  EXPECT_EQ(rounded.j()["end"], "2025-11-22T00:11:00Z");

  // batchGet: both shards in one call, answers in request order.
  json batch = {{"requests",
                 {{{"video_id", a},
                   {"event_type", "view"},
                   {"start", iso(k2025_11_22)},
                   {"end", iso(k2025_11_22 + 3 * kDay)}},
                  {{"video_id", b},
                   {"event_type", "view"},
                   {"function", "sum"},
                   {"start", iso(k2025_11_22)},
                   {"end", iso(k2025_11_22 + 3 * kDay)}},
                  {{"video_id", a},
                   {"event_type", "share"},
                   {"start", iso(k2025_11_22)},
                   {"end", iso(k2025_11_22 + kDay)}}}}};
  auto bg = http(rest_port(), "POST", "/v1/stats:batchGet", batch.dump());
  ASSERT_EQ(bg.status, 200) << bg.body;
  json results = bg.j()["results"];
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0]["video_id"], a);
  EXPECT_EQ(results[0]["shard"], manifest_.shards[0]);
  EXPECT_EQ(results[1]["shard"], manifest_.shards[1]);
  EXPECT_EQ(results[2]["value"], 0);
  auto direct_a = get(stats_target(a, k2025_11_22, k2025_11_22 + 3 * kDay));
  EXPECT_EQ(results[0]["value"], direct_a.j()["value"]);

  // top: merged across shards, best first.
  auto top = get("/v1/top?event_type=view&start=" + iso(k2025_11_22) +
                 "&end=" + iso(k2025_11_22 + 3 * kDay) + "&limit=2");
  ASSERT_EQ(top.status, 200) << top.body;
  json videos = top.j()["videos"];
  ASSERT_EQ(videos.size(), 2u) << top.body;
  std::set<std::string> top_ids = {videos[0]["video_id"], videos[1]["video_id"]};
  EXPECT_EQ(top_ids, (std::set<std::string>{a, b})) << top.body;
  EXPECT_GE(videos[0]["value"].get<int64_t>(), videos[1]["value"].get<int64_t>());
}

TEST_F(ClusterProxyTest, MetadataPutsReachTheOwnerOrEveryShard) {
  const std::string id = ids_[1][2];
  auto v = http(rest_port(), "PUT", "/v1/videos/" + id,
                R"({"title":"It's a \"title\"; DROP TABLE videos","channel_id":"UC_x"})", token());
  ASSERT_EQ(v.status, 200) << v.body;
  EXPECT_EQ(v.j()["shard"], manifest_.shards[1]);
  PgClient owner(leader_info(1));
  EXPECT_EQ(owner.query_params("SELECT title FROM videos WHERE video_id = $1", {id}),
            "It's a \"title\"; DROP TABLE videos");
  PgClient other(leader_info(0));
  EXPECT_EQ(other.query_params("SELECT count(*) FROM videos WHERE video_id = $1", {id}), "0");
  // A retry (or a change) is an upsert.
  v = http(rest_port(), "PUT", "/v1/videos/" + id, R"({"title":"T2","channel_id":null})", token());
  ASSERT_EQ(v.status, 200) << v.body;
  EXPECT_EQ(owner.query_params("SELECT title || coalesce(channel_id, '-') FROM videos WHERE "
                               "video_id = $1",
                               {id}),
            "T2-");
  for (int i = 0; i < 2; ++i) {
    auto c = http(rest_port(), "PUT", "/v1/channels/UC_x", R"({"name":"Channel X"})", token());
    ASSERT_EQ(c.status, 200) << c.body;
    EXPECT_EQ(c.j()["shards"].size(), 2u);
  }
  // A reference row is identical on every shard, timestamps included (the proxy's clock, not
  // each shard's now()), so a report answered by any one shard is the same.
  std::vector<std::string> rows;
  for (size_t s = 0; s < 2; ++s) {
    PgClient l(leader_info(s));
    EXPECT_EQ(l.query("SELECT name FROM channels WHERE channel_id = 'UC_x'"), "Channel X");
    rows.push_back(
        l.query("SELECT name || created_at::text || updated_at::text FROM channels "
                "WHERE channel_id = 'UC_x'"));
  }
  EXPECT_EQ(rows[0], rows[1]);
}

TEST_F(ClusterProxyTest, BadInputGets400NamingParameterValueAndForm) {
  struct Case {
    std::string method, target, body, parameter;
  };
  const std::string range = "&start=2025-11-22T00:00:00Z&end=2025-11-23T00:00:00Z";
  const std::vector<Case> cases = {
      {"GET", "/v1/videos/bad%20id/stats?event_type=view" + range, "", "video_id"},
      {"GET", "/v1/videos/ok/stats?event_type=clicks" + range, "", "event_type"},
      {"GET", "/v1/videos/ok/stats?event_type=view&function=median" + range, "", "function"},
      {"GET", "/v1/videos/ok/stats?event_type=view&start=tomorrow&end=2025-11-23T00:00:00Z", "",
       "start"},
      {"GET",
       "/v1/videos/ok/stats?event_type=view&start=2025-11-23T00:00:00Z&end=2025-11-22T00:00:00Z",
       "", "end"},
      {"GET",
       "/v1/videos/ok/stats?event_type=view&start=1990-01-01T00:00:00Z&end=2025-11-22T00:00:00Z",
       "", "end"},  // beyond max_range_days
      {"GET", "/v1/videos/ok/stats?event_type=view&granularity=week" + range, "", "granularity"},
      {"GET", "/v1/top?event_type=view&limit=0" + range, "", "limit"},
      {"POST", "/v1/stats:batchGet", "{not json", "body"},
      {"POST", "/v1/counters:apply",
       R"({"processor_id":"p","partition":0,"from_offset":3,)"
       R"("to_offset":2,"rows":[]})",
       "to_offset"},
      {"PUT", "/v1/channels/UC1", R"({"name":""})", "name"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.method + " " + c.target);
    auto r = http(rest_port(), c.method, c.target, c.body, token());
    ASSERT_EQ(r.status, 400) << r.body;
    json e = r.j()["error"];
    EXPECT_EQ(e["code"], 400);
    EXPECT_EQ(e["parameter"], c.parameter) << r.body;
    EXPECT_FALSE(e["expected"].get<std::string>().empty());
    EXPECT_NE(e["message"].get<std::string>().find(c.parameter), std::string::npos);
  }
  // Over the body limit: 413 from the server, the proxy keeps serving.
  EXPECT_EQ(get("/healthz").status, 200);
}

TEST_F(ClusterProxyTest, WriteEndpointsNeedTheBearerToken) {
  auto metric = [] {
    std::string m = get("/metrics").body;
    const std::string key = "tally_cluster_proxy_auth_failures_total{reason=\"missing\"} ";
    auto at = m.find(key);
    return at == std::string::npos ? -1 : std::stol(m.substr(at + key.size()));
  };
  long before = metric();
  json body = {{"processor_id", "auth"},
               {"partition", 0},
               {"from_offset", -1},
               {"to_offset", 1},
               {"rows", json::array()}};
  auto none = http(rest_port(), "POST", "/v1/counters:apply", body.dump());
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_EQ(none.headers["www-authenticate"], "Bearer");
  EXPECT_EQ(http(rest_port(), "POST", "/v1/counters:apply", body.dump(), "wrong-token").status,
            403);
  EXPECT_EQ(http(rest_port(), "PUT", "/v1/channels/c1", R"({"name":"n"})").status, 401);
  EXPECT_EQ(http(rest_port(), "GET", "/v1/counters:marks?processor_id=auth").status, 401);
  EXPECT_EQ(metric(), before + 3);
  // Nothing was applied.
  PgClient l(leader_info(0));
  EXPECT_EQ(l.query("SELECT count(*) FROM apply_marks WHERE processor_id = 'auth'"), "0");
}

TEST_F(ClusterProxyTest, ReadYourWritesTokenBypassesTheCache) {
  const std::string id = ids_[0][3];
  const int64_t minute = k2025_11_22 + 12 * kHour;
  auto target = stats_target(id, k2025_11_22, k2025_11_22 + kDay);
  auto before = get(target);  // now cached by the cluster proxy for stats_ttl_ms (500 ms)
  ASSERT_EQ(before.status, 200);
  ASSERT_EQ(before.j()["value"], 0);
  auto r = apply(
      {{"processor_id", "ryw"},
       {"partition", 0},
       {"from_offset", -1},
       {"to_offset", 1},
       {"rows", {{{"video_id", id}, {"event_type", "view"}, {"minute", minute}, {"count", 9}}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::string tok = r.j()["token"];
  ASSERT_NE(tok.find(manifest_.shards[0] + "@"), std::string::npos) << tok;
  auto with_token = get(target + "&token=" + tok);
  ASSERT_EQ(with_token.status, 200) << with_token.body;
  EXPECT_EQ(with_token.j()["value"], 9) << "a read with the token saw an older state";
  // batchGet honours the token too.
  json batch = {{"requests",
                 {{{"video_id", id},
                   {"event_type", "view"},
                   {"start", iso(k2025_11_22)},
                   {"end", iso(k2025_11_22 + kDay)}}}},
                {"token", tok}};
  auto bg = http(rest_port(), "POST", "/v1/stats:batchGet", batch.dump());
  EXPECT_EQ(bg.j()["results"][0]["value"], 9) << bg.body;
}

// The proxy's own stats cache: a repeat within stats_ttl_ms (500 ms here) is answered without a
// shard call; a counters:apply through this proxy retires the video's cached answers at once;
// an answer never outlives the TTL.
TEST_F(ClusterProxyTest, StatsCacheAnswersRepeatsUntilAnApplyOrTheTtl) {
  const std::string id = ids_[1][3];
  const int64_t minute = k2025_11_22 + 13 * kHour;
  auto target = "/v1/videos/" + id + "/stats?event_type=dislike&start=" + iso(k2025_11_22) +
                "&end=" + iso(k2025_11_22 + kDay);
  auto lookups = [](const std::string& result) -> int64_t {
    std::string m = get("/metrics").body;
    std::string name = "tally_cluster_proxy_stats_cache_lookups_total{result=\"" + result + "\"} ";
    auto at = m.find(name);
    return at == std::string::npos ? -1 : std::stoll(m.substr(at + name.size()));
  };
  const int64_t hits0 = lookups("hit");
  const int64_t misses0 = lookups("miss");
  ASSERT_GE(hits0, 0) << "no stats cache metrics: is the local cache on?";
  auto t0 = Clock::now();
  auto first = get(target);
  ASSERT_EQ(first.status, 200) << first.body;
  ASSERT_EQ(first.j()["value"], 0);
  auto repeat = get(target);
  bool within_ttl = Clock::now() - t0 < std::chrono::milliseconds(400);
  ASSERT_EQ(repeat.status, 200);
  if (within_ttl) {  // on a loaded machine the repeat may come after the TTL: then a second miss
    EXPECT_EQ(lookups("miss"), misses0 + 1);
    EXPECT_EQ(repeat.body, first.body) << "a repeat within the TTL should come from the cache";
    EXPECT_EQ(lookups("hit"), hits0 + 1);
  }
  const int64_t hits1 = lookups("hit");
  const int64_t misses1 = lookups("miss");
  auto r =
      apply({{"processor_id", "stats-cache"},
             {"partition", 0},
             {"from_offset", -1},
             {"to_offset", 1},
             {"rows",
              {{{"video_id", id}, {"event_type", "dislike"}, {"minute", minute}, {"count", 4}}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  // Still within the first answer's TTL (when the machine is quick enough to tell), the read
  // after the apply is a miss: the cached 0 is not served. It may still read 0 from a replica
  // that has not replayed the commit yet, so the value is polled.
  auto after = get(target);
  within_ttl = Clock::now() - t0 < std::chrono::milliseconds(400);
  ASSERT_EQ(after.status, 200);
  if (within_ttl) {
    EXPECT_EQ(lookups("hit"), hits1) << "a cached answer from before the apply was served";
    EXPECT_EQ(lookups("miss"), misses1 + 1);
  }
  for (int i = 0; i < 100 && after.j()["value"] != 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    after = get(target);
  }
  EXPECT_EQ(after.j()["value"], 4) << after.body;
  // A plain repeat, long after: the TTL bounds every answer.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  auto later = get(target);
  ASSERT_EQ(later.status, 200);
  EXPECT_EQ(later.j()["value"], 4) << "an answer outlived stats_ttl_ms: " << later.body;
  // Another function of the same video is another entry, fresh from the shard.
  auto sum = get(target + "&function=sum");
  ASSERT_EQ(sum.status, 200) << sum.body;
  EXPECT_EQ(sum.j()["value"], 0) << sum.body;  // dislikes carry no value
}

// The apply livelock under load: a caller that gave up left its apply running on the shard (the
// cluster proxy only stopped waiting), holding the partition's mark row, so every retry queued
// behind abandoned attempts. Now the caller's Tally-Timeout-Ms bounds the shard call, and at its
// end the statement is cancelled on the server: nothing of it stays, and the retry applies.
TEST_F(ClusterProxyTest, AnApplyTheCallerGaveUpOnIsCancelledOnTheShardAndNeverBlocksTheRetry) {
  std::string id;
  for (int i = 0; id.empty(); ++i) {
    std::string candidate = "abandoned_" + std::to_string(i);
    if (map_->index_for(ksid_for(candidate)) == 0) id = candidate;
  }
  const int64_t minute = k2025_11_22 + 17 * kHour;
  json body = {
      {"processor_id", "abandon"},
      {"partition", 0},
      {"from_offset", -1},
      {"to_offset", 5},
      {"rows", {{{"video_id", id}, {"event_type", "view"}, {"minute", minute}, {"count", 3}}}}};
  // Another transaction holds shard 0's mark row for this partition: the apply waits there, as
  // behind a slow attempt.
  PgClient holder(leader_info(0));
  ASSERT_TRUE(holder.ok()) << holder.error();
  ASSERT_EQ(holder.query("INSERT INTO apply_marks (processor_id, partition, mark) VALUES "
                         "('abandon', 0, -1) RETURNING mark"),
            "-1");
  ASSERT_EQ(holder.query("BEGIN"), "OK");
  ASSERT_EQ(holder.query("SELECT mark FROM apply_marks WHERE processor_id = 'abandon' AND "
                         "partition = 0 FOR UPDATE"),
            "-1");
  auto t0 = Clock::now();
  auto r = http(rest_port(), "POST", "/v1/counters:apply", body.dump(), token(), 10,
                {{"Tally-Timeout-Ms", "3000"}});
  auto waited = Clock::now() - t0;
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_LT(waited, std::chrono::milliseconds(3000)) << "answered after the caller's timeout";
  std::map<std::string, json> outcome;
  for (json reply = r.j(); const auto& s : reply["shards"])
    outcome[s["shard"].get<std::string>()] = s;
  EXPECT_EQ(outcome[manifest_.shards[0]]["outcome"], "failed") << r.body;
  EXPECT_EQ(outcome[manifest_.shards[0]]["sqlstate"], "57014") << r.body;
  EXPECT_EQ(outcome[manifest_.shards[1]]["outcome"], "applied") << r.body;  // never held
  // Nothing of the abandoned attempt runs on the leader any more (it would wait for the lock
  // until the holder ends, then apply behind the caller's back).
  PgClient observer(leader_info(0));
  ASSERT_TRUE(observer.ok());
  const std::string running =
      "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%tally_apply_counters%' AND "
      "pid <> pg_backend_pid() AND state <> 'idle'";
  EXPECT_TRUE(
      testing::wait_until([&] { return observer.query(running) == "0"; }, std::chrono::seconds(5)))
      << "the abandoned apply still runs: " << observer.query(running);
  ASSERT_EQ(holder.query("COMMIT"), "OK");
  // The retry (to the shard that failed) applies: the abandoned attempt left nothing.
  body["shards"] = json::array({manifest_.shards[0]});
  r = apply(body);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["shards"].size(), 1u) << r.body;
  EXPECT_EQ(r.j()["shards"][0]["outcome"], "applied") << r.body;
  EXPECT_EQ(observer.query_params("SELECT count FROM video_totals WHERE video_id = $1", {id}), "3");
  // A malformed timeout is refused, naming the header.
  auto bad = http(rest_port(), "POST", "/v1/counters:apply", body.dump(), token(), 10,
                  {{"Tally-Timeout-Ms", "soon"}});
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find("Tally-Timeout-Ms"), std::string::npos) << bad.body;
}

TEST_F(ClusterProxyTest, AShardWithBothNodesDownFailsFastWhileTheOtherServes) {
  ASSERT_TRUE(eventually_200(ids_[0][0]));
  for (const char* role : {"pg_replica", "pg_leader"}) {
    const auto& p = pg(role, 0);
    ASSERT_TRUE(stop_process(p.pid, p.data_dir, SIGINT, std::chrono::seconds(20)).ok()) << p.name;
  }
  const std::string down = manifest_.shards[0];
  // Past the stats cache TTL: a cached answer for the dead shard would (rightly) still be served.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  for (int i = 0; i < 8; ++i) {
    auto t0 = Clock::now();
    auto r = get(stats_target(ids_[0][i % 6], k2025_11_22, k2025_11_22 + kDay));
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    ASSERT_EQ(r.status, 503) << r.body;
    EXPECT_LT(ms, 1000) << "a dead shard must fail fast";
    EXPECT_EQ(r.j()["error"]["shards"], json::array({down})) << r.body;
    EXPECT_NE(r.j()["error"]["message"].get<std::string>().find(down), std::string::npos);
    EXPECT_FALSE(r.headers["retry-after"].empty());
    auto ok = get(stats_target(ids_[1][i % 6], k2025_11_22, k2025_11_22 + kDay));
    EXPECT_EQ(ok.status, 200) << "the healthy shard must keep serving: " << ok.body;
  }
  // A reference-table write names the shard it missed.
  auto c = http(rest_port(), "PUT", "/v1/channels/UC_down", R"({"name":"n"})", token());
  EXPECT_EQ(c.status, 503) << c.body;
  EXPECT_EQ(c.j()["error"]["shards"], json::array({down}));
  // An apply reports the dead shard as failed and applies the other.
  auto a = apply({{"processor_id", "down"},
                  {"partition", 0},
                  {"from_offset", -1},
                  {"to_offset", 1},
                  {"rows", json::array()}});
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.j()["shards"][0]["outcome"], "failed");
  EXPECT_EQ(a.j()["shards"][1]["outcome"], "applied");
  // Marks cannot be read completely: 503 naming the shard.
  auto marks = http(rest_port(), "GET", "/v1/counters:marks?processor_id=down", "", token());
  EXPECT_EQ(marks.status, 503);
  EXPECT_EQ(marks.j()["error"]["shards"], json::array({down}));
  std::string metrics = get("/metrics").body;
  EXPECT_NE(metrics.find("tally_cluster_proxy_shard_errors_total{kind=\"unavailable\",shard=\"" +
                         down + "\"}"),
            std::string::npos);
  // Back up: the restart path of cluster up; the circuit closes after its probe succeeds.
  ASSERT_NO_FATAL_FAILURE(cluster_up());
  EXPECT_TRUE(eventually_200(ids_[0][0]));
  a = apply({{"processor_id", "down"},
             {"partition", 0},
             {"from_offset", -1},
             {"to_offset", 1},
             {"rows", json::array()}});
  EXPECT_EQ(a.j()["shards"][0]["outcome"], "applied") << a.body;  // the retry of the failed shard
  EXPECT_EQ(a.j()["shards"][1]["outcome"], "already_applied") << a.body;
}

TEST_F(ClusterProxyTest, ZooKeeperDownKeepsServingTheLastTopology) {
  const auto& zk = *manifest_.with_role("zookeeper")[0];
  ASSERT_TRUE(stop_process(zk.pid, zk.config, SIGTERM, std::chrono::seconds(20)).ok());
  bool stale = false;
  for (int i = 0; i < 100 && !stale; ++i) {
    auto ready = get("/readyz");
    stale = ready.body.find("zookeeper unreachable") != std::string::npos;
    if (!stale) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(stale) << get("/readyz").body;
  EXPECT_EQ(get("/readyz").status, 200);
  EXPECT_NE(get("/metrics").body.find("tally_cluster_proxy_topology_stale 1"), std::string::npos);
  for (size_t s = 0; s < 2; ++s) {
    auto r = get(stats_target(ids_[s][0], k2025_11_22, k2025_11_22 + kDay));
    EXPECT_EQ(r.status, 200) << r.body;
  }
  auto a = apply({{"processor_id", "zk"},
                  {"partition", 0},
                  {"from_offset", -1},
                  {"to_offset", 1},
                  {"rows",
                   {{{"video_id", ids_[1][4]},
                     {"event_type", "view"},
                     {"minute", k2025_11_22},
                     {"count", 1}}}}});
  ASSERT_EQ(a.status, 200);
  for (json parsed_reply = a.j(); const auto& s : parsed_reply["shards"])
    EXPECT_EQ(s["outcome"], "applied") << a.body;
  EXPECT_EQ(get("/v1/topology").j()["zookeeper"]["stale"], true);
  ASSERT_NO_FATAL_FAILURE(cluster_up());
  bool fresh = false;
  for (int i = 0; i < 150 && !fresh; ++i) {
    fresh = get("/v1/topology").j()["zookeeper"]["stale"] == false;
    if (!fresh) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(fresh) << get("/v1/topology").body;
}

}  // namespace
}  // namespace tally
