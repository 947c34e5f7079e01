// Exact arithmetic on PostgreSQL's text form of numbers, for combining per-shard partial
// aggregates at the cluster proxy: sums of int8/numeric without rounding, and avg as PostgreSQL's
// numeric_div computes it (same result scale, select_div_scale; rounding half away from zero).
// Pure functions; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/core/result.h"

namespace tally::sql {

// A finite decimal: value = (negative ? -1 : 1) * digits * 10^-scale. digits has no leading zeros
// ("0" for zero, then negative is false).
struct Decimal {
  bool negative = false;
  std::string digits = "0";
  int scale = 0;
};

// Parses "-12", "3.1400", "0.5" (PostgreSQL's numeric/int output). kInvalidArgument otherwise
// (NaN and Infinity included: they cannot be combined exactly here).
Result<Decimal> parse_decimal(std::string_view text);
// PostgreSQL's text form: the scale is kept ("1.50" stays "1.50").
std::string format_decimal(const Decimal& d);
// a + b; the result scale is the larger of the two, as numeric_add.
Decimal add_decimal(const Decimal& a, const Decimal& b);
// Sign of a - b (-1, 0, 1), by value.
int compare_decimal(const Decimal& a, const Decimal& b);
// sum / count as PostgreSQL's avg(int*/numeric) final function (numeric_div with
// select_div_scale). count must be > 0.
Decimal divide_decimal_for_avg(const Decimal& sum, int64_t count);

}  // namespace tally::sql
