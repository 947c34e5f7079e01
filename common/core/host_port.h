// Network addresses written "host:port" (config files, ZooKeeper topology, command lines): the one
// place that splits and checks them. Split at the last ':', so "::1:5432" is host "::1".
// Pure functions without shared state: any thread may call them concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/core/result.h"

namespace tally {

// How error messages name the form parse_host_port accepts.
inline constexpr std::string_view kHostPortForm = "host:port with a port from 1 to 65535";

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

// The two halves of an address, unchecked: for addresses already checked where they entered
// (config, topology) on their way into a libpq conninfo, whose own errors then name a bad port.
// Without a ':' the whole text is the host and the port is `port_if_absent`.
struct HostPortText {
  std::string_view host;
  std::string_view port;
};
HostPortText split_host_port(std::string_view address, std::string_view port_if_absent = {});

// "host:port" with a non-empty host and a port of 1-5 decimal digits from 1 to 65535.
// kInvalidArgument naming the text and kHostPortForm otherwise.
Result<HostPort> parse_host_port(std::string_view text);

}  // namespace tally
