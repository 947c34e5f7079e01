// libFuzzer target for the client-facing PostgreSQL codec (common/pgwire). The input is a whole
// client byte stream, starting in the startup phase (the seeds are real psql/pgbench sessions).
// Checks beyond "no crash": every view a message holds is read in full (so ASan sees any view past
// the buffer), and decoding in small chunks must give exactly what decoding the whole input gives.
// 'p' payloads go through the password and SCRAM parsers too.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "common/pgwire/frontend_decoder.h"
#include "common/pgwire/md5_auth.h"
#include "common/pgwire/scram.h"

namespace {

using namespace tally;
using namespace tally::pgwire;

// Appends a field to the digest, reading every byte of it.
void put(std::string& digest, std::string_view field) {
  digest += std::to_string(field.size());
  digest += ':';
  digest.append(field.data(), field.size());
  digest += ';';
}

void put(std::string& digest, int64_t v) {
  digest += std::to_string(v);
  digest += ';';
}

// An owned, exact description of a message, compared across chunkings.
void digest_message(std::string& d, const FrontendMessage& message) {
  put(d, message_name(message));
  struct Visitor {
    std::string& d;
    void operator()(const StartupMessage& s) {
      put(d, s.protocol_major);
      put(d, s.protocol_minor);
      for (const auto& [k, v] : s.parameters) {
        put(d, k);
        put(d, v);
      }
    }
    void operator()(const SslRequest&) {}
    void operator()(const GssEncRequest&) {}
    void operator()(const CancelRequest& c) {
      put(d, c.process_id);
      put(d, c.secret_key);
    }
    void operator()(const Query& q) { put(d, q.sql); }
    void operator()(const Parse& p) {
      put(d, p.statement);
      put(d, p.query);
      for (uint32_t oid : p.parameter_types) put(d, oid);
    }
    void operator()(const Bind& b) {
      put(d, b.portal);
      put(d, b.statement);
      for (int16_t f : b.parameter_formats) put(d, f);
      for (const auto& p : b.parameters) {
        if (p) {
          put(d, *p);
        } else {
          put(d, -1);
        }
      }
      for (int16_t f : b.result_formats) put(d, f);
    }
    void operator()(const Describe& x) {
      put(d, static_cast<char>(x.kind));
      put(d, x.name);
    }
    void operator()(const Execute& e) {
      put(d, e.portal);
      put(d, e.max_rows);
    }
    void operator()(const Sync&) {}
    void operator()(const Flush&) {}
    void operator()(const Close& x) {
      put(d, static_cast<char>(x.kind));
      put(d, x.name);
    }
    void operator()(const Terminate&) {}
    void operator()(const AuthResponse& a) { put(d, a.payload); }
    void operator()(const CopyData& c) { put(d, c.data); }
    void operator()(const CopyDone&) {}
    void operator()(const CopyFail& c) { put(d, c.message); }
  };
  std::visit(Visitor{d}, message);
}

const ScramCredentials& credentials() {
  // One iteration keeps the target fast; the parsers do not depend on the count.
  static const ScramCredentials c = *make_scram_credentials("pencil", "saltsalt", 1);
  return c;
}

// Authentication: the first 'p' is a SASLInitialResponse, the next a client-final-message; also
// read every 'p' as a PasswordMessage.
struct AuthState {
  std::optional<ScramServerExchange> scram;
  int responses = 0;

  void handle(std::string_view payload, std::string& digest) {
    if (Result<std::string_view> password = parse_password_message(payload); password.ok()) {
      put(digest,
          verify_md5_response("u", md5_password_hash("u", "pencil"), {1, 2, 3, 4}, *password).ok());
    }
    if (responses == 0) {
      scram.emplace("u", credentials(), "fixedservernonce");
      Result<std::string> first = scram->handle_initial_response(payload);
      put(digest, first.ok() ? *first : first.error().message);
    } else if (responses == 1 && scram) {
      Result<std::string> final_message = scram->handle_client_final(payload);
      put(digest, final_message.ok() ? *final_message : final_message.error().message);
    }
    ++responses;
  }
};

// Decodes `data` fed in chunks of `chunk` bytes; returns the digest of everything decoded and how
// the stream ended.
std::string run(std::string_view data, std::size_t chunk) {
  FrontendDecoder decoder;  // startup phase; a StartupMessage switches it to the normal phase
  AuthState auth;
  std::string digest;
  for (std::size_t pos = 0; pos < data.size(); pos += chunk) {
    decoder.feed(data.substr(pos, chunk));
    for (;;) {
      Result<std::optional<FrontendMessage>> r = decoder.next();
      if (!r.ok()) {
        // Errors are final and must say something.
        if (r.error().message.empty()) __builtin_trap();
        put(digest, r.error().message);
        return digest;
      }
      if (!*r) {
        if (decoder.bytes_wanted() == 0) __builtin_trap();
        break;
      }
      digest_message(digest, **r);
      if (const auto* a = std::get_if<AuthResponse>(&**r)) auth.handle(a->payload, digest);
    }
  }
  put(digest, static_cast<int64_t>(decoder.buffered()));
  return digest;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string whole = run(input, size == 0 ? 1 : size);
  // A chunk size from 1 to 16 picked by the input's length, so each input is also fed split.
  const std::size_t chunk = 1 + size % 16;
  if (run(input, chunk) != whole) __builtin_trap();
  return 0;
}
