#include "common/pgwire/binary_values.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "common/core/calendar.h"

namespace tally::pgwire {
namespace {

constexpr uint32_t kBool = 16, kBytea = 17, kChar = 18, kName = 19, kInt8 = 20, kInt2 = 21,
                   kInt4 = 23, kText = 25, kOid = 26, kJson = 114, kFloat4 = 700, kFloat8 = 701,
                   kUnknown = 705, kBpchar = 1042, kVarchar = 1043, kDate = 1082, kTime = 1083,
                   kTimestamp = 1114, kTimestamptz = 1184, kNumeric = 1700, kUuid = 2950,
                   kJsonb = 3802;

void put_be(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

Error bad(uint32_t oid, std::string_view text) {
  return make_error(
      ErrorCode::kInvalidArgument,
      "cannot encode \"" + std::string(text) + "\" as binary type oid " + std::to_string(oid));
}

template <typename T>
Result<std::string> integer(uint32_t oid, std::string_view text, int bytes) {
  T v{};
  auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  if (r.ec != std::errc() || r.ptr != text.data() + text.size()) return bad(oid, text);
  std::string out;
  put_be(out, static_cast<uint64_t>(v), bytes);
  return out;
}

constexpr int64_t kPgEpochDays = 10957;  // 2000-01-01 - 1970-01-01
constexpr int64_t kUsPerDay = 86400000000LL;

struct Cursor {
  std::string_view s;
  std::size_t i = 0;
  bool digits(int n, int64_t& out) {
    out = 0;
    for (int k = 0; k < n; ++k) {
      if (i >= s.size() || s[i] < '0' || s[i] > '9') return false;
      out = out * 10 + (s[i++] - '0');
    }
    return true;
  }
  bool some_digits(int64_t& out) {
    std::size_t start = i;
    out = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') out = out * 10 + (s[i++] - '0');
    return i > start;
  }
  bool eat(char c) {
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  bool done() const { return i == s.size(); }
};

bool parse_date(Cursor& c, int64_t& days) {
  int64_t y = 0, m = 0, d = 0;
  if (!c.some_digits(y) || !c.eat('-') || !c.digits(2, m) || !c.eat('-') || !c.digits(2, d)) {
    return false;
  }
  if (m < 1 || m > 12 || d < 1 || d > 31) return false;
  days = days_from_civil(y, static_cast<unsigned>(m), static_cast<unsigned>(d)) - kPgEpochDays;
  return true;
}

// HH:MM:SS[.ffffff] as microseconds.
bool parse_time(Cursor& c, int64_t& us) {
  int64_t h = 0, mi = 0, s = 0;
  if (!c.digits(2, h) || !c.eat(':') || !c.digits(2, mi) || !c.eat(':') || !c.digits(2, s)) {
    return false;
  }
  int64_t frac = 0;
  if (c.eat('.')) {
    int n = 0;
    while (c.i < c.s.size() && c.s[c.i] >= '0' && c.s[c.i] <= '9') {
      if (n < 6) {
        frac = frac * 10 + (c.s[c.i] - '0');
        ++n;
      }
      ++c.i;
    }
    if (n == 0) return false;
    while (n < 6) {
      frac *= 10;
      ++n;
    }
  }
  us = ((h * 60 + mi) * 60 + s) * 1000000 + frac;
  return true;
}

// +HH[:MM[:SS]] or -HH[:MM[:SS]] as seconds east of UTC.
bool parse_offset(Cursor& c, int64_t& seconds) {
  int sign = 0;
  if (c.eat('+')) {
    sign = 1;
  } else if (c.eat('-')) {
    sign = -1;
  } else {
    return false;
  }
  int64_t h = 0, m = 0, s = 0;
  if (!c.digits(2, h)) return false;
  if (c.eat(':') && !c.digits(2, m)) return false;
  if (c.eat(':') && !c.digits(2, s)) return false;
  seconds = sign * (h * 3600 + m * 60 + s);
  return true;
}

Result<std::string> timestamp(uint32_t oid, std::string_view text) {
  std::string out;
  if (text == "infinity" || text == "-infinity") {
    put_be(out,
           static_cast<uint64_t>(text[0] == '-' ? std::numeric_limits<int64_t>::min()
                                                : std::numeric_limits<int64_t>::max()),
           8);
    return out;
  }
  Cursor c{text};
  int64_t days = 0, us = 0, offset = 0;
  if (!parse_date(c, days) || !c.eat(' ') || !parse_time(c, us)) return bad(oid, text);
  if (oid == kTimestamptz && !parse_offset(c, offset)) return bad(oid, text);
  if (!c.done()) return bad(oid, text);  // BC dates and other styles
  put_be(out, static_cast<uint64_t>(days * kUsPerDay + us - offset * 1000000), 8);
  return out;
}

Result<std::string> numeric(std::string_view text) {
  std::string out;
  auto header = [&](int ndigits, int weight, uint16_t sign, int dscale) {
    put_be(out, static_cast<uint16_t>(ndigits), 2);
    put_be(out, static_cast<uint16_t>(static_cast<int16_t>(weight)), 2);
    put_be(out, sign, 2);
    put_be(out, static_cast<uint16_t>(dscale), 2);
  };
  if (text == "NaN") {
    header(0, 0, 0xC000, 0);
    return out;
  }
  if (text == "Infinity" || text == "-Infinity") {
    header(0, 0, text[0] == '-' ? 0xF000 : 0xD000, 0);
    return out;
  }
  bool negative = false;
  std::size_t i = 0;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) negative = text[i++] == '-';
  std::string int_part, frac_part;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') int_part.push_back(text[i++]);
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') frac_part.push_back(text[i++]);
  }
  if (i != text.size() || (int_part.empty() && frac_part.empty())) return bad(kNumeric, text);
  const int dscale = static_cast<int>(frac_part.size());
  // Base-10000 digits: the integer part padded on the left, the fraction on the right.
  while (int_part.size() % 4 != 0) int_part.insert(int_part.begin(), '0');
  while (frac_part.size() % 4 != 0) frac_part.push_back('0');
  std::vector<int> groups;
  const std::string all = int_part + frac_part;
  for (std::size_t g = 0; g < all.size(); g += 4) groups.push_back(std::stoi(all.substr(g, 4)));
  int weight = static_cast<int>(int_part.size() / 4) - 1;
  std::size_t first = 0;
  while (first < groups.size() && groups[first] == 0) {
    ++first;
    --weight;
  }
  std::size_t last = groups.size();
  while (last > first && groups[last - 1] == 0) --last;
  if (first == last) {
    header(0, 0, 0, dscale);
    return out;
  }
  header(static_cast<int>(last - first), weight, negative ? 0x4000 : 0, dscale);
  for (std::size_t g = first; g < last; ++g) put_be(out, static_cast<uint16_t>(groups[g]), 2);
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool binary_format_supported(uint32_t oid) {
  switch (oid) {
    case kBool:
    case kBytea:
    case kChar:
    case kName:
    case kInt8:
    case kInt2:
    case kInt4:
    case kText:
    case kOid:
    case kJson:
    case kFloat4:
    case kFloat8:
    case kUnknown:
    case kBpchar:
    case kVarchar:
    case kDate:
    case kTime:
    case kTimestamp:
    case kTimestamptz:
    case kNumeric:
    case kUuid:
    case kJsonb:
      return true;
    default:
      return false;
  }
}

Result<std::string> text_to_binary(uint32_t oid, std::string_view text) {
  switch (oid) {
    case kText:
    case kVarchar:
    case kBpchar:
    case kName:
    case kUnknown:
    case kJson:
    case kChar:
      return std::string(text);
    case kJsonb:
      return std::string(1, '\1') + std::string(text);
    case kBool:
      if (text == "t" || text == "f") return std::string(1, text == "t" ? '\1' : '\0');
      return bad(oid, text);
    case kInt2:
      return integer<int16_t>(oid, text, 2);
    case kInt4:
      return integer<int32_t>(oid, text, 4);
    case kInt8:
      return integer<int64_t>(oid, text, 8);
    case kOid:
      return integer<uint32_t>(oid, text, 4);
    case kFloat4:
    case kFloat8: {
      std::string s(text);
      char* end = nullptr;
      double d = 0;
      if (s == "NaN") {
        d = std::nan("");
      } else if (s == "Infinity" || s == "-Infinity") {
        d = s[0] == '-' ? -HUGE_VAL : HUGE_VAL;
      } else {
        d = std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size()) return bad(oid, text);
      }
      std::string out;
      if (oid == kFloat4) {
        float f = static_cast<float>(d);
        if (end != nullptr) f = std::strtof(s.c_str(), nullptr);  // no double rounding
        uint32_t bits = 0;
        std::memcpy(&bits, &f, sizeof bits);
        put_be(out, bits, 4);
      } else {
        uint64_t bits = 0;
        std::memcpy(&bits, &d, sizeof bits);
        put_be(out, bits, 8);
      }
      return out;
    }
    case kBytea: {
      if (text.size() < 2 || text[0] != '\\' || text[1] != 'x' || text.size() % 2 != 0) {
        return bad(oid, text);
      }
      std::string out;
      for (std::size_t i = 2; i < text.size(); i += 2) {
        int hi = hex_value(text[i]), lo = hex_value(text[i + 1]);
        if (hi < 0 || lo < 0) return bad(oid, text);
        out.push_back(static_cast<char>(hi * 16 + lo));
      }
      return out;
    }
    case kUuid: {
      std::string out;
      int pending = -1;
      for (char c : text) {
        if (c == '-') continue;
        int v = hex_value(c);
        if (v < 0) return bad(oid, text);
        if (pending < 0) {
          pending = v;
        } else {
          out.push_back(static_cast<char>(pending * 16 + v));
          pending = -1;
        }
      }
      if (out.size() != 16 || pending >= 0) return bad(oid, text);
      return out;
    }
    case kDate: {
      std::string out;
      if (text == "infinity" || text == "-infinity") {
        put_be(out,
               static_cast<uint32_t>(text[0] == '-' ? std::numeric_limits<int32_t>::min()
                                                    : std::numeric_limits<int32_t>::max()),
               4);
        return out;
      }
      Cursor c{text};
      int64_t days = 0;
      if (!parse_date(c, days) || !c.done()) return bad(oid, text);
      put_be(out, static_cast<uint32_t>(static_cast<int32_t>(days)), 4);
      return out;
    }
    case kTime: {
      Cursor c{text};
      int64_t us = 0;
      if (!parse_time(c, us) || !c.done()) return bad(oid, text);
      std::string out;
      put_be(out, static_cast<uint64_t>(us), 8);
      return out;
    }
    case kTimestamp:
    case kTimestamptz:
      return timestamp(oid, text);
    case kNumeric:
      return numeric(text);
    default:
      return make_error(ErrorCode::kUnsupported,
                        "the analyst endpoint cannot send values of type oid " +
                            std::to_string(oid) + " in binary; request text format for it");
  }
}

}  // namespace tally::pgwire
