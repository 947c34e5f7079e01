// quote_for_message: text that came from a client, made safe for an error message or a log line.
// Double-quoted; '"' and '\' backslash-escaped; every byte outside printable ASCII as \xNN; cut
// after max_bytes and marked with the full size, e.g. "aaaa"... (1000 bytes). Pure; any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tally {

std::string quote_for_message(std::string_view text, std::size_t max_bytes = 80);

// Appends the two lowercase hex digits of `byte`.
void append_hex_byte(std::string& out, unsigned char byte);

}  // namespace tally
