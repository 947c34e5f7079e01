#include "common/pgwire/frontend_decoder.h"

#include <algorithm>
#include <cstring>

#include "common/core/quote.h"

namespace tally::pgwire {
namespace {

// Buffers larger than this are released once drained, so one big message does not pin memory
// for the rest of a connection's life.
constexpr std::size_t kKeepBufferBytes = std::size_t{1} << 20;

constexpr std::size_t kStartupMinLength = 8;  // length + request code
constexpr std::size_t kHeaderLength = 5;      // type byte + int32 length

uint32_t load_u32(const char* p) {
  return (uint32_t{static_cast<unsigned char>(p[0])} << 24) |
         (uint32_t{static_cast<unsigned char>(p[1])} << 16) |
         (uint32_t{static_cast<unsigned char>(p[2])} << 8) |
         uint32_t{static_cast<unsigned char>(p[3])};
}

int32_t load_i32(const char* p) {
  return static_cast<int32_t>(load_u32(p));
}

int16_t load_i16(const char* p) {
  return static_cast<int16_t>((uint32_t{static_cast<unsigned char>(p[0])} << 8) |
                              uint32_t{static_cast<unsigned char>(p[1])});
}

// "'Q' (0x51)" for printable bytes, "0x16" otherwise.
std::string describe_type_byte(char type) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto byte = static_cast<unsigned char>(type);
  std::string hex = "0x";
  hex += kHex[byte >> 4];
  hex += kHex[byte & 15];
  if (byte >= 0x21 && byte < 0x7f) return std::string("'") + type + "' (" + hex + ")";
  return hex;
}

std::string version_text(uint32_t code) {
  return std::to_string(code >> 16) + "." + std::to_string(code & 0xffff);
}

Error protocol_error(std::string message) {
  return make_error(ErrorCode::kInvalidArgument, std::move(message));
}

// Bounds-checked reads over one message body. Every read checks what remains before touching a
// byte, so a declared count or length can never take it past the body.
class Reader {
 public:
  // `context` prefixes every error: "Bind message", "StartupMessage".
  Reader(std::string_view body, std::string context) : body_(body), context_(std::move(context)) {}

  std::size_t remaining() const { return body_.size() - pos_; }

  Result<std::string_view> cstring(std::string_view field) {
    const std::string_view rest = body_.substr(pos_);
    const std::size_t nul = rest.find('\0');
    if (nul == std::string_view::npos) {
      return error(std::string(field) + " is missing its NUL terminator");
    }
    pos_ += nul + 1;
    return rest.substr(0, nul);
  }

  Result<int16_t> int16(std::string_view field) {
    if (remaining() < 2) return error(short_read(field, 2));
    const int16_t v = load_i16(body_.data() + pos_);
    pos_ += 2;
    return v;
  }

  Result<int32_t> int32(std::string_view field) {
    if (remaining() < 4) return error(short_read(field, 4));
    const int32_t v = load_i32(body_.data() + pos_);
    pos_ += 4;
    return v;
  }

  Result<char> byte(std::string_view field) {
    if (remaining() < 1) return error(short_read(field, 1));
    return body_[pos_++];
  }

  Result<std::string_view> bytes(std::size_t n, std::string_view field) {
    if (remaining() < n) return error(short_read(field, n));
    const std::string_view v = body_.substr(pos_, n);
    pos_ += n;
    return v;
  }

  // A count followed by `count` items of `item_size` bytes each: refuses negative counts and counts
  // whose items cannot fit in what remains, before anything is allocated for them.
  Result<std::size_t> count(std::string_view what, std::size_t item_size) {
    Result<int16_t> n = int16(std::string(what) + " count");
    if (!n.ok()) return n.error();
    if (*n < 0) return error("negative " + std::string(what) + " count " + std::to_string(*n));
    const auto items = static_cast<std::size_t>(*n);
    if (items * item_size > remaining()) {
      return error(std::to_string(items) + " " + std::string(what) +
                   "s declared, needing at least " + std::to_string(items * item_size) +
                   " bytes, but only " + std::to_string(remaining()) + " remain");
    }
    return items;
  }

  Status finish() {
    if (remaining() == 0) return ok_status();
    return error(std::to_string(remaining()) + " trailing bytes after the last field");
  }

  Error error(const std::string& what) const { return protocol_error(context_ + ": " + what); }

