// Server->client messages of protocol 3.0, appended to a caller's std::string so a whole response
// goes out in one write. Pure functions; lengths are patched after the body is written, and strings
// the protocol NUL-terminates are cut at their first NUL, so a stray NUL cannot break the framing.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/core/result.h"

namespace tally::pgwire {

// Writes one message: begin() puts the type byte and a placeholder length, finish() patches the
// length. For messages this file has no function for (CopyInResponse, FunctionCallResponse, ...).
class MessageWriter {
 public:
  MessageWriter(std::string& out, char type);  // begins the message
  MessageWriter(const MessageWriter&) = delete;
  MessageWriter& operator=(const MessageWriter&) = delete;

  MessageWriter& int8(uint8_t v);
  MessageWriter& int16(int16_t v);
  MessageWriter& int32(int32_t v);
  MessageWriter& uint32(uint32_t v);
  MessageWriter& cstring(std::string_view s);  // up to its first NUL, then a NUL
  MessageWriter& bytes(std::string_view s);
  // Patches the length; call exactly once, after the last field.
  void finish();

 private:
  std::string& out_;
  std::size_t start_;  // offset of the length field
};

enum class TransactionStatus : char { kIdle = 'I', kInTransaction = 'T', kFailed = 'E' };

// One column of a RowDescription. table_oid/column = 0 when not a plain table column.
struct FieldDescription {
  std::string_view name;
  uint32_t table_oid = 0;
  int16_t column = 0;  // attribute number
  uint32_t type_oid = 0;
  int16_t type_size = -1;  // pg_type.typlen; negative = variable width
  int32_t type_modifier = -1;
  int16_t format = 0;  // 0 text, 1 binary
};

// ErrorResponse / NoticeResponse fields. severity goes out as both S and V (not localized);
// empty detail/hint and position 0 are left out. position is 1-based in characters.
struct ErrorFields {
  std::string_view severity = "ERROR";  // ERROR, FATAL, PANIC / WARNING, NOTICE, INFO, ...
  std::string_view sqlstate;            // five characters
  std::string_view message;
  std::string_view detail;
  std::string_view hint;
  int32_t position = 0;
};

// Authentication requests ('R').
void append_authentication_ok(std::string& out);
void append_authentication_cleartext_password(std::string& out);
void append_authentication_md5_password(std::string& out, const std::array<uint8_t, 4>& salt);
void append_authentication_sasl(std::string& out, std::span<const std::string_view> mechanisms);
void append_authentication_sasl_continue(std::string& out, std::string_view data);
void append_authentication_sasl_final(std::string& out, std::string_view data);

void append_parameter_status(std::string& out, std::string_view name, std::string_view value);
void append_backend_key_data(std::string& out, int32_t process_id, int32_t secret_key);
void append_ready_for_query(std::string& out, TransactionStatus status);

void append_row_description(std::string& out, std::span<const FieldDescription> fields);
// nullopt is SQL NULL (length -1).
void append_data_row(std::string& out, std::span<const std::optional<std::string_view>> values);
void append_command_complete(std::string& out, std::string_view tag);  // "SELECT 1", "INSERT 0 5"
void append_empty_query_response(std::string& out);

void append_error_response(std::string& out, const ErrorFields& fields);
// An Error as ErrorResponse: SQLSTATE from error_sqlstate(error.code), message as is.
void append_error_response(std::string& out, const Error& error,
                           std::string_view severity = "ERROR");
void append_notice_response(std::string& out, const ErrorFields& fields);

void append_parse_complete(std::string& out);
void append_bind_complete(std::string& out);
void append_close_complete(std::string& out);
void append_no_data(std::string& out);
void append_portal_suspended(std::string& out);
void append_parameter_description(std::string& out, std::span<const uint32_t> type_oids);

// The newest 3.x minor version served and the "_pq_." startup options not recognised.
void append_negotiate_protocol_version(std::string& out, int32_t newest_minor,
                                       std::span<const std::string_view> unrecognized_options);

// The single byte 'N' that refuses an SSLRequest or a GSSENCRequest (no length, no type).
void append_encryption_refused(std::string& out);

}  // namespace tally::pgwire
