// The processor's dead-letter directory (data_dir/dead_letter): one JSON file per batch that the
// cluster proxy or a shard refused for good, holding what `tallyctl dlq list|replay` needs (who,
// which offsets, which shards still lack it, why, when, and the counters:apply body as sent).
// Writers call write_dead_letter (temp file, fdatasync, rename, directory fsync: a listed file is
// whole); tallyctl reads with list_dead_letters and moves replayed files to dead_letter/replayed/.
// Replays use their own idempotency identity (replay_processor_id, docs/contracts.md contract 9).
// Plain functions, no shared state: any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/core/result.h"

namespace tally::processor {

namespace dead_letter_kinds {
// Refused as invalid: HTTP 400/404/409/413/422 for the request, or a shard's apply failing with a
// data or integrity error (SQLSTATE class 22 or 23, e.g. a CHECK constraint). Replayable once the
// cause is removed.
inline constexpr const char* kRejected = "rejected";
// A shard answered `overlap` (its mark lies inside the batch): it holds part of the range, so a
// blind replay could count that part twice. Never replayed automatically.
inline constexpr const char* kOverlap = "overlap";
}  // namespace dead_letter_kinds

struct DeadLetter {
  std::string file;  // the file's name in the directory (filled by read/list)
  std::string kind;  // dead_letter_kinds, or "unreadable" for a file list could not parse
  std::string reason;
  std::string processor_id;
  int partition = 0;
  int64_t from_offset = -1;
  int64_t to_offset = -1;
  // The shards that do not hold the batch; empty means every shard of the keyspace.
  std::vector<std::string> shards;
  size_t rows = 0;
  int64_t events = 0;
  int64_t at_ms = 0;    // wall clock when it was dead-lettered (0: unknown, older files)
  std::string request;  // the counters:apply body as the writer sent it
};

inline constexpr const char* kReplayedSubdir = "replayed";

// Writes `letter` as p<partition>-<from>-<to>[-<n>].json (a new name when one exists); returns
// the file name. kInternal naming the path on an I/O error.
Result<std::string> write_dead_letter(const std::filesystem::path& dir, const DeadLetter& letter);

// Parses one file (also the older {"reason", "request"} form: the rest is read from the request).
Result<DeadLetter> read_dead_letter(const std::filesystem::path& file);

// Every *.json file directly in `dir`, ordered by (processor, partition, from_offset, name), the
// order replays must keep. A file that cannot be parsed is listed with kind "unreadable" and the
// parse error as its reason. A missing directory is an empty list.
Result<std::vector<DeadLetter>> list_dead_letters(const std::filesystem::path& dir);

// The processor_id replays are applied under: `<id>-dlq`. Its own marks per (partition, shard)
// make a replay idempotent (a second replay answers already_applied) without touching the live
// writer's marks, which moved past the batch when it was dead-lettered.
std::string replay_processor_id(std::string_view processor_id);

// The counters:apply body for a replay: the stored request with replay_processor_id and, when the
// letter names shards, "shards" set to them (the shards that applied it are not sent it again).
Result<std::string> replay_request_body(const DeadLetter& letter);

}  // namespace tally::processor
