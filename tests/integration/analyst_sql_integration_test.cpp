// Analyst SQL through the cluster proxy (issue 7), differentially: one generated data set goes
// into a 2-shard cluster through the normal write path (events to the processor, metadata by PUT
// to the cluster proxy) and into the leader of a separate 1-shard cluster, which plays "one
// PostgreSQL holding all the data" and computes the aggregates itself with GROUP BY. A corpus of
// report queries runs against the cluster proxy's PostgreSQL-wire endpoint and against that single
// database; the answers must be identical (as multisets without ORDER BY; float8 within a relative
// 1e-12). Also: refusals (0A000, 25006), the analyst role's own read-only grants, bad passwords,
// and psql.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster/cluster_manifest.h"
#include "common/keyspace/ksid.h"
#include "common/keyspace/shard_map.h"
#include "common/process/child_process.h"
#include "tests/support/http_client.h"
#include "tests/support/test_env.h"

namespace tally {
namespace {

using testing::project_binary;
using testing::run;

using Conn = std::unique_ptr<PGconn, decltype(&PQfinish)>;
using Res = std::unique_ptr<PGresult, decltype(&PQclear)>;

Conn connect(const std::string& conninfo) {
  return Conn(PQconnectdb(conninfo.c_str()), &PQfinish);
}

struct Answer {
  std::string sqlstate;  // empty on success
  std::string message;
  std::vector<std::string> names;
  std::vector<Oid> types;
  std::vector<std::vector<std::string>> rows;  // NULL as "<null>"
};

Answer ask(PGconn* conn, const std::string& sql) {
  Answer a;
  Res r(PQexec(conn, sql.c_str()), &PQclear);
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    a.sqlstate = state ? state : "?????";
    a.message = PQresultErrorMessage(r.get());
    return a;
  }
  for (int f = 0; f < PQnfields(r.get()); ++f) {
    a.names.push_back(PQfname(r.get(), f));
    a.types.push_back(PQftype(r.get(), f));
  }
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    std::vector<std::string> row;
    for (int f = 0; f < PQnfields(r.get()); ++f) {
      row.push_back(PQgetisnull(r.get(), i, f) ? "<null>" : PQgetvalue(r.get(), i, f));
    }
    a.rows.push_back(std::move(row));
  }
  return a;
}

// The extended protocol (PQexecParams: Parse, Bind, Describe portal, Execute, Sync), text
// parameters, results in `format` (0 text, 1 binary: raw bytes, hex-encoded for comparing).
Answer ask_params(PGconn* conn, const std::string& sql,
                  const std::vector<std::optional<std::string>>& params, int format = 0) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  Res r(PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                     nullptr, nullptr, format),
        &PQclear);
  Answer a;
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    a.sqlstate = state ? state : "?????";
    a.message = PQresultErrorMessage(r.get());
    return a;
  }
  static const char* hex = "0123456789abcdef";
  for (int f = 0; f < PQnfields(r.get()); ++f) {
    a.names.push_back(PQfname(r.get(), f));
    a.types.push_back(PQftype(r.get(), f));
  }
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    std::vector<std::string> row;
    for (int f = 0; f < PQnfields(r.get()); ++f) {
      if (PQgetisnull(r.get(), i, f)) {
        row.push_back("<null>");
      } else if (format == 1) {
        std::string h;
        const char* v = PQgetvalue(r.get(), i, f);
        for (int k = 0; k < PQgetlength(r.get(), i, f); ++k) {
          h += hex[(static_cast<unsigned char>(v[k]) >> 4) & 15];
          h += hex[static_cast<unsigned char>(v[k]) & 15];
        }
        row.push_back(h);
      } else {
        row.push_back(PQgetvalue(r.get(), i, f));
      }
    }
    a.rows.push_back(std::move(row));
  }
  return a;
}

std::string exec(PGconn* conn, const std::string& sql) {
  Res r(PQexec(conn, sql.c_str()), &PQclear);
  auto st = PQresultStatus(r.get());
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return "";
  return PQresultErrorMessage(r.get());
}

std::string show(const std::vector<std::vector<std::string>>& rows) {
  std::ostringstream out;
  for (std::size_t i = 0; i < rows.size() && i < 20; ++i) {
    for (const auto& v : rows[i]) out << v << " | ";
    out << "\n";
  }
  return out.str();
}

class AnalystSqlTest : public ::testing::Test {
 protected:
  static ClusterManifest up(testing::TempDir& dir, int shards, int base) {
    auto r = run({project_binary("tallyctl"), "cluster", "up", "--dir", dir.path().string(),
                  "--shards", std::to_string(shards), "--base-port", std::to_string(base)});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    auto m = read_manifest(dir.path() / "cluster.json");
    EXPECT_TRUE(m.ok());
    return m.ok() ? *m : ClusterManifest{};
  }
  static void down(testing::TempDir& dir, const ClusterManifest& m) {
    run({project_binary("tallyctl"), "cluster", "down", "--dir", dir.path().string()});
    for (const auto& p : m.processes) {
      std::string needle = p.role == "pg_leader" || p.role == "pg_replica" ? p.data_dir : p.config;
      if (process_alive(p.pid)) (void)stop_process(p.pid, needle, SIGKILL, std::chrono::seconds(5));
    }
  }

  static void SetUpTestSuite() {
    cluster_dir_ = std::make_unique<testing::TempDir>("tally-analyst");
    single_dir_ = std::make_unique<testing::TempDir>("tally-analyst-single");
    int base = testing::find_free_port_block(400);
    base_port_ = base;
    cluster_ = up(*cluster_dir_, 2, base);
    single_ = up(*single_dir_, 1, base + 200);
    ASSERT_TRUE(cluster_.endpoints.count("analyst_pg") && cluster_.endpoints["analyst_pg"]);
    ASSERT_NO_FATAL_FAILURE(load());
  }

  static void TearDownTestSuite() {
    if (cluster_dir_) down(*cluster_dir_, cluster_);
    if (single_dir_) down(*single_dir_, single_);
    cluster_dir_.reset();
    single_dir_.reset();
  }

  // The data set: 12 channels, 80 videos and about 93,000 events over the last 22 whole hours
  // (inside the processor's accepted window). Deterministic for a given first hour.
  struct GeneratedEvent {
    std::string event_id;
    std::string video_id;
    const char* type;
    int64_t ts_ms;
    int64_t value;  // watch_time only; 0 otherwise (the processor's value when absent)
  };
  struct DataSet {
    int64_t hour0_ms = 0;
    std::vector<std::string> video_ids;
    std::vector<GeneratedEvent> events;
    int64_t count = 0, sum = 0, series = 0;  // totals the cluster must reach
  };

  static std::string video_id(int v) {
    return "vid-" + std::to_string(v * 37 % 101) + "_x" + std::to_string(v % 5);
  }

