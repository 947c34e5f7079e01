// `tallyctl dlq list|replay`: the processor's dead-letter directory (processor/src/dead_letter.h).
// list prints every dead-lettered batch; replay re-sends each through the cluster proxy's
// POST /v1/counters:apply as `<id>-dlq` (contract 9), in (processor, partition, offset) order, and
// moves a file to dead_letter/replayed/ only when every shard it names answered `applied` or
// `already_applied`. A failing file is reported and kept, and so are the later files of its
// partition (replaying them would move the replay mark past it, and it could never apply).
// `overlap` files are never replayed: they need an operator's reconciliation.
// Blocking calls on the caller's thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <iosfwd>
#include <string>

#include "common/core/result.h"

namespace tally {

struct DlqTarget {
  std::filesystem::path dir;      // the dead-letter directory
  std::string cluster_proxy_url;  // replay only
  std::string token;              // the cluster proxy's write token
};

// The processor cluster.json lists in `cluster_dir`: its config's data_dir/dead_letter and its
// cluster_proxy url and token. kNotFound when cluster.json lists no processor, kInvalidArgument
// when it lists several.
Result<DlqTarget> dlq_target_from_cluster(const std::filesystem::path& cluster_dir);

// Prints the files; returns how many there are.
Result<size_t> dlq_list(const DlqTarget& target, std::ostream& out);

struct DlqReplayOptions {
  std::string only_file;  // replay just this file name; empty: all
  std::chrono::milliseconds timeout{30000};
};

struct DlqReplaySummary {
  int replayed = 0;  // moved to replayed/
  int kept = 0;      // failed, overlap or unreadable: still in the directory
  int held = 0;      // not tried: an earlier file of the same partition was kept
};

Result<DlqReplaySummary> dlq_replay(const DlqTarget& target, const DlqReplayOptions& options,
                                    std::ostream& out);

}  // namespace tally
