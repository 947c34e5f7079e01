#include "common/pgwire/scram.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <charconv>
#include <cstring>

#include "common/pgwire/base64.h"
#include "common/pgwire/md5_auth.h"

namespace tally::pgwire {
namespace {

constexpr std::size_t kRawNonceLength = 18;  // PostgreSQL's SCRAM_RAW_NONCE_LEN
constexpr std::string_view kVerifierShape =
    "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";

Error malformed(std::string_view detail) {
  return make_error(ErrorCode::kInvalidArgument, "malformed SCRAM message: " + std::string(detail));
}

std::string_view as_chars(const ScramKey& key) {
  return {reinterpret_cast<const char*>(key.data()), key.size()};
}

bool hmac_sha256(std::string_view key, std::string_view data, ScramKey& out) {
  unsigned int size = 0;
  const unsigned char* result =
      HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &size);
  return result != nullptr && size == out.size();
}

bool sha256(std::string_view data, ScramKey& out) {
  unsigned int size = 0;
  return EVP_Digest(data.data(), data.size(), out.data(), &size, EVP_sha256(), nullptr) == 1 &&
         size == out.size();
}

bool random_bytes(std::string& out, std::size_t n) {
  out.assign(n, '\0');
  return RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) == 1;
}

// Splits "a=value,b=value,..." one attribute at a time (RFC 5802 section 7).
class AttributeReader {
 public:
  explicit AttributeReader(std::string_view text) : rest_(text) {}

  // True when nothing is left, not even after a trailing ',' (which promises one more attribute).
  bool at_end() const { return rest_.empty() && !after_comma_; }
  std::string_view rest() const { return rest_; }

  // The next attribute, which must be `name`; its value runs to the next ',' or the end.
  Result<std::string_view> expect(char name, std::string_view what) {
    if (rest_.size() < 2 || rest_[0] != name || rest_[1] != '=') {
      return malformed("expected attribute \"" + std::string(1, name) + "=\" (" +
                       std::string(what) + ")");
    }
    return take_value();
  }

  // Any attribute (an extension): a letter, '=', a value.
  Result<std::pair<char, std::string_view>> any() {
    if (rest_.size() < 2 || !is_alpha(rest_[0]) || rest_[1] != '=') {
      return malformed("expected an attribute \"<letter>=\"");
    }
    const char name = rest_[0];
    std::string_view value = take_value();
    return std::pair<char, std::string_view>{name, value};
  }

 private:
  static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

  std::string_view take_value() {
    const std::size_t comma = rest_.find(',');
    const std::string_view value =
        rest_.substr(2, comma == std::string_view::npos ? std::string_view::npos : comma - 2);
    after_comma_ = comma != std::string_view::npos;
    rest_ = after_comma_ ? rest_.substr(comma + 1) : std::string_view{};
    return value;
  }

  std::string_view rest_;
  bool after_comma_ = false;
};

// printable = %x21-2B / %x2D-7E (RFC 5802): ASCII without space and ','.
bool valid_nonce(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (const char c : nonce) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x21 || b > 0x7e || c == ',') return false;
  }
  return true;
}

}  // namespace

Result<ScramCredentials> make_scram_credentials(std::string_view password, std::string_view salt,
                                                int32_t iterations) {
  if (salt.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "SCRAM credentials: the salt is empty");
  }
  if (iterations < 1) {
    return make_error(
        ErrorCode::kInvalidArgument,
        "SCRAM credentials: iteration count " + std::to_string(iterations) + " is not positive");
  }
  ScramKey salted{};
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        static_cast<int>(salt.size()), iterations, EVP_sha256(),
                        static_cast<int>(salted.size()), salted.data()) != 1) {
    return make_error(ErrorCode::kInternal, "SCRAM credentials: PBKDF2 failed");
  }
  ScramCredentials credentials;
  credentials.salt = std::string(salt);
  credentials.iterations = iterations;
  ScramKey client_key{};
  const bool ok = hmac_sha256(as_chars(salted), "Client Key", client_key) &&
                  sha256(as_chars(client_key), credentials.stored_key) &&
                  hmac_sha256(as_chars(salted), "Server Key", credentials.server_key);
  OPENSSL_cleanse(salted.data(), salted.size());
  OPENSSL_cleanse(client_key.data(), client_key.size());
  if (!ok) return make_error(ErrorCode::kInternal, "SCRAM credentials: HMAC-SHA-256 failed");
  return credentials;
}

