#include "common/sql/query_planner.h"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "common/keyspace/ksid.h"

namespace tally::sql {
namespace {

using nlohmann::json;

constexpr std::string_view kFeatureNotSupported = "0A000";
constexpr std::string_view kReadOnly = "25006";

struct Token {
  int start = 0;
  int end = 0;
  int type = 0;   // PgQuery__Token
  int depth = 0;  // parenthesis depth before the token
};

QueryPlan refuse(std::string_view sqlstate, std::string message, std::string hint = "") {
  QueryPlan p;
  p.kind = QueryPlan::Kind::kError;
  p.error.sqlstate = std::string(sqlstate);
  p.error.message = std::move(message);
  p.error.hint = std::move(hint);
  return p;
}

QueryPlan unsupported(std::string construct, std::string hint) {
  return refuse(kFeatureNotSupported,
                "cross-shard queries do not support " + construct + " (the query spans shards)",
                std::move(hint));
}

// SET is accepted and ignored (drivers and BI tools send SETs when they connect; the shards'
// pooled connections cannot carry a session's settings), except for the settings that would change
// what a query returns. Those are refused rather than silently ignored, unless the value is what
// every shard already uses: TimeZone UTC (tallyctl and docker compose configure it),
// DateStyle ISO with MDY order, IntervalStyle postgres, and extra_float_digits >= 1 (shortest exact
// float output since PostgreSQL 12).
std::optional<QueryPlan> refuse_result_changing_set(const json& body) {
  const std::string kind = body.value("kind", "");
  if (kind != "VAR_SET_VALUE") return std::nullopt;  // RESET, SET ... TO DEFAULT, SET LOCAL ...
  const std::string name = body.value("name", "");
  std::vector<std::string> texts;
  std::optional<long long> number;
  if (body.contains("args")) {
    for (const auto& arg : body["args"]) {
      if (!arg.contains("A_Const"))
        return refuse(kFeatureNotSupported, "SET " + name + " to an expression is not supported");
      const json& c = arg["A_Const"];
      if (c.contains("sval")) {
        texts.push_back(c["sval"].value("sval", ""));
      } else if (c.contains("ival")) {
        number = c["ival"].value("ival", 0LL);
        texts.push_back(std::to_string(*number));
      } else if (c.contains("fval")) {
        texts.push_back(c["fval"].value("fval", ""));
      }
    }
  }
  std::string value;
  for (const auto& t : texts) value += (value.empty() ? "" : ", ") + t;
  std::string lower;
  for (char ch : value) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  auto refused = [&](const std::string& what, const std::string& hint) {
    return refuse(kFeatureNotSupported,
                  "SET " + name + " TO '" + value + "' is not supported: " + what, hint);
  };
  if (name == "timezone") {
    static const char* const kUtc[] = {"utc",  "etc/utc", "gmt",       "etc/gmt",       "z",
                                       "zulu", "uct",     "universal", "etc/universal", "0",
                                       "+00",  "+00:00"};
    for (const char* u : kUtc) {
      if (lower == u) return std::nullopt;
    }
    return refused("every shard answers in UTC, and a session time zone cannot be carried to them",
                   "convert in the query instead, e.g. ts AT TIME ZONE '" + value + "'");
  }
  if (name == "datestyle") {
    bool other = false;
    for (const auto& t : texts) {
      std::string part;
      for (char ch : t) {
        if (ch == ',' || ch == ' ') {
          other = other || !(part.empty() || part == "iso" || part == "mdy" || part == "us");
          part.clear();
        } else {
          part += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        }
      }
      other = other || !(part.empty() || part == "iso" || part == "mdy" || part == "us");
    }
    if (!other) return std::nullopt;
    return refused("every shard uses DateStyle 'ISO, MDY'",
                   "format dates in the query instead, e.g. to_char(ts, 'DD.MM.YYYY')");
  }
  if (name == "intervalstyle") {
    if (lower == "postgres") return std::nullopt;
    return refused("every shard uses IntervalStyle postgres",
                   "format intervals in the query instead");
  }
  if (name == "extra_float_digits") {
    if (number && *number >= 1) return std::nullopt;
    return refused("every shard prints floats with extra_float_digits 1 (shortest exact)",
                   "round in the query instead, e.g. round(x::numeric, 6)");
  }
  return std::nullopt;
}

std::vector<Token> scan(const std::string& sql) {
  std::vector<Token> out;
  PgQueryScanResult r = pg_query_scan(sql.c_str());
  if (r.error == nullptr) {
    PgQuery__ScanResult* s = pg_query__scan_result__unpack(
        nullptr, r.pbuf.len, reinterpret_cast<const uint8_t*>(r.pbuf.data));
    if (s != nullptr) {
      int depth = 0;
      for (std::size_t i = 0; i < s->n_tokens; ++i) {
        Token t;
        t.start = s->tokens[i]->start;
        t.end = s->tokens[i]->end;
        t.type = s->tokens[i]->token;
        if (t.type == PG_QUERY__TOKEN__ASCII_41) --depth;
        t.depth = depth;
        if (t.type == PG_QUERY__TOKEN__ASCII_40) ++depth;
        out.push_back(t);
      }
      pg_query__scan_result__free_unpacked(s, nullptr);
    }
  }
  pg_query_free_scan_result(r);
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The statement text, its tokens and helpers over token ranges [b, e).
struct Text {
  std::string sql;
  std::vector<Token> tokens;

  std::string span(std::size_t b, std::size_t e) const {
    if (b >= e) return "";
    return sql.substr(tokens[b].start, tokens[e - 1].end - tokens[b].start);
  }
  // Token texts without whitespace, keywords and identifiers lowercased: for comparing expressions.
  std::string normalized(std::size_t b, std::size_t e) const {
    std::string out;
    for (std::size_t i = b; i < e; ++i) {
      std::string t = sql.substr(tokens[i].start, tokens[i].end - tokens[i].start);
      if (t.empty() || (t[0] != '\'' && t[0] != '"')) t = lower(t);
      if (!out.empty()) out += ' ';
      out += t;
    }
    return out;
  }
  std::string token_text(std::size_t i) const {
    return lower(sql.substr(tokens[i].start, tokens[i].end - tokens[i].start));
  }
  // Splits [b, e) at commas of depth `depth`.
  std::vector<std::pair<std::size_t, std::size_t>> split(std::size_t b, std::size_t e,
                                                         int depth) const {
    std::vector<std::pair<std::size_t, std::size_t>> parts;
    std::size_t s = b;
    for (std::size_t i = b; i < e; ++i) {
      if (tokens[i].type == PG_QUERY__TOKEN__ASCII_44 && tokens[i].depth == depth) {
        parts.emplace_back(s, i);
        s = i + 1;
      }
    }
    if (s < e) parts.emplace_back(s, e);
    return parts;
  }
};

const std::set<std::string, std::less<>>& aggregate_names() {
  static const std::set<std::string, std::less<>> names = {"count",
                                                           "sum",
                                                           "min",
                                                           "max",
                                                           "avg",
                                                           "string_agg",
                                                           "array_agg",
                                                           "stddev",
                                                           "stddev_pop",
                                                           "stddev_samp",
                                                           "variance",
                                                           "var_pop",
                                                           "var_samp",
                                                           "bool_and",
                                                           "bool_or",
                                                           "every",
                                                           "bit_and",
                                                           "bit_or",
                                                           "bit_xor",
                                                           "json_agg",
                                                           "jsonb_agg",
                                                           "json_object_agg",
                                                           "jsonb_object_agg",
                                                           "percentile_cont",
                                                           "percentile_disc",
                                                           "mode",
                                                           "corr",
                                                           "covar_pop",
                                                           "covar_samp",
                                                           "regr_avgx",
                                                           "regr_avgy",
                                                           "regr_count",
                                                           "regr_intercept",
                                                           "regr_r2",
                                                           "regr_slope",
                                                           "regr_sxx",
                                                           "regr_sxy",
                                                           "regr_syy",
                                                           "xmlagg",
                                                           "range_agg",
                                                           "range_intersect_agg",
                                                           "any_value"};
  return names;
}

std::string func_name(const json& fc) {
  const auto& names = fc.value("funcname", json::array());
  if (names.empty()) return "";
  return lower(names.back()["String"].value("sval", ""));
}

bool is_aggregate_call(const json& node) {
  if (!node.is_object() || !node.contains("FuncCall")) return false;
  const auto& fc = node["FuncCall"];
  if (fc.contains("over")) return false;
  return aggregate_names().count(func_name(fc)) > 0;
}

bool contains(const json& node, const std::function<bool(const json&)>& pred) {
  if (pred(node)) return true;
  if (node.is_object() || node.is_array()) {
    for (const auto& child : node) {
      if (contains(child, pred)) return true;
    }
  }
  return false;
}

bool contains_aggregate(const json& node) {
  return contains(node, is_aggregate_call);
}

bool contains_window(const json& node) {
  return contains(node, [](const json& n) {
    return n.is_object() && n.contains("FuncCall") && n["FuncCall"].contains("over");
  });
}

bool contains_sublink(const json& node) {
  return contains(node, [](const json& n) { return n.is_object() && n.contains("SubLink"); });
}

void collect_sharded(const json& node, int& count) {
  if (node.is_object()) {
    if (node.contains("RangeVar")) {
      const auto& rv = node["RangeVar"];
      std::string schema = rv.value("schemaname", "");
      if ((schema.empty() || schema == "public") && is_sharded_table(rv.value("relname", ""))) {
        ++count;
      }
    }
    for (const auto& child : node) collect_sharded(child, count);
  } else if (node.is_array()) {
    for (const auto& child : node) collect_sharded(child, count);
  }
}

// Union-find over the names of the sharded tables in FROM (alias, else relation name).
struct Tables {
  std::map<std::string, std::string> parent;
  int top_level_sharded = 0;

  std::string find(const std::string& a) {
    auto it = parent.find(a);
    if (it == parent.end()) return a;
    if (it->second == a) return a;
    std::string r = find(it->second);
    parent[a] = r;
    return r;
  }
  void unite(const std::string& a, const std::string& b) {
    if (!parent.count(a) || !parent.count(b)) return;
    parent[find(a)] = find(b);
  }
  bool connected() {
    std::set<std::string> roots;
    for (const auto& [name, p] : parent) roots.insert(find(name));
    return roots.size() <= 1;
  }
};

// Column reference `alias.video_id` or `video_id`: the qualifier ("" if none), else nullopt.
std::optional<std::string> video_id_ref(const json& node) {
  if (!node.is_object() || !node.contains("ColumnRef")) return std::nullopt;
  const auto& fields = node["ColumnRef"].value("fields", json::array());
  if (fields.empty() || !fields.back().contains("String")) return std::nullopt;
  if (lower(fields.back()["String"].value("sval", "")) != "video_id") return std::nullopt;
  if (fields.size() >= 2 && fields[fields.size() - 2].contains("String")) {
    return fields[fields.size() - 2]["String"].value("sval", "");
  }
  return std::string();
}

std::vector<json> conjuncts(const json& where) {
  std::vector<json> out;
  if (where.is_null()) return out;
  if (where.contains("BoolExpr") && where["BoolExpr"].value("boolop", "") == "AND_EXPR") {
    for (const auto& a : where["BoolExpr"]["args"]) {
      auto sub = conjuncts(a);
      out.insert(out.end(), sub.begin(), sub.end());
    }
  } else {
    out.push_back(where);
  }
  return out;
}

bool is_equals(const json& aexpr) {
  const auto& name = aexpr.value("name", json::array());
  return aexpr.value("kind", "") == "AEXPR_OP" && name.size() == 1 && name[0].contains("String") &&
         name[0]["String"].value("sval", "") == "=";
}

// Joins on video_id from a qual expression.
void unite_on(const json& qual, Tables& tables) {
  for (const auto& c : conjuncts(qual)) {
    if (!c.contains("A_Expr") || !is_equals(c["A_Expr"])) continue;
    auto l = video_id_ref(c["A_Expr"].value("lexpr", json()));
    auto r = video_id_ref(c["A_Expr"].value("rexpr", json()));
    if (l && r && !l->empty() && !r->empty()) tables.unite(*l, *r);
  }
}

void sharded_names(const json& item, std::vector<std::string>& out) {
  if (item.contains("RangeVar")) {
    const auto& rv = item["RangeVar"];
    if (is_sharded_table(rv.value("relname", ""))) {
      out.push_back(rv.contains("alias") ? rv["alias"].value("aliasname", "")
                                         : rv.value("relname", ""));
    }
  } else if (item.contains("JoinExpr")) {
    sharded_names(item["JoinExpr"]["larg"], out);
    sharded_names(item["JoinExpr"]["rarg"], out);
  }
}

void collect_from(const json& item, Tables& tables) {
  if (item.contains("RangeVar")) {
    const auto& rv = item["RangeVar"];
    if (is_sharded_table(rv.value("relname", ""))) {
      std::string name =
          rv.contains("alias") ? rv["alias"].value("aliasname", "") : rv.value("relname", "");
      tables.parent[name] = name;
      ++tables.top_level_sharded;
    }
  } else if (item.contains("JoinExpr")) {
    const auto& j = item["JoinExpr"];
    collect_from(j["larg"], tables);
    collect_from(j["rarg"], tables);
    bool using_video_id = false;
    for (const auto& u : j.value("usingClause", json::array())) {
      if (lower(u["String"].value("sval", "")) == "video_id") using_video_id = true;
    }
    if (using_video_id) {
      std::vector<std::string> l, r;
      sharded_names(j["larg"], l);
      sharded_names(j["rarg"], r);
      for (const auto& a : l) {
        for (const auto& b : r) tables.unite(a, b);
      }
    }
    if (j.contains("quals")) unite_on(j["quals"], tables);
  }
}

// A literal or bound parameter usable as a shard key value.
std::optional<std::string> key_value(const json& node,
                                     const std::vector<std::optional<std::string>>& params) {
  if (node.contains("A_Const") && node["A_Const"].contains("sval")) {
    return node["A_Const"]["sval"].value("sval", "");
  }
  if (node.contains("TypeCast")) return key_value(node["TypeCast"]["arg"], params);
  if (node.contains("ParamRef")) {
    int n = node["ParamRef"].value("number", 0);
    if (n >= 1 && static_cast<std::size_t>(n) <= params.size() && params[n - 1]) {
      return params[n - 1];
    }
  }
  return std::nullopt;
}

// The video ids a WHERE clause pins (a top-level `video_id = v` or `video_id IN (...)`).
std::optional<std::vector<std::string>> pinned_ids(
    const json& where, const std::vector<std::optional<std::string>>& params) {
  for (const auto& c : conjuncts(where)) {
    if (!c.contains("A_Expr")) continue;
    const auto& e = c["A_Expr"];
    if (is_equals(e)) {
      json l = e.value("lexpr", json());
      json r = e.value("rexpr", json());
      if (!video_id_ref(l)) std::swap(l, r);
      if (!video_id_ref(l)) continue;
      if (auto v = key_value(r, params)) return std::vector<std::string>{*v};
    } else if (e.value("kind", "") == "AEXPR_IN" && video_id_ref(e.value("lexpr", json())) &&
               e["name"][0]["String"].value("sval", "") == "=") {
      std::vector<std::string> ids;
      bool all = true;
      for (const auto& item : e["rexpr"]["List"]["items"]) {
        auto v = key_value(item, params);
        if (!v) {
          all = false;
          break;
        }
        ids.push_back(*v);
      }
      if (all && !ids.empty()) return ids;
    }
  }
  return std::nullopt;
}

std::optional<int64_t> int_const(const json& node, bool& is_null) {
  is_null = false;
  if (!node.contains("A_Const")) return std::nullopt;
  const auto& c = node["A_Const"];
  if (c.value("isnull", false)) {
    is_null = true;
    return std::nullopt;
  }
  if (c.contains("ival")) return c["ival"].value("ival", int64_t{0});
  return std::nullopt;
}

std::string target_default_name(const json& val) {
  if (val.contains("ColumnRef")) {
    const auto& f = val["ColumnRef"]["fields"];
    if (!f.empty() && f.back().contains("String")) return f.back()["String"].value("sval", "");
  }
  if (val.contains("FuncCall")) return func_name(val["FuncCall"]);
  if (val.contains("TypeCast")) {
    std::string inner = target_default_name(val["TypeCast"]["arg"]);
    if (inner != "?column?") return inner;
    const auto& names = val["TypeCast"]["typeName"]["names"];
    if (!names.empty()) return names.back()["String"].value("sval", "?column?");
  }
  return "?column?";
}

struct Target {
  json res;                  // the ResTarget
  std::size_t b = 0, e = 0;  // tokens of the whole item
  std::size_t expr_e = 0;    // end of the expression (before [AS] alias)
  std::string alias;
  bool star = false;
  bool aggregate = false;  // a top-level aggregate call
};

QueryPlan plan_select(const Text& text, const json& sel, const ShardMap& map,
                      const std::vector<std::optional<std::string>>& params) {
  int sharded_total = 0;
  collect_sharded(sel, sharded_total);
  if (sharded_total == 0) {
    QueryPlan p;
    p.kind = QueryPlan::Kind::kAnyShard;
    p.shard_sql = text.sql;
    return p;
  }
  if (sel.value("op", "SETOP_NONE") != "SETOP_NONE") {
    return unsupported("UNION, INTERSECT or EXCEPT over sharded tables",
                       "run each branch as its own query and combine them in the client");
  }
  if (sel.contains("withClause")) {
    return unsupported("WITH (common table expressions) over sharded tables",
                       "inline the CTE as a join, or run it as its own query");
  }
  if (sel.contains("intoClause")) {
    return refuse(kReadOnly, "cannot execute SELECT INTO in a read-only transaction");
  }
  if (sel.contains("lockingClause")) {
    return refuse(kReadOnly, "cannot execute SELECT FOR UPDATE/SHARE in a read-only transaction");
  }
  Tables tables;
  for (const auto& item : sel.value("fromClause", json::array())) collect_from(item, tables);
  if (tables.top_level_sharded != sharded_total) {
    return unsupported("subqueries over sharded tables",
                       "join the sharded tables on video_id in the outer FROM instead");
  }
  if (sel.contains("whereClause")) unite_on(sel["whereClause"], tables);
  if (!tables.connected()) {
    return unsupported("joins of sharded tables other than on video_id",
                       "join sharded tables with a.video_id = b.video_id (or USING (video_id))");
  }

  // Routing.
  QueryPlan plan;
  plan.kind = QueryPlan::Kind::kShards;
  std::set<std::size_t> shards;
  if (auto ids = pinned_ids(sel.value("whereClause", json()), params)) {
    for (const auto& id : *ids) shards.insert(map.index_for(ksid_for(id)));
  } else {
    for (std::size_t i = 0; i < map.size(); ++i) shards.insert(i);
  }
  plan.shards.assign(shards.begin(), shards.end());
  if (plan.shards.size() == 1) {
    plan.shard_sql = text.sql;
    return plan;
  }

  // Cross-shard: find the clauses of the top-level SELECT in the token stream.
  const auto& toks = text.tokens;
  std::size_t select_tok = toks.size();
  for (std::size_t i = 0; i < toks.size(); ++i) {
    if (toks[i].depth == 0 && toks[i].type == PG_QUERY__TOKEN__SELECT) {
      select_tok = i;
      break;
    }
  }
  if (select_tok == toks.size()) {
    return unsupported("this form of SELECT (parenthesised or VALUES)", "write a plain SELECT");
  }
  auto find_kw = [&](int type, std::size_t from) {
    for (std::size_t i = from; i < toks.size(); ++i) {
      if (toks[i].depth == 0 && toks[i].type == type) return i;
    }
    return toks.size();
  };
  std::size_t end = toks.size();
  while (end > 0 && toks[end - 1].type == ';') --end;
  const std::size_t from_tok = find_kw(PG_QUERY__TOKEN__FROM, select_tok);
  const std::size_t group_tok = find_kw(PG_QUERY__TOKEN__GROUP_P, from_tok);
  const std::size_t having_tok = find_kw(PG_QUERY__TOKEN__HAVING, from_tok);
  const std::size_t order_tok = find_kw(PG_QUERY__TOKEN__ORDER, from_tok);
  std::size_t tail_tok = end;  // first of ORDER/LIMIT/OFFSET/FETCH
  for (int kw : {PG_QUERY__TOKEN__ORDER, PG_QUERY__TOKEN__LIMIT, PG_QUERY__TOKEN__OFFSET,
                 PG_QUERY__TOKEN__FETCH, PG_QUERY__TOKEN__WINDOW}) {
    tail_tok = std::min(tail_tok, find_kw(kw, from_tok));
  }
  std::size_t order_end = end;
  for (int kw : {PG_QUERY__TOKEN__LIMIT, PG_QUERY__TOKEN__OFFSET, PG_QUERY__TOKEN__FETCH}) {
    order_end = std::min(order_end, find_kw(kw, order_tok));
  }

  if (sel.contains("distinctClause")) {
    return unsupported("SELECT DISTINCT", "use GROUP BY over the selected columns instead");
  }
  if (contains_window(sel)) {
    return unsupported("window functions",
                       "pin the query to one video_id, or compute ranks in the client");
  }
  if (contains_sublink(sel)) {
    return unsupported("subqueries", "join instead, or run the subquery as its own query");
  }
  if (sel.value("limitOption", "") == "LIMIT_OPTION_WITH_TIES") {
    return unsupported("FETCH ... WITH TIES", "use LIMIT");
  }

  // Targets.
  std::vector<Target> targets;
  const auto& tl = sel.value("targetList", json::array());
  auto parts = text.split(select_tok + 1, from_tok, 0);
  if (parts.size() != tl.size()) {
    return unsupported("this select list", "write a plain list of expressions");
  }
  for (std::size_t i = 0; i < tl.size(); ++i) {
    Target t;
    t.res = tl[i]["ResTarget"];
    t.b = parts[i].first;
    t.e = parts[i].second;
    t.expr_e = t.e;
    t.alias = t.res.value("name", "");
    if (!t.alias.empty() && t.expr_e > t.b) {
      --t.expr_e;  // the alias
      if (t.expr_e > t.b && toks[t.expr_e - 1].type == PG_QUERY__TOKEN__AS) --t.expr_e;
    }
    const json& val = t.res["val"];
    t.star = val.contains("ColumnRef") &&
             contains(val, [](const json& n) { return n.is_object() && n.contains("A_Star"); });
    t.aggregate = is_aggregate_call(val);
    targets.push_back(std::move(t));
  }

  // LIMIT / OFFSET.
  bool is_null = false;
  if (sel.contains("limitCount")) {
    auto v = int_const(sel["limitCount"], is_null);
    if (!v && !is_null) return unsupported("LIMIT with an expression", "use an integer literal");
    if (v) plan.merge.limit = *v;
  }
  if (sel.contains("limitOffset")) {
    auto v = int_const(sel["limitOffset"], is_null);
    if (!v && !is_null) return unsupported("OFFSET with an expression", "use an integer literal");
    if (v) plan.merge.offset = *v;
  }
  if ((plan.merge.limit && *plan.merge.limit < 0) || plan.merge.offset < 0) {
    return refuse("2201W", "LIMIT and OFFSET must not be negative");
  }

  const auto& group = sel.value("groupClause", json::array());
  bool aggregated = !group.empty() || sel.contains("havingClause");
  for (const auto& t : targets) aggregated = aggregated || contains_aggregate(t.res["val"]);
  for (const auto& g : group) {
    if (g.contains("GroupingSet")) {
      return unsupported("GROUPING SETS, ROLLUP and CUBE", "run one query per grouping");
    }
  }
  // Grouped by the shard key: every group lives on one shard, so groups concatenate.
  bool grouped_by_key = false;
  for (const auto& g : group) {
    bool null_ = false;
    if (video_id_ref(g)) grouped_by_key = true;
    if (auto k = int_const(g, null_)) {
      if (*k >= 1 && static_cast<std::size_t>(*k) <= targets.size() &&
          video_id_ref(targets[*k - 1].res["val"])) {
        grouped_by_key = true;
      }
    }
  }

  // Sort items as token ranges (expression only).
  const auto& sort_clause = sel.value("sortClause", json::array());
  std::vector<std::pair<std::size_t, std::size_t>> sort_parts;
  if (!sort_clause.empty()) {
    if (order_tok + 2 > order_end) return unsupported("this ORDER BY", "write ORDER BY expr");
    sort_parts = text.split(order_tok + 2, order_end, 0);
    if (sort_parts.size() != sort_clause.size()) {
      return unsupported("this ORDER BY", "write ORDER BY expr [ASC|DESC] [NULLS FIRST|LAST]");
    }
    for (auto& [b, e] : sort_parts) {
      static const std::set<std::string> trailing = {"asc", "desc", "nulls", "first", "last"};
      while (e > b && trailing.count(text.token_text(e - 1))) --e;
    }
  }
  auto sort_key = [&](std::size_t i, int column, bool from_end) {
    const auto& sb = sort_clause[i]["SortBy"];
    SortKey k;
    k.column = column;
    k.from_end = from_end;
    k.descending = sb.value("sortby_dir", "") == "SORTBY_DESC";
    std::string nulls = sb.value("sortby_nulls", "SORTBY_NULLS_DEFAULT");
    k.nulls_first =
        nulls == "SORTBY_NULLS_FIRST" || (nulls == "SORTBY_NULLS_DEFAULT" && k.descending);
    return k;
  };
  for (const auto& s : sort_clause) {
    if (s["SortBy"].value("sortby_dir", "") == "SORTBY_USING") {
      return unsupported("ORDER BY ... USING", "use ASC or DESC");
    }
  }
  auto alias_index = [&](const json& node) -> std::optional<std::size_t> {
    if (!node.contains("ColumnRef")) return std::nullopt;
    const auto& f = node["ColumnRef"]["fields"];
    if (f.size() != 1 || !f[0].contains("String")) return std::nullopt;
    std::string name = f[0]["String"].value("sval", "");
    for (std::size_t i = 0; i < targets.size(); ++i) {
      if (!targets[i].alias.empty() && targets[i].alias == name) return i;
    }
    // An output column named after a plain column reference.
    for (std::size_t i = 0; i < targets.size(); ++i) {
      if (targets[i].alias.empty() && !targets[i].star &&
          targets[i].res["val"].contains("ColumnRef") &&
          target_default_name(targets[i].res["val"]) == name) {
        return i;
      }
    }
    return std::nullopt;
  };

  if (!aggregated || grouped_by_key) {
    // Concatenate, merge-sorting when ordered; LIMIT + OFFSET pushed down.
    std::string hidden;
    int nhidden = 0;
    std::vector<SortKey> keys;
    for (std::size_t i = 0; i < sort_clause.size(); ++i) {
      const json& node = sort_clause[i]["SortBy"]["node"];
      bool null_ = false;
      if (auto k = int_const(node, null_)) {
        keys.push_back(sort_key(i, static_cast<int>(*k - 1), false));
        continue;
      }
      if (auto a = alias_index(node)) {
        for (std::size_t j = 0; j <= *a; ++j) {
          if (targets[j].star) {
            return unsupported("ORDER BY an alias after * in the select list",
                               "order by the expression or by position");
          }
        }
        keys.push_back(sort_key(i, static_cast<int>(*a), false));
        continue;
      }
      hidden += ", " + text.span(sort_parts[i].first, sort_parts[i].second) + " AS __tally_sort" +
                std::to_string(nhidden);
      keys.push_back(sort_key(i, nhidden, true));
      ++nhidden;
    }
    for (auto& k : keys) {
      if (k.from_end) k.column = nhidden - k.column;  // 1-based from the end
    }
    plan.merge.sort = keys;
    plan.merge.hidden_columns = nhidden;
    std::string sql =
        text.span(select_tok, from_tok) + hidden + " " + text.span(from_tok, tail_tok);
    if (!sort_clause.empty()) sql += " " + text.span(order_tok, order_end);
    if (plan.merge.limit) sql += " LIMIT " + std::to_string(*plan.merge.limit + plan.merge.offset);
    plan.shard_sql = sql;
    return plan;
  }

  // Partial aggregates combined at the proxy.
  std::vector<std::string> group_exprs;
  {
    auto gparts = text.split(group_tok + 2, std::min({having_tok, tail_tok, end}), 0);
    if (group_tok < toks.size() && gparts.size() != group.size()) {
      return unsupported("this GROUP BY", "write GROUP BY expr, ...");
    }
    for (std::size_t i = 0; i < group.size(); ++i) {
      bool null_ = false;
      if (auto k = int_const(group[i], null_)) {
        if (*k < 1 || static_cast<std::size_t>(*k) > targets.size()) {
          return refuse("42P10",
                        "GROUP BY position " + std::to_string(*k) + " is not in select list");
        }
        const auto& t = targets[*k - 1];
        group_exprs.push_back(text.span(t.b, t.expr_e));
      } else if (auto a = alias_index(group[i])) {
        group_exprs.push_back(text.span(targets[*a].b, targets[*a].expr_e));
      } else {
        group_exprs.push_back(text.span(gparts[i].first, gparts[i].second));
      }
    }
  }
  std::string select = "SELECT ";
  int col = 0;
  auto add = [&](const std::string& expr) {
    if (col > 0) select += ", ";
    select += expr;
    return col++;
  };
  for (std::size_t i = 0; i < group_exprs.size(); ++i) {
    plan.merge.group_columns.push_back(add(group_exprs[i] + " AS __tally_g" + std::to_string(i)));
  }
  // An aggregate call (tokens [b, e)) as partial columns; fc gets kind and partial.
  auto add_aggregate = [&](const json& call, std::size_t b, std::size_t e,
                           FinalColumn& fc) -> std::optional<QueryPlan> {
    std::string name = func_name(call);
    bool distinct = call.value("agg_distinct", false);
    fc.aggregate = true;
    if (call.contains("agg_order") || call.value("agg_within_group", false)) {
      return unsupported("ordered aggregates", "drop the ORDER BY inside the aggregate");
    }
    if (name == "count") {
      fc.kind = AggregateKind::kCount;
      if (distinct) {
        const auto& args = call.value("args", json::array());
        if (args.size() != 1 || !video_id_ref(args[0])) {
          return unsupported("count(DISTINCT ...) of anything but video_id",
                             "group by the column and count the groups in the client");
        }
      }
    } else if (name == "sum" || name == "min" || name == "max" || name == "avg") {
      fc.kind = name == "sum"   ? AggregateKind::kSum
                : name == "min" ? AggregateKind::kMin
                : name == "max" ? AggregateKind::kMax
                                : AggregateKind::kAvg;
      if (distinct && (name == "sum" || name == "avg")) {
        return unsupported(name + "(DISTINCT ...)", "pin the query to one video_id");
      }
    } else {
      return unsupported("the aggregate " + name + "()",
                         "use count, sum, min, max or avg, or pin the query to one video_id");
    }
    std::string expr = text.span(b, e);
    if (fc.kind != AggregateKind::kAvg) {
      fc.partial = add(expr + " AS __tally_c" + std::to_string(col));
      return std::nullopt;
    }
    if (call.contains("agg_filter")) {
      return unsupported("avg(...) FILTER", "use sum(...) FILTER and count(...) FILTER");
    }
    // avg(x) -> sum(x), count(x): the argument is the text between the outer parentheses.
    std::size_t open = b;
    while (open < e && toks[open].type != PG_QUERY__TOKEN__ASCII_40) ++open;
    std::size_t close = e;
    while (close > open && toks[close - 1].type != PG_QUERY__TOKEN__ASCII_41) --close;
    if (open >= e || close <= open + 1) return unsupported("this avg()", "write avg(expr)");
    std::string arg = text.span(open + 1, close - 1);
    fc.partial = add("sum(" + arg + ") AS __tally_c" + std::to_string(col));
    add("count(" + arg + ") AS __tally_c" + std::to_string(col));
    return std::nullopt;
  };
  for (auto& t : targets) {
    if (t.star) return unsupported("* in an aggregate query", "list the grouped columns");
    const json& val = t.res["val"];
    FinalColumn fc;
    fc.name = t.alias.empty() ? target_default_name(val) : t.alias;
    if (!t.aggregate) {
      if (contains_aggregate(val)) {
        return unsupported("expressions over aggregates (" + text.span(t.b, t.expr_e) + ")",
                           "select the aggregates themselves and compute in the client");
      }
      fc.partial = add(text.span(t.b, t.expr_e) + " AS __tally_c" + std::to_string(col));
      plan.merge.columns.push_back(fc);
      continue;
    }
    if (auto err = add_aggregate(val["FuncCall"], t.b, t.expr_e, fc)) return *err;
    plan.merge.columns.push_back(fc);
  }
  // ORDER BY over the final columns (group expressions not selected become hidden columns).
  const int visible = static_cast<int>(plan.merge.columns.size());
  for (std::size_t i = 0; i < sort_clause.size(); ++i) {
    const json& node = sort_clause[i]["SortBy"]["node"];
    bool null_ = false;
    std::optional<int> column;
    if (auto k = int_const(node, null_)) {
      if (*k < 1 || *k > visible) {
        return refuse("42P10",
                      "ORDER BY position " + std::to_string(*k) + " is not in select list");
      }
      column = static_cast<int>(*k - 1);
    } else if (auto a = alias_index(node)) {
      column = static_cast<int>(*a);
    } else {
      std::string want = text.normalized(sort_parts[i].first, sort_parts[i].second);
      for (std::size_t j = 0; j < targets.size() && !column; ++j) {
        if (text.normalized(targets[j].b, targets[j].expr_e) == want) column = static_cast<int>(j);
      }
      for (std::size_t g = 0; g < group_exprs.size() && !column; ++g) {
        Text gt;
        gt.sql = group_exprs[g];
        gt.tokens = scan(gt.sql);
        if (gt.normalized(0, gt.tokens.size()) == want) {
          FinalColumn fc;
          fc.name = "__tally_g";
          fc.partial = plan.merge.group_columns[g];
          plan.merge.columns.push_back(fc);
          ++plan.merge.hidden_columns;
          column = static_cast<int>(plan.merge.columns.size() - 1);
        }
      }
    }
    if (!column) {
      return unsupported("ORDER BY an expression that is not in the select list of an aggregate",
                         "add the expression to the select list and order by it");
    }
    plan.merge.sort.push_back(sort_key(i, *column, false));
  }
  // HAVING: each aggregate call and GROUP BY expression in it becomes a hidden final column; the
  // condition itself is evaluated over the combined groups (HavingPlan).
  if (sel.contains("havingClause")) {
    const std::size_t hb = having_tok + 1;
    const std::size_t he = std::min(tail_tok, end);
    if (having_tok >= toks.size() || hb >= he)
      return unsupported("this HAVING", "write HAVING expr");
    // FuncCall and ColumnRef nodes of the condition by their source offset.
    std::map<int, json> calls;
    std::vector<std::pair<int, std::string>> column_refs;  // offset, text
    std::function<void(const json&, bool)> walk = [&](const json& n, bool in_aggregate) {
      if (n.is_object()) {
        if (n.contains("FuncCall") && is_aggregate_call(n)) {
          calls[n["FuncCall"].value("location", -1)] = n["FuncCall"];
          in_aggregate = true;
        }
        if (n.contains("ColumnRef") && !in_aggregate) {
          column_refs.emplace_back(n["ColumnRef"].value("location", -1), "");
        }
        for (const auto& child : n) walk(child, in_aggregate);
      } else if (n.is_array()) {
        for (const auto& child : n) walk(child, in_aggregate);
      }
    };
    walk(sel["havingClause"], false);
    // Group expressions as normalized token sequences, longest first.
    std::vector<std::pair<std::vector<std::string>, std::size_t>> group_tokens;
    for (std::size_t g = 0; g < group_exprs.size(); ++g) {
      Text gt;
      gt.sql = group_exprs[g];
      gt.tokens = scan(gt.sql);
      std::vector<std::string> words;
      for (std::size_t i = 0; i < gt.tokens.size(); ++i) words.push_back(gt.normalized(i, i + 1));
      group_tokens.emplace_back(std::move(words), g);
    }
    std::sort(group_tokens.begin(), group_tokens.end(),
              [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
    HavingPlan having;
    std::map<int, int> renumbered;             // statement parameter -> its number in the predicate
    std::vector<std::pair<int, int>> covered;  // source offsets replaced by a group column
    std::string predicate;
    int last_end = toks[hb].start;
    auto hidden = [&](FinalColumn fc) {
      fc.name = "__tally_h";
      plan.merge.columns.push_back(fc);
      ++plan.merge.hidden_columns;
      having.columns.push_back(static_cast<int>(plan.merge.columns.size() - 1));
      return "__tally_h.c" + std::to_string(having.columns.size() - 1);
    };
    for (std::size_t i = hb; i < he;) {
      predicate += text.sql.substr(last_end, toks[i].start - last_end);
      auto call = calls.find(toks[i].start);
      if (call != calls.end() && i + 1 < he && toks[i + 1].type == PG_QUERY__TOKEN__ASCII_40) {
        // The call runs to its closing parenthesis, and on through FILTER (...).
        std::size_t j = i + 2;
        while (j < he &&
               !(toks[j].type == PG_QUERY__TOKEN__ASCII_41 && toks[j].depth == toks[i + 1].depth)) {
          ++j;
        }
        if (j + 2 < he && toks[j + 1].type == PG_QUERY__TOKEN__FILTER &&
            toks[j + 2].type == PG_QUERY__TOKEN__ASCII_40) {
          const int d = toks[j + 2].depth;
          j += 3;
          while (j < he && !(toks[j].type == PG_QUERY__TOKEN__ASCII_41 && toks[j].depth == d)) ++j;
        }
        if (j >= he) return unsupported("this HAVING", "write HAVING aggregate(expr) op value");
        FinalColumn fc;
        if (auto err = add_aggregate(call->second, i, j + 1, fc)) return *err;
        predicate += hidden(fc);
        last_end = toks[j].end;
        i = j + 1;
        continue;
      }
      bool matched = false;
      for (const auto& [words, g] : group_tokens) {
        if (words.empty() || i + words.size() > he) continue;
        bool same = true;
        for (std::size_t w = 0; w < words.size() && same; ++w) {
          same = text.normalized(i + w, i + w + 1) == words[w];
        }
        if (!same) continue;
        FinalColumn fc;
        fc.partial = plan.merge.group_columns[g];
        predicate += "(" + hidden(fc) + ")";
        covered.emplace_back(toks[i].start, toks[i + words.size() - 1].end);
        last_end = toks[i + words.size() - 1].end;
        i += words.size();
        matched = true;
        break;
      }
      if (matched) continue;
      if (toks[i].type == PG_QUERY__TOKEN__PARAM) {
        int n = std::atoi(text.sql.c_str() + toks[i].start + 1);
        auto [it, inserted] = renumbered.emplace(n, static_cast<int>(renumbered.size()) + 1);
        if (inserted) having.parameters.push_back(n);
        predicate += "$" + std::to_string(it->second);
      } else {
        predicate += text.sql.substr(toks[i].start, toks[i].end - toks[i].start);
      }
      last_end = toks[i].end;
      ++i;
    }
    for (const auto& [offset, unused] : column_refs) {
      bool inside = false;
      for (const auto& [b, e] : covered) inside = inside || (offset >= b && offset < e);
      if (!inside) {
        std::size_t k = 0;
        while (k < toks.size() && toks[k].start != offset) ++k;
        std::string name = k < toks.size() ? text.span(k, k + 1) : "a column";
        return unsupported("HAVING on " + name +
                               " outside an aggregate unless it is a GROUP BY "
                               "expression written the same way",
                           "write the GROUP BY expression exactly, or move the condition to WHERE");
      }
    }
    having.predicate = predicate;
    plan.merge.having = std::move(having);
  }
  plan.merge.combine = true;
  plan.shard_sql = select + " " + text.span(from_tok, std::min({group_tok, having_tok, tail_tok}));
  if (!group_exprs.empty()) {
    plan.shard_sql += " GROUP BY ";
    for (std::size_t i = 0; i < group_exprs.size(); ++i) {
      plan.shard_sql += (i ? ", " : "") + group_exprs[i];
    }
  }
  return plan;
}

std::string statement_kind(const std::string& node) {
  static const std::map<std::string, std::string> names = {{"InsertStmt", "INSERT"},
                                                           {"UpdateStmt", "UPDATE"},
                                                           {"DeleteStmt", "DELETE"},
                                                           {"MergeStmt", "MERGE"},
                                                           {"TruncateStmt", "TRUNCATE TABLE"},
                                                           {"CreateStmt", "CREATE TABLE"},
                                                           {"DropStmt", "DROP"},
                                                           {"AlterTableStmt", "ALTER TABLE"},
                                                           {"IndexStmt", "CREATE INDEX"},
                                                           {"CopyStmt", "COPY"},
                                                           {"GrantStmt", "GRANT"},
                                                           {"CreateTableAsStmt", "CREATE TABLE AS"},
                                                           {"ViewStmt", "CREATE VIEW"},
                                                           {"CallStmt", "CALL"},
                                                           {"DoStmt", "DO"},
                                                           {"VacuumStmt", "VACUUM"},
                                                           {"LockStmt", "LOCK TABLE"}};
  auto it = names.find(node);
  return it != names.end() ? it->second : node;
}

}  // namespace

bool is_sharded_table(std::string_view name) {
  return name == "videos" || name == "video_stats_minute" || name == "video_stats_hour" ||
         name == "video_stats_day" || name == "video_totals" || name == "events_raw";
}

QueryPlan plan_query(std::string_view sql_in, const ShardMap& map,
                     const std::vector<std::optional<std::string>>& params) {
  Text text;
  text.sql = std::string(sql_in);
  PgQueryParseResult parsed = pg_query_parse(text.sql.c_str());
  std::unique_ptr<PgQueryParseResult, void (*)(PgQueryParseResult*)> guard(
      &parsed, [](PgQueryParseResult* r) { pg_query_free_parse_result(*r); });
  if (parsed.error != nullptr) {
    QueryPlan p = refuse("42601", parsed.error->message);
    return p;
  }
  json tree;
  try {
    tree = json::parse(parsed.parse_tree);
  } catch (const json::exception& e) {
    return refuse("XX000", std::string("cannot read the parse tree: ") + e.what());
  }
  const auto& stmts = tree.value("stmts", json::array());
  if (stmts.empty()) {
    QueryPlan p;
    p.kind = QueryPlan::Kind::kEmpty;
    return p;
  }
  if (stmts.size() > 1) {
    return refuse(kFeatureNotSupported, "several statements in one query are not supported",
                  "send the statements one at a time");
  }
  const json& stmt = stmts[0]["stmt"];
  const std::string node = stmt.begin().key();
  const json& body = stmt.begin().value();
  if (node == "SelectStmt") {
    text.tokens = scan(text.sql);
    try {
      return plan_select(text, body, map, params);
    } catch (const json::exception& e) {
      return refuse("XX000", std::string("unexpected parse tree: ") + e.what());
    }
  }
  if (node == "VariableShowStmt") {
    QueryPlan p;
    p.kind = QueryPlan::Kind::kAnyShard;
    p.shard_sql = text.sql;
    return p;
  }
  if (node == "VariableSetStmt") {
    if (auto refused = refuse_result_changing_set(body)) return std::move(*refused);
    QueryPlan p;
    p.kind = QueryPlan::Kind::kNoop;
    p.command_tag = body.value("kind", "") == "VAR_RESET" ? "RESET" : "SET";
    return p;
  }
  if (node == "TransactionStmt") {
    std::string kind = body.value("kind", "");
    QueryPlan p;
    p.kind = QueryPlan::Kind::kNoop;
    if (kind == "TRANS_STMT_BEGIN") {
      p.command_tag = "BEGIN";
    } else if (kind == "TRANS_STMT_START") {
      p.command_tag = "START TRANSACTION";
    } else if (kind == "TRANS_STMT_COMMIT") {
      p.command_tag = "COMMIT";
    } else if (kind == "TRANS_STMT_ROLLBACK") {
      p.command_tag = "ROLLBACK";
    } else {
      return refuse(kFeatureNotSupported, "savepoints and two-phase commit are not supported");
    }
    return p;
  }
  return refuse(kReadOnly, "cannot execute " + statement_kind(node) + " in a read-only transaction",
                "the analyst endpoint is read-only");
}

std::set<int> parameters_used(std::string_view sql_in) {
  std::string sql(sql_in);
  std::set<int> out;
  for (const auto& t : scan(sql)) {
    if (t.type == PG_QUERY__TOKEN__PARAM) out.insert(std::atoi(sql.c_str() + t.start + 1));
  }
  return out;
}

Result<int> statement_parameters(std::string_view sql_in) {
  std::string sql(sql_in);
  PgQueryParseResult parsed = pg_query_parse(sql.c_str());
  std::unique_ptr<PgQueryParseResult, void (*)(PgQueryParseResult*)> guard(
      &parsed, [](PgQueryParseResult* r) { pg_query_free_parse_result(*r); });
  if (parsed.error != nullptr) {
    return make_error(ErrorCode::kInvalidArgument, parsed.error->message);
  }
  try {
    json tree = json::parse(parsed.parse_tree);
    if (tree.value("stmts", json::array()).size() > 1) {
      return make_error(ErrorCode::kInvalidArgument,
                        "cannot insert multiple commands into a prepared statement");
    }
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kInternal, std::string("cannot read the parse tree: ") + e.what());
  }
  int highest = 0;
  for (const auto& t : scan(sql)) {
    if (t.type != PG_QUERY__TOKEN__PARAM || t.end - t.start < 2) continue;
    int n = 0;
    for (int i = t.start + 1; i < t.end && n < 100000; ++i) n = n * 10 + (sql[i] - '0');
    highest = std::max(highest, n);
  }
  return highest;
}

}  // namespace tally::sql
