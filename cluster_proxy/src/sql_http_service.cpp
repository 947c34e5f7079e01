#include "cluster_proxy/src/sql_http_service.h"

#include <cmath>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>

namespace tally::cluster_proxy {
namespace {

using nlohmann::json;

std::string type_name(uint32_t oid) {
  static const std::map<uint32_t, std::string> names = {
      {16, "bool"},        {17, "bytea"},         {18, "char"},       {19, "name"},
      {20, "int8"},        {21, "int2"},          {23, "int4"},       {25, "text"},
      {26, "oid"},         {114, "json"},         {700, "float4"},    {701, "float8"},
      {1042, "bpchar"},    {1043, "varchar"},     {1082, "date"},     {1083, "time"},
      {1114, "timestamp"}, {1184, "timestamptz"}, {1186, "interval"}, {1700, "numeric"},
      {2950, "uuid"},      {3802, "jsonb"}};
  auto it = names.find(oid);
  return it != names.end() ? it->second : "oid " + std::to_string(oid);
}

HttpResponse sql_error(const SqlError& e) {
  json err = {{"code", http_status_for_sqlstate(e.sqlstate)},
              {"sqlstate", e.sqlstate},
              {"message", e.message}};
  if (!e.detail.empty()) err["detail"] = e.detail;
  if (!e.hint.empty()) err["hint"] = e.hint;
  return HttpResponse::json(http_status_for_sqlstate(e.sqlstate), json{{"error", err}}.dump());
}

HttpResponse bad_request(const std::string& field, const std::string& message) {
  json err = {{"code", 400}, {"message", message}, {"parameter", field}};
  return HttpResponse::json(400, json{{"error", err}}.dump());
}

bool wants_csv(const HttpRequest& request, std::optional<HttpResponse>& error) {
  if (auto f = request.query_param("format")) {
    if (*f == "csv") return true;
    if (*f == "json") return false;
    error = bad_request("format", "format \"" + std::string(*f) + "\" is not csv or json");
    return false;
  }
  auto accept = request.header("Accept");
  return accept && accept->find("text/csv") != std::string_view::npos &&
         accept->find("application/json") == std::string_view::npos;
}

}  // namespace

int http_status_for_sqlstate(std::string_view s) {
  if (s == "25006" || s == "42501") return 403;
  if (s == "57014") return 504;
  if (s.substr(0, 2) == "08" && s != "08P01") return 503;
  if (s.substr(0, 2) == "28") return 401;
  if (s.substr(0, 2) == "42" || s.substr(0, 2) == "22" || s == "0A000" || s == "54000" ||
      s == "08P01" || s.substr(0, 2) == "2F" || s == "26000") {
    return 400;
  }
  if (s.substr(0, 2) == "53") return 503;
  return 500;
}

std::string result_to_csv(const sql::ResultSet& result) {
  std::string out;
  auto field = [&](std::string_view v, bool quote_empty) {
    bool quote = quote_empty && v.empty();
    for (char c : v) quote = quote || c == ',' || c == '"' || c == '\n' || c == '\r';
    if (!quote) {
      out += v;
      return;
    }
    out += '"';
    for (char c : v) {
      if (c == '"') out += '"';
      out += c;
    }
    out += '"';
  };
  for (std::size_t i = 0; i < result.columns.size(); ++i) {
    if (i) out += ',';
    field(result.columns[i].name, true);
  }
  out += "\r\n";
  for (const auto& row : result.rows) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (i) out += ',';
      if (row[i]) field(*row[i], true);
    }
    out += "\r\n";
  }
  return out;
}

std::string result_to_json(const sql::ResultSet& result, const std::string& command_tag) {
  json columns = json::array();
  for (const auto& c : result.columns) {
    columns.push_back(
        {{"name", c.name}, {"type", type_name(c.type_oid)}, {"type_oid", c.type_oid}});
  }
  json rows = json::array();
  for (const auto& row : result.rows) {
    json r = json::array();
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (!row[i]) {
        r.push_back(nullptr);
        continue;
      }
      const std::string& v = *row[i];
      const uint32_t oid = result.columns[i].type_oid;
      if (oid == 20 || oid == 21 || oid == 23) {
        r.push_back(std::strtoll(v.c_str(), nullptr, 10));
      } else if (oid == 26) {
        r.push_back(std::strtoull(v.c_str(), nullptr, 10));
      } else if (oid == 700 || oid == 701) {
        double d = std::strtod(v.c_str(), nullptr);
        if (std::isfinite(d) && v != "NaN") {
          r.push_back(d);
        } else {
          r.push_back(v);
        }
      } else if (oid == 16) {
        r.push_back(v == "t");
      } else {
        r.push_back(v);
      }
    }
    rows.push_back(std::move(r));
  }
  return json{{"columns", columns},
              {"rows", rows},
              {"row_count", result.rows.size()},
              {"command_tag", command_tag}}
      .dump();
}