 private:
  std::string short_read(std::string_view field, std::size_t n) const {
    return "message ends inside " + std::string(field) + " (" + std::to_string(n) +
           " bytes needed, " + std::to_string(remaining()) + " remain)";
  }

  std::string_view body_;
  std::size_t pos_ = 0;
  std::string context_;
};

// The TRY idiom without exceptions: evaluate a Result, return its error from the caller.
#define TALLY_PGWIRE_ASSIGN(lhs, expr)         \
  do {                                         \
    auto pgwire_result_ = (expr);              \
    if (!pgwire_result_.ok()) {                \
      return pgwire_result_.error();           \
    }                                          \
    (lhs) = std::move(pgwire_result_).value(); \
  } while (false)

#define TALLY_PGWIRE_CHECK(expr)     \
  do {                               \
    Status pgwire_status_ = (expr);  \
    if (!pgwire_status_.ok()) {      \
      return pgwire_status_.error(); \
    }                                \
  } while (false)

Result<FrontendMessage> decode_target(Reader& r, bool describe) {
  char kind = 0;
  TALLY_PGWIRE_ASSIGN(kind, r.byte("the target kind"));
  if (kind != 'S' && kind != 'P') {
    return r.error("invalid target kind " + describe_type_byte(kind) +
                   ", expected 'S' (statement) or 'P' (portal)");
  }
  std::string_view name;
  TALLY_PGWIRE_ASSIGN(name, r.cstring("the name"));
  TALLY_PGWIRE_CHECK(r.finish());
  const auto target = static_cast<TargetKind>(kind);
  if (describe) return FrontendMessage{Describe{target, name}};
  return FrontendMessage{Close{target, name}};
}

Result<FrontendMessage> decode_parse(Reader& r) {
  Parse parse;
  TALLY_PGWIRE_ASSIGN(parse.statement, r.cstring("the statement name"));
  TALLY_PGWIRE_ASSIGN(parse.query, r.cstring("the query string"));
  std::size_t n = 0;
  TALLY_PGWIRE_ASSIGN(n, r.count("parameter type", 4));
  parse.parameter_types.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    int32_t oid = 0;
    TALLY_PGWIRE_ASSIGN(oid, r.int32("a parameter type"));
    parse.parameter_types.push_back(static_cast<uint32_t>(oid));
  }
  TALLY_PGWIRE_CHECK(r.finish());
  return FrontendMessage{std::move(parse)};
}

Result<std::vector<int16_t>> decode_formats(Reader& r, std::string_view what) {
  std::size_t n = 0;
  TALLY_PGWIRE_ASSIGN(n, r.count(what, 2));
  std::vector<int16_t> formats;
  formats.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    int16_t format = 0;
    TALLY_PGWIRE_ASSIGN(format, r.int16(what));
    if (format != 0 && format != 1) {
      return r.error("unsupported format code " + std::to_string(format) + " in " +
                     std::string(what) + " " + std::to_string(i + 1) + " (0 = text, 1 = binary)");
    }
    formats.push_back(format);
  }
  return formats;
}

Result<FrontendMessage> decode_bind(Reader& r) {
  Bind bind;
  TALLY_PGWIRE_ASSIGN(bind.portal, r.cstring("the portal name"));
  TALLY_PGWIRE_ASSIGN(bind.statement, r.cstring("the statement name"));
  TALLY_PGWIRE_ASSIGN(bind.parameter_formats, decode_formats(r, "parameter format"));
  std::size_t n = 0;
  TALLY_PGWIRE_ASSIGN(n, r.count("parameter", 4));  // each parameter has at least its int32 length
  if (bind.parameter_formats.size() > 1 && bind.parameter_formats.size() != n) {
    return r.error(std::to_string(bind.parameter_formats.size()) + " parameter formats but " +
                   std::to_string(n) + " parameters");
  }
  bind.parameters.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::string field = "the length of parameter " + std::to_string(i + 1);
    int32_t length = 0;
    TALLY_PGWIRE_ASSIGN(length, r.int32(field));
    if (length == -1) {
      bind.parameters.emplace_back(std::nullopt);
      continue;
    }
    if (length < 0) {
      return r.error("negative length " + std::to_string(length) + " for parameter " +
                     std::to_string(i + 1) + " (only -1, meaning NULL, is allowed)");
    }
    if (static_cast<std::size_t>(length) > r.remaining()) {
      return r.error("parameter " + std::to_string(i + 1) + " declares " + std::to_string(length) +
                     " bytes but only " + std::to_string(r.remaining()) + " remain");
    }
    std::string_view value;
    TALLY_PGWIRE_ASSIGN(value, r.bytes(static_cast<std::size_t>(length), field));
    bind.parameters.emplace_back(value);
  }
  TALLY_PGWIRE_ASSIGN(bind.result_formats, decode_formats(r, "result format"));
  TALLY_PGWIRE_CHECK(r.finish());
  return FrontendMessage{std::move(bind)};
}

