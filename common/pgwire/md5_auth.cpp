#include "common/pgwire/md5_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>

#include "common/core/quote.h"

namespace tally::pgwire {
namespace {

constexpr std::string_view kMd5Prefix = "md5";
constexpr std::size_t kMd5HashLength = 35;  // "md5" + 32 hex digits

// Lowercase hex of md5(data). EVP rather than MD5(): the latter is deprecated in OpenSSL 3.
// Empty if the digest is unavailable (an OpenSSL built for FIPS only), which no hash matches.
std::string md5_hex(std::string_view data) {
  static constexpr char kHex[] = "0123456789abcdef";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_md5(), nullptr) != 1 || size != 16) {
    return {};
  }
  std::string hex;
  hex.reserve(32);
  for (unsigned int i = 0; i < size; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

}  // namespace

Result<std::string_view> parse_password_message(std::string_view payload) {
  const std::size_t nul = payload.find('\0');
  if (nul == std::string_view::npos) {
    return make_error(ErrorCode::kInvalidArgument,
                      "password message: the password is missing its NUL terminator");
  }
  if (nul + 1 != payload.size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "password message: " + std::to_string(payload.size() - nul - 1) +
                          " trailing bytes after the password");
  }
  return payload.substr(0, nul);
}

std::string md5_password_hash(std::string_view user, std::string_view password) {
  std::string input;
  input.reserve(password.size() + user.size());
  input.append(password).append(user);
  return std::string(kMd5Prefix) + md5_hex(input);
}

std::string md5_salted_response(std::string_view password_hash, const Md5Salt& salt) {
  std::string input(password_hash.substr(std::min(password_hash.size(), kMd5Prefix.size())));
  for (const uint8_t b : salt) input += static_cast<char>(b);
  return std::string(kMd5Prefix) + md5_hex(input);
}

Status verify_md5_response(std::string_view user, std::string_view password_hash,
                           const Md5Salt& salt, std::string_view response) {
  const std::string expected = md5_salted_response(password_hash, salt);
  const bool stored_ok = password_hash.size() == kMd5HashLength &&
                         password_hash.substr(0, kMd5Prefix.size()) == kMd5Prefix &&
                         expected.size() == kMd5HashLength;
  // The length is not secret (always 35 when valid); the content is compared in constant time.
  if (!stored_ok || response.size() != kMd5HashLength ||
      CRYPTO_memcmp(expected.data(), response.data(), kMd5HashLength) != 0) {
    return make_error(ErrorCode::kUnauthenticated, password_failed_message(user));
  }
  return ok_status();
}

Result<Md5Salt> make_md5_salt() {
  Md5Salt salt{};
  if (RAND_bytes(salt.data(), static_cast<int>(salt.size())) != 1) {
    return make_error(ErrorCode::kInternal, "RAND_bytes failed to produce an MD5 salt");
  }
  return salt;
}

std::string password_failed_message(std::string_view user) {
  return "password authentication failed for user " + quote_for_message(user, 64);
}

}  // namespace tally::pgwire
