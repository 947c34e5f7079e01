#include "common/sql/statement_classifier.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <functional>
#include <iterator>
#include <limits>
#include <utility>

namespace tally::sql {
namespace {

// ---------------------------------------------------------------------------------------------
// Characters (PostgreSQL's scan.l: identifiers are ASCII letters, '_' and any byte >= 0x80, then
// also digits and '$'; dollar-quote tags are the same without '$').

enum CharClass : uint8_t {
  kSpace = 1,
  kIdentStart = 2,
  kDigit = 4,
  kIdentChar = 8,  // identifier start, digit or '$'
};

constexpr std::array<uint8_t, 256> kCharClasses = [] {
  std::array<uint8_t, 256> classes{};
  for (int c = 0; c < 256; ++c) {
    uint8_t k = 0;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') k |= kSpace;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80) {
      k |= kIdentStart | kIdentChar;
    }
    if (c >= '0' && c <= '9') k |= kDigit | kIdentChar;
    if (c == '$') k |= kIdentChar;
    classes[static_cast<std::size_t>(c)] = k;
  }
  return classes;
}();

bool has_class(char c, uint8_t k) {
  return (kCharClasses[static_cast<unsigned char>(c)] & k) != 0;
}
bool is_space(char c) {
  return has_class(c, kSpace);
}
bool is_digit(char c) {
  return has_class(c, kDigit);
}
bool is_ident_start(char c) {
  return has_class(c, kIdentStart);
}
bool is_tag_char(char c) {
  return has_class(c, kIdentStart | kDigit);
}
bool is_ident_char(char c) {
  return has_class(c, kIdentChar);
}
constexpr char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// A cheap hash for the compile-time keyword and function tables: the length and three bytes
// folded to lower case, no loop (a per-byte hash was a third of the cost of classifying a point
// query). Folding lets keywords be found case-insensitively.
constexpr uint32_t name_hash(std::string_view text) {
  const std::size_t n = text.size();
  if (n == 0) return 0;
  const auto a = static_cast<uint8_t>(ascii_lower(text[0]));
  const auto b = static_cast<uint8_t>(ascii_lower(text[n / 2]));
  const auto c = static_cast<uint8_t>(ascii_lower(text[n - 1]));
  return ((static_cast<uint32_t>(a) * 961U + static_cast<uint32_t>(b) * 31U + c) * 2654435761U) ^
         static_cast<uint32_t>(n * 40503U);
}

// ASCII case-insensitive equality against a lower-case name.
bool equals_folded(std::string_view text, std::string_view lower) {
  if (text.size() != lower.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (ascii_lower(text[i]) != lower[i]) return false;
  }
  return true;
}

// An open-addressing index (linear probing) over `names`, built at compile time.
template <std::size_t kSlots, std::size_t kCount>
constexpr std::array<int16_t, kSlots> build_index(
    const std::array<std::string_view, kCount>& names) {
  static_assert((kSlots & (kSlots - 1)) == 0 && kCount * 2 <= kSlots);
  std::array<int16_t, kSlots> slots{};
  for (int16_t& slot : slots) slot = -1;
  for (std::size_t i = 0; i < kCount; ++i) {
    std::size_t h = (name_hash(names[i]) >> 7) & (kSlots - 1);
    while (slots[h] != -1) h = (h + 1) & (kSlots - 1);
    slots[h] = static_cast<int16_t>(i);
  }
  return slots;
}

// The index of `key` in `names`, or -1. With `fold`, `key` is compared ASCII case-insensitively
// (the names are lower case).
template <std::size_t kSlots, std::size_t kCount>
int find_in_index(const std::array<int16_t, kSlots>& slots,
                  const std::array<std::string_view, kCount>& names, std::string_view key,
                  bool fold) {
  for (std::size_t h = (name_hash(key) >> 7) & (kSlots - 1);; h = (h + 1) & (kSlots - 1)) {
    const int16_t index = slots[h];
    if (index < 0) return -1;
    const std::string_view name = names[static_cast<std::size_t>(index)];
    if (fold ? equals_folded(key, name) : name == key) return index;
  }
}

template <std::size_t kCount>
constexpr bool sorted_unique(const std::array<std::string_view, kCount>& names) {
  for (std::size_t i = 1; i < kCount; ++i) {
    if (!(names[i - 1] < names[i])) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Keywords. Those the classifier acts on have a role (an id); the others are listed only to mark
// them "non-call": PostgreSQL's reserved and col_name keywords cannot name a user function when
// unqualified and unquoted, so `IN (`, `EXISTS (`, `CAST (`, `numeric(10,2)`, `VALUES (` are never
// function calls. JOIN (a type_func_name keyword) is added: `JOIN (subquery)` is common and no
// built-in function is called join.

// clang-format off
enum class Kw : uint8_t {
  kNone,   // not a keyword the classifier knows
  kOther,  // a non-call keyword without a role
  kAbort, kAnalyze, kAnd, kAs, kAtomic, kBegin, kBy, kCase, kChain, kClose, kCommit, kConstraints,
  kCreate, kDeallocate, kDeclare, kDelete, kDiscard, kEnd, kExecute, kExplain, kFalse, kFetch,
  kFor, kGlobal, kGroup, kGrouping, kInsert, kInto, kKey, kListen, kLoad, kLocal, kMerge, kMove,
  kNo, kOff, kOnly, kOr, kOrder, kPartition, kPrepare, kPrepared, kRead, kRecursive, kReplace,
  kReset, kRollback, kSelect, kSession, kSet, kSets, kShare, kShow, kStart, kTable, kTablesample,
  kTemp, kTo, kTransaction, kUnlisten, kUpdate, kValues, kVerbose, kWith, kWork, kWrite,
};

constexpr std::string_view kNonCallWords[] = {
    // Reserved keywords (PostgreSQL 15).
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "both", "case",
    "cast", "check", "collate", "column", "constraint", "create", "current_catalog",
    "current_date", "current_role", "current_time", "current_timestamp", "current_user",
    "default", "deferrable", "desc", "distinct", "do", "else", "end", "except", "false", "fetch",
    "for", "foreign", "from", "grant", "group", "having", "in", "initially", "intersect", "into",
    "lateral", "leading", "limit", "localtime", "localtimestamp", "not", "null", "offset", "on",
    "only", "or", "order", "placing", "primary", "references", "returning", "select",
    "session_user", "some", "symmetric", "table", "then", "to", "trailing", "true", "union",
    "unique", "user", "using", "variadic", "when", "where", "window", "with",
    // col_name keywords: type names and special-syntax functions, never a user function.
    "between", "bigint", "bit", "boolean", "char", "character", "coalesce", "dec", "decimal",
    "exists", "extract", "float", "greatest", "grouping", "inout", "int", "integer", "interval",
    "least", "national", "nchar", "none", "normalize", "nullif", "numeric", "out", "overlay",
    "position", "precision", "real", "row", "setof", "smallint", "substring", "time",
    "timestamp", "treat", "trim", "values", "varchar", "xmlattributes", "xmlconcat",
    "xmlelement", "xmlexists", "xmlforest", "xmlnamespaces", "xmlparse", "xmlpi", "xmlroot",
    "xmlserialize", "xmltable",
    // A type_func_name keyword treated as non-call (see above).
    "join",
};

struct KeywordRole {
  std::string_view name;
  Kw kw;
};

// Unreserved ones may also name a function, a column or a table.
constexpr KeywordRole kKeywordRoles[] = {
    {"abort", Kw::kAbort}, {"analyse", Kw::kAnalyze}, {"analyze", Kw::kAnalyze},
    {"and", Kw::kAnd}, {"as", Kw::kAs}, {"atomic", Kw::kAtomic}, {"begin", Kw::kBegin},
    {"by", Kw::kBy}, {"case", Kw::kCase}, {"chain", Kw::kChain}, {"close", Kw::kClose},
    {"commit", Kw::kCommit}, {"constraints", Kw::kConstraints}, {"create", Kw::kCreate},
    {"deallocate", Kw::kDeallocate}, {"declare", Kw::kDeclare}, {"delete", Kw::kDelete},
    {"discard", Kw::kDiscard}, {"end", Kw::kEnd}, {"execute", Kw::kExecute},
    {"explain", Kw::kExplain}, {"false", Kw::kFalse}, {"fetch", Kw::kFetch}, {"for", Kw::kFor},
    {"global", Kw::kGlobal}, {"group", Kw::kGroup}, {"grouping", Kw::kGrouping},
    {"insert", Kw::kInsert}, {"into", Kw::kInto}, {"key", Kw::kKey}, {"listen", Kw::kListen},
    {"load", Kw::kLoad}, {"local", Kw::kLocal}, {"merge", Kw::kMerge}, {"move", Kw::kMove},
    {"no", Kw::kNo}, {"off", Kw::kOff}, {"only", Kw::kOnly}, {"or", Kw::kOr},
    {"order", Kw::kOrder}, {"partition", Kw::kPartition}, {"prepare", Kw::kPrepare},
    {"prepared", Kw::kPrepared}, {"read", Kw::kRead}, {"recursive", Kw::kRecursive},
    {"replace", Kw::kReplace}, {"reset", Kw::kReset}, {"rollback", Kw::kRollback},
    {"select", Kw::kSelect}, {"session", Kw::kSession}, {"set", Kw::kSet}, {"sets", Kw::kSets},
    {"share", Kw::kShare}, {"show", Kw::kShow}, {"start", Kw::kStart}, {"table", Kw::kTable},
    {"tablesample", Kw::kTablesample}, {"temp", Kw::kTemp}, {"temporary", Kw::kTemp},
    {"to", Kw::kTo}, {"transaction", Kw::kTransaction}, {"unlisten", Kw::kUnlisten},
    {"update", Kw::kUpdate}, {"values", Kw::kValues}, {"verbose", Kw::kVerbose},
    {"with", Kw::kWith}, {"work", Kw::kWork}, {"write", Kw::kWrite},
};
// clang-format on

struct KeywordInfo {
  std::string_view name;
  Kw kw = Kw::kNone;
  bool non_call = false;
};

constexpr bool is_non_call_word(std::string_view name) {
  for (std::string_view word : kNonCallWords) {
    if (word == name) return true;
  }
  return false;
}

constexpr std::size_t count_keywords() {
  std::size_t n = std::size(kNonCallWords);
  for (const KeywordRole& role : kKeywordRoles) {
    if (!is_non_call_word(role.name)) ++n;
  }
  return n;
}

constexpr std::size_t kKeywordCount = count_keywords();
constexpr std::size_t kMaxKeywordLength = 24;

// The union of both lists: every non-call word (with its role, if any), then the other roles.
constexpr std::array<KeywordInfo, kKeywordCount> kKeywordInfo = [] {
  std::array<KeywordInfo, kKeywordCount> info{};
  std::size_t n = 0;
  for (std::string_view word : kNonCallWords) info[n++] = {word, Kw::kOther, true};
  for (const KeywordRole& role : kKeywordRoles) {
    bool merged = false;
    for (std::size_t i = 0; i < std::size(kNonCallWords); ++i) {
      if (info[i].name == role.name) {
        info[i].kw = role.kw;
        merged = true;
      }
    }
    if (!merged) info[n++] = {role.name, role.kw, false};
  }
  return info;
}();

constexpr std::array<std::string_view, kKeywordCount> kKeywordNames = [] {
  std::array<std::string_view, kKeywordCount> names{};
  for (std::size_t i = 0; i < kKeywordCount; ++i) names[i] = kKeywordInfo[i].name;
  return names;
}();
constexpr auto kKeywordIndex = build_index<512>(kKeywordNames);

constexpr bool keywords_unique() {
  std::array<std::string_view, kKeywordCount> names = kKeywordNames;
  std::sort(names.begin(), names.end());
  for (std::string_view name : names) {
    if (name.size() > kMaxKeywordLength) return false;
  }
  return sorted_unique(names);
}
static_assert(keywords_unique(), "a keyword is listed twice or is too long");

struct WordInfo {
  Kw kw = Kw::kNone;
  bool non_call = false;
};

WordInfo lookup_keyword(std::string_view word) {
  if (word.size() > kMaxKeywordLength) return {};
  const int index = find_in_index(kKeywordIndex, kKeywordNames, word, /*fold=*/true);
  if (index < 0) return {};
  const KeywordInfo& info = kKeywordInfo[index];
  return {info.kw, info.non_call};
}

// ---------------------------------------------------------------------------------------------
// The built-in allowlist: functions that neither write nor fail on a hot standby. Grouped for
// reading; sorted at compile time.

// clang-format off
constexpr std::string_view kBuiltinUnsorted[] = {
    // Aggregates.
    "array_agg", "avg", "bit_and", "bit_or", "bit_xor", "bool_and", "bool_or", "corr", "count",
    "covar_pop", "covar_samp", "every", "json_agg", "json_object_agg", "jsonb_agg",
    "jsonb_object_agg", "max", "min", "mode", "percentile_cont", "percentile_disc", "regr_avgx",
    "regr_avgy", "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy",
    "regr_syy", "stddev", "stddev_pop", "stddev_samp", "string_agg", "sum", "var_pop", "var_samp",
    "variance",
    // Window functions.
    "cume_dist", "dense_rank", "first_value", "lag", "last_value", "lead", "nth_value", "ntile",
    "percent_rank", "rank", "row_number",
    // GROUP BY ROLLUP (...) / CUBE (...) look like calls (the cube extension's constructor is
    // read-only too).
    "cube", "rollup",
    // Date and time.
    "age", "clock_timestamp", "date_bin", "date_part", "date_trunc", "isfinite", "justify_days",
    "justify_hours", "justify_interval", "make_date", "make_interval", "make_time",
    "make_timestamp", "make_timestamptz", "now", "statement_timestamp", "timeofday", "timezone",
    "to_char", "to_date", "to_number", "to_timestamp", "transaction_timestamp",
    // Conditionals.
    "num_nonnulls", "num_nulls",
    // Mathematics (random() is volatile but read-only).
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "ceiling", "cos", "degrees", "div",
    "exp", "floor", "gcd", "lcm", "ln", "log", "log10", "mod", "pi", "pow", "power", "radians",
    "random", "round", "scale", "sign", "sin", "sqrt", "tan", "trunc", "width_bucket",
    // Strings.
    "ascii", "bit_length", "btrim", "char_length", "character_length", "chr", "concat", "concat_ws",
    "decode", "encode", "format", "ilike", "initcap", "left", "length", "like", "lower", "lpad",
    "ltrim", "md5", "octet_length", "quote_ident", "quote_literal", "quote_nullable",
    "regexp_count", "regexp_instr", "regexp_like", "regexp_match", "regexp_matches",
    "regexp_replace", "regexp_split_to_array", "regexp_split_to_table", "regexp_substr", "repeat",
    "reverse", "right", "rpad", "rtrim", "sha224", "sha256", "sha384", "sha512", "split_part",
    "starts_with", "string_to_array", "string_to_table", "strpos", "substr", "to_ascii", "to_hex",
    "translate", "upper",
    // Arrays and sets.
    "array_append", "array_cat", "array_dims", "array_fill", "array_length", "array_lower",
    "array_ndims", "array_position", "array_positions", "array_prepend", "array_remove",
    "array_replace", "array_to_string", "array_upper", "cardinality", "generate_series",
    "generate_subscripts", "trim_array", "unnest",
    // JSON.
    "array_to_json", "json_array_elements", "json_array_elements_text", "json_array_length",
    "json_build_array", "json_build_object", "json_each", "json_each_text", "json_extract_path",
    "json_extract_path_text", "json_object", "json_object_keys", "json_populate_record",
    "json_to_record", "json_to_recordset", "json_typeof", "jsonb_array_elements",
    "jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array", "jsonb_build_object",
    "jsonb_each", "jsonb_each_text", "jsonb_extract_path", "jsonb_extract_path_text",
    "jsonb_insert", "jsonb_object", "jsonb_object_keys", "jsonb_path_exists", "jsonb_path_match",
    "jsonb_path_query", "jsonb_path_query_array", "jsonb_path_query_first", "jsonb_populate_record",
    "jsonb_pretty", "jsonb_set", "jsonb_strip_nulls", "jsonb_to_record", "jsonb_to_recordset",
    "jsonb_typeof", "row_to_json", "to_json", "to_jsonb",
    // Session and server information; replication positions (pg_current_wal_lsn is left out on
    // purpose: it fails during recovery, so its statements go to the leader).
    "col_description", "current_database", "current_schema", "current_schemas", "current_setting",
    "format_type", "has_database_privilege", "has_function_privilege", "has_schema_privilege",
    "has_table_privilege", "obj_description", "pg_backend_pid", "pg_column_size",
    "pg_database_size", "pg_get_constraintdef", "pg_get_expr", "pg_get_functiondef",
    "pg_get_indexdef", "pg_get_userbyid", "pg_get_viewdef", "pg_has_role", "pg_indexes_size",
    "pg_is_in_recovery", "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp", "pg_postmaster_start_time", "pg_relation_size",
    "pg_size_bytes", "pg_size_pretty", "pg_table_is_visible", "pg_table_size",
    "pg_total_relation_size", "pg_typeof", "pg_wal_lsn_diff", "to_regclass", "to_regtype",
    "version",
    // Miscellaneous.
    "gen_random_uuid", "overlaps",
    // Type names called as casts (the col_name ones such as numeric(...) are keywords already).
    "bool", "bpchar", "bytea", "cidr", "date", "float4", "float8", "inet", "int2", "int4", "int8",
    "json", "jsonb", "macaddr", "name", "oid", "regclass", "regtype", "text", "timestamptz",
    "timetz", "uuid", "varying",
};
// clang-format on

constexpr std::size_t kBuiltinCount = std::size(kBuiltinUnsorted);

constexpr std::array<std::string_view, kBuiltinCount> kBuiltin = [] {
  std::array<std::string_view, kBuiltinCount> names{};
  std::copy(std::begin(kBuiltinUnsorted), std::end(kBuiltinUnsorted), names.begin());
  std::sort(names.begin(), names.end());
  return names;
}();
static_assert(sorted_unique(kBuiltin), "a built-in read-only function is listed twice");
constexpr auto kBuiltinIndex = build_index<1024>(kBuiltin);

bool builtin_contains(std::string_view name) {
  return find_in_index(kBuiltinIndex, kBuiltin, name, /*fold=*/false) >= 0;
}

// Functions that change server session state (session-level, not transaction-level).
// clang-format off
constexpr std::string_view kSessionFunctions[] = {
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
    "set_config", "setseed",
};
// clang-format on

bool is_session_function(std::string_view name) {
  return std::find(std::begin(kSessionFunctions), std::end(kSessionFunctions), name) !=
         std::end(kSessionFunctions);
}

// ---------------------------------------------------------------------------------------------
// Reasons (static texts reported in Classification::reason).

constexpr std::string_view kReasonEmpty = "no statement";
constexpr std::string_view kReasonRead = "read-only statement";
constexpr std::string_view kReasonShow = "SHOW reads a setting";
constexpr std::string_view kReasonExplain = "EXPLAIN without ANALYZE does not execute";
constexpr std::string_view kReasonNotRead = "statement not known to be read-only";
constexpr std::string_view kReasonCall = "calls a function not known to be read-only";
constexpr std::string_view kReasonDml = "contains a data-modifying keyword";
constexpr std::string_view kReasonLocking = "locking clause (FOR UPDATE / FOR SHARE)";
constexpr std::string_view kReasonInto = "SELECT INTO creates a table";
constexpr std::string_view kReasonExplainAnalyze =
    "EXPLAIN ANALYZE executes a statement that is not a sure read";
constexpr std::string_view kReasonBegin = "begins a transaction";
constexpr std::string_view kReasonEnd = "ends a transaction";
constexpr std::string_view kReasonTwoPhase = "two-phase commit of a prepared transaction";
constexpr std::string_view kReasonSavepoint = "rolls back to a savepoint inside the transaction";
constexpr std::string_view kReasonTransactionScoped = "transaction-scoped setting";
constexpr std::string_view kReasonSession = "changes or depends on session state";
constexpr std::string_view kReasonSessionCall = "calls a function that changes session state";
constexpr std::string_view kReasonUnbalanced = "unbalanced parentheses";
constexpr std::string_view kReasonAtomic = "unterminated BEGIN ATOMIC body";

// ---------------------------------------------------------------------------------------------
// Lexer: tokens as offsets into the text; whitespace and comments skipped.

enum class Tok : uint8_t {
  kWord,         // identifier or keyword
  kQuotedIdent,  // "..." or U&"..."
  kString,       // '...', E'...', B'...', X'...', N'...', U&'...', $tag$...$tag$
  kNumber,
  kParam,  // $1
  kLParen,
  kRParen,
  kSemicolon,
  kComma,
  kDot,
  kDoubleColon,
  kOperator,  // any other punctuation, one byte
  kEnd,
  kError,  // the text cannot be read with certainty; reason in Lexer::error()
};

// Offsets as 32 bits keep tokens small (texts of 4 GiB or more are not classified).
struct Token {
  uint32_t begin = 0;
  uint32_t end = 0;
  Tok type = Tok::kEnd;
  bool plain = true;  // kQuotedIdent: no "" escape and not U&"..."
};

Token make_token(Tok type, std::size_t begin, std::size_t end) {
  Token t;
  t.begin = static_cast<uint32_t>(begin);
  t.end = static_cast<uint32_t>(end);
  t.type = type;
  return t;
}

class Lexer {
 public:
  explicit Lexer(std::string_view sql) : s_(sql) {}

  Token next() {
    while (true) {
      while (pos_ < s_.size() && is_space(s_[pos_])) ++pos_;
      if (pos_ >= s_.size()) return make_token(Tok::kEnd, pos_, pos_);
      const char c = s_[pos_];
      if (c == '-' && peek(1) == '-') {
        while (pos_ < s_.size() && s_[pos_] != '\n' && s_[pos_] != '\r') ++pos_;
        continue;
      }
      if (c == '/' && peek(1) == '*') {
        if (!skip_block_comment()) return fail(pos_, "unterminated /* comment");
        continue;
      }
      return token(c);
    }
  }

  std::string_view error() const { return error_; }

 private:
  char peek(std::size_t ahead) const { return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0'; }

  Token fail(std::size_t begin, std::string_view reason) {
    error_ = reason;
    pos_ = s_.size();
    return make_token(Tok::kError, begin, s_.size());
  }

  Token make(Tok type, std::size_t begin) const { return make_token(type, begin, pos_); }

  std::size_t quote_or_backslash(std::size_t from) const {
    for (std::size_t i = from; i < s_.size(); ++i) {
      if (s_[i] == '\'' || s_[i] == '\\') return i;
    }
    return std::string_view::npos;
  }

  bool skip_block_comment() {
    int depth = 1;
    std::size_t i = pos_ + 2;
    while (i + 1 < s_.size()) {
      if (s_[i] == '/' && s_[i + 1] == '*') {
        ++depth;
        i += 2;
      } else if (s_[i] == '*' && s_[i + 1] == '/') {
        i += 2;
        if (--depth == 0) {
          pos_ = i;
          return true;
        }
      } else {
        ++i;
      }
    }
    return false;
  }

  Token token(char c) {
    const std::size_t begin = pos_;
    if (c == '\'') {
      ++pos_;
      return standard_string(begin);
    }
    if (is_ident_start(c)) {
      const char next = peek(1);
      if ((c == 'e' || c == 'E') && next == '\'') {
        pos_ += 2;
        return extended_string(begin);
      }
      if ((c == 'b' || c == 'B' || c == 'x' || c == 'X' || c == 'n' || c == 'N') && next == '\'') {
        pos_ += 2;
        return standard_string(begin);
      }
      if ((c == 'u' || c == 'U') && next == '&' && (peek(2) == '\'' || peek(2) == '"')) {
        pos_ += 3;
        if (s_[pos_ - 1] == '\'') return standard_string(begin);
        return quoted_ident(begin, /*unicode=*/true);
      }
      while (pos_ < s_.size() && is_ident_char(s_[pos_])) ++pos_;
      return make(Tok::kWord, begin);
    }
    if (c == '"') {
      ++pos_;
      return quoted_ident(begin, /*unicode=*/false);
    }
    if (c == '$') return dollar(begin);
    if (is_digit(c) || (c == '.' && is_digit(peek(1)))) return number(begin);
    ++pos_;
    switch (c) {
      case '(':
        return make(Tok::kLParen, begin);
      case ')':
        return make(Tok::kRParen, begin);
      case ';':
        return make(Tok::kSemicolon, begin);
      case ',':
        return make(Tok::kComma, begin);
      case '.':
        return make(Tok::kDot, begin);
      case ':':
        if (pos_ < s_.size() && s_[pos_] == ':') {
          ++pos_;
          return make(Tok::kDoubleColon, begin);
        }
        return make(Tok::kOperator, begin);
      default:
        return make(Tok::kOperator, begin);
    }
  }

  // After the opening quote. '' is a quote; a backslash is an ordinary character under
  // standard_conforming_strings = on (the default since PostgreSQL 9.1), but a session that
  // turned it off would read \' as an escaped quote and see a different statement. So a
  // backslash right before a quote makes the text unsure.
  Token standard_string(std::size_t begin) {
    while (true) {
      const std::size_t i = quote_or_backslash(pos_);
      if (i == std::string_view::npos) return fail(begin, "unterminated quoted string");
      if (s_[i] == '\\') {
        if (i + 1 < s_.size() && s_[i + 1] == '\'') {
          return fail(begin,
                      "backslash before a quote in a string: its meaning depends on "
                      "standard_conforming_strings");
        }
        pos_ = i + 1;
        continue;
      }
      if (i + 1 < s_.size() && s_[i + 1] == '\'') {
        pos_ = i + 2;
        continue;
      }
      pos_ = i + 1;
      return make(Tok::kString, begin);
    }
  }

  // E'...': backslash escapes any byte, '' is a quote.
  Token extended_string(std::size_t begin) {
    while (true) {
      const std::size_t i = quote_or_backslash(pos_);
      if (i == std::string_view::npos) return fail(begin, "unterminated quoted string");
      if (s_[i] == '\\') {
        if (i + 1 >= s_.size()) return fail(begin, "unterminated quoted string");
        pos_ = i + 2;
        continue;
      }
      if (i + 1 < s_.size() && s_[i + 1] == '\'') {
        pos_ = i + 2;
        continue;
      }
      pos_ = i + 1;
      return make(Tok::kString, begin);
    }
  }

  Token quoted_ident(std::size_t begin, bool unicode) {
    bool plain = !unicode;
    while (true) {
      const std::size_t i = s_.find('"', pos_);
      if (i == std::string_view::npos) return fail(begin, "unterminated quoted identifier");
      if (i + 1 < s_.size() && s_[i + 1] == '"') {
        plain = false;
        pos_ = i + 2;
        continue;
      }
      pos_ = i + 1;
      Token t = make(Tok::kQuotedIdent, begin);
      t.plain = plain;
      return t;
    }
  }

  // $1 (a parameter) or $tag$...$tag$ / $$...$$ (a string).
  Token dollar(std::size_t begin) {
    std::size_t i = pos_ + 1;
    if (i < s_.size() && is_digit(s_[i])) {
      while (i < s_.size() && is_digit(s_[i])) ++i;
      pos_ = i;
      return make(Tok::kParam, begin);
    }
    if (i < s_.size() && is_ident_start(s_[i])) {
      while (i < s_.size() && is_tag_char(s_[i])) ++i;
    }
    if (i >= s_.size() || s_[i] != '$')
      return fail(begin, "'$' that starts no parameter or string");
    const std::string_view delimiter = s_.substr(begin, i + 1 - begin);
    const std::size_t close = s_.find(delimiter, i + 1);
    if (close == std::string_view::npos) return fail(begin, "unterminated dollar-quoted string");
    pos_ = close + delimiter.size();
    return make(Tok::kString, begin);
  }

  Token number(std::size_t begin) {
    while (pos_ < s_.size() && (is_digit(s_[pos_]) || s_[pos_] == '.')) {
      // "1..2" does not occur in SQL; a second '.' simply ends up in the number.
      ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      std::size_t i = pos_ + 1;
      if (i < s_.size() && (s_[i] == '+' || s_[i] == '-')) ++i;
      if (i < s_.size() && is_digit(s_[i])) {
        while (i < s_.size() && is_digit(s_[i])) ++i;
        pos_ = i;
      }
    }
    return make(Tok::kNumber, begin);
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  std::string_view error_;
};

// ---------------------------------------------------------------------------------------------
// One statement, fed token by token.

struct StatementResult {
  std::string_view reason = kReasonEmpty;
  std::string_view evidence;
  StatementKind kind = StatementKind::kEmpty;
  bool chain = false;
  bool read_only_transaction = false;
};

StatementResult result_of(StatementKind kind, std::string_view reason,
                          std::string_view evidence = {}) {
  StatementResult r;
  r.kind = kind;
  r.reason = reason;
  r.evidence = evidence;
  return r;
}

bool is_read_lead(Kw kw) {
  return kw == Kw::kSelect || kw == Kw::kWith || kw == Kw::kValues || kw == Kw::kTable;
}

// What came before a token, for deciding whether `name (` is a call.
enum class Prev : uint8_t { kNone, kWord, kQuoted, kDot, kLParen, kRParen, kDoubleColon, kOther };

class StatementAnalyzer {
 public:
  StatementAnalyzer(const Classifier& classifier, std::string_view sql)
      : classifier_(&classifier), sql_(sql) {}

  // True when a top-level ';' ends this statement here (not inside parentheses, as in CREATE
  // RULE ... DO (a; b), nor inside a BEGIN ATOMIC ... END function body).
  bool semicolon_splits() const { return paren_depth_ <= 0 && atomic_depth_ == 0; }

  void feed(const Token& t) {
    WordInfo info;
    if (t.type == Tok::kWord) info = lookup_keyword(text(t));
    ++tokens_;
    if (head_count_ < kHeadWords) head_[head_count_++] = info.kw;
    if (t.type == Tok::kLParen) ++paren_depth_;
    if (t.type == Tok::kRParen && --paren_depth_ < 0) unbalanced_ = true;
    track_atomic_body(info.kw);

    switch (phase_) {
      case Phase::kLead:
        if (t.type == Tok::kLParen) return;  // (SELECT ...) UNION (SELECT ...)
        lead_ = info.kw;
        lead_text_ = text(t);
        if (t.type != Tok::kWord) lead_ = Kw::kNone;
        if (lead_ == Kw::kExplain) {
          phase_ = Phase::kExplainStart;
          return;
        }
        phase_ = Phase::kBody;
        body(t, info);
        return;
      case Phase::kExplainStart:
        if (t.type == Tok::kLParen) {
          phase_ = Phase::kExplainOptions;
          option_depth_ = 1;
          return;
        }
        phase_ = Phase::kExplainLegacy;
        [[fallthrough]];
      case Phase::kExplainLegacy:
        if (info.kw == Kw::kAnalyze) {
          analyze_ = true;
          return;
        }
        if (info.kw == Kw::kVerbose) return;
        phase_ = Phase::kInnerLead;
        inner_lead(t, info);
        return;
      case Phase::kExplainOptions:
        explain_option(t, info);
        return;
      case Phase::kInnerLead:
        inner_lead(t, info);
        return;
      case Phase::kBody:
        body(t, info);
        return;
    }
  }

  StatementResult finish() const {
    if (tokens_ == 0) return {};
    if (unbalanced_ || paren_depth_ != 0) {
      return result_of(StatementKind::kWrite, kReasonUnbalanced);
    }
    if (atomic_depth_ > 0) return result_of(StatementKind::kWrite, kReasonAtomic, lead_text_);
    StatementResult r = by_lead();
    if (!session_call_.empty() &&
        (r.kind == StatementKind::kRead || r.kind == StatementKind::kWrite) &&
        !(lead_ == Kw::kExplain && !analyze_)) {
      return result_of(StatementKind::kSessionState, kReasonSessionCall, session_call_);
    }
    return r;
  }

 private:
  enum class Phase : uint8_t {
    kLead,            // before the first word (leading '(' skipped)
    kExplainStart,    // right after EXPLAIN
    kExplainOptions,  // inside EXPLAIN ( ... )
    kExplainLegacy,   // EXPLAIN [ANALYZE] [VERBOSE]
    kInnerLead,       // the explained statement's first word
    kBody,            // the (explained) statement proper
  };
  static constexpr std::size_t kHeadWords = 6;
  static constexpr std::size_t kMaxNameParts = 3;
  static constexpr std::size_t kMaxNameBytes = 200;

  std::string_view text(const Token& t) const { return {sql_.data() + t.begin, t.end - t.begin}; }
  std::string_view span(Token from, const Token& to) const {
    return {sql_.data() + from.begin, to.end - from.begin};
  }

  // CREATE FUNCTION ... BEGIN ATOMIC ... END: semicolons inside do not end the statement
  // (psql counts BEGIN / CASE against END the same way).
  void track_atomic_body(Kw kw) {
    if (lead_ != Kw::kCreate) {
      last_kw_ = kw;
      return;
    }
    if (atomic_depth_ == 0) {
      if (kw == Kw::kAtomic && last_kw_ == Kw::kBegin) atomic_depth_ = 1;
    } else if (kw == Kw::kBegin || kw == Kw::kCase) {
      ++atomic_depth_;
    } else if (kw == Kw::kEnd) {
      --atomic_depth_;
    }
    last_kw_ = kw;
  }

  void explain_option(const Token& t, const WordInfo& info) {
    if (analyze_pending_) {
      // ANALYZE [boolean]: only an explicit false, off or 0 turns it off.
      analyze_pending_ = false;
      const bool off = info.kw == Kw::kFalse || info.kw == Kw::kOff ||
                       (t.type == Tok::kNumber && text(t) == "0");
      if (!off) analyze_ = true;
    }
    if (t.type == Tok::kLParen) {
      ++option_depth_;
    } else if (t.type == Tok::kRParen) {
      if (--option_depth_ == 0) phase_ = Phase::kInnerLead;
    } else if (info.kw == Kw::kAnalyze) {
      analyze_pending_ = true;
    }
  }

  void inner_lead(const Token& t, const WordInfo& info) {
    if (t.type == Tok::kLParen) return;
    inner_ = t.type == Tok::kWord ? info.kw : Kw::kNone;
    inner_text_ = text(t);
    phase_ = Phase::kBody;
    body(t, info);
  }

  // The scan of the statement proper: data-modifying keywords, locking clauses, INTO, calls.
  void body(const Token& t, const WordInfo& info) {
    switch (t.type) {
      case Tok::kWord:
      case Tok::kQuotedIdent:
        name_part(t, info);
        if (t.type == Tok::kWord) word(t, info.kw);
        break;
      case Tok::kDot:
        dot_continues_name_ = prev_ == Prev::kWord || prev_ == Prev::kQuoted;
        break;
      case Tok::kLParen:
        if (prev_ == Prev::kWord || prev_ == Prev::kQuoted) open_paren_after_name();
        break;
      default:
        break;
    }
    if (t.type != Tok::kDot) dot_continues_name_ = false;
    prev_ = prev_of(t.type);
    prev_kw_ = t.type == Tok::kWord ? info.kw : Kw::kNone;
    prev_token_ = t;
  }

  static Prev prev_of(Tok type) {
    switch (type) {
      case Tok::kWord:
        return Prev::kWord;
      case Tok::kQuotedIdent:
        return Prev::kQuoted;
      case Tok::kDot:
        return Prev::kDot;
      case Tok::kLParen:
        return Prev::kLParen;
      case Tok::kRParen:
        return Prev::kRParen;
      case Tok::kDoubleColon:
        return Prev::kDoubleColon;
      default:
        return Prev::kOther;
    }
  }

  void name_part(const Token& t, const WordInfo& info) {
    if (dot_continues_name_ && name_parts_ > 0) {
      if (name_parts_ < kMaxNameParts) name_[name_parts_] = t;
      ++name_parts_;
      return;
    }
    name_before_ = prev_;
    name_before_kw_ = prev_kw_;
    name_[0] = t;
    name_parts_ = 1;
    name_first_ = info;
  }

  void word(const Token& t, Kw kw) {
    switch (kw) {
      case Kw::kInsert:
      case Kw::kUpdate:
      case Kw::kDelete:
      case Kw::kMerge:
        if (kw == Kw::kUpdate && prev_kw_ == Kw::kFor) {
          remember(locking_, span(prev_token_, t));
        } else {
          remember(dml_, text(t));
        }
        break;
      case Kw::kNo:
      case Kw::kShare:
      case Kw::kKey:
        if (prev_kw_ == Kw::kFor) remember(locking_, span(prev_token_, t));
        break;
      case Kw::kInto:
        remember(into_, text(t));
        break;
      case Kw::kOnly:
        if (prev_kw_ == Kw::kRead) read_only_ = true;
        break;
      case Kw::kWrite:
        if (prev_kw_ == Kw::kRead) read_write_ = true;
        break;
      default:
        break;
    }
  }

  static void remember(std::string_view& slot, std::string_view evidence) {
    if (slot.empty()) slot = evidence;
  }

  // `name (`: decide whether it is a function call and whether that call is read-only.
  void open_paren_after_name() {
    // Type modifiers (x::numeric(10,2)), column alias lists (AS t(a, b), (subquery) t(a, b),
    // f(x) t(a)), CTE names (WITH t(a) AS ...), sampling methods (TABLESAMPLE bernoulli (10)),
    // and FILTER / OVER / WITHIN GROUP after an aggregate's ')'.
    if (name_before_ == Prev::kDoubleColon || name_before_ == Prev::kRParen) return;
    if (name_before_kw_ == Kw::kAs || name_before_kw_ == Kw::kWith ||
        name_before_kw_ == Kw::kRecursive || name_before_kw_ == Kw::kTablesample) {
      return;
    }
    const Token& first = name_[0];
    if (name_parts_ == 1 && first.type == Tok::kWord) {
      if (name_first_.non_call) return;  // IN (, EXISTS (, CAST (, VALUES (, numeric(10, 2)
      if (name_first_.kw == Kw::kBy &&
          (name_before_kw_ == Kw::kOrder || name_before_kw_ == Kw::kGroup ||
           name_before_kw_ == Kw::kPartition)) {
        return;  // ORDER BY (a), GROUP BY (a, b)
      }
      if (name_first_.kw == Kw::kSets && name_before_kw_ == Kw::kGrouping) return;
    }
    const Token& last = name_[std::min(name_parts_, kMaxNameParts) - 1];
    const std::string_view evidence = span(first, last);

    // Resolve the name as PostgreSQL would: unquoted parts folded to lower case.
    char buffer[kMaxNameBytes];
    std::size_t length = 0;
    std::size_t first_dot = 0;
    bool resolvable = name_parts_ <= kMaxNameParts;
    for (std::size_t p = 0; resolvable && p < name_parts_; ++p) {
      const Token& part = name_[p];
      std::string_view part_text = text(part);
      const bool quoted = part.type == Tok::kQuotedIdent;
      if (quoted) {
        part_text = part_text.substr(1, part_text.size() - 2);
        if (!part.plain || part_text.find('.') != std::string_view::npos) resolvable = false;
      }
      if (length + part_text.size() + 1 > kMaxNameBytes) resolvable = false;
      if (!resolvable) break;
      if (p > 0) {
        if (p == 1) first_dot = length;
        buffer[length++] = '.';
      }
      for (char c : part_text) buffer[length++] = quoted ? c : ascii_lower(c);
    }
    if (!resolvable) {
      remember(unsafe_call_, evidence);
      return;
    }
    const std::string_view resolved(buffer, length);
    std::string_view bare = resolved;
    if (name_parts_ == 2 && resolved.substr(0, first_dot) == "pg_catalog") {
      bare = resolved.substr(first_dot + 1);
    }
    if ((name_parts_ == 1 || bare != resolved) && is_session_function(bare)) {
      remember(session_call_, evidence);
      return;
    }
    if (!classifier_->is_read_only_function(resolved)) remember(unsafe_call_, evidence);
  }

  // Kind of a SELECT / WITH / VALUES / TABLE statement after the scan.
  StatementResult read_candidate() const {
    if (!locking_.empty()) return result_of(StatementKind::kWrite, kReasonLocking, locking_);
    if (!dml_.empty()) return result_of(StatementKind::kWrite, kReasonDml, dml_);
    if (!into_.empty()) return result_of(StatementKind::kWrite, kReasonInto, into_);
    if (!unsafe_call_.empty()) return result_of(StatementKind::kWrite, kReasonCall, unsafe_call_);
    return result_of(StatementKind::kRead, kReasonRead);
  }

  Kw head(std::size_t i) const { return i < head_count_ ? head_[i] : Kw::kNone; }

  StatementResult by_lead() const {
    switch (lead_) {
      case Kw::kSelect:
      case Kw::kWith:
      case Kw::kValues:
      case Kw::kTable:
        return read_candidate();
      case Kw::kShow:
        return result_of(StatementKind::kRead, kReasonShow, lead_text_);
      case Kw::kExplain:
        return explain();
      case Kw::kBegin:
        return begin();
      case Kw::kStart:
        if (head(1) == Kw::kTransaction) return begin();
        return result_of(StatementKind::kWrite, kReasonNotRead, lead_text_);
      case Kw::kCommit:
      case Kw::kEnd:
      case Kw::kRollback:
      case Kw::kAbort:
        return transaction_end();
      case Kw::kPrepare:
        if (head(1) == Kw::kTransaction) {
          return result_of(StatementKind::kTransactionEnd, kReasonEnd, lead_text_);
        }
        return result_of(StatementKind::kSessionState, kReasonSession, lead_text_);
      case Kw::kSet:
        if (head(1) == Kw::kLocal || head(1) == Kw::kTransaction || head(1) == Kw::kConstraints) {
          return result_of(StatementKind::kWrite, kReasonTransactionScoped, lead_text_);
        }
        return result_of(StatementKind::kSessionState, kReasonSession, lead_text_);
      case Kw::kReset:
      case Kw::kDiscard:
      case Kw::kListen:
      case Kw::kUnlisten:
      case Kw::kDeallocate:
      case Kw::kLoad:
      case Kw::kDeclare:
      case Kw::kClose:
      case Kw::kFetch:
      case Kw::kMove:
      case Kw::kExecute:
        return result_of(StatementKind::kSessionState, kReasonSession, lead_text_);
      case Kw::kCreate:
        // CREATE [OR REPLACE] [GLOBAL | LOCAL] TEMP | TEMPORARY ...
        for (std::size_t i = 1; i < kHeadWords; ++i) {
          const Kw kw = head(i);
          if (kw == Kw::kTemp) {
            return result_of(StatementKind::kSessionState, kReasonSession, lead_text_);
          }
          if (kw != Kw::kOr && kw != Kw::kReplace && kw != Kw::kGlobal && kw != Kw::kLocal) {
            break;
          }
        }
        return result_of(StatementKind::kWrite, kReasonNotRead, lead_text_);
      default:
        return result_of(StatementKind::kWrite, kReasonNotRead, lead_text_);
    }
  }

  StatementResult explain() const {
    if (inner_ == Kw::kExecute) {
      return result_of(StatementKind::kSessionState, kReasonSession, inner_text_);
    }
    if (!analyze_) return result_of(StatementKind::kRead, kReasonExplain, lead_text_);
    if (is_read_lead(inner_)) return read_candidate();
    return result_of(StatementKind::kWrite, kReasonExplainAnalyze, inner_text_);
  }

  StatementResult begin() const {
    StatementResult r = result_of(StatementKind::kTransactionBegin, kReasonBegin, lead_text_);
    r.read_only_transaction = read_only_ && !read_write_;
    return r;
  }

  StatementResult transaction_end() const {
    std::size_t i = 1;
    if (head(i) == Kw::kWork || head(i) == Kw::kTransaction) ++i;
    if (head(1) == Kw::kPrepared) {
      return result_of(StatementKind::kWrite, kReasonTwoPhase, lead_text_);
    }
    if (head(i) == Kw::kTo) return result_of(StatementKind::kWrite, kReasonSavepoint, lead_text_);
    StatementResult r = result_of(StatementKind::kTransactionEnd, kReasonEnd, lead_text_);
    if (head(i) == Kw::kAnd) r.chain = head(i + 1) == Kw::kChain;
    return r;
  }

  const Classifier* classifier_;
  std::string_view sql_;

  std::size_t tokens_ = 0;
  Kw head_[kHeadWords] = {};
  std::size_t head_count_ = 0;
  int paren_depth_ = 0;
  bool unbalanced_ = false;
  int atomic_depth_ = 0;
  Kw last_kw_ = Kw::kNone;

  Phase phase_ = Phase::kLead;
  Kw lead_ = Kw::kNone;
  std::string_view lead_text_;
  Kw inner_ = Kw::kNone;
  std::string_view inner_text_;
  bool analyze_ = false;
  bool analyze_pending_ = false;
  int option_depth_ = 0;

  Prev prev_ = Prev::kNone;
  Kw prev_kw_ = Kw::kNone;
  Token prev_token_;
  bool dot_continues_name_ = false;
  Token name_[kMaxNameParts];
  std::size_t name_parts_ = 0;
  WordInfo name_first_;
  Prev name_before_ = Prev::kNone;
  Kw name_before_kw_ = Kw::kNone;

  bool read_only_ = false;
  bool read_write_ = false;
  std::string_view locking_;
  std::string_view dml_;
  std::string_view into_;
  std::string_view unsafe_call_;
  std::string_view session_call_;
};

// Combines the statements of one query string (see Classification::multi_statement).
class Combiner {
 public:
  void add(const StatementResult& r) {
    if (r.kind == StatementKind::kEmpty) return;
    if (++count_ == 1) first_ = r;
    switch (r.kind) {
      case StatementKind::kRead:
        break;
      case StatementKind::kWrite:
        if (!has_write_) {
          write_ = r;
          has_write_ = true;
        }
        break;
      case StatementKind::kSessionState:
        if (!has_session_) {
          session_ = r;
          has_session_ = true;
        }
        break;
      case StatementKind::kTransactionBegin:
      case StatementKind::kTransactionEnd:
        transaction_ = r;
        has_transaction_ = true;
        break;
      case StatementKind::kEmpty:
        break;
    }
  }

  std::size_t count() const { return count_; }

  Classification result() const {
    const StatementResult& r = count_ <= 1        ? first_
                               : has_session_     ? session_
                               : has_transaction_ ? transaction_
                               : has_write_       ? write_
                                                  : first_;
    Classification out;
    out.kind = r.kind;
    out.multi_statement = count_ > 1;
    out.chain = r.chain;
    out.read_only_transaction = r.read_only_transaction;
    out.reason = r.reason;
    out.evidence = r.evidence;
    return out;
  }

 private:
  std::size_t count_ = 0;
  StatementResult first_;
  StatementResult write_;
  StatementResult session_;
  StatementResult transaction_;
  bool has_write_ = false;
  bool has_session_ = false;
  bool has_transaction_ = false;
};

}  // namespace

std::string_view statement_kind_name(StatementKind kind) {
  switch (kind) {
    case StatementKind::kEmpty:
      return "empty";
    case StatementKind::kRead:
      return "read";
    case StatementKind::kWrite:
      return "write";
    case StatementKind::kTransactionBegin:
      return "transaction_begin";
    case StatementKind::kTransactionEnd:
      return "transaction_end";
    case StatementKind::kSessionState:
      return "session_state";
  }
  return "write";
}

Classifier::Classifier() = default;

Classifier::Classifier(std::vector<std::string> extra_read_only_functions)
    : extra_(std::move(extra_read_only_functions)) {
  std::sort(extra_.begin(), extra_.end());
  extra_.erase(std::unique(extra_.begin(), extra_.end()), extra_.end());
}

bool Classifier::is_read_only_function(std::string_view resolved_name) const {
  const std::size_t dot = resolved_name.find('.');
  if (dot == std::string_view::npos) {
    if (builtin_contains(resolved_name)) return true;
  } else if (resolved_name.substr(0, dot) == "pg_catalog") {
    const std::string_view bare = resolved_name.substr(dot + 1);
    if (bare.find('.') == std::string_view::npos && builtin_contains(bare)) return true;
  }
  return std::binary_search(extra_.begin(), extra_.end(), resolved_name, std::less<>());
}

std::span<const std::string_view> Classifier::builtin_read_only_functions() {
  return kBuiltin;
}

Classification Classifier::classify(std::string_view sql) const {
  if (sql.size() >= std::numeric_limits<uint32_t>::max()) {
    Classification out;
    out.kind = StatementKind::kWrite;
    out.reason = "statement too long to classify";
    return out;
  }
  Lexer lexer(sql);
  Combiner combiner;
  StatementAnalyzer statement(*this, sql);
  while (true) {
    const Token t = lexer.next();
    switch (t.type) {
      case Tok::kError: {
        Classification out;
        out.kind = StatementKind::kWrite;
        out.multi_statement = combiner.count() >= 1;
        out.reason = lexer.error();
        out.evidence = sql.substr(t.begin, std::min<std::size_t>(sql.size() - t.begin, 24));
        return out;
      }
      case Tok::kEnd:
        combiner.add(statement.finish());
        return combiner.result();
      case Tok::kSemicolon:
        if (statement.semicolon_splits()) {
          combiner.add(statement.finish());
          statement = StatementAnalyzer(*this, sql);
          continue;
        }
        statement.feed(t);
        continue;
      default:
        statement.feed(t);
        continue;
    }
  }
}

}  // namespace tally::sql
