// FrontendDecoder: turns the bytes a PostgreSQL client sends (protocol 3.0) into validated
// messages. Pure: no sockets, no clocks, one growable buffer it never reads past. Normal-phase
// messages hold string_views into that buffer, valid until the next feed() or prepare() (see
// next()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/core/result.h"

namespace tally::pgwire {

// Request codes of the startup phase (the int32 after the length of an untyped packet).
inline constexpr int32_t kProtocolVersion30 = 3 << 16;   // 196608
inline constexpr int32_t kCancelRequestCode = 80877102;  // 1234.5678
inline constexpr int32_t kSslRequestCode = 80877103;     // 1234.5679
inline constexpr int32_t kGssEncRequestCode = 80877104;  // 1234.5680

// Startup: untyped, length-prefixed packets (StartupMessage, SSLRequest, GSSENCRequest,
// CancelRequest). Normal: a type byte, then an int32 length that counts itself.
enum class Phase { kStartup, kNormal };

// Declared lengths above these are refused as soon as the header arrives, before buffering the
// body. Lengths count the int32 length field itself but not the type byte.
struct DecoderLimits {
  std::size_t max_startup_length = std::size_t{1} << 20;   // startup-phase packets
  std::size_t max_message_length = std::size_t{64} << 20;  // Query, Parse, Bind, CopyData, ...
  // Describe, Close, Execute: only names and a count (PostgreSQL: PQ_SMALL_MESSAGE_LIMIT).
  std::size_t max_control_message_length = 10000;
  // 'p' (password, SASL): PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH.
  std::size_t max_auth_message_length = 65535;
};

// --- startup phase: these own their data, so a session may keep them ---------------------------

// StartupMessage for protocol 3.x. A minor version above 0 is decoded (the session answers
// NegotiateProtocolVersion); parameters keep the client's order, names are unique and non-empty.
struct StartupMessage {
  uint16_t protocol_major = 3;
  uint16_t protocol_minor = 0;
  std::vector<std::pair<std::string, std::string>> parameters;

