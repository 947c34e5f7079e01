#include "common/sql/numeric_text.h"

#include <algorithm>

namespace tally::sql {
namespace {

__extension__ typedef unsigned __int128 Uint128;

std::string strip_leading_zeros(std::string s) {
  std::size_t i = 0;
  while (i + 1 < s.size() && s[i] == '0') ++i;
  return s.substr(i);
}

// Magnitude comparison of two digit strings without leading zeros.
int compare_magnitude(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
  int c = a.compare(b);
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

std::string add_magnitude(const std::string& a, const std::string& b) {
  std::string out;
  int carry = 0;
  for (std::size_t i = 0; i < std::max(a.size(), b.size()) || carry; ++i) {
    int d = carry;
    if (i < a.size()) d += a[a.size() - 1 - i] - '0';
    if (i < b.size()) d += b[b.size() - 1 - i] - '0';
    out.push_back(static_cast<char>('0' + d % 10));
    carry = d / 10;
  }
  std::reverse(out.begin(), out.end());
  return strip_leading_zeros(out);
}

// a - b with |a| >= |b|.
std::string sub_magnitude(const std::string& a, const std::string& b) {
  std::string out;
  int borrow = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    int d = (a[a.size() - 1 - i] - '0') - borrow;
    if (i < b.size()) d -= b[b.size() - 1 - i] - '0';
    borrow = d < 0 ? 1 : 0;
    if (d < 0) d += 10;
    out.push_back(static_cast<char>('0' + d));
  }
  std::reverse(out.begin(), out.end());
  return strip_leading_zeros(out);
}

Decimal rescale(const Decimal& d, int scale) {
  Decimal r = d;
  if (scale > d.scale && d.digits != "0") r.digits += std::string(scale - d.scale, '0');
  r.scale = scale;
  return r;
}

// The NBASE (10000) weight and first NBASE digit of |d|, as numeric.c's select_div_scale sees them
// (weight 0 and first digit 0 for zero).
void nbase_head(const Decimal& d, int& weight, int& first) {
  weight = 0;
  first = 0;
  if (d.digits == "0") return;
  // Power of ten of the leading digit.
  int p = static_cast<int>(d.digits.size()) - 1 - d.scale;
  int w = p >= 0 ? p / 4 : -((-p + 3) / 4);
  int value = 0;
  for (int q = 4 * w + 3; q >= 4 * w; --q) {
    int idx = q + d.scale;  // position from the right in digits
    int digit = 0;
    if (idx >= 0 && idx < static_cast<int>(d.digits.size())) {
      digit = d.digits[d.digits.size() - 1 - idx] - '0';
    }
    value = value * 10 + digit;
  }
  weight = w;
  first = value;
}

}  // namespace

Result<Decimal> parse_decimal(std::string_view text) {
  Decimal d;
  std::string_view s = text;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    d.negative = s[0] == '-';
    s.remove_prefix(1);
  }
  std::string digits;
  int scale = 0;
  bool seen_point = false;
  bool any = false;
  for (char c : s) {
    if (c == '.' && !seen_point) {
      seen_point = true;
    } else if (c >= '0' && c <= '9') {
      digits.push_back(c);
      any = true;
      if (seen_point) ++scale;
    } else {
      return make_error(ErrorCode::kInvalidArgument,
                        "cannot combine the numeric value \"" + std::string(text) +
                            "\" exactly: expected digits with an optional sign and decimal point");
    }
  }
  if (!any) {
    return make_error(ErrorCode::kInvalidArgument,
                      "cannot combine the numeric value \"" + std::string(text) + "\"");
  }
  d.digits = strip_leading_zeros(digits);
  d.scale = scale;
  if (d.digits == "0") d.negative = false;
  return d;
}

std::string format_decimal(const Decimal& d) {
  std::string digits = d.digits;
  if (static_cast<int>(digits.size()) <= d.scale) {
    digits = std::string(d.scale + 1 - digits.size(), '0') + digits;
  }
  std::string out = d.negative ? "-" : "";
  if (d.scale == 0) return out + digits;
  out += digits.substr(0, digits.size() - d.scale);
  out += '.';
  out += digits.substr(digits.size() - d.scale);
  return out;
}

Decimal add_decimal(const Decimal& a0, const Decimal& b0) {
  int scale = std::max(a0.scale, b0.scale);
  Decimal a = rescale(a0, scale);
  Decimal b = rescale(b0, scale);
  Decimal r;
  r.scale = scale;
  if (a.negative == b.negative) {
    r.digits = add_magnitude(a.digits, b.digits);
    r.negative = a.negative;
  } else if (compare_magnitude(a.digits, b.digits) >= 0) {
    r.digits = sub_magnitude(a.digits, b.digits);
    r.negative = a.negative;
  } else {
    r.digits = sub_magnitude(b.digits, a.digits);
    r.negative = b.negative;
  }
  if (r.digits == "0") r.negative = false;
  return r;
}

int compare_decimal(const Decimal& a0, const Decimal& b0) {
  int scale = std::max(a0.scale, b0.scale);
  Decimal a = rescale(a0, scale);
  Decimal b = rescale(b0, scale);
  if (a.negative != b.negative) return a.negative ? -1 : 1;
  int m = compare_magnitude(a.digits, b.digits);
  return a.negative ? -m : m;
}

Decimal divide_decimal_for_avg(const Decimal& sum, int64_t count) {
  Decimal n;
  n.digits = std::to_string(count);
  int weight1 = 0, first1 = 0, weight2 = 0, first2 = 0;
  nbase_head(sum, weight1, first1);
  nbase_head(n, weight2, first2);
  int qweight = weight1 - weight2;
  if (first1 <= first2) --qweight;
  int rscale = 16 - qweight * 4;  // NUMERIC_MIN_SIG_DIGITS - qweight * DEC_DIGITS
  rscale = std::max(rscale, sum.scale);
  rscale = std::max(rscale, 0);
  rscale = std::min(rscale, 1000);
  // digits * 10^(rscale - scale) / count, rounded half away from zero.
  std::string dividend = sum.digits + std::string(rscale - sum.scale, '0');
  std::string quotient;
  Uint128 rem = 0;
  const auto divisor = static_cast<Uint128>(count);
  for (char c : dividend) {
    rem = rem * 10 + static_cast<unsigned>(c - '0');
    quotient.push_back(static_cast<char>('0' + static_cast<int>(rem / divisor)));
    rem %= divisor;
  }
  quotient = strip_leading_zeros(quotient);
  if (rem * 2 >= divisor) quotient = add_magnitude(quotient, "1");
  Decimal r;
  r.digits = quotient;
  r.scale = rscale;
  r.negative = sum.negative && quotient != "0";
  return r;
}

}  // namespace tally::sql
