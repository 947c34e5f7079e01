// libpq connection strings ("conninfo"): the one place that builds and quotes them. A value libpq
// would misread bare (empty, or with whitespace, ' or \) is single-quoted with ' and \ escaped, so
// a password or name reaches libpq as written. Pure; any thread may call them concurrently.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace tally {

// `value` as libpq reads it back: bare when it needs no quotes ("tally", "127.0.0.1"), which keeps
// printed strings such as cluster.json's analyst_pg readable; else quoted: "it's" -> 'it\'s'.
std::string quote_conninfo_value(std::string_view value);

// One keyword=value pair of a conninfo string; `keyword` is a libpq keyword, never user input.
struct ConninfoParam {
  std::string_view keyword;
  std::string_view value;
};

// Appends " keyword=value", the value through quote_conninfo_value (no space on an empty string).
void append_conninfo_param(std::string& conninfo, std::string_view keyword, std::string_view value);

// "keyword=value keyword=value ..." in the order given, each value as append_conninfo_param.
std::string build_conninfo(std::initializer_list<ConninfoParam> params);

}  // namespace tally