  // The value of parameter `name` ("user", "database", "application_name", "options", ...).
  std::optional<std::string_view> parameter(std::string_view name) const;
  friend bool operator==(const StartupMessage&, const StartupMessage&) = default;
};
struct SslRequest {
  friend bool operator==(const SslRequest&, const SslRequest&) = default;
};
struct GssEncRequest {
  friend bool operator==(const GssEncRequest&, const GssEncRequest&) = default;
};
struct CancelRequest {
  int32_t process_id = 0;
  int32_t secret_key = 0;
  friend bool operator==(const CancelRequest&, const CancelRequest&) = default;
};

// --- normal phase: string_views into the decoder's buffer ---------------------------------------

// 'Q': one or more statements in the simple query protocol.
struct Query {
  std::string_view sql;
  friend bool operator==(const Query&, const Query&) = default;
};
// 'P': prepares `query` as `statement` ("" = the unnamed statement). A type oid of 0 is
// unspecified.
struct Parse {
  std::string_view statement;
  std::string_view query;
  std::vector<uint32_t> parameter_types;
  friend bool operator==(const Parse&, const Parse&) = default;
};
// 'B': binds `parameters` (nullopt = SQL NULL) to `statement`, creating `portal`. Format codes are
// 0 (text) or 1 (binary); parameter_formats has 0, 1 or parameters.size() entries (checked).
struct Bind {
  std::string_view portal;
  std::string_view statement;
  std::vector<int16_t> parameter_formats;
  std::vector<std::optional<std::string_view>> parameters;
  std::vector<int16_t> result_formats;
  friend bool operator==(const Bind&, const Bind&) = default;
};
// What Describe and Close name: a prepared statement ('S') or a portal ('P').
enum class TargetKind : char { kStatement = 'S', kPortal = 'P' };
// 'D'
struct Describe {
  TargetKind kind = TargetKind::kStatement;
  std::string_view name;
  friend bool operator==(const Describe&, const Describe&) = default;
};
// 'E': max_rows <= 0 means "no limit".
struct Execute {
  std::string_view portal;
  int32_t max_rows = 0;
  friend bool operator==(const Execute&, const Execute&) = default;
};
// 'S'
struct Sync {
  friend bool operator==(const Sync&, const Sync&) = default;
};
// 'H'
struct Flush {
  friend bool operator==(const Flush&, const Flush&) = default;
};
// 'C'
struct Close {
  TargetKind kind = TargetKind::kStatement;
  std::string_view name;
  friend bool operator==(const Close&, const Close&) = default;
};
// 'X'
struct Terminate {
  friend bool operator==(const Terminate&, const Terminate&) = default;
};
// 'p': PasswordMessage, SASLInitialResponse or SASLResponse; which one depends on what the server
// asked for, so the payload is raw (see md5_auth.h and scram.h for the parsers).
struct AuthResponse {
  std::string_view payload;
  friend bool operator==(const AuthResponse&, const AuthResponse&) = default;
};
// 'd'
struct CopyData {
  std::string_view data;
  friend bool operator==(const CopyData&, const CopyData&) = default;
};
// 'c'
struct CopyDone {
  friend bool operator==(const CopyDone&, const CopyDone&) = default;
};
// 'f'
struct CopyFail {
  std::string_view message;
  friend bool operator==(const CopyFail&, const CopyFail&) = default;
};

using FrontendMessage = std::variant<StartupMessage, SslRequest, GssEncRequest, CancelRequest,
                                     Query, Parse, Bind, Describe, Execute, Sync, Flush, Close,
                                     Terminate, AuthResponse, CopyData, CopyDone, CopyFail>;

// "StartupMessage", "Query", "Bind", ... for logs and errors.
std::string_view message_name(const FrontendMessage& message);

// Incremental decoder for one client connection. Not thread-safe (one per connection).
//
//   FrontendDecoder decoder;                       // starts in the startup phase
//   auto space = decoder.prepare(8192);            // read straight into the decoder's buffer
//   decoder.commit(read(fd, space.data(), space.size()));
//   for (;;) {
//     auto r = decoder.next();
//     if (!r.ok()) { /* protocol error: answer 08P01 and close */ }
//     if (!*r) break;                              // need more bytes
//     handle(**r);                                 // views valid until feed() / prepare()
//   }
//
// Errors are sticky: after one, next() returns the same error forever (the stream has lost its
// framing). Errors are kInvalidArgument for malformed bytes, kUnsupported for a protocol version
// other than 3.x; the message names what is wrong.
class FrontendDecoder {
 public:
  explicit FrontendDecoder(Phase phase = Phase::kStartup, DecoderLimits limits = {});

  // Appends a copy of `bytes` to the buffer.
  void feed(std::string_view bytes);
  // Zero-copy input: returns `n` writable bytes at the end of the buffer; commit(k) then appends
  // the first k <= n of them (k is capped at n). Both feed() and prepare() first drop consumed
  // bytes, which invalidates the views of every message returned so far.
  std::span<char> prepare(std::size_t n);
  void commit(std::size_t n);

  // The next complete message, nullopt if more bytes are needed, or a protocol error. Consumes the
  // message; its string_views point into the buffer and stay valid until the next feed() or
  // prepare(), so a proxy may collect a pipeline (Parse, Bind, Execute, ... Sync) without copying.
  // A StartupMessage switches the decoder to the normal phase.
  Result<std::optional<FrontendMessage>> next();

  Phase phase() const { return phase_; }
  // For a connection handed over mid-stream (tests, or a session that already authenticated).
  void set_phase(Phase phase) { phase_ = phase; }

  // Bytes received but not consumed yet. After answering an SSLRequest with 'S' a server must
  // check this is 0: bytes sent before the TLS handshake would be plaintext injection.
  std::size_t buffered() const { return end_ - begin_; }
  // A lower bound on how many more bytes next() needs when it last returned nullopt (0 otherwise);
  // a read size hint.
  std::size_t bytes_wanted() const { return wanted_; }

 private:
  Result<std::optional<FrontendMessage>> next_startup();
  Result<std::optional<FrontendMessage>> next_normal();
  Result<std::optional<FrontendMessage>> fail(Error error);
  void compact();

  Phase phase_;
  DecoderLimits limits_;
  std::vector<char> buffer_;  // [begin_, end_) holds unconsumed bytes; beyond end_ is spare room
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::size_t prepared_ = 0;
  std::size_t wanted_ = 0;
  bool ssl_requested_ = false;
  bool gss_requested_ = false;
  std::optional<Error> error_;
};

}  // namespace tally::pgwire