  static DataSet generate(int64_t now_ms) {
    DataSet d;
    d.hour0_ms = now_ms / 3'600'000 * 3'600'000 - 22 * 3'600'000LL;
    const char* types[] = {"view", "like", "share", "watch_time"};
    for (int v = 0; v < 80; ++v) {
      d.video_ids.push_back(video_id(v));
      for (int t = 0; t < 4; ++t) {
        if ((v + t) % 6 == 5) continue;  // not every video has every event type
        ++d.series;
        for (int h = 0; h < 22; ++h) {
          if ((v * 7 + h * 3 + t) % 4 == 0) continue;
          const int n = (v * 13 + h * 7 + t * 5) % 20 + (v % 3 == 0 ? 30 : 1);
          for (int i = 0; i < n; ++i) {
            GeneratedEvent e;
            e.event_id = "e" + std::to_string(v) + "-" + std::to_string(t) + "-" +
                         std::to_string(h) + "-" + std::to_string(i);
            e.video_id = d.video_ids.back();
            e.type = types[t];
            e.ts_ms =
                d.hour0_ms + h * 3'600'000LL + (v * 31 + i * 7 + t * 7) % 12 * 60'000LL + i % 1000;
            e.value = t == 3 ? ((v + h + i) % 17 + 3) * 1000LL : 0;
            d.count += 1;
            d.sum += e.value;
            d.events.push_back(std::move(e));
          }
        }
      }
    }
    return d;
  }

  static std::string video_title(int v) {
    return v % 9 == 0 ? "" : "Title " + std::to_string(v % 13);
  }

  // events_raw has no writer in Tally yet (the brief's optional audit table, off by default), so
  // its few rows go straight into the shard owning their ksid, and into the single database.
  static std::vector<std::string> raw_event_statements(const ShardMap* map, std::size_t shard) {
    std::vector<std::string> out;
    for (int v = 0; v < 80; ++v) {
      const std::string id = video_id(v);
      if (map != nullptr && map->index_for(ksid_for(id)) != shard) continue;
      const std::string ksid = std::to_string(ksid_to_sql(ksid_for(id)));
      for (int e = 0; e < v % 4; ++e) {
        out.push_back(
            "INSERT INTO events_raw (event_id, video_id, event_type, ts, value, ksid) "
            "VALUES ('e" +
            std::to_string(v) + "-" + std::to_string(e) + "', '" + id + "', 'view', '2026-03-01 0" +
            std::to_string(e) + ":1" + std::to_string(v % 6) + ":00+00', " +
            std::to_string(e * v % 7) + ", " + ksid + ")");
      }
    }
    return out;
  }

  static void load_into(const std::string& conninfo, const std::vector<std::string>& statements) {
    auto c = connect(conninfo);
    ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    ASSERT_EQ(exec(c.get(), "BEGIN"), "");
    for (const auto& s : statements) ASSERT_EQ(exec(c.get(), s), "") << s;
    ASSERT_EQ(exec(c.get(), "COMMIT"), "");
  }

  static std::string literal(PGconn* conn, const std::string& value) {
    std::unique_ptr<char, decltype(&PQfreemem)> q(PQescapeLiteral(conn, value.data(), value.size()),
                                                  &PQfreemem);
    return q ? q.get() : "NULL";
  }

  // Rows of `table` read from `from` as INSERT statements for the same table elsewhere.
  static void copy_rows(PGconn* from, const std::string& table, std::vector<std::string>& out) {
    Answer a = ask(from, "SELECT * FROM " + table);
    ASSERT_EQ(a.sqlstate, "") << a.message;
    for (const auto& row : a.rows) {
      std::string values;
      for (const auto& v : row) {
        values += (values.empty() ? "" : ", ") + (v == "<null>" ? "NULL" : literal(from, v));
      }
      out.push_back("INSERT INTO " + table + " VALUES (" + values + ")");
    }
  }

  // The cluster gets everything through the normal write path: channels and videos by PUT to the
  // cluster proxy, events by POST /v1/events to the processor (with 1 in 97 sent twice, which
  // dedup must drop), counted and flushed by the processor through counters:apply. The single
  // database computes the same minute, hour and day buckets and totals itself, with GROUP BY over
  // the generated events; its videos and channels are copied from the cluster's shards, since
  // their created_at comes from the clock at write time.
  static void load() {
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    data_ = generate(now_ms);
    const int rest = cluster_.with_role("cluster_proxy")[0]->ports.at("http");
    const std::string token = cluster_.users.at("rest").password;
    for (int c = 0; c < 12; ++c) {
      nlohmann::json body = {{"name", "Channel " + std::to_string(c % 7)}};
      auto r =
          testing::http(rest, "PUT", "/v1/channels/ch" + std::to_string(c), body.dump(), token);
      ASSERT_EQ(r.status, 200) << r.body;
    }
    for (int v = 0; v < 80; ++v) {
      nlohmann::json body = {{"title", nullptr}, {"channel_id", nullptr}};
      if (!video_title(v).empty()) body["title"] = video_title(v);
      if (v % 11 != 0) body["channel_id"] = "ch" + std::to_string(v % 12);
      auto r = testing::http(rest, "PUT", "/v1/videos/" + video_id(v), body.dump(), token);
      ASSERT_EQ(r.status, 200) << r.body;
    }
    const int ingest = cluster_.with_role("processor")[0]->ports.at("http");
    nlohmann::json batch = nlohmann::json::array();
    int64_t accepted = 0;
    auto post = [&] {
      auto r = testing::http(ingest, "POST", "/v1/events", batch.dump(), "", 30);
      ASSERT_EQ(r.status, 200) << r.body.substr(0, 500);
      ASSERT_EQ(r.j()["rejected"].size(), 0u) << r.body.substr(0, 500);
      accepted += r.j()["accepted"].get<int64_t>();
      batch = nlohmann::json::array();
    };
    for (std::size_t i = 0; i < data_.events.size(); ++i) {
      const auto& e = data_.events[i];
      nlohmann::json j = {{"event_id", e.event_id},
                          {"video_id", e.video_id},
                          {"event_type", e.type},
                          {"ts", e.ts_ms}};
      if (e.value != 0) j["value"] = e.value;
      batch.push_back(j);
      if (i % 97 == 0 && i >= 5000) {
        // A repeat of an event sent in an earlier request.
        const auto& old = data_.events[i - 5000];
        batch.push_back({{"event_id", old.event_id},
                         {"video_id", old.video_id},
                         {"event_type", old.type},
                         {"ts", old.ts_ms},
                         {"value", old.value}});
      }
      if (batch.size() >= 5000) {
        ASSERT_NO_FATAL_FAILURE(post());
      }
    }
    if (!batch.empty()) {
      ASSERT_NO_FATAL_FAILURE(post());
    }
    ASSERT_GT(accepted, static_cast<int64_t>(data_.events.size()));

    auto map = ShardMap::from_names(cluster_.shards);
    ASSERT_TRUE(map.ok());
    auto leaders = cluster_.with_role("pg_leader");
    ASSERT_EQ(leaders.size(), 2u);
    for (const auto* leader : leaders) {
      std::size_t shard = 0;
      for (std::size_t i = 0; i < map->size(); ++i) {
        if (map->ranges()[i].name() == leader->shard.value_or("")) shard = i;
      }
      ASSERT_NO_FATAL_FAILURE(
          load_into(cluster_.conninfo(*leader, "admin"), raw_event_statements(&*map, shard)));
    }

    // Wait until the processor has flushed everything and the analyst endpoint (which may read
    // replicas) sees it: the totals of every table the processor writes.
    const std::string want = std::to_string(data_.series) + "|" + std::to_string(data_.count) +
                             "|" + std::to_string(data_.sum) + "|" + std::to_string(data_.count);
    std::string seen;
    auto proxy = connect(proxy_conninfo());
    ASSERT_EQ(PQstatus(proxy.get()), CONNECTION_OK) << PQerrorMessage(proxy.get());
    for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
         std::chrono::steady_clock::now() < deadline;
         std::this_thread::sleep_for(std::chrono::milliseconds(200))) {
      Answer t = ask(proxy.get(), "SELECT count(*), sum(count), sum(sum) FROM video_totals");
      Answer m = ask(proxy.get(), "SELECT sum(count) FROM video_stats_minute");
      if (!t.sqlstate.empty() || !m.sqlstate.empty()) continue;
      seen = t.rows.at(0).at(0) + "|" + t.rows.at(0).at(1) + "|" + t.rows.at(0).at(2) + "|" +
             m.rows.at(0).at(0);
      if (seen == want) break;
    }
    ASSERT_EQ(seen, want) << "the cluster's totals (series|count|sum|minute count) never reached "
                             "the generated data's";

