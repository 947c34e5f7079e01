#include "tools/loadgen/src/loadgen_cli.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <ostream>
#include <thread>

#include "common/cluster/cluster_manifest.h"
#include "tools/loadgen/src/loadgen.h"

namespace tally {

namespace {

std::string usage(const std::string& program) {
  const std::string pad(program.size(), ' ');
  return "usage: " + program + " (--dir CLUSTER_DIR | --ingest URL --rest URL [--token T])\n" +
         "       " + pad + " [--rate EVENTS_PER_S] [--duration S] [--videos N] [--zipf S]\n" +
         "       " + pad + " [--batch N] [--producers N] [--duplicates PERCENT]\n" + "       " +
         pad + " [--watch-time PERCENT] [--invalid PERCENT] [--run-id ID] [--api-key KEY]\n" +
         "       " + pad + " [--audit-wait S] [--no-audit] [--no-progress]\n";
}

bool parse_number(const std::string& text, double& out) {
  try {
    size_t used = 0;
    out = std::stod(text, &used);
    return used == text.size();
  } catch (...) {
    return false;
  }
}

// Prints "loadgen: 12.0 s, 1998 events/s, 23980 accepted, 0 rejected, 2 retried" every second
// until stopped; on a terminal it rewrites one line.
class Progress {
 public:
  Progress(const Loadgen& lg, std::ostream& out, bool tty)
      : lg_(lg), out_(out), tty_(tty), thread_([this] { run(); }) {}
  ~Progress() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
    if (tty_) out_ << "\n";
  }

 private:
  void run() {
    const auto start = std::chrono::steady_clock::now();
    int64_t last_accepted = 0;
    auto last = start;
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::seconds(1), [&] { return done_; })) {
      auto s = lg_.stats();
      auto now = std::chrono::steady_clock::now();
      double dt = std::chrono::duration<double>(now - last).count();
      double rate = dt > 0 ? static_cast<double>(s.events_accepted - last_accepted) / dt : 0;
      char line[256];
      std::snprintf(
          line, sizeof(line),
          "loadgen: %5.1f s, %7.0f events/s, %lld accepted, %lld rejected, %lld "
          "duplicate batches, %lld attempts retried",
          std::chrono::duration<double>(now - start).count(), rate,
          static_cast<long long>(s.events_accepted), static_cast<long long>(s.events_rejected),
          static_cast<long long>(s.duplicate_batches), static_cast<long long>(s.requests_failed));
      out_ << (tty_ ? "\r" : "") << line << (tty_ ? "" : "\n") << std::flush;
      last = now;
      last_accepted = s.events_accepted;
    }
  }

  const Loadgen& lg_;
  std::ostream& out_;
  const bool tty_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace

int run_loadgen_command(const std::vector<std::string>& args, const std::string& program,
                        std::ostream& out, std::ostream& err) {
  LoadgenOptions o;
  o.zipf = 1.0;
  std::string dir;
  double audit_wait_s = 60;
  bool audit = true;
  bool progress = true;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--no-audit") {
      audit = false;
      continue;
    }
    if (a == "--no-progress") {
      progress = false;
      continue;
    }
    if (a == "--help" || a == "-h") {
      out << usage(program);
      return 0;
    }
    if (i + 1 >= args.size()) {
      err << program << ": " << a << " needs a value\n" << usage(program);
      return 2;
    }
    const std::string& v = args[++i];
    double n = 0;
    bool numeric = parse_number(v, n);
    auto need_number = [&](double min) {
      if (!numeric || n < min) {
        err << program << ": " << a << ": expected a number >= " << min << ", got '" << v << "'\n";
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
    } else if (a == "--zipf") {
      if (!need_number(0)) return 2;
      o.zipf = n;
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
      err << program << ": unknown option " << a << "\n" << usage(program);
      return 2;
    }
  }
  if (!dir.empty()) {
    auto m = read_manifest(std::filesystem::path(dir) / "cluster.json");
    if (!m) {
      err << program << ": " << m.error().message << "\n";
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
    err << program << ": need --dir or --ingest (and --rest to audit)\n" << usage(program);
    return 2;
  }
  auto lg = Loadgen::create(o);
  if (!lg) {
    err << program << ": " << lg.error().message << "\n";
    return 2;
  }
  out << program << " run " << (*lg)->options().run_id << ": " << o.rate << " events/s for "
      << o.duration.count() / 1000.0 << " s over " << o.videos << " videos (zipf " << o.zipf
      << ") into " << o.ingest_url << std::endl;
  {
    std::unique_ptr<Progress> p;
    if (progress) p = std::make_unique<Progress>(**lg, out, &out == &std::cout && isatty(1));
    (*lg)->run();
  }
  auto stats = (*lg)->stats();
  if (!audit) {
    out << format_stats(stats);
    return 0;
  }
  out << program << ": audit: waiting up to " << audit_wait_s << " s for the counts to settle"
      << std::endl;
  auto report = (*lg)->audit(std::chrono::milliseconds(static_cast<int64_t>(audit_wait_s * 1000)));
  if (!report) {
    err << program << ": " << report.error().message << "\n";
    return 2;
  }
  out << format_audit(stats, *report);
  if (stats.invalid_accepted > 0) {
    out << "FAILED: " << stats.invalid_accepted
        << " invalid events were accepted instead of rejected\n";
  }
  return report->ok() && stats.invalid_accepted == 0 ? 0 : 1;
}

}  // namespace tally