SqlHttpService::SqlHttpService(AnalystConfig config, std::string database, int connect_timeout_ms,
                               const TopologyCache& topology)
    : config_(std::move(config)),
      database_(std::move(database)),
      connect_timeout_ms_(connect_timeout_ms),
      topology_(topology) {}

SqlHttpService::~SqlHttpService() {
  stop();
}

void SqlHttpService::start() {
  for (int i = 0; i < config_.http_threads; ++i) threads_.emplace_back([this] { loop(); });
}

void SqlHttpService::stop() {
  std::deque<Job> left;
  {
    std::lock_guard lock(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
    left.swap(queue_);
  }
  cv_.notify_all();
  for (auto& job : left) job.respond(HttpResponse::error(503, "the cluster proxy is stopping"));
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

void SqlHttpService::handle(HttpRequest&& request, Responder respond) {
  std::optional<HttpResponse> error;
  Job job;
  job.csv = wants_csv(request, error);
  if (error) return respond(std::move(*error));
  json body;
  try {
    body = json::parse(request.body);
  } catch (const json::exception& e) {
    return respond(bad_request("body", std::string("the body is not JSON: ") + e.what()));
  }
  if (!body.is_object()) {
    return respond(bad_request("body", "the body must be a JSON object {\"sql\": \"...\"}"));
  }
  for (const auto& [key, value] : body.items()) {
    if (key != "sql" && key != "params") {
      return respond(bad_request(key, "unknown field \"" + key + "\" (expected sql, params)"));
    }
  }
  if (!body.contains("sql") || !body["sql"].is_string()) {
    return respond(bad_request("sql", "sql must be a string holding one SQL statement"));
  }
  job.sql = body["sql"].get<std::string>();
  if (body.contains("params")) {
    const json& params = body["params"];
    if (!params.is_array()) {
      return respond(bad_request("params", "params must be an array of the values of $1, $2, ..."));
    }
    job.has_params = true;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const json& p = params[i];
      std::optional<std::string> v;
      if (p.is_string()) {
        v = p.get<std::string>();
      } else if (p.is_boolean()) {
        v = p.get<bool>() ? "true" : "false";
      } else if (p.is_number()) {
        v = p.dump();
      } else if (!p.is_null()) {
        return respond(bad_request("params[" + std::to_string(i) + "]",
                                   "params[" + std::to_string(i) + "] is " + p.dump() +
                                       "; expected a string, number, boolean or null"));
      }
      job.params.values.push_back(std::move(v));
      job.params.types.push_back(0);
      job.params.formats.push_back(0);
    }
  }
  job.respond = std::move(respond);
  {
    std::lock_guard lock(mu_);
    if (!stopping_ && queue_.size() < static_cast<std::size_t>(config_.http_queue)) {
      queue_.push_back(std::move(job));
      cv_.notify_one();
      return;
    }
  }
  HttpResponse busy =
      HttpResponse::error(503, "too many SQL requests waiting (analyst.http_queue is " +
                                   std::to_string(config_.http_queue) + "); retry later");
  busy.headers.emplace_back("Retry-After", "1");
  job.respond(std::move(busy));
}

void SqlHttpService::loop() {
  AnalystExecutor executor(database_, config_.user, config_.password, connect_timeout_ms_);
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    StatementOutcome o = run_analyst_statement(executor, topology_, config_, job.sql,
                                               job.has_params ? &job.params : nullptr);
    switch (o.kind) {
      case StatementOutcome::Kind::kError:
        job.respond(sql_error(o.error));
        break;
      case StatementOutcome::Kind::kEmpty:
        job.respond(sql_error(SqlError{"42601", "the query is empty", "", ""}));
        break;
      case StatementOutcome::Kind::kCommand:
        o.result = sql::ResultSet{};
        [[fallthrough]];
      case StatementOutcome::Kind::kRows:
        if (job.csv) {
          HttpResponse r;
          r.status = 200;
          r.content_type = "text/csv; charset=utf-8";
          r.body = result_to_csv(o.result);
          job.respond(std::move(r));
        } else {
          job.respond(HttpResponse::json(200, result_to_json(o.result, o.command_tag)));
        }
        break;
    }
  }
}

}  // namespace tally::cluster_proxy
