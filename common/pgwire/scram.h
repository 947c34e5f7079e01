// The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it: no channel
// binding, the user name inside the SCRAM messages ignored (the startup packet's user counts).
// Credentials are derived once (or read from a PostgreSQL verifier); one exchange per login.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/core/result.h"

namespace tally::pgwire {

inline constexpr std::string_view kScramSha256 = "SCRAM-SHA-256";
inline constexpr int32_t kScramDefaultIterations = 4096;
inline constexpr std::size_t kScramDefaultSaltLength = 16;

using ScramKey = std::array<uint8_t, 32>;

// What the server keeps for a user: enough to verify a proof and sign the answer, not enough to
// log in as the user. Derived from the password once, e.g. at config load.
struct ScramCredentials {
  std::string salt;  // raw bytes
  int32_t iterations = kScramDefaultIterations;
  ScramKey stored_key{};  // H(HMAC(SaltedPassword, "Client Key"))
  ScramKey server_key{};  // HMAC(SaltedPassword, "Server Key")
  friend bool operator==(const ScramCredentials&, const ScramCredentials&) = default;
};

// SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations), then the two keys. The password
// is used as given, without SASLprep: ASCII passwords match PostgreSQL and libpq exactly; for other
// passwords store a verifier made by PostgreSQL instead. kInvalidArgument for an empty salt or
// iterations < 1, kInternal if OpenSSL fails.
Result<ScramCredentials> make_scram_credentials(std::string_view password, std::string_view salt,
                                                int32_t iterations = kScramDefaultIterations);

// `length` random bytes from OpenSSL's CSPRNG, for make_scram_credentials.
Result<std::string> make_scram_salt(std::size_t length = kScramDefaultSaltLength);

// Reads what pg_authid.rolpassword holds for a SCRAM user:
//   SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>
// kInvalidArgument naming the part that is wrong (never echoing the keys).
Result<ScramCredentials> parse_scram_verifier(std::string_view verifier);
// The inverse of parse_scram_verifier.
std::string format_scram_verifier(const ScramCredentials& credentials);

// A SASLInitialResponse ('p' payload): the mechanism the client chose and its first message
// (nullopt when the client sent length -1). Both view the payload, which must outlive them.
struct SaslInitialResponse {
  std::string_view mechanism;
  std::optional<std::string_view> data;
};
Result<SaslInitialResponse> parse_sasl_initial_response(std::string_view payload);

// One SCRAM-SHA-256 login, server side:
//   AuthenticationSASL {"SCRAM-SHA-256"}  -> client: SASLInitialResponse
//   handle_initial_response(payload)      -> AuthenticationSASLContinue(server-first)
//   handle_client_final(payload)          -> AuthenticationSASLFinal(server-final), then AuthOk
// Errors: kInvalidArgument "malformed SCRAM message: ..." for syntax (nothing secret in it),
// kUnsupported for channel binding or extensions asked for, kUnauthenticated
// "password authentication failed for user \"<user>\"" for a wrong proof, whatever was wrong.
// After any error the exchange is over. Not thread-safe; one per connection.
class ScramServerExchange {
 public:
  // A fresh random server nonce (18 bytes, base64), as PostgreSQL makes it.
  static Result<ScramServerExchange> start(std::string user, ScramCredentials credentials);
  // For a user that does not exist or has no SCRAM secret: looks the same from outside (a stable
  // salt derived from user and `mock_secret`, the default iteration count) and always ends with
  // the wrong-password error, so a client cannot probe which users exist.
  static Result<ScramServerExchange> start_for_unknown_user(std::string user,
                                                            std::string_view mock_secret);
  // A fixed server nonce (printable ASCII without ','), for tests against published vectors.
  ScramServerExchange(std::string user, ScramCredentials credentials, std::string server_nonce);

  // The SASLInitialResponse payload: the mechanism must be SCRAM-SHA-256 (kUnsupported otherwise)
  // and the data a client-first-message. Returns the server-first-message.
  Result<std::string> handle_initial_response(std::string_view payload);
  // client-first-message -> server-first-message.
  Result<std::string> handle_client_first(std::string_view message);
  // client-final-message (a SASLResponse payload) -> server-final-message "v=<signature>".
  Result<std::string> handle_client_final(std::string_view message);

  // True once handle_client_final verified the proof.
  bool succeeded() const { return state_ == State::kSucceeded; }
  const std::string& user() const { return user_; }

 private:
  enum class State { kExpectClientFirst, kExpectClientFinal, kSucceeded, kFailed };
  Error fail(Error error);

  std::string user_;
  ScramCredentials credentials_;
  std::string server_nonce_;
  bool doomed_ = false;  // unknown user: fail at the proof, after the same work
  State state_ = State::kExpectClientFirst;
  std::string gs2_header_;         // "n,," or "y,,": what c= must carry back
  std::string client_first_bare_;  // for the AuthMessage
  std::string server_first_;       // for the AuthMessage
  std::string nonce_;              // client nonce + server nonce
};

}  // namespace tally::pgwire
