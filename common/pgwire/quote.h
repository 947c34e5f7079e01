// quote_for_message: client-supplied text made safe for an error message or a log line: quoted,
// '"' and '\' escaped, bytes outside printable ASCII as \xNN, cut after max_bytes with "...".
// The keyspace helper of the same name has the same contract; this copy keeps pgwire on tally_core.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tally::pgwire {

std::string quote_for_message(std::string_view text, std::size_t max_bytes = 80);

}  // namespace tally::pgwire
