#include "common/keyspace/shard_range.h"

#include <ostream>

namespace tally {
namespace {

constexpr std::string_view kRangeExpectation =
    "expected <start>-<end> in Vitess notation, each side empty or an even number of hex digits "
    "(at most 16), e.g. \"-\", \"-80\", \"40-80\", \"80-\"";

Error range_error(std::string_view text, std::string_view problem) {
  return make_error(ErrorCode::kInvalidArgument, "shard range " + quote_for_message(text) + ": " +
                                                     std::string(kRangeExpectation) + "; " +
                                                     std::string(problem));
}

int hex_value(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

// Parses one side of a range; `side` is "start" or "end" for messages. An empty side yields 0.
Result<KeyspaceId> parse_bound(std::string_view text, std::string_view hex, std::string_view side) {
  if (hex.size() > 16) {
    return range_error(text, std::string(side) + " has " + std::to_string(hex.size()) +
                                 " hex digits, more than 16 (8 bytes)");
  }
  KeyspaceId value = 0;
  for (std::size_t i = 0; i < hex.size(); ++i) {
    const int digit = hex_value(hex[i]);
    if (digit < 0) {
      return range_error(text, std::string(side) + " " + quote_for_message(hex) +
                                   " has a non-hex character at position " + std::to_string(i));
    }
    value = (value << 4) | static_cast<KeyspaceId>(digit);
  }
  if (hex.size() % 2 != 0) {
    return range_error(text, std::string(side) + " " + quote_for_message(hex) +
                                 " has an odd number of hex digits (whole bytes are required)");
  }
  if (!hex.empty()) value <<= 4 * (16 - hex.size());  // hex.size() <= 16; 0 shift when 16
  return value;
}

}  // namespace

ShardRange ShardRange::whole() {
  return ShardRange(0, std::nullopt);
}

Result<ShardRange> ShardRange::parse(std::string_view text) {
  const std::size_t dash = text.find('-');
  if (dash == std::string_view::npos) {
    return range_error(text, "missing '-'");
  }
  if (text.find('-', dash + 1) != std::string_view::npos) {
    return range_error(text, "more than one '-'");
  }
  const std::string_view start_hex = text.substr(0, dash);
  const std::string_view end_hex = text.substr(dash + 1);
  Result<KeyspaceId> start = parse_bound(text, start_hex, "start");
  if (!start.ok()) return start.error();
  Result<KeyspaceId> end = parse_bound(text, end_hex, "end");
  if (!end.ok()) return end.error();
  if (end_hex.empty()) return ShardRange(*start, std::nullopt);
  if (*start >= *end) {
    return range_error(text, "start " + quote_for_message(start_hex) + " is not below end " +
                                 quote_for_message(end_hex) + ", so the range is empty");
  }
  return ShardRange(*start, *end);
}

Result<ShardRange> ShardRange::from_bounds(KeyspaceId start, std::optional<KeyspaceId> end) {
  if (end && start >= *end) {
    return make_error(ErrorCode::kInvalidArgument, "shard range [0x" + keyspace_bound_hex(start) +
                                                       ", 0x" + keyspace_bound_hex(*end) +
                                                       "): start must be below end");
  }
  return ShardRange(start, end);
}

std::string ShardRange::name() const {
  return keyspace_bound_hex(start_) + "-" + (end_ ? keyspace_bound_hex(*end_) : std::string());
}

bool ShardRange::overlaps(const ShardRange& other) const {
  const bool this_ends_after_other_starts = !end_ || other.start_ < *end_;
  const bool other_ends_after_this_starts = !other.end_ || start_ < *other.end_;
  return this_ends_after_other_starts && other_ends_after_this_starts;
}

std::optional<int64_t> ShardRange::sql_upper_bound() const {
  if (!end_) return std::nullopt;
  return ksid_to_sql(*end_);
}

std::string ShardRange::sql_condition(std::string_view column) const {
  std::string condition;
  if (start_ != 0) {
    condition += std::string(column) + " >= " + std::to_string(sql_lower_bound());
  }
  if (end_) {
    if (!condition.empty()) condition += " AND ";
    condition += std::string(column) + " < " + std::to_string(*sql_upper_bound());
  }
  return condition.empty() ? "TRUE" : condition;
}

Result<std::pair<ShardRange, ShardRange>> ShardRange::split() const {
  // Half the width without 128-bit arithmetic: for the open end the width is 2^64 - start,
  // i.e. ~start + 1, and (x + 1) / 2 == x / 2 + (x & 1) cannot overflow.
  KeyspaceId half = 0;
  if (end_) {
    half = (*end_ - start_) / 2;
  } else {
    const KeyspaceId last = ~start_;
    half = (last >> 1) + (last & 1);
  }
  if (half == 0) {
    return make_error(ErrorCode::kInvalidArgument,
                      "shard range \"" + name() + "\" holds a single keyspace id; cannot split it");
  }
  const KeyspaceId mid = start_ + half;
  return std::pair<ShardRange, ShardRange>{ShardRange(start_, mid), ShardRange(mid, end_)};
}

std::strong_ordering operator<=>(const ShardRange& a, const ShardRange& b) {
  if (const auto by_start = a.start_ <=> b.start_; std::is_neq(by_start)) return by_start;
  if (a.end_ == b.end_) return std::strong_ordering::equal;
  if (!a.end_) return std::strong_ordering::greater;
  if (!b.end_) return std::strong_ordering::less;
  return *a.end_ <=> *b.end_;
}

std::ostream& operator<<(std::ostream& os, const ShardRange& range) {
  return os << range.name();
}

std::string keyspace_bound_hex(KeyspaceId bound) {
  std::string hex;
  for (int shift = 56; shift >= 0 && (bound << (56 - shift)) != 0; shift -= 8) {
    const auto byte = static_cast<unsigned>((bound >> shift) & 0xff);
    constexpr char kDigits[] = "0123456789abcdef";
    hex += kDigits[byte >> 4];
    hex += kDigits[byte & 0x0f];
  }
  return hex;
}

}  // namespace tally
