// HttpServer: the asynchronous HTTP/1.1 server every Tally service uses for its REST API and for
// /healthz, /readyz and /metrics (see admin_endpoints.h). Boost.Beast does the protocol work inside
// http_server.cpp only; this header has no Beast or Asio types, so its users compile fast.
//
// Threading contract
// - The server owns an io_context and `options.threads` threads that run it (start() spawns them,
//   stop() joins them). Every connection runs on its own strand.
// - A Handler is called on one of those threads, on the connection's strand. It must not block: it
//   either responds at once, or hands the Responder to other work and returns.
// - A Responder may be called from any thread, at any time, as often as one likes: the first call
//   wins and later ones are ignored; a call after the request's deadline (answered with 504), after
//   the connection closed, or after the server stopped or was destroyed does nothing. A response
//   given while the handler still runs is written without a thread hop; a later one is posted to
//   the connection's strand.
// - A handler that never responds gets a 504 JSON error after options.request_timeout.
// - Requests on one connection are handled one at a time, in order: pipelined requests are read,
//   handled and answered in the order they arrived.
// - With options.connection_contexts, connections (their strands, handlers and responses) run on
//   those io_contexts instead of the server's own threads. Those contexts must outlive stop();
//   after stop() nothing of the server's own refers to them any more, so they may be destroyed
//   before the server (whose connections they destroy still reach it: destroy them first).
// - post() runs a function on one of the server's threads (not on a connection strand); functions
//   posted after stop() never run. io_context() exposes the same threads to services that use Asio
//   themselves (include <boost/asio/io_context.hpp> for the full type).
// - route() is for start-up, before start(); the route table is immutable afterwards. start() and
//   stop() are called from the owner's thread, never from a server thread (stop() joins them).
//
// Errors the server answers itself, all with a JSON body {"error":{"code":N,"message":"..."}}:
// 400 malformed request (then closes), 404 no route for the path, 405 the path has no route for the
// method (with Allow), 413 body over max_body_bytes (then closes), 431 header over
// max_header_bytes (then closes), 500 handler threw, 503 over max_connections (then closes),
// 504 no response within request_timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/core/result.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace tally {

class MetricsRegistry;

struct HttpRequest {
  std::string method;  // as sent, e.g. "GET"; "HEAD" also for a GET route serving a HEAD request
  std::string target;  // the raw request target: "/v1/videos/x/stats?start=..."
  std::string path;    // the target before '?', not percent-decoded (see http_percent_decode)
  // For a prefix route ("/v1/videos/*"): the part of `path` after the prefix; empty otherwise.
  std::string path_suffix;
  // Query parameters in order, percent-decoded ('+' is a space); "a" and "a=" give an empty value.
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string body;
  std::string remote;  // the peer, "127.0.0.1:51234"

  // The first header of that name, compared case-insensitively.
  std::optional<std::string_view> header(std::string_view name) const;
  // The first query parameter of that name (case-sensitive).
  std::optional<std::string_view> query_param(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers; CR/LF is refused

  static HttpResponse json(int status, std::string body);
  static HttpResponse text(int status, std::string body);
  // {"error":{"code":status,"message":message}}
  static HttpResponse error(int status, std::string_view message);
  // error() with the HTTP status of the error's code (error_http_status).
  static HttpResponse from_error(const Error& error);
};

using Responder = std::function<void(HttpResponse)>;
using Handler = std::function<void(HttpRequest&&, Responder)>;

struct HttpServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;   // 0: an ephemeral port; HttpServer::port() tells which
  size_t threads = 1;  // io threads the server runs
  size_t max_body_bytes = 1024 * 1024;
  size_t max_header_bytes = 16 * 1024;  // request line and header fields
  // How long a connection may take to send a whole request, including the idle time of a kept-
  // alive connection before its next request.
  std::chrono::milliseconds read_timeout{30000};
  std::chrono::milliseconds write_timeout{30000};
  std::chrono::milliseconds request_timeout{10000};  // handler deadline, then 504
  size_t max_connections = 10000;                    // one more is answered 503 and closed
  int listen_backlog = 1024;
  // Optional: io_contexts the owner runs (one thread each, typically) to carry the connections:
  // accepted connections are spread over them round robin, so handlers and responses run on those
  // threads and a service whose own work lives there never changes threads per request. The
  // server's own `threads` then only accept and run post(). The owner keeps them running until
  // stop() returns and destroys them only after it.
  std::vector<boost::asio::io_context*> connection_contexts;
  // Optional: where the server registers its metrics (must outlive the server). `name` is the
  // value of their "server" label, so several servers can share one registry.
  MetricsRegistry* metrics = nullptr;
  std::string name = "http";
};

class HttpServer {
 public:
  // Throws std::invalid_argument for options that cannot work (no threads, zero timeouts, ...).
  explicit HttpServer(HttpServerOptions options);
  // Stops (with the default grace) if running.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Registers `handler` for `method` ("GET", "POST", ...) on `path`: an exact path ("/healthz"),
  // or a prefix ending in '*' ("/v1/videos/*" matches "/v1/videos/abc/stats"). An exact route
  // beats a prefix; the longest prefix wins. GET routes also answer HEAD (without the body).
  // Throws std::invalid_argument for a malformed method or path or a duplicate route, and
  // std::logic_error after start().
  void route(std::string_view method, std::string_view path, Handler handler);

  // Binds, listens and starts the threads. kUnavailable when the address cannot be bound.
  Status start();
  // Graceful: stops accepting, closes idle connections, lets in-flight requests finish and be
  // answered (with Connection: close) for up to `grace`, then closes what is left and joins the
  // threads. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));

  // The bound port (after start()).
  uint16_t port() const;
  // Runs fn on a server thread. fn must not block or throw.
  void post(std::function<void()> fn);
  boost::asio::io_context& io_context();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Decodes %XX escapes (and '+' as a space when plus_is_space); std::nullopt for a bad escape.
std::optional<std::string> http_percent_decode(std::string_view s, bool plus_is_space);

}  // namespace tally