    // The single database.
    std::vector<std::string> statements;
    {
      auto first = connect(cluster_.conninfo(*leaders[0], "admin"));
      ASSERT_NO_FATAL_FAILURE(copy_rows(first.get(), "channels", statements));
    }
    for (const auto* leader : leaders) {
      auto c = connect(cluster_.conninfo(*leader, "admin"));
      ASSERT_NO_FATAL_FAILURE(copy_rows(c.get(), "videos", statements));
    }
    statements.push_back(
        "CREATE TEMP TABLE generated (video_id text, event_type text, ts timestamptz, value "
        "bigint, ksid bigint)");
    std::string values;
    for (std::size_t i = 0; i < data_.events.size(); ++i) {
      const auto& e = data_.events[i];
      values += std::string(values.empty() ? "" : ", ") + "('" + e.video_id + "', '" + e.type +
                "', timestamptz 'epoch' + " + std::to_string(e.ts_ms) +
                " * interval '1 millisecond', " + std::to_string(e.value) + ", " +
                std::to_string(ksid_to_sql(ksid_for(e.video_id))) + ")";
      if (i % 2000 == 1999 || i + 1 == data_.events.size()) {
        statements.push_back("INSERT INTO generated VALUES " + values);
        values.clear();
      }
    }
    for (const char* table : {"minute", "hour", "day"}) {
      statements.push_back(std::string("INSERT INTO video_stats_") + table +
                           " (video_id, event_type, bucket_start, count, sum, ksid) SELECT "
                           "video_id, event_type, date_trunc('" +
                           table +
                           "', ts, 'UTC'), count(*), sum(value), ksid FROM generated GROUP BY "
                           "1, 2, 3, 6");
    }
    statements.push_back(
        "INSERT INTO video_totals (video_id, event_type, count, sum, ksid) SELECT video_id, "
        "event_type, count(*), sum(value), ksid FROM generated GROUP BY 1, 2, 5");
    for (auto& s : raw_event_statements(nullptr, 0)) statements.push_back(std::move(s));
    ASSERT_NO_FATAL_FAILURE(
        load_into(single_.conninfo(*single_.with_role("pg_leader")[0], "admin"), statements));
  }

  // A corpus query with the data set's first day ({DAY0}, 'YYYY-MM-DD' UTC) filled in.
  static std::string corpus_sql(const char* sql) {
    std::string s = sql;
    const std::string marker = "{DAY0}";
    if (auto at = s.find(marker); at != std::string::npos) {
      std::time_t t = static_cast<std::time_t>(data_.hour0_ms / 1000);
      std::tm tm{};
      gmtime_r(&t, &tm);
      char day[16];
      std::strftime(day, sizeof day, "%Y-%m-%d", &tm);
      s.replace(at, marker.size(), day);
    }
    return s;
  }

  static std::string proxy_conninfo() { return *cluster_.endpoints["analyst_pg"]; }
  static std::string single_conninfo() {
    return single_.conninfo(*single_.with_role("pg_leader")[0], "analyst");
  }

  static std::unique_ptr<testing::TempDir> cluster_dir_;
  static std::unique_ptr<testing::TempDir> single_dir_;
  static ClusterManifest cluster_;
  static ClusterManifest single_;
  static DataSet data_;
  static int base_port_;
};

std::unique_ptr<testing::TempDir> AnalystSqlTest::cluster_dir_;
std::unique_ptr<testing::TempDir> AnalystSqlTest::single_dir_;
ClusterManifest AnalystSqlTest::cluster_;
ClusterManifest AnalystSqlTest::single_;
AnalystSqlTest::DataSet AnalystSqlTest::data_;
int AnalystSqlTest::base_port_ = 0;

bool values_equal(Oid type, const std::string& a, const std::string& b) {
  if (a == b) return true;
  if (type == 701 || type == 700) {
    if (a == "<null>" || b == "<null>") return false;
    double x = std::stod(a), y = std::stod(b);
    return std::fabs(x - y) <= 1e-12 * std::max(std::fabs(x), std::fabs(y));
  }
  return false;
}

// The corpus. `ordered`: the query's ORDER BY is total, so row order must match too.
struct CorpusQuery {
  bool ordered;
  const char* sql;
};

