// Password authentication without SCRAM: the PasswordMessage payload, and PostgreSQL's MD5 scheme
// (a stored "md5" + md5(password + user) hash; on the wire "md5" + md5(hex of that + 4-byte salt)).
// Pure functions over OpenSSL's digests; comparisons of secrets are constant-time.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/core/result.h"

namespace tally::pgwire {

using Md5Salt = std::array<uint8_t, 4>;

// The password in a PasswordMessage ('p') payload: one NUL-terminated string filling the payload.
// kInvalidArgument if the NUL is missing or bytes follow it. The result views `payload`.
Result<std::string_view> parse_password_message(std::string_view payload);

// What pg_authid stores for MD5 passwords: "md5" + 32 lowercase hex digits of md5(password + user).
std::string md5_password_hash(std::string_view user, std::string_view password);

// What a client answers to AuthenticationMD5Password(salt), given the stored hash above:
// "md5" + hex(md5(hash without its "md5" prefix + salt)).
std::string md5_salted_response(std::string_view password_hash, const Md5Salt& salt);

// Checks a client's answer (the parsed PasswordMessage) against the stored hash, in constant time.
// kUnauthenticated "password authentication failed for user \"<user>\"" on any mismatch.
Status verify_md5_response(std::string_view user, std::string_view password_hash,
                           const Md5Salt& salt, std::string_view response);

// Four random bytes from OpenSSL's CSPRNG; kInternal if it fails.
Result<Md5Salt> make_md5_salt();

// The one failure text of every password check, so no answer reveals which part was wrong.
std::string password_failed_message(std::string_view user);

}  // namespace tally::pgwire
