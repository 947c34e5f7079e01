#include "cluster_proxy/src/analyst_query.h"

#include <chrono>

#include "common/sql/query_planner.h"
#include "common/sql/result_merge.h"

namespace tally::cluster_proxy {
namespace {

bool text_like(uint32_t oid) {
  return oid == 25 || oid == 1043 || oid == 1042 || oid == 19 || oid == 705;
}

StatementOutcome failure(SqlError e) {
  StatementOutcome o;
  o.kind = StatementOutcome::Kind::kError;
  o.error = std::move(e);
  return o;
}

SqlError plan_error(const sql::PlanError& p) {
  SqlError e;
  e.sqlstate = p.sqlstate;
  e.message = p.message;
  e.hint = p.hint;
  return e;
}

SqlError merge_error(const Error& err) {
  SqlError e;
  e.sqlstate = std::string(error_sqlstate(err.code));
  if (err.code == ErrorCode::kResourceExhausted) e.sqlstate = "54000";
  if (err.code == ErrorCode::kInvalidArgument) e.sqlstate = "22003";
  e.message = err.message;
  return e;
}

bool targets_for(const std::vector<std::size_t>& shards, const Routing& routing,
                 std::vector<ShardTarget>& targets, SqlError& error) {
  for (std::size_t i : shards) {
    const auto& route = routing.shards.at(i);
    if (route.proxies.empty()) {
      error.sqlstate = "08006";
      error.message = "shard " + route.name + " has no shard proxy";
      return false;
    }
    targets.push_back(ShardTarget{route.name, route.proxies.front()});
  }
  return true;
}

std::chrono::steady_clock::time_point deadline_of(const AnalystConfig& config) {
  return std::chrono::steady_clock::now() + std::chrono::milliseconds(config.statement_timeout_ms);
}

}  // namespace

std::vector<std::optional<std::string>> routing_values(const ShardParams& params) {
  std::vector<std::optional<std::string>> out;
  for (std::size_t i = 0; i < params.values.size(); ++i) {
    const bool text = params.formats[i] == 0 || text_like(params.types[i]);
    out.push_back(text ? params.values[i] : std::nullopt);
  }
  return out;
}

StatementOutcome run_analyst_statement(AnalystExecutor& executor, const TopologyCache& topology,
                                       const AnalystConfig& config, std::string_view sql_text,
                                       const ShardParams* params) {
  auto routing = topology.routing();
  sql::QueryPlan plan =
      sql::plan_query(sql_text, routing->map,
                      params ? routing_values(*params) : std::vector<std::optional<std::string>>{});
  StatementOutcome out;
  switch (plan.kind) {
    case sql::QueryPlan::Kind::kEmpty:
      out.kind = StatementOutcome::Kind::kEmpty;
      return out;
    case sql::QueryPlan::Kind::kNoop:
      out.kind = StatementOutcome::Kind::kCommand;
      out.command_tag = plan.command_tag;
      return out;
    case sql::QueryPlan::Kind::kError:
      return failure(plan_error(plan.error));
    case sql::QueryPlan::Kind::kAnyShard:
      plan.shards = {0};
      break;
    case sql::QueryPlan::Kind::kShards:
      break;
  }
  SqlError error;
  std::vector<ShardTarget> targets;
  if (!targets_for(plan.shards, *routing, targets, error)) return failure(std::move(error));
  const auto deadline = deadline_of(config);
  // Parameters the rewritten statement no longer uses (one only HAVING needed) go as typed NULLs:
  // an untyped parameter nothing refers to is an error in PostgreSQL.
  ShardParams shard_params;
  if (params != nullptr) {
    shard_params = *params;
    const auto used = sql::parameters_used(plan.shard_sql);
    for (std::size_t i = 0; i < shard_params.values.size(); ++i) {
      if (used.count(static_cast<int>(i) + 1)) continue;
      shard_params.values[i] = std::nullopt;
      shard_params.types[i] = 25;
      shard_params.formats[i] = 0;
    }
  }
  std::vector<ShardAnswer> answers;
  if (!executor.run(targets, plan.shard_sql, params ? &shard_params : nullptr, deadline, answers,
                    error)) {
    return failure(std::move(error));
  }
  if (targets.size() == 1 && !plan.merge.combine && plan.merge.hidden_columns == 0) {
    // Verbatim on one shard: its answer as is.
    auto& a = answers.front();
    if (a.result.columns.empty() && a.result.rows.empty() &&
        a.command_tag.rfind("SELECT", 0) != 0 && a.command_tag != "SHOW") {
      out.kind = StatementOutcome::Kind::kCommand;
      out.command_tag = a.command_tag;
      return out;
    }
    out.kind = StatementOutcome::Kind::kRows;
    out.result = std::move(a.result);
    out.command_tag = a.command_tag;
    return out;
  }
  std::vector<sql::ResultSet> results;
  for (auto& a : answers) results.push_back(std::move(a.result));
  const auto max_rows = static_cast<std::size_t>(config.max_result_rows);
  auto combined = sql::combine_results(plan.merge, std::move(results), max_rows);
  if (!combined.ok()) return failure(merge_error(combined.error()));
  if (plan.merge.having) {
    // HAVING over the combined groups, evaluated by PostgreSQL itself on one shard.
    auto query = sql::having_query(plan.merge, *combined, params ? params->values.size() : 0);
    if (!query.ok()) return failure(merge_error(query.error()));
    ShardParams hp;
    for (int n : query->user_parameters) {
      hp.values.push_back(params->values.at(n - 1));
      hp.types.push_back(params->types.at(n - 1));
      hp.formats.push_back(params->formats.at(n - 1));
    }
    for (std::size_t i = 0; i < query->arrays.size(); ++i) {
      hp.values.push_back(query->arrays[i]);
      hp.types.push_back(query->array_types[i]);
      hp.formats.push_back(0);
    }
    std::vector<ShardAnswer> kept;
    if (!executor.run({targets.front()}, query->sql, &hp, deadline, kept, error)) {
      return failure(std::move(error));
    }
    sql::filter_groups(*combined, kept.front().result);
  }
  auto merged = sql::finish_results(plan.merge, std::move(*combined));
  if (!merged.ok()) return failure(merge_error(merged.error()));
  out.kind = StatementOutcome::Kind::kRows;
  out.command_tag = "SELECT " + std::to_string(merged->rows.size());
  out.result = std::move(*merged);
  return out;
}

bool describe_analyst_statement(AnalystExecutor& executor, const TopologyCache& topology,
                                const AnalystConfig& config, std::string_view sql_text,
                                const std::vector<uint32_t>& declared_types,
                                StatementDescription& out, SqlError& error) {
  auto routing = topology.routing();
  sql::QueryPlan plan = sql::plan_query(sql_text, routing->map);
  out = StatementDescription{};
  switch (plan.kind) {
    case sql::QueryPlan::Kind::kEmpty:
    case sql::QueryPlan::Kind::kNoop:
      return true;
    case sql::QueryPlan::Kind::kError:
      if (plan.error.sqlstate == "42601") {  // PostgreSQL refuses a syntax error at Parse too
        error = plan_error(plan.error);
        return false;
      }
      // Refused as planned without parameter values; a bound value may still pin it. The shard
      // describes it as a single PostgreSQL would.
      plan.shards = {0};
      break;
    case sql::QueryPlan::Kind::kAnyShard:
      plan.shards = {0};
      break;
    case sql::QueryPlan::Kind::kShards:
      break;
  }
  std::vector<ShardTarget> targets;
  if (!targets_for({plan.shards.front()}, *routing, targets, error)) return false;
  return executor.describe(targets.front(), std::string(sql_text), declared_types,
                           deadline_of(config), out, error);
}

}  // namespace tally::cluster_proxy
