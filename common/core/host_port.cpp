#include "common/core/host_port.h"

#include "common/core/quote.h"

namespace tally {

HostPortText split_host_port(std::string_view address, std::string_view port_if_absent) {
  const std::size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return HostPortText{address, port_if_absent};
  return HostPortText{address.substr(0, colon), address.substr(colon + 1)};
}

Result<HostPort> parse_host_port(std::string_view text) {
  auto bad = [&] {
    return make_error(ErrorCode::kInvalidArgument, "address " + quote_for_message(text) +
                                                       ": expected " + std::string(kHostPortForm));
  };
  if (text.find(':') == std::string_view::npos) return bad();
  const HostPortText parts = split_host_port(text);
  if (parts.host.empty() || parts.port.empty() || parts.port.size() > 5) return bad();
  uint32_t port = 0;
  for (const char c : parts.port) {
    if (c < '0' || c > '9') return bad();
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (port == 0 || port > 65535) return bad();
  return HostPort{std::string(parts.host), static_cast<uint16_t>(port)};
}

}  // namespace tally