Result<std::string> make_scram_salt(std::size_t length) {
  std::string salt;
  if (length == 0 || !random_bytes(salt, length)) {
    return make_error(ErrorCode::kInternal, "RAND_bytes failed to produce a SCRAM salt");
  }
  return salt;
}

Result<ScramCredentials> parse_scram_verifier(std::string_view verifier) {
  const auto invalid = [](std::string_view what) {
    return make_error(ErrorCode::kInvalidArgument,
                      "SCRAM verifier: " + std::string(kVerifierShape) + "; " + std::string(what));
  };
  const std::string prefix = std::string(kScramSha256) + "$";
  if (verifier.substr(0, prefix.size()) != prefix) return invalid("the prefix is missing");
  std::string_view rest = verifier.substr(prefix.size());
  const std::size_t dollar = rest.find('$');
  if (dollar == std::string_view::npos) return invalid("the '$' before the keys is missing");
  const std::string_view params = rest.substr(0, dollar);
  const std::string_view keys = rest.substr(dollar + 1);
  const std::size_t colon = params.find(':');
  if (colon == std::string_view::npos) return invalid("the ':' after the iterations is missing");
  const std::string_view iterations_text = params.substr(0, colon);
  int32_t iterations = 0;
  const auto [end, ec] = std::from_chars(
      iterations_text.data(), iterations_text.data() + iterations_text.size(), iterations);
  if (iterations_text.empty() || ec != std::errc() ||
      end != iterations_text.data() + iterations_text.size() || iterations < 1) {
    return invalid("the iteration count is not a positive 32-bit integer");
  }
  const std::optional<std::string> salt = base64_decode(params.substr(colon + 1));
  if (!salt || salt->empty()) return invalid("the salt is not valid non-empty base64");
  const std::size_t key_colon = keys.find(':');
  if (key_colon == std::string_view::npos) return invalid("the ':' between the keys is missing");
  const std::optional<std::string> stored = base64_decode(keys.substr(0, key_colon));
  const std::optional<std::string> server = base64_decode(keys.substr(key_colon + 1));
  ScramCredentials credentials;
  if (!stored || stored->size() != credentials.stored_key.size()) {
    return invalid("StoredKey is not base64 of 32 bytes");
  }
  if (!server || server->size() != credentials.server_key.size()) {
    return invalid("ServerKey is not base64 of 32 bytes");
  }
  credentials.salt = *salt;
  credentials.iterations = iterations;
  std::memcpy(credentials.stored_key.data(), stored->data(), stored->size());
  std::memcpy(credentials.server_key.data(), server->data(), server->size());
  return credentials;
}

std::string format_scram_verifier(const ScramCredentials& credentials) {
  return std::string(kScramSha256) + "$" + std::to_string(credentials.iterations) + ":" +
         base64_encode(credentials.salt) + "$" + base64_encode(as_chars(credentials.stored_key)) +
         ":" + base64_encode(as_chars(credentials.server_key));
}

Result<SaslInitialResponse> parse_sasl_initial_response(std::string_view payload) {
  const std::size_t nul = payload.find('\0');
  if (nul == std::string_view::npos) {
    return make_error(ErrorCode::kInvalidArgument,
                      "SASLInitialResponse: the mechanism name is missing its NUL terminator");
  }
  SaslInitialResponse response;
  response.mechanism = payload.substr(0, nul);
  std::string_view rest = payload.substr(nul + 1);
  if (rest.size() < 4) {
    return make_error(ErrorCode::kInvalidArgument,
                      "SASLInitialResponse: the message ends inside the data length");
  }
  const auto length = static_cast<int32_t>((uint32_t{static_cast<unsigned char>(rest[0])} << 24) |
                                           (uint32_t{static_cast<unsigned char>(rest[1])} << 16) |
                                           (uint32_t{static_cast<unsigned char>(rest[2])} << 8) |
                                           uint32_t{static_cast<unsigned char>(rest[3])});
  rest.remove_prefix(4);
  if (length == -1) {
    if (!rest.empty()) {
      return make_error(ErrorCode::kInvalidArgument,
                        "SASLInitialResponse: " + std::to_string(rest.size()) +
                            " trailing bytes after a NULL response");
    }
    return response;
  }
  if (length < 0 || static_cast<std::size_t>(length) != rest.size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "SASLInitialResponse: data length " + std::to_string(length) +
                          " does not match the " + std::to_string(rest.size()) +
                          " bytes that follow");
  }
  response.data = rest;
  return response;
}