struct TypeInfo {
  const char* name;
  enum Size { kLarge, kControl, kAuth, kEmpty } size;
};

// The message types a client may send, nullopt for any other byte.
std::optional<TypeInfo> frontend_type(char type) {
  switch (type) {
    case 'Q':
      return TypeInfo{"Query", TypeInfo::kLarge};
    case 'P':
      return TypeInfo{"Parse", TypeInfo::kLarge};
    case 'B':
      return TypeInfo{"Bind", TypeInfo::kLarge};
    case 'D':
      return TypeInfo{"Describe", TypeInfo::kControl};
    case 'E':
      return TypeInfo{"Execute", TypeInfo::kControl};
    case 'S':
      return TypeInfo{"Sync", TypeInfo::kEmpty};
    case 'H':
      return TypeInfo{"Flush", TypeInfo::kEmpty};
    case 'C':
      return TypeInfo{"Close", TypeInfo::kControl};
    case 'X':
      return TypeInfo{"Terminate", TypeInfo::kEmpty};
    case 'p':
      return TypeInfo{"AuthResponse", TypeInfo::kAuth};  // password or SASL
    case 'd':
      return TypeInfo{"CopyData", TypeInfo::kLarge};
    case 'c':
      return TypeInfo{"CopyDone", TypeInfo::kEmpty};
    case 'f':
      return TypeInfo{"CopyFail", TypeInfo::kLarge};
    default:
      return std::nullopt;
  }
}

Result<FrontendMessage> decode_body(char type, Reader& r) {
  switch (type) {
    case 'Q': {
      Query query;
      TALLY_PGWIRE_ASSIGN(query.sql, r.cstring("the query string"));
      TALLY_PGWIRE_CHECK(r.finish());
      return FrontendMessage{query};
    }
    case 'P':
      return decode_parse(r);
    case 'B':
      return decode_bind(r);
    case 'D':
      return decode_target(r, /*describe=*/true);
    case 'C':
      return decode_target(r, /*describe=*/false);
    case 'E': {
      Execute execute;
      TALLY_PGWIRE_ASSIGN(execute.portal, r.cstring("the portal name"));
      TALLY_PGWIRE_ASSIGN(execute.max_rows, r.int32("the row limit"));
      TALLY_PGWIRE_CHECK(r.finish());
      return FrontendMessage{execute};
    }
    case 'S':
      return FrontendMessage{Sync{}};
    case 'H':
      return FrontendMessage{Flush{}};
    case 'X':
      return FrontendMessage{Terminate{}};
    case 'c':
      return FrontendMessage{CopyDone{}};
    case 'p': {
      std::string_view payload;
      TALLY_PGWIRE_ASSIGN(payload, r.bytes(r.remaining(), "the payload"));
      return FrontendMessage{AuthResponse{payload}};
    }
    case 'd': {
      std::string_view data;
      TALLY_PGWIRE_ASSIGN(data, r.bytes(r.remaining(), "the data"));
      return FrontendMessage{CopyData{data}};
    }
    case 'f': {
      CopyFail fail;
      TALLY_PGWIRE_ASSIGN(fail.message, r.cstring("the error message"));
      TALLY_PGWIRE_CHECK(r.finish());
      return FrontendMessage{fail};
    }
    default:
      break;
  }
  return make_error(ErrorCode::kInternal,
                    "pgwire: no decoder for type " + describe_type_byte(type));
}