const CorpusQuery kCorpus[] = {
    // Plain rows, concatenated.
    {false, "SELECT video_id, title, channel_id FROM videos"},
    {false, "SELECT * FROM video_totals WHERE event_type = 'view'"},
    {false, "SELECT video_id, count FROM video_stats_hour WHERE count > 45"},
    {false,
     "SELECT video_id, event_type, bucket_start, count FROM video_stats_minute WHERE count > 3"},
    {false, "SELECT video_id, bucket_start, count FROM video_stats_day WHERE event_type = 'like'"},
    {false, "SELECT event_id, video_id, ts, value FROM events_raw"},
    {false, "SELECT video_id FROM videos WHERE title IS NULL"},
    // Pinned to one shard, and IN lists over several.
    {false, "SELECT * FROM video_totals WHERE video_id = 'vid-37_x1'"},
    {true,
     "SELECT bucket_start, count FROM video_stats_hour WHERE video_id = 'vid-74_x2' AND "
     "event_type = 'view' ORDER BY bucket_start"},
    {false,
     "SELECT video_id, event_type, count FROM video_totals WHERE video_id IN "
     "('vid-37_x1', 'vid-74_x2', 'vid-10_x3', 'vid-47_x4', 'nope')"},
    {true,
     "SELECT video_id, sum(count) FROM video_stats_hour WHERE video_id IN ('vid-37_x1', "
     "'vid-74_x2', 'vid-10_x3') GROUP BY video_id ORDER BY video_id"},
    {false,
     "SELECT count(*), sum(count), avg(count) FROM video_totals WHERE video_id IN "
     "('vid-37_x1', 'vid-74_x2', 'vid-10_x3', 'vid-47_x4')"},
    {true,
     "SELECT v.video_id, v.title, c.name, h.bucket_start, h.count FROM videos v JOIN "
     "channels c ON c.channel_id = v.channel_id JOIN video_stats_hour h ON h.video_id = "
     "v.video_id WHERE v.video_id = 'vid-10_x3' AND h.event_type = 'view' ORDER BY "
     "h.bucket_start"},
    {false,
     "SELECT video_id, rank() OVER (ORDER BY count DESC, bucket_start) FROM "
     "video_stats_hour WHERE video_id = 'vid-37_x1' AND event_type = 'like'"},
    // ORDER BY with LIMIT/OFFSET: merge sort.
    {true,
     "SELECT video_id, count FROM video_totals WHERE event_type = 'view' ORDER BY count "
     "DESC, video_id LIMIT 10"},
    {true,
     "SELECT video_id, count FROM video_totals WHERE event_type = 'view' ORDER BY count "
     "DESC, video_id LIMIT 10 OFFSET 5"},
    {true,
     "SELECT video_id, count AS c FROM video_totals WHERE event_type = 'like' ORDER BY c, "
     "video_id OFFSET 40"},
    {true, "SELECT video_id, title FROM videos ORDER BY title NULLS FIRST, video_id LIMIT 15"},
    {true, "SELECT video_id, title FROM videos ORDER BY title DESC NULLS LAST, video_id DESC"},
    {true, "SELECT video_id, created_at FROM videos ORDER BY created_at, 1 LIMIT 20"},
    {true,
     "SELECT video_id, event_type, bucket_start, count FROM video_stats_hour ORDER BY "
     "count DESC, video_id, event_type, bucket_start LIMIT 25"},
    {true,
     "SELECT video_id FROM video_totals WHERE event_type = 'share' ORDER BY sum + count, "
     "video_id LIMIT 7"},
    {true, "SELECT * FROM videos ORDER BY video_id LIMIT 5"},
    {true,
     "SELECT video_id, count FROM video_totals WHERE event_type = 'view' ORDER BY 2 DESC, "
     "1 FETCH FIRST 3 ROWS ONLY"},
    // Aggregates across shards.
    {false, "SELECT count(*) FROM videos"},
    {false, "SELECT count(*), count(title), count(channel_id) FROM videos"},
    {false, "SELECT sum(count), min(count), max(count) FROM video_stats_hour"},
    {false, "SELECT avg(count) FROM video_totals"},
    {false, "SELECT avg(count), avg(sum) FROM video_stats_hour WHERE event_type = 'watch_time'"},
    {false,
     "SELECT event_type, count(*), sum(count), avg(count), min(count), max(count) FROM "
     "video_totals GROUP BY event_type"},
    {true,
     "SELECT event_type, sum(count) AS total FROM video_totals GROUP BY event_type ORDER BY "
     "total DESC"},
    {true,
     "SELECT event_type, bucket_start, sum(count), avg(count) FROM video_stats_day GROUP BY "
     "event_type, bucket_start ORDER BY 2, 1"},
    {true,
     "SELECT date_trunc('day', bucket_start) AS day, event_type, sum(count) FROM "
     "video_stats_hour GROUP BY 1, 2 ORDER BY day, event_type"},
    {false, "SELECT count(DISTINCT video_id) FROM video_stats_hour WHERE count > 45"},
    {true,
     "SELECT date_trunc('hour', bucket_start) AS h, event_type, sum(count), sum(sum), "
     "count(DISTINCT video_id) FROM video_stats_minute GROUP BY 1, 2 ORDER BY 1, 2"},
    {false,
     "SELECT event_type, count(DISTINCT video_id) FROM video_stats_hour GROUP BY "
     "event_type"},
    {false, "SELECT min(title), max(title), min(created_at), max(created_at) FROM videos"},
    {false, "SELECT avg(count) FROM video_totals WHERE count < 0"},
    {false, "SELECT sum(count), avg(count) FROM video_totals WHERE event_type = 'nothing'"},
    {false,
     "SELECT event_type, sum(count) FROM video_totals WHERE event_type = 'nothing' GROUP "
     "BY event_type"},
    {true,
     "SELECT event_type, max(bucket_start), min(bucket_start) FROM video_stats_hour GROUP "
     "BY event_type ORDER BY event_type LIMIT 2 OFFSET 1"},
    {false,
     "SELECT count(*) FILTER (WHERE count > 400), sum(count) FILTER (WHERE event_type = "
     "'view') FROM video_totals"},
    {false,
     "SELECT c.name, count(*), sum(t.count) FROM video_totals t JOIN videos v ON "
     "v.video_id = t.video_id JOIN channels c ON c.channel_id = v.channel_id WHERE "
     "t.event_type = 'view' GROUP BY c.name"},
    {true,
     "SELECT v.channel_id, avg(t.count) AS a FROM videos v JOIN video_totals t USING "
     "(video_id) GROUP BY v.channel_id ORDER BY a DESC NULLS LAST, v.channel_id"},
    {false, "SELECT avg(value), sum(value), count(*) FROM events_raw"},
    // Cross-shard HAVING: evaluated at the proxy over the combined groups, also on aggregates that
    // are not in the select list and on GROUP BY expressions.
    {false,
     "SELECT event_type, sum(count) FROM video_totals GROUP BY event_type HAVING sum(count) > "
     "20000"},
    {false, "SELECT event_type FROM video_totals GROUP BY event_type HAVING sum(sum) = 0"},
    {true,
     "SELECT event_type, count(*), avg(count) FROM video_stats_hour GROUP BY event_type HAVING "
     "avg(count) > 10 AND max(count) >= 45 ORDER BY 1"},
    {true,
     "SELECT v.channel_id, count(*), avg(t.count) FROM videos v JOIN video_totals t USING "
     "(video_id) GROUP BY v.channel_id HAVING count(*) >= 20 OR min(t.count) < 300 ORDER BY 1 "
     "NULLS FIRST"},
    {true,
     "SELECT date_trunc('day', bucket_start) AS day, sum(count), min(count) FROM "
     "video_stats_hour GROUP BY 1 HAVING min(count) < 5 OR date_trunc('day', bucket_start) > "
     "'{DAY0}' ORDER BY day"},
    {true,
     "SELECT c.name, sum(t.count) AS total FROM video_totals t JOIN videos v ON v.video_id = "
     "t.video_id JOIN channels c ON c.channel_id = v.channel_id GROUP BY c.name HAVING "
     "count(DISTINCT t.video_id) > 8 ORDER BY total DESC LIMIT 3"},
    {false, "SELECT count(*), sum(count) FROM video_totals HAVING count(*) > 5"},
    {false, "SELECT count(*) FROM video_totals HAVING count(*) > 5000000 OR 1 = 0"},
    {false, "SELECT event_type, count(*) FROM video_totals GROUP BY event_type HAVING 1 = 1"},
    {false,
     "SELECT event_type, sum(count) FROM video_totals GROUP BY event_type HAVING 2 > 1 AND "
     "(event_type) IN ('view', 'like')"},
    {true,
     "SELECT event_type, avg(count) FROM video_stats_day GROUP BY event_type HAVING avg(count) "
     "BETWEEN 100 AND 100000 AND event_type <> 'share' ORDER BY avg(count) DESC"},
    {false,
     "SELECT event_type, min(bucket_start), max(bucket_start) FROM video_stats_hour GROUP BY "
     "event_type HAVING max(bucket_start) - min(bucket_start) > interval '12 hours' AND "
     "count(*) FILTER (WHERE count > 40) > 10"},
    // GROUP BY the shard key: groups stay on their shard.
    {false, "SELECT video_id, sum(count), avg(count) FROM video_stats_hour GROUP BY video_id"},
    {true,
     "SELECT video_id, sum(count) AS views FROM video_stats_hour WHERE event_type = 'view' "
     "GROUP BY video_id ORDER BY views DESC, video_id LIMIT 10"},
    {false,
     "SELECT video_id, count(*) FROM video_stats_hour GROUP BY video_id HAVING count(*) > "
     "60"},
    {true,
     "SELECT video_id, max(count) - min(count) AS spread FROM video_stats_hour GROUP BY 1 "
     "ORDER BY spread DESC, 1 LIMIT 5"},
    // Joins on video_id and with reference tables, shard-local.
    {false,
     "SELECT v.video_id, c.name, t.count FROM videos v JOIN channels c ON c.channel_id = "
     "v.channel_id JOIN video_totals t ON t.video_id = v.video_id WHERE t.event_type = "
     "'view'"},
    {true,
     "SELECT v.video_id, c.name, t.count FROM videos v JOIN video_totals t ON t.video_id = "
     "v.video_id LEFT JOIN channels c ON c.channel_id = v.channel_id WHERE t.event_type = "
     "'view' ORDER BY t.count DESC, v.video_id LIMIT 10"},
    {false,
     "SELECT v.video_id, t.event_type FROM videos v LEFT JOIN video_totals t ON "
     "t.video_id = v.video_id AND t.event_type = 'share'"},
    {false,
     "SELECT t.video_id, t.event_type, d.bucket_start, d.count FROM video_totals t, "
     "video_stats_day d WHERE t.video_id = d.video_id AND t.event_type = d.event_type AND "
     "t.count > 600"},
    {false,
     "SELECT v.video_id, e.name FROM videos v JOIN video_totals t USING (video_id) JOIN "
     "event_types e ON e.name = t.event_type WHERE t.count < 200"},
    // Reference tables and catalog queries: any one shard.
    {false, "SELECT * FROM channels"},
    {false, "SELECT name FROM event_types"},
    {true,
     "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid "
     "= c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1"},
    {false,
     "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = "
     "'video_totals'"},
};

