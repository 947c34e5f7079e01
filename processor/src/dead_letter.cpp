#include "processor/src/dead_letter.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "processor/src/durable_file.h"

namespace tally::processor {

namespace {

using json = nlohmann::json;

std::string base_name(const DeadLetter& l, int n) {
  char name[128];
  std::snprintf(name, sizeof(name), "p%d-%020lld-%020lld", l.partition,
                static_cast<long long>(l.from_offset), static_cast<long long>(l.to_offset));
  std::string out = name;
  if (n > 1) out += "-" + std::to_string(n);
  return out + ".json";
}

Error io_error(const std::string& what, const std::filesystem::path& path) {
  return make_error(ErrorCode::kInternal, "dead letter: cannot " + what + " " + path.string() +
                                              ": " + std::strerror(errno));
}

}  // namespace

Result<std::string> write_dead_letter(const std::filesystem::path& dir, const DeadLetter& letter) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return make_error(ErrorCode::kInternal,
                      "dead letter: cannot create " + dir.string() + ": " + ec.message());
  }
  json j;
  j["kind"] = letter.kind;
  j["reason"] = letter.reason;
  j["processor_id"] = letter.processor_id;
  j["partition"] = letter.partition;
  j["from_offset"] = letter.from_offset;
  j["to_offset"] = letter.to_offset;
  j["shards"] = letter.shards;
  j["rows"] = letter.rows;
  j["events"] = letter.events;
  j["at_ms"] = letter.at_ms;
  std::string content = j.dump(-1, ' ', false, json::error_handler_t::replace);
  // The request goes in as it was sent (it is JSON already; tens of thousands of rows).
  content.pop_back();  // the closing brace
  content += ",\"request\":" + letter.request + "}\n";

  std::string name;
  for (int n = 1;; ++n) {
    name = base_name(letter, n);
    if (!std::filesystem::exists(dir / name)) break;
  }
  if (auto st = write_file_durably(dir / name, content); !st) {
    return make_error(ErrorCode::kInternal, "dead letter: " + st.error().message);
  }
  return name;
}

Result<DeadLetter> read_dead_letter(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return io_error("read", file);
  std::stringstream buffer;
  buffer << in.rdbuf();
  json j = json::parse(buffer.str(), nullptr, false);
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, "dead letter " + file.string() + ": " + why);
  };
  if (!j.is_object()) return bad("not a JSON object");
  if (!j.contains("request") || !j["request"].is_object()) return bad("no \"request\" object");
  const json& req = j["request"];
  DeadLetter l;
  l.file = file.filename().string();
  l.request = req.dump();
  l.reason = j.value("reason", "");
  try {
    // Files from before the structured form carry only reason and request.
    l.processor_id = j.value("processor_id", req.value("processor_id", ""));
    l.partition = j.value("partition", req.value("partition", 0));
    l.from_offset = j.value("from_offset", req.value("from_offset", int64_t{-1}));
    l.to_offset = j.value("to_offset", req.value("to_offset", int64_t{-1}));
    l.kind = j.value("kind", l.reason.rfind("overlap", 0) == 0 ? dead_letter_kinds::kOverlap
                                                               : dead_letter_kinds::kRejected);
    if (j.contains("shards")) l.shards = j["shards"].get<std::vector<std::string>>();
    l.rows = j.value(
        "rows", req.contains("rows") && req["rows"].is_array() ? req["rows"].size() : size_t{0});
    l.events = j.value("events", int64_t{0});
    l.at_ms = j.value("at_ms", int64_t{0});
  } catch (const json::exception& e) {
    return bad(std::string("a field has the wrong type: ") + e.what());
  }
  if (l.processor_id.empty()) return bad("no processor_id");
  if (l.from_offset >= l.to_offset) {
    return bad("offsets (" + std::to_string(l.from_offset) + ", " + std::to_string(l.to_offset) +
               "] are not a range");
  }
  return l;
}

Result<std::vector<DeadLetter>> list_dead_letters(const std::filesystem::path& dir) {
  std::vector<DeadLetter> out;
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return out;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    auto l = read_dead_letter(entry.path());
    if (l.ok()) {
      out.push_back(std::move(*l));
    } else {
      DeadLetter u;
      u.file = entry.path().filename().string();
      u.kind = "unreadable";
      u.reason = l.error().message;
      out.push_back(std::move(u));
    }
  }
  if (ec) {
    return make_error(ErrorCode::kInternal,
                      "dead letter: cannot list " + dir.string() + ": " + ec.message());
  }
  std::sort(out.begin(), out.end(), [](const DeadLetter& a, const DeadLetter& b) {
    return std::tie(a.processor_id, a.partition, a.from_offset, a.file) <
           std::tie(b.processor_id, b.partition, b.from_offset, b.file);
  });
  return out;
}

std::string replay_processor_id(std::string_view processor_id) {
  return std::string(processor_id) + "-dlq";
}

Result<std::string> replay_request_body(const DeadLetter& letter) {
  json req = json::parse(letter.request, nullptr, false);
  if (!req.is_object()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "dead letter " + letter.file + ": the stored request is not a JSON object");
  }
  req["processor_id"] = replay_processor_id(letter.processor_id);
  if (letter.shards.empty()) {
    req.erase("shards");
  } else {
    req["shards"] = letter.shards;
  }
  return req.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace tally::processor