Result<FrontendMessage> decode_startup_parameters(Reader& r, uint32_t code) {
  StartupMessage startup;
  startup.protocol_major = static_cast<uint16_t>(code >> 16);
  startup.protocol_minor = static_cast<uint16_t>(code & 0xffff);
  std::vector<std::string_view> names;
  for (;;) {
    if (r.remaining() == 0) {
      return r.error("missing the NUL that ends the parameter list");
    }
    std::string_view name;
    TALLY_PGWIRE_ASSIGN(name, r.cstring("a parameter name"));
    if (name.empty()) break;
    std::string_view value;
    TALLY_PGWIRE_ASSIGN(value, r.cstring("the value of parameter " + quote_for_message(name)));
    names.push_back(name);
    startup.parameters.emplace_back(std::string(name), std::string(value));
  }
  if (r.remaining() != 0) {
    return r.error(std::to_string(r.remaining()) + " trailing bytes after the parameter list");
  }
  // Sorted, not pairwise: a 1 MiB packet can hold ~200k parameters.
  std::sort(names.begin(), names.end());
  if (const auto dup = std::adjacent_find(names.begin(), names.end()); dup != names.end()) {
    return r.error("duplicate parameter " + quote_for_message(*dup));
  }
  return FrontendMessage{std::move(startup)};
}

#undef TALLY_PGWIRE_ASSIGN
#undef TALLY_PGWIRE_CHECK

}  // namespace

std::optional<std::string_view> StartupMessage::parameter(std::string_view name) const {
  for (const auto& [key, value] : parameters) {
    if (key == name) return std::string_view(value);
  }
  return std::nullopt;
}

std::string_view message_name(const FrontendMessage& message) {
  static constexpr std::string_view kNames[] = {
      "StartupMessage", "SSLRequest",   "GSSENCRequest", "CancelRequest", "Query",   "Parse",
      "Bind",           "Describe",     "Execute",       "Sync",          "Flush",   "Close",
      "Terminate",      "AuthResponse", "CopyData",      "CopyDone",      "CopyFail"};
  static_assert(std::size(kNames) == std::variant_size_v<FrontendMessage>);
  return kNames[message.index()];
}

FrontendDecoder::FrontendDecoder(Phase phase, DecoderLimits limits)
    : phase_(phase), limits_(limits) {}

