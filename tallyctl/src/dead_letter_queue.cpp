#include "tallyctl/src/dead_letter_queue.h"

#include <time.h>

#include <iomanip>
#include <ostream>
#include <set>
#include <utility>

#include "common/cluster/cluster_manifest.h"
#include "common/config/yaml_reader.h"
#include "common/http/http_client.h"
#include "processor/src/counter_writer.h"
#include "processor/src/dead_letter.h"
#include "processor/src/processor_config.h"

namespace tally {

namespace {

using processor::DeadLetter;

std::string utc_text(int64_t ms) {
  if (ms <= 0) return "-";
  time_t seconds = static_cast<time_t>(ms / 1000);
  struct tm tm {};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string shards_text(const DeadLetter& l) {
  if (l.shards.empty()) return "all";
  std::string out;
  for (const auto& s : l.shards) out += (out.empty() ? "" : ",") + s;
  return out;
}

// Moves `name` into dir/replayed/ (a new name there if one exists).
Status move_aside(const std::filesystem::path& dir, const std::string& name) {
  const auto replayed = dir / processor::kReplayedSubdir;
  std::error_code ec;
  std::filesystem::create_directories(replayed, ec);
  if (ec) {
    return make_error(ErrorCode::kInternal,
                      "cannot create " + replayed.string() + ": " + ec.message());
  }
  auto target = replayed / name;
  for (int n = 2; std::filesystem::exists(target); ++n) {
    target = replayed / (name + "." + std::to_string(n));
  }
  std::filesystem::rename(dir / name, target, ec);
  if (ec) {
    return make_error(ErrorCode::kInternal, "cannot move " + (dir / name).string() + " to " +
                                                target.string() + ": " + ec.message());
  }
  return ok_status();
}

}  // namespace

Result<DlqTarget> dlq_target_from_cluster(const std::filesystem::path& cluster_dir) {
  auto m = read_manifest(cluster_dir / "cluster.json");
  if (!m) return m.error();
  auto processors = m->with_role("processor");
  if (processors.empty()) {
    return make_error(ErrorCode::kNotFound,
                      (cluster_dir / "cluster.json").string() +
                          " lists no processor; give --dead-letter-dir DIR instead");
  }
  if (processors.size() > 1) {
    return make_error(ErrorCode::kInvalidArgument,
                      (cluster_dir / "cluster.json").string() + " lists " +
                          std::to_string(processors.size()) +
                          " processors; give --dead-letter-dir DIR for one of them");
  }
  processor::ProcessorConfig config;
  try {
    config = processor::load_processor_config(processors[0]->config);
  } catch (const ConfigError& e) {
    return make_error(ErrorCode::kInvalidArgument, e.what());
  }
  DlqTarget t;
  t.dir = config.data_dir / "dead_letter";
  t.cluster_proxy_url = config.cluster_proxy_url;
  t.token = config.cluster_proxy_token;
  return t;
}

Result<size_t> dlq_list(const DlqTarget& target, std::ostream& out) {
  auto letters = processor::list_dead_letters(target.dir);
  if (!letters) return letters.error();
  if (letters->empty()) {
    out << "no dead-lettered batches in " << target.dir.string() << "\n";
    return size_t{0};
  }
  out << std::left << std::setw(52) << "FILE" << std::setw(12) << "PROCESSOR" << std::setw(6)
      << "PART" << std::setw(26) << "OFFSETS" << std::setw(10) << "SHARDS" << std::setw(8) << "ROWS"
      << std::setw(11) << "KIND"
      << "AT\n";
  for (const auto& l : *letters) {
    std::string offsets =
        "(" + std::to_string(l.from_offset) + ", " + std::to_string(l.to_offset) + "]";
    out << std::left << std::setw(52) << l.file << std::setw(12)
        << (l.processor_id.empty() ? "-" : l.processor_id) << std::setw(6) << l.partition
        << std::setw(26) << offsets << std::setw(10) << shards_text(l) << std::setw(8) << l.rows
        << std::setw(11) << l.kind << utc_text(l.at_ms) << "\n"
        << "    reason: " << l.reason << "\n";
  }
  out << letters->size() << " dead-lettered batch(es) in " << target.dir.string()
      << " (replayed ones move to " << (target.dir / processor::kReplayedSubdir).string() << ")\n";
  return letters->size();
}

Result<DlqReplaySummary> dlq_replay(const DlqTarget& target, const DlqReplayOptions& options,
                                    std::ostream& out) {
  auto letters = processor::list_dead_letters(target.dir);
  if (!letters) return letters.error();
  auto url = parse_http_url(target.cluster_proxy_url);
  if (!url) {
    return make_error(ErrorCode::kInvalidArgument,
                      "replay needs the cluster proxy's URL: " + url.error().message);
  }
  HttpClient client(url->host, url->port, options.timeout);
  std::vector<std::pair<std::string, std::string>> headers;
  if (!target.token.empty()) headers.emplace_back("Authorization", "Bearer " + target.token);
  const std::string path = url->base_path + "/v1/counters:apply";

  DlqReplaySummary summary;
  std::set<std::pair<std::string, int>> held;  // (processor, partition) with a kept file
  bool found = options.only_file.empty();
  for (const auto& l : *letters) {
    if (!options.only_file.empty() && l.file != options.only_file) continue;
    found = true;
    if (l.kind == "unreadable") {
      out << "KEPT " << l.file << ": " << l.reason << "\n";
      ++summary.kept;
      continue;
    }
    const auto key = std::make_pair(l.processor_id, l.partition);
    if (held.count(key)) {
      out << "HELD " << l.file << ": an earlier batch of " << l.processor_id << " partition "
          << l.partition << " was kept; replay that one first\n";
      ++summary.held;
      continue;
    }
    if (l.kind == processor::dead_letter_kinds::kOverlap) {
      out << "KEPT " << l.file
          << ": an overlap is never replayed automatically (the shard holds part of the range; "
             "see docs/operations.md, dead-letter runbook): "
          << l.reason << "\n";
      ++summary.kept;
      continue;
    }
    auto body = processor::replay_request_body(l);
    std::string problem;
    std::string detail;
    if (!body) {
      problem = body.error().message;
    } else {
      auto r = client.request("POST", path, *body, headers);
      if (!r) {
        problem = "cluster proxy " + target.cluster_proxy_url + ": " + r.error().message;
      } else if (r->status != 200) {
        problem = "counters:apply answered HTTP " + std::to_string(r->status) + ": " +
                  r->body.substr(0, 500);
      } else if (auto outcomes = processor::parse_apply_response(r->body); !outcomes) {
        problem = outcomes.error().message;
      } else {
        for (const auto& o : *outcomes) {
          detail += (detail.empty() ? "" : ", ") + o.shard + " " + o.outcome;
          if (o.outcome == "applied" || o.outcome == "already_applied") {
            detail += " (mark " + std::to_string(o.mark) + ")";
          } else {
            problem += (problem.empty() ? "" : "; ") + o.shard + " " + o.outcome +
                       (o.error.empty() ? "" : ": " + o.error);
          }
        }
        if (outcomes->empty()) problem = "the cluster proxy answered for no shard";
      }
    }
    if (problem.empty()) {
      if (auto st = move_aside(target.dir, l.file); !st) {
        // Applied, but still in place: a re-run answers already_applied and moves it then.
        problem = "applied (" + detail + ") but " + st.error().message;
      }
    }
    if (!problem.empty()) {
      out << "KEPT " << l.file << ": " << problem << "\n";
      ++summary.kept;
      held.insert(key);
      continue;
    }
    out << "replayed " << l.file << " as " << processor::replay_processor_id(l.processor_id) << ": "
        << detail << "\n";
    ++summary.replayed;
  }
  if (!found) {
    return make_error(ErrorCode::kNotFound,
                      "no dead-letter file " + options.only_file + " in " + target.dir.string());
  }
  out << summary.replayed << " replayed, " << summary.kept << " kept, " << summary.held
      << " held back\n";
  return summary;
}

}  // namespace tally
