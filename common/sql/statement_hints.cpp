#include "common/sql/statement_hints.h"

#include "common/core/quote.h"
#include "common/pgclient/lsn.h"

namespace tally::sql {
namespace {

constexpr std::string_view kHintPrefix = "/*tally:";
constexpr std::string_view kKnownKeys = "route, cache_ttl_ms, min_lsn";

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool is_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// ASCII case-insensitive equality; `lower` must be lower case.
bool iequals(std::string_view text, std::string_view lower) {
  if (text.size() != lower.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (ascii_lower(text[i]) != lower[i]) return false;
  }
  return true;
}

std::size_t skip_space(std::string_view text, std::size_t pos) {
  while (pos < text.size() && is_space(text[pos])) ++pos;
  return pos;
}

std::string quote(std::string_view text) {
  return quote_for_message(text);
}

// The end (one past "*/") of the block comment opening at `pos`, honouring nesting as PostgreSQL
// does; npos when it is not closed.
std::size_t block_comment_end(std::string_view sql, std::size_t pos) {
  int depth = 1;
  std::size_t i = pos + 2;
  while (i + 1 < sql.size()) {
    if (sql[i] == '/' && sql[i + 1] == '*') {
      ++depth;
      i += 2;
    } else if (sql[i] == '*' && sql[i + 1] == '/') {
      i += 2;
      if (--depth == 0) return i;
    } else {
      ++i;
    }
  }
  return std::string_view::npos;
}

std::optional<uint32_t> parse_ttl(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
    if (value > kMaxCacheTtlMs) return std::nullopt;
  }
  return static_cast<uint32_t>(value);
}

std::optional<Route> parse_route(std::string_view text) {
  if (iequals(text, "leader")) return Route::kLeader;
  if (iequals(text, "replica")) return Route::kReplica;
  if (iequals(text, "any")) return Route::kAny;
  return std::nullopt;
}

Error hint_error(std::string message) {
  return make_error(ErrorCode::kInvalidArgument, std::move(message));
}

Error bad_value(std::string_view key, std::string_view value, std::string_view expected) {
  std::string message = "statement hint ";
  message += key;
  message += '=';
  message += quote(value);
  message += ": expected ";
  message += expected;
  return hint_error(std::move(message));
}

// Parses the text between "/*tally:" and the closing "*/" into `hints`.
Status parse_hint_body(std::string_view body, StatementHints& hints) {
  std::size_t i = skip_space(body, 0);
  if (i == body.size()) return ok_status();  // `/*tally:*/` carries no hint
  while (true) {
    const std::size_t key_begin = i;
    while (i < body.size() && is_key_char(body[i])) ++i;
    const std::string_view key = body.substr(key_begin, i - key_begin);
    if (key.empty()) {
      return hint_error("statement hint comment: expected key=value, found " +
                        quote(body.substr(key_begin)));
    }
    const bool is_route = iequals(key, "route");
    const bool is_ttl = iequals(key, "cache_ttl_ms");
    const bool is_lsn = iequals(key, "min_lsn");
    if (!is_route && !is_ttl && !is_lsn) {
      return hint_error("statement hint " + quote(key) + ": unknown key; known keys are " +
                        std::string(kKnownKeys));
    }
    const std::string_view name = is_route ? "route" : is_ttl ? "cache_ttl_ms" : "min_lsn";
    i = skip_space(body, i);
    if (i == body.size() || body[i] != '=') {
      return hint_error("statement hint " + std::string(name) + ": expected '=' and a value");
    }
    i = skip_space(body, i + 1);
    const std::size_t value_begin = i;
    while (i < body.size() && !is_space(body[i]) && body[i] != ',') ++i;
    const std::string_view value = body.substr(value_begin, i - value_begin);

    if ((is_route && hints.route) || (is_ttl && hints.cache_ttl_ms) || (is_lsn && hints.min_lsn)) {
      return hint_error("statement hint " + std::string(name) + ": given more than once");
    }
    if (is_route) {
      hints.route = parse_route(value);
      if (!hints.route) return bad_value(name, value, "leader, replica or any");
    } else if (is_ttl) {
      hints.cache_ttl_ms = parse_ttl(value);
      if (!hints.cache_ttl_ms) return bad_value(name, value, "an integer from 0 to 86400000");
    } else {
      Result<uint64_t> lsn = parse_lsn(value);
      if (!lsn.ok()) return bad_value(name, value, "an LSN: " + std::string(kLsnForm));
      hints.min_lsn = *lsn;
    }

    i = skip_space(body, i);
    if (i == body.size()) return ok_status();
    if (body[i] != ',') {
      return hint_error("statement hint " + std::string(name) + "=" + quote(value) +
                        ": expected ',' before " + quote(body.substr(i)));
    }
    i = skip_space(body, i + 1);
    if (i == body.size()) {
      return hint_error("statement hint comment: expected key=value after ','");
    }
  }
}

}  // namespace

std::string_view route_name(Route route) {
  switch (route) {
    case Route::kLeader:
      return "leader";
    case Route::kReplica:
      return "replica";
    case Route::kAny:
      return "any";
  }
  return "any";
}

Result<HintedStatement> parse_statement_hints(std::string_view sql) {
  std::size_t pos = skip_space(sql, 0);
  if (pos == sql.size() || (sql[pos] != '/' && sql[pos] != '-')) {
    // The common case, no leading comment: built in place, nothing to merge.
    return HintedStatement{.hints = {}, .has_hint_comment = false, .body_offset = pos};
  }
  HintedStatement out;
  while (true) {
    pos = skip_space(sql, pos);
    if (sql.substr(pos, 2) == "--") {
      const std::size_t eol = sql.find_first_of("\r\n", pos);
      pos = eol == std::string_view::npos ? sql.size() : eol + 1;
      continue;
    }
    if (sql.substr(pos, 2) != "/*") break;
    const bool is_hint = sql.substr(pos, kHintPrefix.size()) == kHintPrefix;
    const std::size_t end = block_comment_end(sql, pos);
    if (end == std::string_view::npos) {
      if (is_hint) {
        return hint_error("statement hint comment: unterminated /* comment (expected */)");
      }
      break;  // PostgreSQL reports the unterminated comment; the statement starts here
    }
    if (is_hint) {
      const std::size_t body_begin = pos + kHintPrefix.size();
      Status parsed = parse_hint_body(sql.substr(body_begin, end - 2 - body_begin), out.hints);
      if (!parsed.ok()) return parsed.error();
      out.has_hint_comment = true;
    }
    pos = end;
  }
  out.body_offset = pos;
  return out;
}

}  // namespace tally::sql