void FrontendDecoder::compact() {
  prepared_ = 0;
  if (begin_ == end_) {
    begin_ = end_ = 0;
    if (buffer_.size() > kKeepBufferBytes) std::vector<char>().swap(buffer_);
    return;
  }
  if (begin_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
}

std::span<char> FrontendDecoder::prepare(std::size_t n) {
  compact();
  if (buffer_.size() - end_ < n) buffer_.resize(end_ + n);
  prepared_ = n;
  return {buffer_.data() + end_, n};
}

void FrontendDecoder::commit(std::size_t n) {
  end_ += std::min(n, prepared_);
  prepared_ = 0;
}

void FrontendDecoder::feed(std::string_view bytes) {
  if (bytes.empty()) return;
  const std::span<char> space = prepare(bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

Result<std::optional<FrontendMessage>> FrontendDecoder::fail(Error error) {
  error_ = error;
  wanted_ = 0;
  return error;
}

Result<std::optional<FrontendMessage>> FrontendDecoder::next() {
  if (error_) return *error_;
  wanted_ = 0;
  return phase_ == Phase::kStartup ? next_startup() : next_normal();
}

Result<std::optional<FrontendMessage>> FrontendDecoder::next_startup() {
  const char* data = buffer_.data() + begin_;
  const std::size_t available = end_ - begin_;
  if (available < 4) {
    wanted_ = 4 - available;
    return std::optional<FrontendMessage>{};
  }
  const int32_t declared = load_i32(data);
  if (declared < static_cast<int32_t>(kStartupMinLength)) {
    return fail(protocol_error("invalid startup packet length " + std::to_string(declared) +
                               ": below the minimum of 8"));
  }
  const auto length = static_cast<std::size_t>(declared);
  if (length > limits_.max_startup_length) {
    return fail(protocol_error("invalid startup packet length " + std::to_string(length) +
                               ": exceeds the maximum of " +
                               std::to_string(limits_.max_startup_length)));
  }
  if (available < kStartupMinLength) {
    wanted_ = kStartupMinLength - available;
    return std::optional<FrontendMessage>{};
  }
  // The request code is known from 8 bytes on: refuse what we cannot serve before the body.
  const uint32_t code = load_u32(data + 4);
  std::size_t expected_length = 0;  // 0: variable (StartupMessage)
  const auto unsupported = [&] {
    return fail(make_error(
        ErrorCode::kUnsupported,
        "unsupported frontend protocol " + version_text(code) + ": server supports 3.0 to 3.0"));
  };
  if (code == static_cast<uint32_t>(kCancelRequestCode)) {
    expected_length = 16;
  } else if (code == static_cast<uint32_t>(kSslRequestCode)) {
    if (ssl_requested_) return unsupported();  // as PostgreSQL: a second SSLRequest is unknown
    expected_length = 8;
  } else if (code == static_cast<uint32_t>(kGssEncRequestCode)) {
    if (gss_requested_) return unsupported();
    expected_length = 8;
  } else if ((code >> 16) != 3) {
    return unsupported();
  }
  const char* request = code == static_cast<uint32_t>(kCancelRequestCode)   ? "CancelRequest"
                        : code == static_cast<uint32_t>(kSslRequestCode)    ? "SSLRequest"
                        : code == static_cast<uint32_t>(kGssEncRequestCode) ? "GSSENCRequest"
                                                                            : "StartupMessage";
  if (expected_length != 0 && length != expected_length) {
    return fail(protocol_error(std::string(request) + " length " + std::to_string(length) +
                               ", expected " + std::to_string(expected_length)));
  }
  if (available < length) {
    wanted_ = length - available;
    return std::optional<FrontendMessage>{};
  }
  Reader reader(std::string_view(data + kStartupMinLength, length - kStartupMinLength), request);
  std::optional<FrontendMessage> message;
  if (code == static_cast<uint32_t>(kCancelRequestCode)) {
    message = CancelRequest{load_i32(data + 8), load_i32(data + 12)};
  } else if (code == static_cast<uint32_t>(kSslRequestCode)) {
    ssl_requested_ = true;
    message = SslRequest{};
  } else if (code == static_cast<uint32_t>(kGssEncRequestCode)) {
    gss_requested_ = true;
    message = GssEncRequest{};
  } else {
    Result<FrontendMessage> startup = decode_startup_parameters(reader, code);
    if (!startup.ok()) return fail(startup.error());
    message = std::move(startup).value();
    phase_ = Phase::kNormal;
  }
  begin_ += length;
  return message;
}

Result<std::optional<FrontendMessage>> FrontendDecoder::next_normal() {
  const char* data = buffer_.data() + begin_;
  const std::size_t available = end_ - begin_;
  if (available < 1) {
    wanted_ = kHeaderLength;
    return std::optional<FrontendMessage>{};
  }
  const char type = data[0];
  const std::optional<TypeInfo> info = frontend_type(type);
  if (!info) {
    return fail(protocol_error("unknown frontend message type " + describe_type_byte(type)));
  }
  if (available < kHeaderLength) {
    wanted_ = kHeaderLength - available;
    return std::optional<FrontendMessage>{};
  }
  const int32_t declared = load_i32(data + 1);
  const std::string name = info->name;
  if (declared < 4) {
    return fail(protocol_error("invalid " + name + " message length " + std::to_string(declared) +
                               ": below the minimum of 4"));
  }
  const auto length = static_cast<std::size_t>(declared);
  if (info->size == TypeInfo::kEmpty && length != 4) {
    return fail(protocol_error(name + " message: " + std::to_string(length - 4) +
                               " trailing bytes (length " + std::to_string(length) +
                               ", expected 4)"));
  }
  std::size_t limit = limits_.max_message_length;
  if (info->size == TypeInfo::kControl) {
    limit = std::min(limit, limits_.max_control_message_length);
  } else if (info->size == TypeInfo::kAuth) {
    limit = std::min(limit, limits_.max_auth_message_length);
  }
  if (length > limit) {
    return fail(protocol_error("invalid " + name + " message length " + std::to_string(length) +
                               ": exceeds the maximum of " + std::to_string(limit)));
  }
  const std::size_t total = 1 + length;
  if (available < total) {
    wanted_ = total - available;
    return std::optional<FrontendMessage>{};
  }
  Reader reader(std::string_view(data + kHeaderLength, length - 4), name + " message");
  Result<FrontendMessage> message = decode_body(type, reader);
  if (!message.ok()) return fail(message.error());
  begin_ += total;
  return std::optional<FrontendMessage>(std::move(message).value());
}

}  // namespace tally::pgwire
