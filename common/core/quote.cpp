#include "common/core/quote.h"

namespace tally {

void append_hex_byte(std::string& out, unsigned char byte) {
  static constexpr char kHexDigits[] = "0123456789abcdef";
  out += kHexDigits[byte >> 4];
  out += kHexDigits[byte & 0x0f];
}

std::string quote_for_message(std::string_view text, std::size_t max_bytes) {
  const std::string_view shown = text.substr(0, max_bytes);
  std::string out;
  out.reserve(shown.size() + 24);
  out += '"';
  for (const char ch : shown) {
    const auto byte = static_cast<unsigned char>(ch);
    if (byte == '"' || byte == '\\') {
      out += '\\';
      out += ch;
    } else if (byte >= 0x20 && byte < 0x7f) {
      out += ch;
    } else {
      out += "\\x";
      append_hex_byte(out, byte);
    }
  }
  out += '"';
  if (shown.size() < text.size()) {
    out += "... (" + std::to_string(text.size()) + " bytes)";
  }
  return out;
}

}  // namespace tally
