// loadgen: steady-rate events with unique ids into the processor, then an audit of the counts
// through the cluster proxy. Wiring only; the logic is tools/loadgen/src/loadgen.{h,cpp}.
// Exit codes: 0 audit OK, 1 mismatch, 2 bad usage.
#include <charconv>
#include <iostream>
#include <string>
#include <vector>

#include "common/cluster/cluster_manifest.h"
#include "tools/loadgen/src/loadgen.h"

namespace {

constexpr const char* kUsage =
    "usage: loadgen (--dir CLUSTER_DIR | --ingest URL --rest URL [--token T])\n"
    "               [--rate EVENTS_PER_S] [--duration S] [--videos N] [--batch N]\n"
    "               [--producers N] [--duplicates PERCENT] [--watch-time PERCENT]\n"
    "               [--invalid PERCENT]\n"
    "               [--run-id ID] [--api-key KEY] [--audit-wait S] [--no-audit]\n";

bool parse_number(const std::string& text, double& out) {
  try {
    size_t used = 0;
    out = std::stod(text, &used);
    return used == text.size();
  } catch (...) {
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  tally::LoadgenOptions o;
  std::string dir;
  double audit_wait_s = 60;
  bool audit = true;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--no-audit") {
      audit = false;
      continue;
    }
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (i + 1 >= args.size()) {
      std::cerr << "loadgen: " << a << " needs a value\n" << kUsage;
      return 2;
    }
    const std::string& v = args[++i];
    double n = 0;
    bool numeric = parse_number(v, n);
    auto need_number = [&](double min) {
      if (!numeric || n < min) {
        std::cerr << "loadgen: " << a << ": expected a number >= " << min << ", got '" << v
                  << "'\n";
        return false;
      }
      return true;
    };
    if (a == "--dir") {
      dir = v;
    } else if (a == "--ingest") {
      o.ingest_url = v;
    } else if (a == "--rest") {
      o.rest_url = v;
    } else if (a == "--token") {
      o.rest_token = v;
    } else if (a == "--api-key") {
      o.api_key = v;
    } else if (a == "--run-id") {
      o.run_id = v;
    } else if (a == "--rate") {
      if (!need_number(0.001)) return 2;
      o.rate = n;
    } else if (a == "--duration") {
      if (!need_number(0.001)) return 2;
      o.duration = std::chrono::milliseconds(static_cast<int64_t>(n * 1000));
    } else if (a == "--audit-wait") {
      if (!need_number(0)) return 2;
      audit_wait_s = n;
    } else if (a == "--videos" || a == "--batch" || a == "--producers" || a == "--duplicates" ||
               a == "--watch-time" || a == "--invalid") {
      if (!need_number(0)) return 2;
      int k = static_cast<int>(n);
      if (a == "--videos") o.videos = k;
      if (a == "--batch") o.batch = k;
      if (a == "--producers") o.producers = k;
      if (a == "--duplicates") o.duplicate_percent = k;
      if (a == "--watch-time") o.watch_time_percent = k;
      if (a == "--invalid") o.invalid_percent = k;
    } else {
      std::cerr << "loadgen: unknown option " << a << "\n" << kUsage;
      return 2;
    }
  }
  if (!dir.empty()) {
    auto m = tally::read_manifest(std::filesystem::path(dir) / "cluster.json");
    if (!m) {
      std::cerr << "loadgen: " << m.error().message << "\n";
      return 2;
    }
    auto endpoint = [&](const std::string& name) {
      auto it = m->endpoints.find(name);
      return it != m->endpoints.end() && it->second ? *it->second : std::string();
    };
    if (o.ingest_url.empty()) o.ingest_url = endpoint("ingest");
    if (o.rest_url.empty()) o.rest_url = endpoint("rest");
    if (o.rest_token.empty() && m->users.count("rest")) o.rest_token = m->users.at("rest").password;
  }
  if (o.ingest_url.empty() || (audit && o.rest_url.empty())) {
    std::cerr << "loadgen: need --dir or --ingest (and --rest to audit)\n" << kUsage;
    return 2;
  }
  auto lg = tally::Loadgen::create(o);
  if (!lg) {
    std::cerr << "loadgen: " << lg.error().message << "\n";
    return 2;
  }
  std::cout << "loadgen run " << (*lg)->options().run_id << ": " << o.rate << " events/s for "
            << o.duration.count() / 1000.0 << " s over " << o.videos << " videos into "
            << o.ingest_url << std::endl;
  (*lg)->run();
  auto stats = (*lg)->stats();
  if (!audit) {
    std::cout << tally::format_stats(stats);
    return 0;
  }
  auto report = (*lg)->audit(std::chrono::milliseconds(static_cast<int64_t>(audit_wait_s * 1000)));
  if (!report) {
    std::cerr << "loadgen: " << report.error().message << "\n";
    return 2;
  }
  std::cout << tally::format_audit(stats, *report);
  if (stats.invalid_accepted > 0) {
    std::cout << "FAILED: " << stats.invalid_accepted
              << " invalid events were accepted instead of rejected\n";
  }
  return report->ok() && stats.invalid_accepted == 0 ? 0 : 1;
}