TEST_F(AnalystSqlTest, CorpusMatchesOnePostgres) {
  auto proxy = connect(proxy_conninfo());
  ASSERT_EQ(PQstatus(proxy.get()), CONNECTION_OK) << PQerrorMessage(proxy.get());
  auto single = connect(single_conninfo());
  ASSERT_EQ(PQstatus(single.get()), CONNECTION_OK) << PQerrorMessage(single.get());
  int compared = 0;
  for (const auto& q : kCorpus) {
    const std::string sql = corpus_sql(q.sql);
    SCOPED_TRACE(sql);
    Answer want = ask(single.get(), sql);
    ASSERT_EQ(want.sqlstate, "") << want.message;
    Answer got = ask(proxy.get(), sql);
    ASSERT_EQ(got.sqlstate, "") << got.message;
    EXPECT_EQ(got.names, want.names);
    EXPECT_EQ(got.types, want.types);
    if (!q.ordered) {
      std::sort(got.rows.begin(), got.rows.end());
      std::sort(want.rows.begin(), want.rows.end());
    }
    ASSERT_EQ(got.rows.size(), want.rows.size()) << "got:\n"
                                                 << show(got.rows) << "want:\n"
                                                 << show(want.rows);
    bool same = true;
    for (std::size_t i = 0; i < got.rows.size() && same; ++i) {
      for (std::size_t f = 0; f < got.rows[i].size() && same; ++f) {
        same = values_equal(want.types[f], got.rows[i][f], want.rows[i][f]);
      }
    }
    EXPECT_TRUE(same) << "got:\n" << show(got.rows) << "want:\n" << show(want.rows);
    EXPECT_FALSE(want.rows.empty() && std::string(q.sql).find("nothing") == std::string::npos &&
                 std::string(q.sql).find("< 0") == std::string::npos &&
                 std::string(q.sql).find("5000000") == std::string::npos)
        << "a corpus query that returns nothing proves little";
    ++compared;
  }
  EXPECT_GE(compared, 50);
}

