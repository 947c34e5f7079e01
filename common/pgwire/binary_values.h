// Text-to-binary conversion of result values for clients that ask for binary result columns in
// Bind (JDBC does once a statement is server-prepared). The cluster proxy merges shard answers in
// text form, so a binary column is re-encoded from PostgreSQL's text output (DateStyle ISO) into
// the type's send format. Pure functions; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/core/result.h"

namespace tally::pgwire {

// True when text_to_binary knows the type: bool, bytea, char, name, int2/4/8, text, oid, json,
// float4/8, bpchar, varchar, date, time, timestamp, timestamptz, numeric, uuid, jsonb, unknown.
bool binary_format_supported(uint32_t type_oid);

// The binary (send) form of `text`, a value of type `type_oid` in PostgreSQL's text output.
// kUnsupported for other types (the message names the oid and says to request text),
// kInvalidArgument when the text is not a valid value of the type.
Result<std::string> text_to_binary(uint32_t type_oid, std::string_view text);

}  // namespace tally::pgwire
