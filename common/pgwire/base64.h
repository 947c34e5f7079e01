// Base64 (RFC 4648, standard alphabet, '=' padding) as SCRAM and PostgreSQL's verifiers use it.
// Decoding is strict: no whitespace, no missing or extra padding, no bits left over; anything else
// is nullopt. Pure functions, safe from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tally::pgwire {

std::string base64_encode(std::string_view bytes);

// The decoded bytes, or nullopt if `text` is not canonical base64 ("" decodes to "").
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace tally::pgwire
