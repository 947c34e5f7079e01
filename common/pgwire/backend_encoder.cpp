#include "common/pgwire/backend_encoder.h"

#include <cassert>
#include <limits>

namespace tally::pgwire {
namespace {

// AuthenticationRequest codes ('R' messages).
constexpr int32_t kAuthOk = 0;
constexpr int32_t kAuthCleartextPassword = 3;
constexpr int32_t kAuthMd5Password = 5;
constexpr int32_t kAuthSasl = 10;
constexpr int32_t kAuthSaslContinue = 11;
constexpr int32_t kAuthSaslFinal = 12;

void append_be32(std::string& out, uint32_t v) {
  out += static_cast<char>((v >> 24) & 0xff);
  out += static_cast<char>((v >> 16) & 0xff);
  out += static_cast<char>((v >> 8) & 0xff);
  out += static_cast<char>(v & 0xff);
}

void append_empty(std::string& out, char type) {
  MessageWriter(out, type).finish();
}

void append_auth(std::string& out, int32_t code, std::string_view data = {}) {
  MessageWriter writer(out, 'R');
  writer.int32(code).bytes(data);
  writer.finish();
}

void append_error_or_notice(std::string& out, char type, const ErrorFields& fields) {
  MessageWriter writer(out, type);
  writer.int8('S').cstring(fields.severity);
  writer.int8('V').cstring(fields.severity);
  writer.int8('C').cstring(fields.sqlstate);
  writer.int8('M').cstring(fields.message);
  if (!fields.detail.empty()) writer.int8('D').cstring(fields.detail);
  if (!fields.hint.empty()) writer.int8('H').cstring(fields.hint);
  if (fields.position > 0) writer.int8('P').cstring(std::to_string(fields.position));
  writer.int8(0);
  writer.finish();
}

}  // namespace

MessageWriter::MessageWriter(std::string& out, char type) : out_(out) {
  out_ += type;
  start_ = out_.size();
  out_.append(4, '\0');
}

MessageWriter& MessageWriter::int8(uint8_t v) {
  out_ += static_cast<char>(v);
  return *this;
}

MessageWriter& MessageWriter::int16(int16_t v) {
  const auto u = static_cast<uint16_t>(v);
  out_ += static_cast<char>((u >> 8) & 0xff);
  out_ += static_cast<char>(u & 0xff);
  return *this;
}

MessageWriter& MessageWriter::int32(int32_t v) {
  append_be32(out_, static_cast<uint32_t>(v));
  return *this;
}

MessageWriter& MessageWriter::uint32(uint32_t v) {
  append_be32(out_, v);
  return *this;
}

MessageWriter& MessageWriter::cstring(std::string_view s) {
  out_.append(s.substr(0, s.find('\0')));
  out_ += '\0';
  return *this;
}

MessageWriter& MessageWriter::bytes(std::string_view s) {
  out_.append(s);
  return *this;
}

void MessageWriter::finish() {
  const std::size_t length = out_.size() - start_;
  assert(length <= static_cast<std::size_t>(std::numeric_limits<int32_t>::max()));
  const auto v = static_cast<uint32_t>(length);
  out_[start_] = static_cast<char>((v >> 24) & 0xff);
  out_[start_ + 1] = static_cast<char>((v >> 16) & 0xff);
  out_[start_ + 2] = static_cast<char>((v >> 8) & 0xff);
  out_[start_ + 3] = static_cast<char>(v & 0xff);
}

void append_authentication_ok(std::string& out) {
  append_auth(out, kAuthOk);
}

void append_authentication_cleartext_password(std::string& out) {
  append_auth(out, kAuthCleartextPassword);
}

void append_authentication_md5_password(std::string& out, const std::array<uint8_t, 4>& salt) {
  MessageWriter writer(out, 'R');
  writer.int32(kAuthMd5Password);
  for (const uint8_t b : salt) writer.int8(b);
  writer.finish();
}

void append_authentication_sasl(std::string& out, std::span<const std::string_view> mechanisms) {
  MessageWriter writer(out, 'R');
  writer.int32(kAuthSasl);
  for (const std::string_view mechanism : mechanisms) {
    if (!mechanism.empty()) writer.cstring(mechanism);  // an empty name would end the list
  }
  writer.int8(0);
  writer.finish();
}

void append_authentication_sasl_continue(std::string& out, std::string_view data) {
  append_auth(out, kAuthSaslContinue, data);
}

void append_authentication_sasl_final(std::string& out, std::string_view data) {
  append_auth(out, kAuthSaslFinal, data);
}

void append_parameter_status(std::string& out, std::string_view name, std::string_view value) {
  MessageWriter writer(out, 'S');
  writer.cstring(name).cstring(value);
  writer.finish();
}

void append_backend_key_data(std::string& out, int32_t process_id, int32_t secret_key) {
  MessageWriter writer(out, 'K');
  writer.int32(process_id).int32(secret_key);
  writer.finish();
}

void append_ready_for_query(std::string& out, TransactionStatus status) {
  MessageWriter writer(out, 'Z');
  writer.int8(static_cast<uint8_t>(status));
  writer.finish();
}

void append_row_description(std::string& out, std::span<const FieldDescription> fields) {
  assert(fields.size() <= static_cast<std::size_t>(std::numeric_limits<int16_t>::max()));
  MessageWriter writer(out, 'T');
  writer.int16(static_cast<int16_t>(fields.size()));
  for (const FieldDescription& f : fields) {
    writer.cstring(f.name)
        .uint32(f.table_oid)
        .int16(f.column)
        .uint32(f.type_oid)
        .int16(f.type_size)
        .int32(f.type_modifier)
        .int16(f.format);
  }
  writer.finish();
}

void append_data_row(std::string& out, std::span<const std::optional<std::string_view>> values) {
  assert(values.size() <= static_cast<std::size_t>(std::numeric_limits<int16_t>::max()));
  MessageWriter writer(out, 'D');
  writer.int16(static_cast<int16_t>(values.size()));
  for (const std::optional<std::string_view>& value : values) {
    if (!value) {
      writer.int32(-1);
      continue;
    }
    writer.int32(static_cast<int32_t>(value->size())).bytes(*value);
  }
  writer.finish();
}

void append_command_complete(std::string& out, std::string_view tag) {
  MessageWriter writer(out, 'C');
  writer.cstring(tag);
  writer.finish();
}

void append_empty_query_response(std::string& out) {
  append_empty(out, 'I');
}

void append_error_response(std::string& out, const ErrorFields& fields) {
  append_error_or_notice(out, 'E', fields);
}

void append_error_response(std::string& out, const Error& error, std::string_view severity) {
  ErrorFields fields;
  fields.severity = severity;
  fields.sqlstate = error_sqlstate(error.code);
  fields.message = error.message;
  append_error_or_notice(out, 'E', fields);
}

void append_notice_response(std::string& out, const ErrorFields& fields) {
  append_error_or_notice(out, 'N', fields);
}

void append_parse_complete(std::string& out) {
  append_empty(out, '1');
}

void append_bind_complete(std::string& out) {
  append_empty(out, '2');
}

void append_close_complete(std::string& out) {
  append_empty(out, '3');
}

void append_no_data(std::string& out) {
  append_empty(out, 'n');
}

void append_portal_suspended(std::string& out) {
  append_empty(out, 's');
}

void append_parameter_description(std::string& out, std::span<const uint32_t> type_oids) {
  assert(type_oids.size() <= static_cast<std::size_t>(std::numeric_limits<int16_t>::max()));
  MessageWriter writer(out, 't');
  writer.int16(static_cast<int16_t>(type_oids.size()));
  for (const uint32_t oid : type_oids) writer.uint32(oid);
  writer.finish();
}

void append_negotiate_protocol_version(std::string& out, int32_t newest_minor,
                                       std::span<const std::string_view> unrecognized_options) {
  MessageWriter writer(out, 'v');
  writer.int32(newest_minor).int32(static_cast<int32_t>(unrecognized_options.size()));
  for (const std::string_view option : unrecognized_options) writer.cstring(option);
  writer.finish();
}

void append_encryption_refused(std::string& out) {
  out += 'N';
}

}  // namespace tally::pgwire
