// Unit tests for common/sql: statement hints (every key, every error with its message, where a
// hint comment counts) and the statement classifier by table: reads it must be sure of, writes
// hidden in reads, transaction and session statements, lexer corners. LSN text: codecs_test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/sql/statement_classifier.h"
#include "common/sql/statement_hints.h"

namespace tally::sql {
namespace {

using K = StatementKind;

// ---------------------------------------------------------------------------------------------
// Statement hints

HintedStatement hinted(std::string_view sql) {
  Result<HintedStatement> parsed = parse_statement_hints(sql);
  EXPECT_TRUE(parsed.ok()) << sql << ": " << (parsed.ok() ? "" : parsed.error().message);
  return parsed.ok() ? *parsed : HintedStatement{};
}

std::string hint_error(std::string_view sql) {
  Result<HintedStatement> parsed = parse_statement_hints(sql);
  EXPECT_FALSE(parsed.ok()) << sql;
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidArgument) << sql;
  return parsed.error().message;
}

TEST(StatementHints, AllKeys) {
  const std::string sql =
      "/*tally: route=leader, cache_ttl_ms=500, min_lsn=0/16B3748*/ SELECT count FROM t";
  const HintedStatement h = hinted(sql);
  EXPECT_TRUE(h.has_hint_comment);
  EXPECT_EQ(h.hints.route, Route::kLeader);
  EXPECT_EQ(h.hints.cache_ttl_ms, 500U);
  EXPECT_EQ(h.hints.min_lsn, 0x16B3748U);
  EXPECT_EQ(sql.substr(h.body_offset), "SELECT count FROM t");
}

TEST(StatementHints, NoHintCommentLeavesEverythingUnset) {
  for (std::string_view sql : {"SELECT 1", "", "   ", "select/*tally: route=leader*/1"}) {
    const HintedStatement h = hinted(sql);
    EXPECT_FALSE(h.has_hint_comment) << sql;
    EXPECT_TRUE(h.hints.empty()) << sql;
  }
  EXPECT_EQ(hinted("  \n SELECT 1").body_offset, 4U);
  EXPECT_EQ(hinted("SELECT 1").body_offset, 0U);
}

TEST(StatementHints, HintNotAtTheStartIsAComment) {
  const std::string sql = "SELECT 1 /*tally: route=leader*/";
  const HintedStatement h = hinted(sql);
  EXPECT_FALSE(h.has_hint_comment);
  EXPECT_EQ(h.body_offset, 0U);
  // Even a malformed one: it is not a hint, so it is not checked.
  EXPECT_FALSE(hinted("SELECT 1 /*tally: bogus*/").has_hint_comment);
}

TEST(StatementHints, WhitespaceEverywhereAndCaseInsensitiveKeys) {
  const HintedStatement h =
      hinted(" \t\n/*tally:\n  ROUTE =  Replica ,\tCache_TTL_ms= 0 ,min_lsn =A/0 */\nSELECT 1");
  EXPECT_EQ(h.hints.route, Route::kReplica);
  EXPECT_EQ(h.hints.cache_ttl_ms, 0U);
  EXPECT_EQ(h.hints.min_lsn, uint64_t{0xA} << 32);
}

TEST(StatementHints, EachRoute) {
  EXPECT_EQ(hinted("/*tally:route=leader*/SELECT 1").hints.route, Route::kLeader);
  EXPECT_EQ(hinted("/*tally:route=replica*/SELECT 1").hints.route, Route::kReplica);
  EXPECT_EQ(hinted("/*tally:route=any*/SELECT 1").hints.route, Route::kAny);
  EXPECT_EQ(route_name(Route::kReplica), "replica");
}

TEST(StatementHints, TtlBounds) {
  EXPECT_EQ(hinted("/*tally:cache_ttl_ms=86400000*/SELECT 1").hints.cache_ttl_ms, kMaxCacheTtlMs);
  EXPECT_EQ(hinted("/*tally:cache_ttl_ms=007*/SELECT 1").hints.cache_ttl_ms, 7U);
  EXPECT_EQ(hint_error("/*tally:cache_ttl_ms=86400001*/SELECT 1"),
            "statement hint cache_ttl_ms=\"86400001\": expected an integer from 0 to 86400000");
  EXPECT_EQ(hint_error("/*tally:cache_ttl_ms=99999999999999999999999*/SELECT 1"),
            "statement hint cache_ttl_ms=\"99999999999999999999999\": expected an integer from 0 "
            "to 86400000");
  EXPECT_EQ(hint_error("/*tally:cache_ttl_ms=-1*/SELECT 1"),
            "statement hint cache_ttl_ms=\"-1\": expected an integer from 0 to 86400000");
}

TEST(StatementHints, EmptyHintCommentIsAllowed) {
  const HintedStatement h = hinted("/*tally:*/ SELECT 1");
  EXPECT_TRUE(h.has_hint_comment);
  EXPECT_TRUE(h.hints.empty());
  EXPECT_EQ(h.body_offset, 11U);
}

TEST(StatementHints, HintFollowedByOtherCommentsAndOtherCommentsFirst) {
  const std::string sql =
      "-- report 7\n/* app=bi */ /*tally: route=replica*/ /* nested /* inner */ still */ SELECT 1";
  const HintedStatement h = hinted(sql);
  EXPECT_TRUE(h.has_hint_comment);
  EXPECT_EQ(h.hints.route, Route::kReplica);
  EXPECT_EQ(sql.substr(h.body_offset), "SELECT 1");
}

TEST(StatementHints, SpaceAfterTheOpeningMakesAnOrdinaryComment) {
  const HintedStatement h = hinted("/* tally: route=leader */ SELECT 1");
  EXPECT_FALSE(h.has_hint_comment);
  EXPECT_EQ(h.body_offset, 26U);
}

TEST(StatementHints, SeveralHintCommentsMerge) {
  const HintedStatement h = hinted("/*tally: route=leader*/ /*tally: cache_ttl_ms=5*/ SELECT 1");
  EXPECT_EQ(h.hints.route, Route::kLeader);
  EXPECT_EQ(h.hints.cache_ttl_ms, 5U);
}

TEST(StatementHints, ErrorsNameKeyValueAndExpectedForm) {
  EXPECT_EQ(hint_error("/*tally: cache_ttl_ms=abc*/ SELECT 1"),
            "statement hint cache_ttl_ms=\"abc\": expected an integer from 0 to 86400000");
  EXPECT_EQ(hint_error("/*tally: route=primary*/ SELECT 1"),
            "statement hint route=\"primary\": expected leader, replica or any");
  EXPECT_EQ(hint_error("/*tally: min_lsn=16B3748*/ SELECT 1"),
            "statement hint min_lsn=\"16B3748\": expected an LSN: two groups of 1-8 hex digits "
            "separated by '/', such as 0/16B3748");
  EXPECT_EQ(hint_error("/*tally: route=*/ SELECT 1"),
            "statement hint route=\"\": expected leader, replica or any");
  EXPECT_EQ(hint_error("/*tally: ttl=5*/ SELECT 1"),
            "statement hint \"ttl\": unknown key; known keys are route, cache_ttl_ms, min_lsn");
  EXPECT_EQ(hint_error("/*tally: route=leader, route=replica*/ SELECT 1"),
            "statement hint route: given more than once");
  EXPECT_EQ(hint_error("/*tally: route=leader*/ /*tally: ROUTE=any*/ SELECT 1"),
            "statement hint route: given more than once");
  EXPECT_EQ(hint_error("/*tally: route leader*/ SELECT 1"),
            "statement hint route: expected '=' and a value");
  EXPECT_EQ(hint_error("/*tally: route=leader cache_ttl_ms=5*/ SELECT 1"),
            "statement hint route=\"leader\": expected ',' before \"cache_ttl_ms=5\"");
  EXPECT_EQ(hint_error("/*tally: route=leader,*/ SELECT 1"),
            "statement hint comment: expected key=value after ','");
  EXPECT_EQ(hint_error("/*tally: , route=leader*/ SELECT 1"),
            "statement hint comment: expected key=value, found \", route=leader\"");
  EXPECT_EQ(hint_error("/*tally: route=leader SELECT 1"),
            "statement hint comment: unterminated /* comment (expected */)");
  EXPECT_EQ(hint_error("/*tally: route=leader /* nested */ SELECT 1"),
            "statement hint comment: unterminated /* comment (expected */)");
}

TEST(StatementHints, UnterminatedOrdinaryCommentIsLeftToPostgres) {
  const HintedStatement h = hinted("  /* just a comment SELECT 1");
  EXPECT_FALSE(h.has_hint_comment);
  EXPECT_EQ(h.body_offset, 2U);
}

TEST(StatementHints, OnlyCommentsMeansEmptyBody) {
  const std::string sql = "/*tally: route=leader*/ -- nothing else";
  EXPECT_EQ(hinted(sql).body_offset, sql.size());
}

// ---------------------------------------------------------------------------------------------
// Statement classifier

struct Case {
  std::string_view sql;
  StatementKind kind;
  bool multi = false;
  std::string_view evidence = {};  // checked when not empty
};

// clang-format off
const Case kCases[] = {
    // Sure reads.
    {"SELECT 1", K::kRead},
    {"select 1;", K::kRead},
    {"SELECT count FROM video_totals WHERE video_id = 'abc' AND event_type = 'view'", K::kRead},
    {"SELECT count(*) FROM t", K::kRead},
    {"SELECT sum(count), avg(sum), min(x), max(x) FROM t GROUP BY 1", K::kRead},
    {"SELECT \"count\"(x) FROM t", K::kRead},
    {"SELECT pg_catalog.count(x) FROM t", K::kRead},
    {"SELECT COUNT (*) FROM T", K::kRead},
    {"select/*c*/1", K::kRead},
    {"SELECT x::numeric(10,2) FROM t", K::kRead},
    {"SELECT x::character varying(5), y::varchar(5), z::timestamp(3) with time zone FROM t", K::kRead},
    {"SELECT CAST(x AS numeric(10, 2)) FROM t", K::kRead},
    {"SELECT * FROM t WHERE id IN (1, 2) AND EXISTS (SELECT 1) AND x = ANY ($1)", K::kRead},
    {"SELECT ARRAY[1, 2], ARRAY(SELECT 1), ROW(1, 2)", K::kRead},
    {"SELECT rank() OVER (PARTITION BY a ORDER BY b) FROM t", K::kRead},
    {"SELECT count(*) FILTER (WHERE x > 0) OVER (ORDER BY y) FROM t", K::kRead},
    {"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t", K::kRead},
    {"SELECT * FROM a JOIN b USING (id) JOIN (SELECT 1 AS id) c ON (c.id = a.id)", K::kRead},
    {"SELECT * FROM (VALUES (1), (2)) AS v(x)", K::kRead},
    {"SELECT * FROM generate_series(1, 3) g(i)", K::kRead},
    {"SELECT * FROM unnest($1::text[]) WITH ORDINALITY AS u(v, n)", K::kRead},
    {"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r", K::kRead},
    {"WITH x AS (SELECT 1) SELECT * FROM x", K::kRead},
    {"WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x", K::kRead},
    {"VALUES (1, 'a'), (2, 'b')", K::kRead},
    {"TABLE video_totals", K::kRead},
    {"(SELECT 1) UNION (SELECT 2)", K::kRead},
    {"SHOW work_mem", K::kRead},
    {"show all", K::kRead},
    {"EXPLAIN SELECT 1", K::kRead},
    {"EXPLAIN DELETE FROM t", K::kRead},
    {"EXPLAIN (FORMAT JSON, COSTS off) SELECT nextval('s')", K::kRead},
    {"EXPLAIN (ANALYZE false) DELETE FROM t", K::kRead},
    {"EXPLAIN ANALYZE SELECT count(*) FROM t", K::kRead},
    {"EXPLAIN (ANALYZE, BUFFERS) SELECT 1", K::kRead},
    {"SELECT 'nextval(' ", K::kRead},
    {"SELECT 'it''s; DELETE FROM t'", K::kRead},
    {"SELECT E'\\' ; DELETE FROM t; \\''", K::kRead},
    {"SELECT $$ ; DROP $$", K::kRead},
    {"SELECT $fn$ nextval('s'); $$ $fn$", K::kRead},
    {"SELECT \"nextval\" FROM t", K::kRead},
    {"SELECT 1 -- ; DELETE FROM t\n", K::kRead},
    {"SELECT 1 /* ; DELETE /* nested */ FROM t; */", K::kRead},
    {"SELECT date_trunc('hour', ts), to_char(now(), 'YYYY'), extract(epoch FROM ts) FROM t", K::kRead},
    {"SELECT coalesce(a, 0), nullif(b, 0), greatest(1, 2), least(1, 2), lower(x), upper(x)", K::kRead},
    {"SELECT substring(x FROM 1 FOR 2), trim(both 'x' FROM y), position('a' IN b)", K::kRead},
    {"SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), version(), current_setting('x')", K::kRead},
    {"SELECT jsonb_build_object('a', 1), json_agg(t) FROM t", K::kRead},
    {"SELECT current_timestamp(3), localtimestamp, now() - interval '1 day'", K::kRead},
    {"SELECT * FROM t TABLESAMPLE bernoulli (10) REPEATABLE (1)", K::kRead},
    {"SELECT a FROM t GROUP BY ROLLUP (a), CUBE (b), GROUPING SETS ((a), ())", K::kRead},
    {"SELECT a FROM t ORDER BY (a) DESC", K::kRead},
    {"SELECT x FROM t WHERE a = $1 AND b = $2", K::kRead},
    {"SELECT U&'d\\0061t' , U&\"d\\0061t\" FROM t", K::kRead},
    {"SELECT B'101', X'1F', N'abc'", K::kRead},
    {"SELECT 1.5e10, .5, 3", K::kRead},
    {"SELECT t.* FROM public.video_totals t", K::kRead},
    {"SELECT   1  ;  ;  ", K::kRead},

    // Writes hidden in reads.
    {"SELECT nextval('s')", K::kWrite, false, "nextval"},
    {"SELECT tally_apply_counters('[]'::jsonb)", K::kWrite, false, "tally_apply_counters"},
    {"SELECT public.myfunc()", K::kWrite, false, "public.myfunc"},
    {"SELECT \"Count\"(x) FROM t", K::kWrite, false, "\"Count\""},
    {"SELECT pg_current_wal_lsn()", K::kWrite, false, "pg_current_wal_lsn"},
    {"SELECT * FROM dblink('x', 'y') AS t(a int)", K::kWrite, false, "dblink"},
    {"SELECT a, f (1) FROM t", K::kWrite, false, "f"},
    {"SELECT x FROM t WHERE y IN (SELECT my_schema.writer(1))", K::kWrite, false, "my_schema.writer"},
    {"SELECT a.b.c(1)", K::kWrite, false, "a.b.c"},
    {"SELECT * FROM t FOR UPDATE", K::kWrite, false, "FOR UPDATE"},
    {"SELECT * FROM t FOR NO KEY UPDATE", K::kWrite, false, "FOR NO"},
    {"select * from t for share", K::kWrite, false, "for share"},
    {"SELECT * FROM t FOR KEY SHARE SKIP LOCKED", K::kWrite, false, "FOR KEY"},
    {"SELECT 1 INTO t", K::kWrite, false, "INTO"},
    {"SELECT * INTO TEMP t FROM x", K::kWrite, false, "INTO"},
    {"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", K::kWrite, false, "DELETE"},
    {"WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", K::kWrite, false, "INSERT"},
    {"WITH x AS (UPDATE t SET a = 1 RETURNING a) SELECT * FROM x", K::kWrite, false, "UPDATE"},
    {"VALUES (nextval('s'))", K::kWrite, false, "nextval"},
    {"EXPLAIN ANALYZE DELETE FROM t", K::kWrite, false, "DELETE"},
    {"EXPLAIN (ANALYZE) INSERT INTO t VALUES (1)", K::kWrite, false, "INSERT"},
    {"EXPLAIN ANALYSE SELECT nextval('s')", K::kWrite, false, "nextval"},
    {"EXPLAIN (ANALYZE 'off') UPDATE t SET a = 1", K::kWrite},
    {"SELECT txid_current()", K::kWrite},
    {"SELECT pg_sleep(1)", K::kWrite},
    {"SELECT * FROM t x(a)", K::kWrite},  // alias list without AS: not worth guessing

    // Writes by statement.
    {"INSERT INTO t VALUES (1)", K::kWrite, false, "INSERT"},
    {"UPDATE t SET a = 1", K::kWrite},
    {"DELETE FROM t", K::kWrite},
    {"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", K::kWrite},
    {"COPY t FROM STDIN", K::kWrite, false, "COPY"},
    {"COPY (SELECT 1) TO STDOUT", K::kWrite},
    {"CREATE TABLE t (a int)", K::kWrite},
    {"DROP TABLE t", K::kWrite},
    {"TRUNCATE t", K::kWrite},
    {"VACUUM ANALYZE t", K::kWrite},
    {"CALL p()", K::kWrite},
    {"DO $$ BEGIN PERFORM 1; END $$", K::kWrite},
    {"LOCK TABLE t IN SHARE MODE", K::kWrite},
    {"NOTIFY ch, 'x'", K::kWrite},
    {"SAVEPOINT s", K::kWrite},
    {"RELEASE SAVEPOINT s", K::kWrite},
    {"ROLLBACK TO SAVEPOINT s", K::kWrite},
    {"ROLLBACK WORK TO s", K::kWrite},
    {"COMMIT PREPARED 'gid'", K::kWrite},
    {"ROLLBACK PREPARED 'gid'", K::kWrite},
    {"SET LOCAL statement_timeout = 5", K::kWrite},
    {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", K::kWrite},
    {"SET CONSTRAINTS ALL DEFERRED", K::kWrite},
    {"START something", K::kWrite},
    {"FOO BAR", K::kWrite, false, "FOO"},
    {"$1", K::kWrite},
    {"GRANT SELECT ON t TO analyst", K::kWrite},

    // Unsure text: write.
    {"SELECT 'abc", K::kWrite, false, "'abc"},
    {"SELECT \"abc", K::kWrite},
    {"SELECT $$ abc", K::kWrite},
    {"SELECT $a$ abc $b$", K::kWrite},
    {"SELECT 1 /* open", K::kWrite},
    {"SELECT E'abc\\'", K::kWrite},
    {"SELECT 'a\\' , nextval('s') --'", K::kWrite},  // \' depends on standard_conforming_strings
    {"SELECT (1", K::kWrite},
    {"SELECT 1)", K::kWrite},
    {"SELECT $ 1", K::kWrite},

    // Transactions.
    {"BEGIN", K::kTransactionBegin},
    {"begin isolation level serializable", K::kTransactionBegin},
    {"BEGIN WORK", K::kTransactionBegin},
    {"START TRANSACTION READ ONLY", K::kTransactionBegin},
    {"COMMIT", K::kTransactionEnd},
    {"commit work", K::kTransactionEnd},
    {"END", K::kTransactionEnd},
    {"ROLLBACK", K::kTransactionEnd},
    {"ABORT", K::kTransactionEnd},
    {"COMMIT AND CHAIN", K::kTransactionEnd},
    {"ROLLBACK AND NO CHAIN", K::kTransactionEnd},
    {"PREPARE TRANSACTION 'gid'", K::kTransactionEnd},

    // Session state.
    {"SET search_path = x", K::kSessionState, false, "SET"},
    {"set session statement_timeout to 5", K::kSessionState},
    {"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", K::kSessionState},
    {"SET ROLE analyst", K::kSessionState},
    {"SET TIME ZONE 'UTC'", K::kSessionState},
    {"RESET ALL", K::kSessionState},
    {"DISCARD ALL", K::kSessionState},
    {"LISTEN ch", K::kSessionState},
    {"UNLISTEN *", K::kSessionState},
    {"PREPARE p AS SELECT 1", K::kSessionState},
    {"EXECUTE p(1)", K::kSessionState},
    {"DEALLOCATE ALL", K::kSessionState},
    {"LOAD 'auto_explain'", K::kSessionState},
    {"DECLARE c CURSOR WITH HOLD FOR SELECT 1", K::kSessionState},
    {"FETCH 10 FROM c", K::kSessionState},
    {"MOVE NEXT IN c", K::kSessionState},
    {"CLOSE c", K::kSessionState},
    {"CREATE TEMP TABLE x (a int)", K::kSessionState},
    {"CREATE OR REPLACE TEMPORARY VIEW v AS SELECT 1", K::kSessionState},
    {"CREATE GLOBAL TEMPORARY TABLE x (a int)", K::kSessionState},
    {"SELECT set_config('search_path', 'x', false)", K::kSessionState, false, "set_config"},
    {"SELECT pg_advisory_lock(1)", K::kSessionState, false, "pg_advisory_lock"},
    {"SELECT pg_catalog.set_config('a', 'b', false)", K::kSessionState},
    {"EXPLAIN EXECUTE p(1)", K::kSessionState},
    {"SELECT pg_advisory_xact_lock(1)", K::kWrite},  // transaction-scoped

    // Empty.
    {"", K::kEmpty},
    {"   \n\t ", K::kEmpty},
    {";;", K::kEmpty},
    {"; ; -- nothing\n /* at all */ ;", K::kEmpty},

    // Several statements.
    {"BEGIN; SELECT 1", K::kTransactionBegin, true},
    {"SELECT 1; SELECT 2;", K::kRead, true},
    {"SELECT 1; DELETE FROM t", K::kWrite, true, "DELETE"},
    {"INSERT INTO t VALUES (1); COMMIT", K::kTransactionEnd, true},
    {"BEGIN; INSERT INTO t VALUES (1); COMMIT; BEGIN", K::kTransactionBegin, true},
    {"SET search_path = x; SELECT 1", K::kSessionState, true},
    {"SELECT 1; SELECT 'abc", K::kWrite, true},
    {"CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))", K::kWrite},
    {"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 1 END; END", K::kWrite},
    {"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2", K::kWrite, true},
    {"CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT 1; COMMIT", K::kWrite},
};
// clang-format on

TEST(StatementClassifier, Table) {
  const Classifier classifier;
  EXPECT_GE(std::size(kCases), 80U);
  for (const Case& c : kCases) {
    const Classification got = classifier.classify(c.sql);
    EXPECT_EQ(statement_kind_name(got.kind), statement_kind_name(c.kind))
        << c.sql << "\n  reason: " << got.reason << "\n  evidence: " << got.evidence;
    EXPECT_EQ(got.multi_statement, c.multi) << c.sql;
    if (!c.evidence.empty()) {
      EXPECT_EQ(got.evidence, c.evidence) << c.sql;
    }
    EXPECT_FALSE(got.reason.empty()) << c.sql;
  }
}

TEST(StatementClassifier, ReasonsSayWhy) {
  const Classifier classifier;
  EXPECT_EQ(classifier.classify("SELECT nextval('s')").reason,
            "calls a function not known to be read-only");
  EXPECT_EQ(classifier.classify("SELECT * FROM t FOR UPDATE").reason,
            "locking clause (FOR UPDATE / FOR SHARE)");
  EXPECT_EQ(classifier.classify("SELECT 1 INTO t").reason, "SELECT INTO creates a table");
  EXPECT_EQ(classifier.classify("SELECT 'abc").reason, "unterminated quoted string");
  EXPECT_EQ(classifier.classify("SELECT 1").reason, "read-only statement");
  EXPECT_EQ(classifier.classify("EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1").reason,
            "EXPLAIN ANALYZE executes a statement that is not a sure read");
}

TEST(StatementClassifier, ChainAndReadOnlyTransactionFlags) {
  const Classifier classifier;
  EXPECT_TRUE(classifier.classify("COMMIT AND CHAIN").chain);
  EXPECT_TRUE(classifier.classify("rollback work and chain").chain);
  EXPECT_FALSE(classifier.classify("COMMIT AND NO CHAIN").chain);
  EXPECT_FALSE(classifier.classify("COMMIT").chain);
  EXPECT_TRUE(classifier.classify("BEGIN READ ONLY").read_only_transaction);
  EXPECT_TRUE(classifier.classify("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                  .read_only_transaction);
  EXPECT_FALSE(classifier.classify("BEGIN READ WRITE").read_only_transaction);
  EXPECT_FALSE(classifier.classify("BEGIN").read_only_transaction);
}

TEST(StatementClassifier, ExtraReadOnlyFunctionsFromConfiguration) {
  const Classifier plain;
  const Classifier extended({"tally_read_stats", "tally.range_stats", "MixedCase"});
  EXPECT_EQ(plain.classify("SELECT * FROM tally_read_stats('v', 'view')").kind, K::kWrite);
  EXPECT_EQ(extended.classify("SELECT * FROM tally_read_stats('v', 'view')").kind, K::kRead);
  EXPECT_EQ(extended.classify("SELECT * FROM TALLY_READ_STATS('v')").kind, K::kRead);
  EXPECT_EQ(extended.classify("SELECT tally.range_stats(1)").kind, K::kRead);
  EXPECT_EQ(extended.classify("SELECT TALLY.\"range_stats\"(1)").kind, K::kRead);
  // Unqualified entries do not match other schemas, qualified ones not the bare name.
  EXPECT_EQ(extended.classify("SELECT other.tally_read_stats(1)").kind, K::kWrite);
  EXPECT_EQ(extended.classify("SELECT range_stats(1)").kind, K::kWrite);
  // Quoted names are matched as written, unquoted ones folded.
  EXPECT_EQ(extended.classify("SELECT \"MixedCase\"(1)").kind, K::kRead);
  EXPECT_EQ(extended.classify("SELECT MixedCase(1)").kind, K::kWrite);
  EXPECT_EQ(extended.classify("SELECT tally_apply_counters(1)").kind, K::kWrite);
}

TEST(StatementClassifier, ReadOnlyFunctionLookup) {
  const Classifier classifier({"tally.stats"});
  EXPECT_TRUE(classifier.is_read_only_function("count"));
  EXPECT_TRUE(classifier.is_read_only_function("pg_catalog.count"));
  EXPECT_FALSE(classifier.is_read_only_function("public.count"));
  EXPECT_FALSE(classifier.is_read_only_function("nextval"));
  EXPECT_FALSE(classifier.is_read_only_function("pg_current_wal_lsn"));
  EXPECT_TRUE(classifier.is_read_only_function("tally.stats"));
  const auto builtin = Classifier::builtin_read_only_functions();
  EXPECT_TRUE(std::is_sorted(builtin.begin(), builtin.end()));
  for (std::string_view must : {"count",
                                "sum",
                                "avg",
                                "min",
                                "max",
                                "bool_and",
                                "bool_or",
                                "string_agg",
                                "array_agg",
                                "every",
                                "now",
                                "date_trunc",
                                "date_part",
                                "to_timestamp",
                                "to_char",
                                "abs",
                                "round",
                                "floor",
                                "ceil",
                                "lower",
                                "upper",
                                "length",
                                "substr",
                                "concat",
                                "md5",
                                "generate_series",
                                "pg_is_in_recovery",
                                "pg_last_wal_replay_lsn",
                                "version",
                                "current_setting",
                                "unnest",
                                "jsonb_build_object",
                                "json_agg",
                                "row_number",
                                "rank",
                                "dense_rank",
                                "lag",
                                "lead"}) {
    EXPECT_TRUE(std::binary_search(builtin.begin(), builtin.end(), must)) << must;
  }
  for (std::string_view never :
       {"nextval", "setval", "currval", "lastval", "set_config", "pg_current_wal_lsn",
        "txid_current", "pg_notify", "lo_import", "pg_advisory_lock", "dblink", "pg_sleep"}) {
    EXPECT_FALSE(std::binary_search(builtin.begin(), builtin.end(), never)) << never;
  }
}

TEST(StatementClassifier, EvidencePointsIntoTheInput) {
  const Classifier classifier;
  const std::string sql = "SELECT a, nextval('s') FROM t";
  const Classification got = classifier.classify(sql);
  ASSERT_EQ(got.evidence, "nextval");
  EXPECT_EQ(got.evidence.data(), sql.data() + 10);
}

TEST(StatementClassifier, HintsThenClassification) {
  const Classifier classifier;
  const std::string sql = "/*tally: route=replica, cache_ttl_ms=500*/ SELECT count FROM t";
  Result<HintedStatement> hinted = parse_statement_hints(sql);
  ASSERT_TRUE(hinted.ok());
  const Classification got = classifier.classify(std::string_view(sql).substr(hinted->body_offset));
  EXPECT_EQ(got.kind, K::kRead);
  // Classifying the whole text gives the same answer: the hint is a comment.
  EXPECT_EQ(classifier.classify(sql).kind, K::kRead);
}

TEST(StatementClassifier, LongAndOddInputsDoNotBreakIt) {
  const Classifier classifier;
  std::string long_read = "SELECT ";
  for (int i = 0; i < 2000; ++i) long_read += "count(x" + std::to_string(i) + "), ";
  long_read += "1 FROM t";
  EXPECT_EQ(classifier.classify(long_read).kind, K::kRead);
  std::string deep = "SELECT ";
  for (int i = 0; i < 500; ++i) deep += "(";
  deep += "1";
  for (int i = 0; i < 500; ++i) deep += ")";
  EXPECT_EQ(classifier.classify(deep).kind, K::kRead);
  std::string long_name = "SELECT " + std::string(300, 'a') + "(1)";
  EXPECT_EQ(classifier.classify(long_name).kind, K::kWrite);
  const std::string with_nul("SELECT 1\0; DELETE FROM t", 24);
  EXPECT_EQ(classifier.classify(with_nul).kind, K::kWrite);
  // Every prefix of a tricky statement classifies without crashing.
  const std::string tricky =
      "/*tally: route=any*/ WITH x(a) AS (SELECT E'\\'' || $q$;$q$ || U&\"x\") SELECT "
      "pg_catalog.count(a)::numeric(5,1) FROM x -- end";
  for (std::size_t n = 0; n <= tricky.size(); ++n) {
    (void)classifier.classify(std::string_view(tricky).substr(0, n));
    (void)parse_statement_hints(std::string_view(tricky).substr(0, n));
  }
  EXPECT_EQ(classifier.classify(tricky).kind, K::kRead);
}

}  // namespace
}  // namespace tally::sql