Result<ScramServerExchange> ScramServerExchange::start(std::string user,
                                                       ScramCredentials credentials) {
  std::string raw;
  if (!random_bytes(raw, kRawNonceLength)) {
    return make_error(ErrorCode::kInternal, "RAND_bytes failed to produce a SCRAM nonce");
  }
  return ScramServerExchange(std::move(user), std::move(credentials), base64_encode(raw));
}

Result<ScramServerExchange> ScramServerExchange::start_for_unknown_user(
    std::string user, std::string_view mock_secret) {
  // As PostgreSQL's scram_mock_salt: SHA-256(user + secret), so a user always sees one salt.
  ScramKey digest{};
  std::string input = user;
  input.append(mock_secret);
  ScramCredentials credentials;
  if (!sha256(input, digest)) {
    return make_error(ErrorCode::kInternal, "SCRAM mock salt: SHA-256 failed");
  }
  credentials.salt = std::string(as_chars(digest).substr(0, kScramDefaultSaltLength));
  std::string keys;
  if (!random_bytes(keys, 64)) {
    return make_error(ErrorCode::kInternal, "RAND_bytes failed to produce SCRAM mock keys");
  }
  std::memcpy(credentials.stored_key.data(), keys.data(), 32);
  std::memcpy(credentials.server_key.data(), keys.data() + 32, 32);
  Result<ScramServerExchange> exchange = start(std::move(user), std::move(credentials));
  if (exchange.ok()) exchange->doomed_ = true;
  return exchange;
}

ScramServerExchange::ScramServerExchange(std::string user, ScramCredentials credentials,
                                         std::string server_nonce)
    : user_(std::move(user)),
      credentials_(std::move(credentials)),
      server_nonce_(std::move(server_nonce)) {}

Error ScramServerExchange::fail(Error error) {
  state_ = State::kFailed;
  return error;
}

Result<std::string> ScramServerExchange::handle_initial_response(std::string_view payload) {
  Result<SaslInitialResponse> response = parse_sasl_initial_response(payload);
  if (!response.ok()) return fail(response.error());
  if (response->mechanism != kScramSha256) {
    return fail(make_error(ErrorCode::kUnsupported,
                           "the client selected an invalid SASL authentication mechanism"));
  }
  if (!response->data) return fail(malformed("the client-first-message is missing"));
  return handle_client_first(*response->data);
}

Result<std::string> ScramServerExchange::handle_client_first(std::string_view message) {
  if (state_ != State::kExpectClientFirst) {
    return fail(make_error(ErrorCode::kInternal, "SCRAM: client-first-message out of order"));
  }
  if (message.empty()) return fail(malformed("the message is empty"));
  if (message.find('\0') != std::string_view::npos) {
    return fail(malformed("the message contains a NUL byte"));
  }
  if (!valid_nonce(server_nonce_)) {
    return fail(make_error(ErrorCode::kInternal, "SCRAM: invalid server nonce"));
  }
  // gs2-header = gs2-cbind-flag "," [ authzid ] ","
  switch (message[0]) {
    case 'n':
    case 'y':  // the client could bind but thinks we cannot: right, we offer no -PLUS mechanism
      if (message.size() < 2 || message[1] != ',') {
        return fail(malformed("expected ',' after the channel-binding flag"));
      }
      break;
    case 'p':
      return fail(make_error(ErrorCode::kUnsupported,
                             "the client selected SCRAM-SHA-256 without channel binding, but the "
                             "SCRAM message includes channel binding data"));
    default:
      return fail(malformed("unexpected channel-binding flag"));
  }
  std::string_view rest = message.substr(2);
  if (!rest.empty() && rest[0] == 'a') {
    return fail(make_error(ErrorCode::kUnsupported,
                           "the client uses an authorization identity, which is not supported"));
  }
  if (rest.empty() || rest[0] != ',') return fail(malformed("expected ',' after the gs2 header"));
  gs2_header_ = std::string(message.substr(0, 3));
  const std::string_view bare = rest.substr(1);

  AttributeReader reader(bare);
  if (!bare.empty() && bare[0] == 'm') {
    return fail(
        make_error(ErrorCode::kUnsupported, "the client requires an unsupported SCRAM extension"));
  }
  Result<std::string_view> user = reader.expect('n', "user name");  // ignored, as PostgreSQL does
  if (!user.ok()) return fail(user.error());
  Result<std::string_view> nonce = reader.expect('r', "client nonce");
  if (!nonce.ok()) return fail(nonce.error());
  if (!valid_nonce(*nonce)) return fail(malformed("the client nonce is empty or not printable"));
  while (!reader.at_end()) {  // optional extensions, ignored
    Result<std::pair<char, std::string_view>> extension = reader.any();
    if (!extension.ok()) return fail(extension.error());
  }

  client_first_bare_ = std::string(bare);
  nonce_ = std::string(*nonce) + server_nonce_;
  server_first_ = "r=" + nonce_ + ",s=" + base64_encode(credentials_.salt) +
                  ",i=" + std::to_string(credentials_.iterations);
  state_ = State::kExpectClientFinal;
  return server_first_;
}

