// Hot-path cost of the shard proxy's per-statement SQL work: hint parsing and classification of a
// pgbench-like point query (the design brief's headline read), with and without a hint comment,
// plus a longer report query and a write disguised as a read.
#include <benchmark/benchmark.h>

#include <string_view>

#include "common/sql/statement_classifier.h"
#include "common/sql/statement_hints.h"

namespace tally::sql {
namespace {

constexpr std::string_view kPointQuery =
    "SELECT count FROM video_totals WHERE video_id = 'abc' AND event_type = 'view'";
constexpr std::string_view kHintedPointQuery =
    "/*tally: route=replica, cache_ttl_ms=500, min_lsn=0/16B3748*/ SELECT count FROM video_totals "
    "WHERE video_id = 'abc' AND event_type = 'view'";
constexpr std::string_view kReport =
    "WITH h AS (SELECT video_id, date_trunc('day', bucket_start) AS day, sum(count) AS views "
    "FROM video_stats_hour WHERE event_type = 'view' AND bucket_start >= $1 AND bucket_start < $2 "
    "GROUP BY 1, 2) SELECT v.title, c.name, h.day, h.views, rank() OVER (PARTITION BY c.channel_id "
    "ORDER BY h.views DESC) AS r FROM h JOIN videos v USING (video_id) JOIN channels c ON "
    "(c.channel_id = v.channel_id) WHERE h.views::numeric(20, 0) > 0 ORDER BY r LIMIT 100";
constexpr std::string_view kApply = "SELECT tally_apply_counters($1::jsonb, $2, $3, $4)";

void BM_ParseHints_None(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(parse_statement_hints(kPointQuery));
}
BENCHMARK(BM_ParseHints_None);

void BM_ParseHints_AllKeys(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(parse_statement_hints(kHintedPointQuery));
}
BENCHMARK(BM_ParseHints_AllKeys);

void BM_Classify_PointQuery(benchmark::State& state) {
  const Classifier classifier;
  for (auto _ : state) benchmark::DoNotOptimize(classifier.classify(kPointQuery));
}
BENCHMARK(BM_Classify_PointQuery);

void BM_HintsAndClassify_HintedPointQuery(benchmark::State& state) {
  const Classifier classifier;
  for (auto _ : state) {
    Result<HintedStatement> hinted = parse_statement_hints(kHintedPointQuery);
    benchmark::DoNotOptimize(classifier.classify(kHintedPointQuery.substr(hinted->body_offset)));
  }
}
BENCHMARK(BM_HintsAndClassify_HintedPointQuery);

void BM_Classify_Report(benchmark::State& state) {
  const Classifier classifier;
  for (auto _ : state) benchmark::DoNotOptimize(classifier.classify(kReport));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kReport.size()));
}
BENCHMARK(BM_Classify_Report);

void BM_Classify_ApplyCall(benchmark::State& state) {
  const Classifier classifier({"tally_read_stats"});
  for (auto _ : state) benchmark::DoNotOptimize(classifier.classify(kApply));
}
BENCHMARK(BM_Classify_ApplyCall);

}  // namespace
}  // namespace tally::sql

BENCHMARK_MAIN();
