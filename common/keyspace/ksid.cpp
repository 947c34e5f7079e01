#include "common/keyspace/ksid.h"

#include <xxhash.h>

#include <array>

namespace tally {
namespace {

constexpr std::array<bool, 256> make_video_id_table() {
  std::array<bool, 256> table{};
  for (int c = 'a'; c <= 'z'; ++c) table[static_cast<std::size_t>(c)] = true;
  for (int c = 'A'; c <= 'Z'; ++c) table[static_cast<std::size_t>(c)] = true;
  for (int c = '0'; c <= '9'; ++c) table[static_cast<std::size_t>(c)] = true;
  table[static_cast<std::size_t>('-')] = true;
  table[static_cast<std::size_t>('_')] = true;
  return table;
}

constexpr std::array<bool, 256> kVideoIdChar = make_video_id_table();

constexpr std::string_view kVideoIdExpectation = "expected 1-64 characters of [A-Za-z0-9_-]";

}  // namespace

KeyspaceId ksid_for(std::string_view video_id) {
  return static_cast<KeyspaceId>(XXH64(video_id.data(), video_id.size(), 0));
}

Status validate_video_id(std::string_view video_id) {
  if (video_id.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "video_id \"\": " + std::string(kVideoIdExpectation) + ", got an empty id");
  }
  if (video_id.size() > kMaxVideoIdLength) {
    return make_error(ErrorCode::kInvalidArgument, "video_id " + quote_for_message(video_id) +
                                                       ": " + std::string(kVideoIdExpectation) +
                                                       ", got " + std::to_string(video_id.size()) +
                                                       " bytes");
  }
  for (std::size_t i = 0; i < video_id.size(); ++i) {
    const auto byte = static_cast<unsigned char>(video_id[i]);
    if (kVideoIdChar[byte]) continue;
    std::string found;
    if (byte >= 0x20 && byte < 0x7f) {
      found = "'";
      if (byte == '\'' || byte == '\\') found += '\\';
      found += static_cast<char>(byte);
      found += "'";
    } else {
      found = "byte 0x";
      append_hex_byte(found, byte);
    }
    return make_error(ErrorCode::kInvalidArgument, "video_id " + quote_for_message(video_id) +
                                                       ": " + std::string(kVideoIdExpectation) +
                                                       ", found " + found + " at position " +
                                                       std::to_string(i));
  }
  return ok_status();
}

}  // namespace tally
