#include "common/pgclient/conninfo.h"

namespace tally {

namespace {

// libpq ends a bare value at whitespace (isspace in the C locale), reads \ as an escape and a
// leading ' as the start of a quoted value.
bool needs_quotes(std::string_view value) {
  if (value.empty()) return true;
  for (const char c : value) {
    switch (c) {
      case ' ':
      case '\t':
      case '\n':
      case '\v':
      case '\f':
      case '\r':
      case '\'':
      case '\\':
        return true;
      default:
        break;
    }
  }
  return false;
}

}  // namespace

std::string quote_conninfo_value(std::string_view value) {
  if (!needs_quotes(value)) return std::string(value);
  std::string out;
  out.reserve(value.size() + 2);
  out += '\'';
  for (const char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

void append_conninfo_param(std::string& conninfo, std::string_view keyword,
                           std::string_view value) {
  if (!conninfo.empty()) conninfo += ' ';
  conninfo += keyword;
  conninfo += '=';
  conninfo += quote_conninfo_value(value);
}

std::string build_conninfo(std::initializer_list<ConninfoParam> params) {
  std::string out;
  for (const ConninfoParam& p : params) append_conninfo_param(out, p.keyword, p.value);
  return out;
}

}  // namespace tally
