// Analyst SQL through the cluster proxy (issue 7), differentially: one data set is loaded into a
// 2-shard cluster (each row written straight into the leader of the shard owning its ksid;
// reference tables into every shard) and into the leader of a separate 1-shard cluster, which
// plays "one PostgreSQL holding all the data". A corpus of report queries runs against the
// cluster proxy's PostgreSQL-wire endpoint and against that single database; the answers must
// be identical (as multisets without ORDER BY; float8 within a relative 1e-12). Also: refusals
// (0A000, 25006), the analyst role's own read-only grants, bad passwords, and psql.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/cluster/cluster_manifest.h"
#include "common/keyspace/ksid.h"
#include "common/keyspace/shard_map.h"
#include "common/process/child_process.h"
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

  // The data set: 12 channels, 80 videos, their totals, hourly and daily stats and raw events.
  static std::vector<std::string> data_statements(const std::string& only_video_of_shard,
                                                  const ShardMap* map, std::size_t shard) {
    auto mine = [&](const std::string& video) {
      return only_video_of_shard.empty() || map->index_for(ksid_for(video)) == shard;
    };
    std::vector<std::string> out;
    std::string channels =
        "INSERT INTO channels (channel_id, name, created_at, updated_at) VALUES ";
    for (int c = 0; c < 12; ++c) {
      channels += std::string(c ? "," : "") + "('ch" + std::to_string(c) + "', 'Channel " +
                  std::to_string(c % 7) + "', '2026-01-01 00:00:00+00', '2026-01-02 00:00:00+00')";
    }
    out.push_back(channels);
    const char* types[] = {"view", "like", "share", "watch_time"};
    for (int v = 0; v < 80; ++v) {
      std::string id = "vid-" + std::to_string(v * 37 % 101) + "_x" + std::to_string(v % 5);
      if (!mine(id)) continue;
      std::string ksid = std::to_string(ksid_to_sql(ksid_for(id)));
      std::string title = v % 9 == 0 ? "NULL" : "'Title " + std::to_string(v % 13) + "'";
      std::string channel = v % 11 == 0 ? "NULL" : "'ch" + std::to_string(v % 12) + "'";
      out.push_back(
          "INSERT INTO videos (video_id, title, channel_id, created_at, updated_at, ksid) "
          "VALUES ('" +
          id + "', " + title + ", " + channel + ", '2026-02-0" + std::to_string(1 + v % 9) +
          " 10:00:00+00', '2026-02-10 00:00:00+00', " + ksid + ")");
      for (int t = 0; t < 4; ++t) {
        if ((v + t) % 6 == 5) continue;  // not every video has every event type
        long long total = 0, sum = 0;
        for (int h = 0; h < 30; ++h) {
          if ((v * 7 + h * 3 + t) % 4 == 0) continue;
          long long count = (v * 13 + h * 7 + t * 5) % 50 + (v % 3 == 0 ? 1000 : 1);
          long long s = t == 3 ? count * ((v + h) % 17 + 3) : 0;
          total += count;
          sum += s;
          out.push_back("INSERT INTO video_stats_hour VALUES ('" + id + "', '" + types[t] +
                        "', timestamptz '2026-03-01 00:00:00+00' + interval '" + std::to_string(h) +
                        " hours', " + std::to_string(count) + ", " + std::to_string(s) + ", " +
                        ksid + ")");
        }
        out.push_back(
            "INSERT INTO video_stats_day SELECT video_id, event_type, "
            "date_trunc('day', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', "
            "sum(count), sum(sum), ksid FROM video_stats_hour WHERE video_id = '" +
            id + "' AND event_type = '" + types[t] + "' GROUP BY 1, 2, 3, 6");
        out.push_back("INSERT INTO video_totals VALUES ('" + id + "', '" + types[t] + "', " +
                      std::to_string(total) + ", " + std::to_string(sum) + ", " + ksid + ")");
      }
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

  static void load() {
    auto map = ShardMap::from_names(cluster_.shards);
    ASSERT_TRUE(map.ok());
    auto leaders = cluster_.with_role("pg_leader");
    ASSERT_EQ(leaders.size(), 2u);
    for (const auto* leader : leaders) {
      std::size_t shard = 0;
      for (std::size_t i = 0; i < map->size(); ++i) {
        if (map->ranges()[i].name() == leader->shard.value_or("")) shard = i;
      }
      ASSERT_NO_FATAL_FAILURE(load_into(cluster_.conninfo(*leader, "admin"),
                                        data_statements("by-shard", &*map, shard)));
    }
    ASSERT_NO_FATAL_FAILURE(load_into(single_.conninfo(*single_.with_role("pg_leader")[0], "admin"),
                                      data_statements("", nullptr, 0)));
  }

  static std::string proxy_conninfo() { return *cluster_.endpoints["analyst_pg"]; }
  static std::string single_conninfo() {
    return single_.conninfo(*single_.with_role("pg_leader")[0], "analyst");
  }

  static std::unique_ptr<testing::TempDir> cluster_dir_;
  static std::unique_ptr<testing::TempDir> single_dir_;
  static ClusterManifest cluster_;
  static ClusterManifest single_;
};

std::unique_ptr<testing::TempDir> AnalystSqlTest::cluster_dir_;
std::unique_ptr<testing::TempDir> AnalystSqlTest::single_dir_;
ClusterManifest AnalystSqlTest::cluster_;
ClusterManifest AnalystSqlTest::single_;

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
    {false, "SELECT video_id, count FROM video_stats_hour WHERE count > 1040"},
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
    {false, "SELECT count(DISTINCT video_id) FROM video_stats_hour WHERE count > 1040"},
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
     "SELECT count(*) FILTER (WHERE count > 1000), sum(count) FILTER (WHERE event_type = "
     "'view') FROM video_totals"},
    {false,
     "SELECT c.name, count(*), sum(t.count) FROM video_totals t JOIN videos v ON "
     "v.video_id = t.video_id JOIN channels c ON c.channel_id = v.channel_id WHERE "
     "t.event_type = 'view' GROUP BY c.name"},
    {true,
     "SELECT v.channel_id, avg(t.count) AS a FROM videos v JOIN video_totals t USING "
     "(video_id) GROUP BY v.channel_id ORDER BY a DESC NULLS LAST, v.channel_id"},
    {false, "SELECT avg(value), sum(value), count(*) FROM events_raw"},
    // GROUP BY the shard key: groups stay on their shard.
    {false, "SELECT video_id, sum(count), avg(count) FROM video_stats_hour GROUP BY video_id"},
    {true,
     "SELECT video_id, sum(count) AS views FROM video_stats_hour WHERE event_type = 'view' "
     "GROUP BY video_id ORDER BY views DESC, video_id LIMIT 10"},
    {false,
     "SELECT video_id, count(*) FROM video_stats_hour GROUP BY video_id HAVING count(*) > "
     "70"},
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
     "t.count > 1500"},
    {false,
     "SELECT v.video_id, e.name FROM videos v JOIN video_totals t USING (video_id) JOIN "
     "event_types e ON e.name = t.event_type WHERE t.count < 800"},
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
    SCOPED_TRACE(q.sql);
    Answer want = ask(single.get(), q.sql);
    ASSERT_EQ(want.sqlstate, "") << want.message;
    Answer got = ask(proxy.get(), q.sql);
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
                 std::string(q.sql).find("< 0") == std::string::npos)
        << "a corpus query that returns nothing proves little";
    ++compared;
  }
  EXPECT_GE(compared, 50);
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
      {"SELECT event_type, sum(count) FROM video_totals GROUP BY 1 HAVING sum(count) > 5", "0A000",
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

}  // namespace
}  // namespace tally