Result<std::string> ScramServerExchange::handle_client_final(std::string_view message) {
  if (state_ != State::kExpectClientFinal) {
    return fail(make_error(ErrorCode::kInternal, "SCRAM: client-final-message out of order"));
  }
  if (message.empty()) return fail(malformed("the message is empty"));
  if (message.find('\0') != std::string_view::npos) {
    return fail(malformed("the message contains a NUL byte"));
  }
  AttributeReader reader(message);
  Result<std::string_view> binding = reader.expect('c', "channel binding");
  if (!binding.ok()) return fail(binding.error());
  const std::optional<std::string> binding_bytes = base64_decode(*binding);
  if (!binding_bytes) return fail(malformed("the channel binding is not valid base64"));
  if (*binding_bytes != gs2_header_) {
    return fail(malformed("unexpected channel binding data in the client-final-message"));
  }
  Result<std::string_view> nonce = reader.expect('r', "nonce");
  if (!nonce.ok()) return fail(nonce.error());
  if (*nonce != nonce_) return fail(malformed("the nonce does not match"));
  // Extensions until the proof, which must come last.
  std::string_view proof_text;
  std::size_t without_proof = 0;
  for (;;) {
    if (reader.at_end()) return fail(malformed("the proof (\"p=\") is missing"));
    without_proof = message.size() - reader.rest().size() - 1;  // up to the ',' before it
    Result<std::pair<char, std::string_view>> attribute = reader.any();
    if (!attribute.ok()) return fail(attribute.error());
    if (attribute->first == 'p') {
      proof_text = attribute->second;
      break;
    }
  }
  if (!reader.at_end()) return fail(malformed("garbage after the proof"));
  const std::optional<std::string> proof = base64_decode(proof_text);
  ScramKey client_key{};
  if (!proof || proof->size() != client_key.size()) {
    return fail(malformed("the proof is not base64 of 32 bytes"));
  }

  const std::string auth_message = client_first_bare_ + "," + server_first_ + "," +
                                   std::string(message.substr(0, without_proof));
  ScramKey client_signature{};
  ScramKey recomputed_stored{};
  if (!hmac_sha256(as_chars(credentials_.stored_key), auth_message, client_signature)) {
    return fail(make_error(ErrorCode::kInternal, "SCRAM: HMAC-SHA-256 failed"));
  }
  for (std::size_t i = 0; i < client_key.size(); ++i) {
    client_key[i] = static_cast<uint8_t>(static_cast<uint8_t>((*proof)[i]) ^ client_signature[i]);
  }
  if (!sha256(as_chars(client_key), recomputed_stored)) {
    return fail(make_error(ErrorCode::kInternal, "SCRAM: SHA-256 failed"));
  }
  const bool match = CRYPTO_memcmp(recomputed_stored.data(), credentials_.stored_key.data(),
                                   recomputed_stored.size()) == 0;
  if (!match || doomed_) {
    return fail(make_error(ErrorCode::kUnauthenticated, password_failed_message(user_)));
  }
  ScramKey server_signature{};
  if (!hmac_sha256(as_chars(credentials_.server_key), auth_message, server_signature)) {
    return fail(make_error(ErrorCode::kInternal, "SCRAM: HMAC-SHA-256 failed"));
  }
  state_ = State::kSucceeded;
  return "v=" + base64_encode(as_chars(server_signature));
}

}  // namespace tally::pgwire