TEST_F(AnalystSqlTest, ExtendedProtocolMatchesOnePostgres) {
  auto proxy = connect(proxy_conninfo());
  ASSERT_EQ(PQstatus(proxy.get()), CONNECTION_OK) << PQerrorMessage(proxy.get());
  auto single = connect(single_conninfo());
  ASSERT_EQ(PQstatus(single.get()), CONNECTION_OK) << PQerrorMessage(single.get());
  struct Case {
    const char* sql;
    std::vector<std::optional<std::string>> params;
    int format;
  } cases[] = {
      // Pinned by a bound value ($1 routes to the owning shard).
      {"SELECT event_type, count, sum FROM video_totals WHERE video_id = $1 ORDER BY 1",
       {"vid-37_x1"},
       0},
      {"SELECT bucket_start, count FROM video_stats_hour WHERE video_id = $1 AND event_type = $2 "
       "ORDER BY bucket_start",
       {"vid-74_x2", "view"},
       1},
      // Cross-shard with parameters in WHERE and HAVING.
      {"SELECT event_type, count(*), sum(count), avg(count), min(count), max(bucket_start) FROM "
       "video_stats_hour WHERE count > $1 GROUP BY event_type HAVING sum(count) > $2 ORDER BY 1",
       {"10", "1000"},
       0},
      {"SELECT event_type, count(*), sum(count), avg(count), min(bucket_start) FROM "
       "video_stats_hour WHERE count > $1 GROUP BY event_type HAVING sum(count) > $2 ORDER BY 1",
       {"10", "1000"},
       1},
      {"SELECT video_id, count FROM video_totals WHERE event_type = $1 ORDER BY count DESC, "
       "video_id LIMIT 10",
       {"view"},
       1},
      // A value that would break out of a spliced string literal finds nothing.
      {"SELECT video_id, title FROM videos WHERE video_id = $1", {"x' OR '1'='1"}, 0},
      {"SELECT video_id, title FROM videos WHERE title = $1 OR $1 IS NULL ORDER BY 1 LIMIT 3",
       {std::nullopt},
       0},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.sql);
    Answer want = ask_params(single.get(), c.sql, c.params, c.format);
    ASSERT_EQ(want.sqlstate, "") << want.message;
    Answer got = ask_params(proxy.get(), c.sql, c.params, c.format);
    ASSERT_EQ(got.sqlstate, "") << got.message;
    EXPECT_EQ(got.names, want.names);
    EXPECT_EQ(got.types, want.types);
    EXPECT_EQ(got.rows, want.rows) << "got:\n" << show(got.rows) << "want:\n" << show(want.rows);
    if (c.params[0] != std::optional<std::string>("x' OR '1'='1")) {
      EXPECT_FALSE(want.rows.empty());
    }
  }

  // Named statements: PQprepare, PQdescribePrepared (ParameterDescription, RowDescription),
  // executed twice with different values.
  const char* sql =
      "SELECT t.event_type, t.count, c.name FROM video_totals t JOIN videos v USING (video_id) "
      "LEFT JOIN channels c ON c.channel_id = v.channel_id WHERE t.video_id = $1 AND t.count > "
      "$2 ORDER BY 1";
  for (PGconn* conn : {proxy.get(), single.get()}) {
    Res r(PQprepare(conn, "by_video", sql, 0, nullptr), &PQclear);
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  }
  Res dp(PQdescribePrepared(proxy.get(), "by_video"), &PQclear);
  Res ds(PQdescribePrepared(single.get(), "by_video"), &PQclear);
  ASSERT_EQ(PQresultStatus(dp.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(dp.get());
  ASSERT_EQ(PQnparams(dp.get()), 2);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(PQparamtype(dp.get(), i), PQparamtype(ds.get(), i));
  ASSERT_EQ(PQnfields(dp.get()), 3);
  for (int f = 0; f < 3; ++f) {
    EXPECT_STREQ(PQfname(dp.get(), f), PQfname(ds.get(), f));
    EXPECT_EQ(PQftype(dp.get(), f), PQftype(ds.get(), f));
  }
  for (const char* video : {"vid-37_x1", "vid-10_x3"}) {
    const char* values[] = {video, "5"};
    std::vector<std::vector<std::string>> results;
    for (PGconn* conn : {proxy.get(), single.get()}) {
      Res r(PQexecPrepared(conn, "by_video", 2, values, nullptr, nullptr, 0), &PQclear);
      ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
      std::vector<std::string> rows;
      for (int i = 0; i < PQntuples(r.get()); ++i) {
        rows.push_back(std::string(PQgetvalue(r.get(), i, 0)) + "|" + PQgetvalue(r.get(), i, 1) +
                       "|" + PQgetvalue(r.get(), i, 2));
      }
      results.push_back(rows);
    }
    EXPECT_FALSE(results[0].empty()) << video;
    EXPECT_EQ(results[0], results[1]) << video;
  }
  // Wrong parameter count, then errors keep the session usable.
  {
    const char* values[] = {"x"};
    Res r(PQexecPrepared(proxy.get(), "by_video", 1, values, nullptr, nullptr, 0), &PQclear);
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
    EXPECT_STREQ(PQresultErrorField(r.get(), PG_DIAG_SQLSTATE), "08P01");
  }
  EXPECT_EQ(ask_params(proxy.get(), "DELETE FROM videos WHERE video_id = $1", {"x"}).sqlstate,
            "25006");
  EXPECT_EQ(ask_params(proxy.get(), "SELECT * FROM nope WHERE a = $1", {"x"}).sqlstate, "42P01");
  EXPECT_EQ(ask_params(proxy.get(), "SELECT 1; SELECT 2", {}).sqlstate, "42601");
  // Pipeline mode: an error skips the rest of the batch up to Sync (PIPELINE_ABORTED), and the
  // next batch runs.
  ASSERT_EQ(PQenterPipelineMode(proxy.get()), 1);
  const char* v1[] = {"vid-37_x1"};
  ASSERT_EQ(PQsendQueryParams(proxy.get(), "SELECT count(*) FROM video_totals WHERE video_id = $1",
                              1, nullptr, v1, nullptr, nullptr, 0),
            1);
  ASSERT_EQ(PQsendQueryParams(proxy.get(), "SELECT * FROM missing_table WHERE a = $1", 1, nullptr,
                              v1, nullptr, nullptr, 0),
            1);
  ASSERT_EQ(PQsendQueryParams(proxy.get(), "SELECT count(*) FROM videos", 0, nullptr, nullptr,
                              nullptr, nullptr, 0),
            1);
  ASSERT_EQ(PQpipelineSync(proxy.get()), 1);
  ASSERT_EQ(PQsendQueryParams(proxy.get(), "SELECT count(*) FROM videos", 0, nullptr, nullptr,
                              nullptr, nullptr, 0),
            1);
  ASSERT_EQ(PQpipelineSync(proxy.get()), 1);
  std::vector<ExecStatusType> statuses;
  std::vector<std::string> values;
  int syncs = 0;
  while (syncs < 2) {
    PGresult* raw = PQgetResult(proxy.get());
    if (raw == nullptr) continue;  // end of one query's results
    Res r(raw, &PQclear);
    statuses.push_back(PQresultStatus(raw));
    if (PQresultStatus(raw) == PGRES_PIPELINE_SYNC) ++syncs;
    if (PQresultStatus(raw) == PGRES_TUPLES_OK) values.push_back(PQgetvalue(raw, 0, 0));
  }
  std::vector<ExecStatusType> want = {PGRES_TUPLES_OK,        PGRES_FATAL_ERROR,
                                      PGRES_PIPELINE_ABORTED, PGRES_PIPELINE_SYNC,
                                      PGRES_TUPLES_OK,        PGRES_PIPELINE_SYNC};
  EXPECT_EQ(statuses, want);
  ASSERT_EQ(values.size(), 2u);
  EXPECT_EQ(values[1], "80");
  ASSERT_EQ(PQexitPipelineMode(proxy.get()), 1);
  EXPECT_EQ(ask(proxy.get(), "SELECT count(*) FROM channels").rows.at(0).at(0), "12");
}

TEST_F(AnalystSqlTest, RefusalsAndReadOnly) {
  auto proxy = connect(proxy_conninfo());
  ASSERT_EQ(PQstatus(proxy.get()), CONNECTION_OK) << PQerrorMessage(proxy.get());
  struct Case {
    const char* sql;
    const char* sqlstate;
    const char* word;
  } cases[] = {
      {"INSERT INTO channels VALUES ('x', 'y')", "25006", "INSERT"},
      {"UPDATE video_totals SET count = 0", "25006", "UPDATE"},
      {"DROP TABLE videos", "25006", "DROP"},
      {"SELECT event_type, sum(count) FROM video_totals GROUP BY 1 HAVING count > 5", "0A000",
       "HAVING"},
      {"SELECT DISTINCT channel_id FROM videos", "0A000", "DISTINCT"},
      {"SELECT * FROM videos a JOIN videos b ON a.channel_id = b.channel_id", "0A000", "joins"},
      {"SELECT sum(count) * 2 FROM video_totals", "0A000", "expressions over aggregates"},
      {"SELECT * FROM no_such_table", "42P01", "no_such_table"},
  };
  for (const auto& c : cases) {
    Answer a = ask(proxy.get(), c.sql);
    EXPECT_EQ(a.sqlstate, c.sqlstate) << c.sql << ": " << a.message;
    EXPECT_NE(a.message.find(c.word), std::string::npos) << a.message;
  }
  // The session still works after errors.
  EXPECT_EQ(ask(proxy.get(), "SELECT count(*) FROM channels").rows.at(0).at(0), "12");
  // The session's time zone is the shards': announced at start-up, shown, and a SET that would
  // change it refused rather than ignored (a date_trunc('day', ...) would group by UTC days).
  ASSERT_NE(PQparameterStatus(proxy.get(), "TimeZone"), nullptr);
  EXPECT_STREQ(PQparameterStatus(proxy.get(), "TimeZone"), "UTC");
  EXPECT_EQ(ask(proxy.get(), "SHOW TimeZone").rows.at(0).at(0), "UTC");
  Answer tz = ask(proxy.get(), "SET TimeZone = 'Europe/Berlin'");
  EXPECT_EQ(tz.sqlstate, "0A000") << tz.message;
  EXPECT_NE(tz.message.find("AT TIME ZONE"), std::string::npos) << tz.message;
  EXPECT_EQ(exec(proxy.get(), "SET TIME ZONE 'UTC'"), "");
  // The analyst role itself cannot write: straight to a shard proxy as that role.
  const auto* sp = cluster_.with_role("shard_proxy")[0];
  auto direct = connect("host=127.0.0.1 port=" + std::to_string(sp->ports.at("pg")) +
                        " dbname=tally user=" + cluster_.users.at("analyst").name +
                        " password=" + cluster_.users.at("analyst").password);
  ASSERT_EQ(PQstatus(direct.get()), CONNECTION_OK) << PQerrorMessage(direct.get());
  EXPECT_NE(exec(direct.get(), "INSERT INTO channels VALUES ('x', 'y')"), "");
  // A wrong password is refused.
  auto bad = connect("host=127.0.0.1 port=" +
                     std::to_string(cluster_.with_role("cluster_proxy")[0]->ports.at("pg")) +
                     " dbname=tally user=tally_analyst password=wrong");
  EXPECT_NE(PQstatus(bad.get()), CONNECTION_OK);
  EXPECT_NE(std::string(PQerrorMessage(bad.get())).find("password authentication failed"),
            std::string::npos);
}

TEST_F(AnalystSqlTest, Psql) {
  auto r = run({"psql", proxy_conninfo(), "-X", "-A", "-t", "-c",
                "SELECT event_type, sum(count) FROM video_totals GROUP BY 1 ORDER BY 1"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("view|"), std::string::npos) << r.output;
  auto dt = run({"psql", proxy_conninfo(), "-X", "-c", "\\dt"});
  ASSERT_EQ(dt.exit_code, 0) << dt.output;
  EXPECT_NE(dt.output.find("video_stats_hour"), std::string::npos) << dt.output;
  auto d = run({"psql", proxy_conninfo(), "-X", "-c", "\\d video_totals"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  EXPECT_NE(d.output.find("ksid"), std::string::npos) << d.output;
  auto w = run({"psql", proxy_conninfo(), "-X", "-c", "DELETE FROM videos"});
  EXPECT_NE(w.exit_code, 0);
  EXPECT_NE(w.output.find("read-only"), std::string::npos) << w.output;
}

// The limits of the analyst section, on a second cluster proxy started from a copy of the
// cluster's config with a small statement timeout and merge row limit: each ends the statement
// with its SQLSTATE and a message saying what to do, and the session goes on.
TEST_F(AnalystSqlTest, StatementTimeoutAndRowLimitEndTheStatementClearly) {
  const auto* cp = cluster_.with_role("cluster_proxy")[0];
  std::string config = read_file_from(cp->config, 0);
  const int http_port = base_port_ + 180, pg_port = base_port_ + 181;
  auto replace = [&](const std::string& from, const std::string& to) {
    auto at = config.find(from);
    ASSERT_NE(at, std::string::npos) << from << " not in\n" << config;
    config.replace(at, from.size(), to);
  };
  ASSERT_NO_FATAL_FAILURE(replace("http_port: " + std::to_string(cp->ports.at("http")),
                                  "http_port: " + std::to_string(http_port)));
  ASSERT_NO_FATAL_FAILURE(replace("analyst: {pg_port: " + std::to_string(cp->ports.at("pg")),
                                  "analyst: {statement_timeout_ms: 300, max_result_rows: 100, "
                                  "pg_port: " +
                                      std::to_string(pg_port)));
  const auto file = cluster_dir_->path() / "limited-cluster-proxy.yaml";
  {
    std::ofstream out(file);
    out << config;
  }
  SpawnOptions spawn;
  spawn.argv = {project_binary("cluster_proxy"), "--config", file.string()};
  spawn.log_file = cluster_dir_->path() / "limited-cluster-proxy.log";
  auto pid = spawn_daemon(spawn);
  ASSERT_TRUE(pid.ok()) << pid.error().message;
  struct Stop {
    pid_t pid;
    std::string needle;
    ~Stop() { (void)stop_process(pid, needle, SIGTERM, std::chrono::seconds(5)); }
  } stop{*pid, file.string()};
  const std::string conninfo = "host=127.0.0.1 port=" + std::to_string(pg_port) +
                               " dbname=tally user=" + cluster_.users.at("analyst").name +
                               " password=" + cluster_.users.at("analyst").password;
  Conn c(nullptr, &PQfinish);
  for (int i = 0; i < 100; ++i) {
    c = connect(conninfo);
    if (PQstatus(c.get()) == CONNECTION_OK) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK)
      << PQerrorMessage(c.get()) << tail_file(spawn.log_file);

  // More rows than the merge may hold: 54000, naming the limit and the way out.
  Answer rows = ask(c.get(), "SELECT video_id, bucket_start, count FROM video_stats_hour");
  EXPECT_EQ(rows.sqlstate, "54000") << rows.message;
  EXPECT_NE(rows.message.find("limit of 100"), std::string::npos) << rows.message;
  EXPECT_NE(rows.message.find("LIMIT"), std::string::npos) << rows.message;
  // Under the limit, the same table answers. The limit counts the rows the shards return, and
  // each returns up to LIMIT + OFFSET of them, so 2 x 40 fit where 2 x 100 would not.
  Answer few = ask(c.get(),
                   "SELECT video_id, count FROM video_stats_hour ORDER BY count DESC, video_id, "
                   "bucket_start LIMIT 40");
  EXPECT_EQ(few.sqlstate, "") << few.message;
  EXPECT_EQ(few.rows.size(), 40u);

  // A shard-local self-join on video_id over the minute rows (about 60 million pairs) runs longer
  // than 300 ms: 57014.
  const auto t0 = std::chrono::steady_clock::now();
  Answer slow = ask(c.get(),
                    "SELECT count(*) FROM video_stats_minute a JOIN video_stats_minute b USING "
                    "(video_id)");
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(slow.sqlstate, "57014") << slow.message;
  EXPECT_NE(slow.message.find("statement timeout"), std::string::npos) << slow.message;
  EXPECT_LT(took, std::chrono::seconds(10));
  // The session is usable afterwards.
  Answer after = ask(c.get(), "SELECT count(*) FROM videos");
  ASSERT_EQ(after.sqlstate, "") << after.message;
  EXPECT_EQ(after.rows.at(0).at(0), "80");
}

std::string jdbc_url(int port, const ManifestUser& user) {
  return "jdbc:postgresql://127.0.0.1:" + std::to_string(port) + "/tally?user=" + user.name +
         "&password=" + user.password;
}

TEST_F(AnalystSqlTest, HttpSql) {
  const int port = cluster_.with_role("cluster_proxy")[0]->ports.at("http");
  auto single = connect(single_conninfo());
  ASSERT_EQ(PQstatus(single.get()), CONNECTION_OK) << PQerrorMessage(single.get());
  struct Case {
    std::string sql;
    std::vector<std::optional<std::string>> params;
    nlohmann::json json_params;
  } cases[] = {
      {"SELECT event_type, count(*), sum(count), avg(count), max(bucket_start) FROM "
       "video_stats_hour WHERE count > $1 GROUP BY event_type HAVING sum(count) > $2 ORDER BY 1",
       {"10", "1000"},
       nlohmann::json::array({10, 1000})},
      {"SELECT event_type, count, sum FROM video_totals WHERE video_id = $1 ORDER BY 1",
       {"vid-37_x1"},
       nlohmann::json::array({"vid-37_x1"})},
      {"SELECT video_id, title, channel_id FROM videos ORDER BY video_id LIMIT 12", {}, nullptr},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.sql);
    Answer want = ask_params(single.get(), c.sql, c.params);
    ASSERT_EQ(want.sqlstate, "") << want.message;
    ASSERT_FALSE(want.rows.empty());
    nlohmann::json body = {{"sql", c.sql}};
    if (!c.json_params.is_null()) body["params"] = c.json_params;
    auto r = testing::http(port, "POST", "/v1/sql", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    auto j = r.j();
    ASSERT_EQ(j["columns"].size(), want.names.size()) << r.body;
    for (std::size_t i = 0; i < want.names.size(); ++i) {
      EXPECT_EQ(j["columns"][i]["name"], want.names[i]);
      EXPECT_EQ(j["columns"][i]["type_oid"], want.types[i]);
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& row : j["rows"]) {
      std::vector<std::string> out;
      for (const auto& v : row) {
        out.push_back(v.is_null() ? "<null>" : v.is_string() ? v.get<std::string>() : v.dump());
      }
      rows.push_back(out);
    }
    EXPECT_EQ(rows, want.rows) << r.body;
    EXPECT_EQ(j["row_count"], want.rows.size());
    // CSV, by ?format=csv and by Accept.
    std::string csv;
    for (std::size_t i = 0; i < want.names.size(); ++i) csv += (i ? "," : "") + want.names[i];
    csv += "\r\n";
    for (const auto& row : want.rows) {
      for (std::size_t i = 0; i < row.size(); ++i) {
        std::string v = row[i] == "<null>" ? "" : row[i];
        if (v.find_first_of(",\"\n") != std::string::npos || (v.empty() && row[i] != "<null>")) {
          std::string q = "\"";
          for (char ch : v) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
          v = q + "\"";
        }
        csv += (i ? "," : "") + v;
      }
      csv += "\r\n";
    }
    auto rc = testing::http(port, "POST", "/v1/sql?format=csv", body.dump());
    ASSERT_EQ(rc.status, 200) << rc.body;
    EXPECT_EQ(rc.headers["content-type"], "text/csv; charset=utf-8");
    EXPECT_EQ(rc.body, csv);
    auto curl =
        run({"curl", "-sS", "-H", "Accept: text/csv", "-H", "Content-Type: application/json",
             "--data-binary", body.dump(), "http://127.0.0.1:" + std::to_string(port) + "/v1/sql"});
    EXPECT_EQ(curl.exit_code, 0) << curl.output;
    EXPECT_EQ(curl.output, csv);
  }
  // Errors: JSON with the SQLSTATE and an HTTP status that fits.
  struct Bad {
    std::string body;
    int status;
    std::string sqlstate;
    std::string word;
  } bad[] = {
      {R"({"sql": "DELETE FROM videos"})", 403, "25006", "read-only"},
      {R"({"sql": "SELEC 1"})", 400, "42601", "syntax"},
      {R"({"sql": "SELECT * FROM nope"})", 400, "42P01", "nope"},
      {R"({"sql": "SELECT event_type FROM video_totals GROUP BY 1 HAVING count > 1"})", 400,
       "0A000", "HAVING"},
      {R"({"sql": "SELECT 1", "parms": []})", 400, "", "parms"},
      {R"({"sql": 5})", 400, "", "sql"},
      {R"({"sql": "SELECT $1::int", "params": [{"a": 1}]})", 400, "", "params[0]"},
      {R"(not json)", 400, "", "JSON"},
  };
  for (const auto& b : bad) {
    auto r = testing::http(port, "POST", "/v1/sql", b.body);
    EXPECT_EQ(r.status, b.status) << b.body << " -> " << r.body;
    auto j = r.j();
    ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body;
    if (!b.sqlstate.empty()) {
      EXPECT_EQ(j["error"]["sqlstate"], b.sqlstate) << r.body;
    }
    EXPECT_NE(j["error"]["message"].get<std::string>().find(b.word), std::string::npos) << r.body;
  }
}

TEST_F(AnalystSqlTest, Jdbc) {
  const std::string jar = "/usr/share/java/postgresql.jar";
  ASSERT_TRUE(std::filesystem::exists(jar))
      << jar << " is missing: scripts/install-deps.sh installs libpostgresql-jdbc-java";
  auto r = run(
      {"java", "-cp", jar,
       std::string(TALLY_SOURCE_DIR) + "/tests/integration/clients/AnalystJdbcCheck.java",
       jdbc_url(cluster_.with_role("cluster_proxy")[0]->ports.at("pg"),
                cluster_.users.at("analyst")),
       jdbc_url(single_.with_role("pg_leader")[0]->ports.at("pg"), single_.users.at("analyst"))});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("JDBC OK"), std::string::npos) << r.output;
  std::cout << r.output;
}

TEST_F(AnalystSqlTest, Psycopg2) {
  const std::string python = "/usr/bin/python3";
  auto probe = run({python, "-c", "import psycopg2"});
  ASSERT_EQ(probe.exit_code, 0)
      << "psycopg2 is missing: scripts/install-deps.sh installs python3-psycopg2\n"
      << probe.output;
  auto r =
      run({python,
           std::string(TALLY_SOURCE_DIR) + "/tests/integration/clients/analyst_psycopg2_check.py",
           proxy_conninfo(), single_conninfo()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("PSYCOPG2 OK"), std::string::npos) << r.output;
  std::cout << r.output;
}

}  // namespace
}  // namespace tally
