// The analyst SQL planner and merger (common/sql/query_planner.h, result_merge.h, numeric_text.h):
// routing by the shard key, refusals with their SQLSTATEs, the per-shard SQL, and merging that
// gives what one PostgreSQL returns (avg's numeric scale checked against values PostgreSQL 15
// printed).
#include "common/sql/query_planner.h"

#include <gtest/gtest.h>

#include "common/keyspace/ksid.h"
#include "common/sql/numeric_text.h"
#include "common/sql/result_merge.h"

namespace tally::sql {
namespace {

const ShardMap& two_shards() {
  static const ShardMap map = *ShardMap::uniform(2);
  return map;
}

QueryPlan plan(const std::string& sql) {
  return plan_query(sql, two_shards());
}

TEST(QueryPlannerTest, PinsTheShardKey) {
  auto p = plan("SELECT * FROM video_totals WHERE video_id = 'abc'");
  ASSERT_EQ(p.kind, QueryPlan::Kind::kShards);
  ASSERT_EQ(p.shards.size(), 1u);
  EXPECT_EQ(p.shards[0], two_shards().index_for(ksid_for("abc")));
  EXPECT_EQ(p.shard_sql, "SELECT * FROM video_totals WHERE video_id = 'abc'");

  // Find two ids on different shards.
  std::string a = "v0", b;
  for (int i = 1; i < 100 && b.empty(); ++i) {
    std::string c = "v" + std::to_string(i);
    if (two_shards().index_for(ksid_for(c)) != two_shards().index_for(ksid_for(a))) b = c;
  }
  auto in = plan("SELECT video_id, count FROM video_totals t WHERE t.video_id IN ('" + a + "', '" +
                 b + "') AND event_type = 'view'");
  ASSERT_EQ(in.kind, QueryPlan::Kind::kShards);
  EXPECT_EQ(in.shards.size(), 2u);

  auto param = plan_query("SELECT * FROM videos WHERE video_id = $1", two_shards(), {"abc"});
  ASSERT_EQ(param.shards.size(), 1u);
  EXPECT_EQ(param.shards[0], two_shards().index_for(ksid_for("abc")));
  // Unknown parameter: every shard.
  EXPECT_EQ(plan("SELECT * FROM videos WHERE video_id = $1").shards.size(), 2u);
}

TEST(QueryPlannerTest, ReferenceAndCatalogQueriesGoToAnyShard) {
  EXPECT_EQ(plan("SELECT * FROM channels").kind, QueryPlan::Kind::kAnyShard);
  EXPECT_EQ(plan("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN "
                 "pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN "
                 "('r','p') AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1,2")
                .kind,
            QueryPlan::Kind::kAnyShard);
  EXPECT_EQ(plan("SELECT 1").kind, QueryPlan::Kind::kAnyShard);
  EXPECT_EQ(plan("SHOW server_version").kind, QueryPlan::Kind::kAnyShard);
}

TEST(QueryPlannerTest, WritesAndDdlAreReadOnlyErrors) {
  for (const char* sql :
       {"INSERT INTO channels VALUES ('a', 'b')", "UPDATE videos SET title = 'x'",
        "DELETE FROM video_totals", "CREATE TABLE t (a int)", "DROP TABLE videos",
        "TRUNCATE videos", "SELECT * FROM videos FOR UPDATE", "SELECT * INTO t2 FROM videos"}) {
    auto p = plan(sql);
    EXPECT_EQ(p.kind, QueryPlan::Kind::kError) << sql;
    EXPECT_EQ(p.error.sqlstate, "25006") << sql;
  }
}

TEST(QueryPlannerTest, UnsupportedConstructsAreNamed) {
  struct Case {
    const char* sql;
    const char* word;
  } cases[] = {
      {"SELECT video_id FROM videos UNION SELECT video_id FROM video_totals", "UNION"},
      {"WITH x AS (SELECT * FROM videos) SELECT * FROM x", "WITH"},
      {"SELECT * FROM videos WHERE video_id IN (SELECT video_id FROM video_totals)", "subqueries"},
      {"SELECT * FROM videos a JOIN videos b ON a.channel_id = b.channel_id", "joins"},
      {"SELECT DISTINCT channel_id FROM videos", "DISTINCT"},
      {"SELECT video_id, rank() OVER (ORDER BY count) FROM video_totals", "window"},
      {"SELECT event_type, sum(count) FROM video_totals GROUP BY event_type HAVING "
       "count > 1",
       "HAVING on count"},
      {"SELECT event_type, sum(count) FROM video_totals GROUP BY event_type HAVING "
       "stddev(count) > 1",
       "stddev"},
      {"SELECT event_type, sum(count) * 2 FROM video_totals GROUP BY event_type",
       "expressions over aggregates"},
      {"SELECT string_agg(title, ',') FROM videos", "string_agg"},
      {"SELECT count(DISTINCT event_type) FROM video_totals", "count(DISTINCT"},
      {"SELECT event_type, count(*) FROM video_totals GROUP BY ROLLUP (event_type)", "ROLLUP"},
      {"SELECT * FROM videos LIMIT 1 + 1", "LIMIT"},
  };
  for (const auto& c : cases) {
    auto p = plan(c.sql);
    ASSERT_EQ(p.kind, QueryPlan::Kind::kError) << c.sql;
    EXPECT_EQ(p.error.sqlstate, "0A000") << c.sql;
    EXPECT_NE(p.error.message.find(c.word), std::string::npos) << c.sql << ": " << p.error.message;
    EXPECT_FALSE(p.error.hint.empty()) << c.sql;
  }
  // The same constructs pinned to one shard are fine.
  EXPECT_EQ(plan("SELECT video_id, rank() OVER (ORDER BY count) FROM video_totals "
                 "WHERE video_id = 'x'")
                .kind,
            QueryPlan::Kind::kShards);
}

TEST(QueryPlannerTest, SyntaxErrorsAndSessionStatements) {
  auto p = plan("SELEC 1");
  EXPECT_EQ(p.error.sqlstate, "42601");
  EXPECT_EQ(plan("SET extra_float_digits = 3").command_tag, "SET");
  // Settings that would change answers are refused unless they are what the shards use.
  for (const char* ok : {"SET TIME ZONE 'UTC'", "SET TimeZone = 'Etc/UTC'", "SET timezone TO 0",
                         "SET DateStyle TO 'ISO'", "SET datestyle = 'ISO, MDY'",
                         "SET IntervalStyle = postgres", "SET application_name = 'bi'",
                         "RESET TimeZone", "SET TIME ZONE LOCAL", "SET search_path = public"}) {
    auto set = plan(ok);
    EXPECT_EQ(set.kind, QueryPlan::Kind::kNoop) << ok << ": " << set.error.message;
  }
  struct Refused {
    const char* sql;
    const char* word;
  } refused[] = {{"SET TimeZone = 'Europe/Berlin'", "UTC"},
                 {"SET LOCAL TIME ZONE 'America/New_York'", "UTC"},
                 {"SET timezone TO 3", "UTC"},
                 {"SET DateStyle = 'ISO, DMY'", "MDY"},
                 {"SET datestyle TO German", "MDY"},
                 {"SET IntervalStyle = iso_8601", "postgres"},
                 {"SET extra_float_digits = 0", "extra_float_digits"}};
  for (const auto& r : refused) {
    auto set = plan(r.sql);
    EXPECT_EQ(set.error.sqlstate, "0A000") << r.sql;
    EXPECT_NE(set.error.message.find(r.word), std::string::npos) << set.error.message;
    EXPECT_FALSE(set.error.hint.empty()) << r.sql;
  }
  EXPECT_EQ(plan("BEGIN").command_tag, "BEGIN");
  EXPECT_EQ(plan("").kind, QueryPlan::Kind::kEmpty);
  EXPECT_EQ(plan("SELECT 1; SELECT 2").error.sqlstate, "0A000");
}

TEST(QueryPlannerTest, OrderLimitPushesDownLimitPlusOffset) {
  auto p = plan(
      "SELECT video_id, count AS c FROM video_totals WHERE event_type = 'view' "
      "ORDER BY c DESC, upper(video_id) LIMIT 5 OFFSET 3");
  ASSERT_EQ(p.kind, QueryPlan::Kind::kShards);
  EXPECT_EQ(p.shards.size(), 2u);
  EXPECT_FALSE(p.merge.combine);
  EXPECT_EQ(p.shard_sql,
            "SELECT video_id, count AS c, upper(video_id) AS __tally_sort0 FROM video_totals "
            "WHERE event_type = 'view' ORDER BY c DESC, upper(video_id) LIMIT 8");
  ASSERT_EQ(p.merge.sort.size(), 2u);
  EXPECT_EQ(p.merge.sort[0].column, 1);
  EXPECT_TRUE(p.merge.sort[0].descending);
  EXPECT_TRUE(p.merge.sort[0].nulls_first);
  EXPECT_TRUE(p.merge.sort[1].from_end);
  EXPECT_EQ(p.merge.hidden_columns, 1);
  EXPECT_EQ(p.merge.limit, 5);
  EXPECT_EQ(p.merge.offset, 3);
}

TEST(QueryPlannerTest, AggregatesBecomePartials) {
  auto p = plan(
      "SELECT event_type, count(*), sum(count) AS s, avg(sum), min(count), max(count) "
      "FROM video_totals GROUP BY 1 ORDER BY s DESC LIMIT 2");
  ASSERT_EQ(p.kind, QueryPlan::Kind::kShards) << p.error.message;
  EXPECT_TRUE(p.merge.combine);
  EXPECT_EQ(p.shard_sql,
            "SELECT event_type AS __tally_g0, event_type AS __tally_c1, count(*) AS __tally_c2, "
            "sum(count) AS __tally_c3, sum(sum) AS __tally_c4, count(sum) AS __tally_c5, "
            "min(count) AS __tally_c6, max(count) AS __tally_c7 FROM video_totals "
            "GROUP BY event_type");
  ASSERT_EQ(p.merge.columns.size(), 6u);
  EXPECT_EQ(p.merge.columns[3].kind, AggregateKind::kAvg);
  EXPECT_EQ(p.merge.columns[3].name, "avg");
  EXPECT_EQ(p.merge.columns[2].name, "s");
  EXPECT_EQ(p.merge.sort[0].column, 2);
  EXPECT_EQ(p.merge.limit, 2);

  // Grouped by the shard key: groups concatenate, HAVING allowed.
  auto k = plan(
      "SELECT video_id, sum(count) FROM video_stats_hour GROUP BY video_id "
      "HAVING sum(count) > 3 ORDER BY 2 DESC LIMIT 10");
  ASSERT_EQ(k.kind, QueryPlan::Kind::kShards) << k.error.message;
  EXPECT_FALSE(k.merge.combine);
}

TEST(QueryPlannerTest, ShardLocalJoins) {
  auto p = plan(
      "SELECT v.video_id, c.name, h.count FROM videos v JOIN channels c ON "
      "c.channel_id = v.channel_id JOIN video_stats_hour h ON h.video_id = v.video_id");
  EXPECT_EQ(p.kind, QueryPlan::Kind::kShards) << p.error.message;
  auto u = plan("SELECT * FROM videos JOIN video_totals USING (video_id)");
  EXPECT_EQ(u.kind, QueryPlan::Kind::kShards) << u.error.message;
  auto w = plan("SELECT * FROM videos v, video_totals t WHERE v.video_id = t.video_id");
  EXPECT_EQ(w.kind, QueryPlan::Kind::kShards) << w.error.message;
}

TEST(NumericTextTest, AvgMatchesPostgresScale) {
  auto avg = [](const char* sum, int64_t n) {
    return format_decimal(divide_decimal_for_avg(*parse_decimal(sum), n));
  };
  // Values printed by PostgreSQL 15 for avg over the same sums and counts.
  EXPECT_EQ(avg("3", 2), "1.5000000000000000");             // avg(1,2)
  EXPECT_EQ(avg("10", 3), "3.3333333333333333");            // avg(1,2,7)
  EXPECT_EQ(avg("123456", 2), "61728.000000000000");        // avg(123455,1)
  EXPECT_EQ(avg("100000000", 3), "33333333.333333333333");  // avg(1e8,0,0)
  EXPECT_EQ(avg("0", 5), "0.00000000000000000000");         // avg(0,0,0,0,0)
  EXPECT_EQ(avg("-7", 2), "-3.5000000000000000");           // avg(-3,-4)
  EXPECT_EQ(avg("2", 3), "0.66666666666666666667");         // avg(1,1,0)
  EXPECT_EQ(avg("1.50", 2), "0.75000000000000000000");      // avg(1.50, 0)
  EXPECT_EQ(format_decimal(add_decimal(*parse_decimal("1.5"), *parse_decimal("-2.25"))), "-0.75");
  EXPECT_EQ(compare_decimal(*parse_decimal("10"), *parse_decimal("9.99")), 1);
}

TEST(ResultMergeTest, CombinesPartialAggregates) {
  auto p = plan(
      "SELECT event_type, count(*), sum(count) AS s, avg(sum), min(count), max(count) "
      "FROM video_totals GROUP BY 1 ORDER BY s DESC");
  ResultSet a, b;
  for (auto* r : {&a, &b}) {
    r->columns = {{"__tally_g0", 25, -1, -1}, {"event_type", 25, -1, -1}, {"count", 20, 8, -1},
                  {"s", 1700, -1, -1},        {"avg", 1700, -1, -1},      {"avg", 20, 8, -1},
                  {"min", 20, 8, -1},         {"max", 20, 8, -1}};
  }
  a.rows = {{"view", "view", "2", "10", "3", "2", "4", "6"},
            {"like", "like", "1", "1", std::nullopt, "0", "1", "1"}};
  b.rows = {{"view", "view", "1", "7", "7", "1", "7", "7"}};
  auto m = merge_results(p.merge, {a, b}, 1000);
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(m->rows.size(), 2u);
  EXPECT_EQ(m->columns[3].type_oid, kNumericOid);
  Row view = {"view", "3", "17", "3.3333333333333333", "4", "7"};
  Row like = {"like", "1", "1", std::nullopt, "1", "1"};
  EXPECT_EQ(m->rows[0], view);
  EXPECT_EQ(m->rows[1], like);
  // The row limit.
  auto limited = merge_results(p.merge, {a, b}, 2);
  ASSERT_FALSE(limited.ok());
  EXPECT_EQ(limited.error().code, ErrorCode::kResourceExhausted);
}

TEST(ResultMergeTest, MergeSortsWithOffsetLimitAndHiddenColumns) {
  auto p = plan(
      "SELECT video_id, count FROM video_totals ORDER BY count DESC, video_id "
      "LIMIT 3 OFFSET 1");
  ResultSet a, b;
  for (auto* r : {&a, &b}) {
    r->columns = {{"video_id", 25, -1, -1}, {"count", 20, 8, -1}};
  }
  EXPECT_EQ(p.merge.hidden_columns, 0);
  a.rows = {{"a", "100"}, {"c", "9"}, {"d", "9"}};
  b.rows = {{"b", "20"}, {"e", "10"}, {"f", std::nullopt}};
  auto m = merge_results(p.merge, {a, b}, 1000);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->columns.size(), 2u);
  // NULL sorts first under DESC: f, a, b, e, c, d -> offset 1 limit 3 = a, b, e.
  std::vector<Row> want = {{"a", "100"}, {"b", "20"}, {"e", "10"}};
  EXPECT_EQ(m->rows, want);
}

TEST(QueryPlannerTest, CrossShardHavingBecomesAPredicateOverCombinedGroups) {
  auto p = plan(
      "SELECT event_type, sum(count) FROM video_totals GROUP BY event_type "
      "HAVING avg(count) > $2 AND event_type <> 'like' OR count(*) FILTER (WHERE count > 5) = 0 "
      "ORDER BY 1 LIMIT 3");
  ASSERT_EQ(p.kind, QueryPlan::Kind::kShards) << p.error.message;
  ASSERT_TRUE(p.merge.combine);
  ASSERT_TRUE(p.merge.having.has_value());
  const auto& h = *p.merge.having;
  EXPECT_EQ(h.predicate, "__tally_h.c0 > $1 AND (__tally_h.c1) <> 'like' OR __tally_h.c2 = 0");
  EXPECT_EQ(h.parameters, std::vector<int>{2});
  ASSERT_EQ(h.columns.size(), 3u);
  EXPECT_EQ(p.merge.hidden_columns, 3);
  // The shard statement computes the partials; HAVING, ORDER BY and LIMIT stay at the proxy.
  EXPECT_EQ(p.shard_sql,
            "SELECT event_type AS __tally_g0, event_type AS __tally_c1, sum(count) AS "
            "__tally_c2, sum(count) AS __tally_c3, count(count) AS __tally_c4, count(*) FILTER "
            "(WHERE count > 5) AS __tally_c5 FROM video_totals GROUP BY event_type");
  EXPECT_EQ(parameters_used(p.shard_sql), std::set<int>{});

  // Combined groups -> the HAVING query's arrays, then the filter and the final order.
  ResultSet a;
  a.columns = {{"g", 25, -1, -1},   {"event_type", 25, -1, -1}, {"sum", 1700, -1, -1},
               {"s", 1700, -1, -1}, {"n", 20, 8, -1},           {"f", 20, 8, -1}};
  a.rows = {{"view", "view", "10", "10", "2", "1"}, {"like", "like", "4", "4", "1", "0"}};
  auto combined = combine_results(p.merge, {a}, 100);
  ASSERT_TRUE(combined.ok()) << combined.error().message;
  auto q = having_query(p.merge, *combined, 2);
  ASSERT_TRUE(q.ok()) << q.error().message;
  EXPECT_EQ(q->sql,
            "SELECT __tally_h.__tally_o FROM unnest($2, $3, $4) WITH ORDINALITY AS "
            "__tally_h(c0, c1, c2, __tally_o) WHERE __tally_h.c0 > $1 AND (__tally_h.c1) <> "
            "'like' OR __tally_h.c2 = 0");
  EXPECT_EQ(q->user_parameters, std::vector<int>{2});
  ASSERT_EQ(q->arrays.size(), 3u);
  EXPECT_EQ(q->arrays[0], "{\"5.0000000000000000\",\"4.0000000000000000\"}");
  EXPECT_EQ(q->arrays[1], "{\"view\",\"like\"}");
  EXPECT_EQ(q->array_types[0], 1231u);                     // numeric[]
  EXPECT_EQ(q->array_types[2], 1016u);                     // int8[]
  EXPECT_FALSE(having_query(p.merge, *combined, 1).ok());  // $2 not bound
  ResultSet kept;
  kept.columns = {{"o", 20, 8, -1}};
  kept.rows = {{"2"}};
  filter_groups(*combined, kept);
  auto done = finish_results(p.merge, std::move(*combined));
  ASSERT_TRUE(done.ok());
  std::vector<Row> want = {{"like", "4"}};
  EXPECT_EQ(done->rows, want);
  EXPECT_EQ(done->columns.size(), 2u);
}

TEST(QueryPlannerTest, StatementParameters) {
  EXPECT_EQ(*statement_parameters("SELECT * FROM videos WHERE video_id = $3 OR title = $1"), 3);
  EXPECT_EQ(*statement_parameters("SELECT 1"), 0);
  EXPECT_FALSE(statement_parameters("SELEC 1").ok());
  EXPECT_FALSE(statement_parameters("SELECT 1; SELECT 2").ok());
}

}  // namespace
}  // namespace tally::sql
