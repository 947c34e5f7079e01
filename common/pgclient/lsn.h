// PostgreSQL log sequence numbers in their text form "X/Y" (pg_current_wal_lsn(), statement hints,
// read tokens): the one parser and formatter. Pure functions without shared state: any thread may
// call them concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/core/result.h"

namespace tally {

// How error messages name the form parse_lsn accepts.
inline constexpr std::string_view kLsnForm =
    "two groups of 1-8 hex digits separated by '/', such as 0/16B3748";

// PostgreSQL's textual LSN "X/Y" (each side 1-8 hex digits, either case) as (X << 32) | Y.
// kInvalidArgument naming the text otherwise (an SQL NULL read as "" is an error too: the caller
// decides what a missing LSN means).
Result<uint64_t> parse_lsn(std::string_view text);

// The inverse, as PostgreSQL prints it: uppercase hex without leading zeros, "0/16B3748".
std::string format_lsn(uint64_t lsn);

}  // namespace tally
