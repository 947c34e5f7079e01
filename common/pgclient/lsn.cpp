#include "common/pgclient/lsn.h"

#include <array>
#include <charconv>
#include <optional>

#include "common/core/quote.h"

namespace tally {
namespace {

std::optional<uint32_t> hex_digit(char c) {
  if (c >= '0' && c <= '9') return static_cast<uint32_t>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<uint32_t>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<uint32_t>(c - 'A' + 10);
  return std::nullopt;
}

// 1-8 hex digits, nothing else.
std::optional<uint32_t> parse_hex32(std::string_view text) {
  if (text.empty() || text.size() > 8) return std::nullopt;
  uint32_t value = 0;
  for (const char c : text) {
    const std::optional<uint32_t> digit = hex_digit(c);
    if (!digit) return std::nullopt;
    value = (value << 4) | *digit;
  }
  return value;
}

}  // namespace

Result<uint64_t> parse_lsn(std::string_view text) {
  const std::size_t slash = text.find('/');
  std::optional<uint32_t> high;
  std::optional<uint32_t> low;
  if (slash != std::string_view::npos) {
    high = parse_hex32(text.substr(0, slash));
    low = parse_hex32(text.substr(slash + 1));
  }
  if (!high || !low) {
    return make_error(ErrorCode::kInvalidArgument,
                      "LSN " + quote_for_message(text) + ": expected " + std::string(kLsnForm));
  }
  return (uint64_t{*high} << 32) | *low;
}

std::string format_lsn(uint64_t lsn) {
  std::array<char, 17> buffer{};  // "FFFFFFFF/FFFFFFFF"
  char* const end = buffer.data() + buffer.size();
  char* p = std::to_chars(buffer.data(), end, lsn >> 32, 16).ptr;
  *p++ = '/';
  p = std::to_chars(p, end, lsn & 0xffffffffU, 16).ptr;
  std::string out(buffer.data(), p);
  for (char& c : out) {
    if (c >= 'a' && c <= 'f') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

}  // namespace tally
