// The one translation unit that includes Boost.Beast. Structure after the Beast 1.74 example
// http_server_async.cpp: a strand per connection, expires_after before every read and write, one
// place that closes a connection. What it adds: asynchronous handlers (Pending + Responder), a
// per-request deadline, limits answered with JSON errors, graceful stop, metrics.
#include "common/http/http_server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "common/metrics/metrics_registry.h"

namespace tally {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// After a response that closes the connection the server shuts down its sending side and reads
// (and drops) what the client still sends for up to this long, so that the client reads the
// response instead of a reset caused by unread request bytes.
constexpr milliseconds kLingerTimeout{2000};
constexpr milliseconds kAcceptRetryDelay{50};
// stop(): how long to wait for force-closed connections to go away before stopping the threads.
constexpr milliseconds kForceCloseWait{1000};
// How long stop() waits for the acceptor's last accept to be given back (see stop()).
constexpr milliseconds kAcceptCloseWait{2000};
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

std::string json_error_body(int status, std::string_view message) {
  nlohmann::json j = {{"error", {{"code", status}, {"message", std::string(message)}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

bool valid_method(std::string_view m) {
  return !m.empty() &&
         std::all_of(m.begin(), m.end(), [](char c) { return (c >= 'A' && c <= 'Z') || c == '-'; });
}

bool safe_header(std::string_view name, std::string_view value) {
  auto bad = [](char c) { return c == '\r' || c == '\n' || c == '\0'; };
  return !name.empty() && std::none_of(name.begin(), name.end(), bad) &&
         name.find(':') == std::string_view::npos && std::none_of(value.begin(), value.end(), bad);
}

bool parse_query(std::string_view q, std::vector<std::pair<std::string, std::string>>& out) {
  size_t pos = 0;
  while (pos <= q.size()) {
    size_t amp = q.find('&', pos);
    if (amp == std::string_view::npos) amp = q.size();
    std::string_view part = q.substr(pos, amp - pos);
    if (!part.empty()) {
      size_t eq = part.find('=');
      auto key = http_percent_decode(part.substr(0, eq), true);
      auto value = http_percent_decode(
          eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1), true);
      if (!key || !value) return false;
      out.emplace_back(std::move(*key), std::move(*value));
    }
    pos = amp + 1;
  }
  return true;
}

std::string endpoint_string(const tcp::endpoint& ep) {
  std::string addr = ep.address().to_string();
  if (ep.address().is_v6()) addr = "[" + addr + "]";
  return addr + ":" + std::to_string(ep.port());
}

// ---------------------------------------------------------------------------------------------
// Routes and their metrics

constexpr int kMinStatus = 100;
constexpr int kMaxStatus = 599;

// Per (route, method): counters by status code, filled lazily (the registry's mutex once per code,
// lock-free afterwards), and a latency histogram.
struct RouteMetrics {
  std::string route;
  std::string method;
  Histogram* latency = nullptr;
  std::array<std::atomic<Counter*>, kMaxStatus - kMinStatus + 1> by_code{};
};

struct Route {
  std::string pattern;  // as registered
  std::string key;      // the exact path, or the prefix without '*'
  bool prefix = false;
  std::vector<std::pair<std::string, Handler>> handlers;                       // by method
  std::string allow;                                                           // for 405
  std::vector<std::pair<std::string, std::unique_ptr<RouteMetrics>>> metrics;  // + "other"

  const Handler* find(std::string_view method) const {
    for (const auto& [m, h] : handlers) {
      if (m == method) return &h;
    }
    return nullptr;
  }
  RouteMetrics* metrics_for(std::string_view method) const {
    RouteMetrics* other = nullptr;
    for (const auto& [m, rm] : metrics) {
      if (m == method) return rm.get();
      if (m == "other") other = rm.get();
    }
    return other;
  }
};

struct ServerMetrics {
  MetricsRegistry* registry = nullptr;
  std::string server;
  Gauge* open_connections = nullptr;
  Counter* connections_total = nullptr;
  Counter* rejected_body = nullptr;
  Counter* rejected_header = nullptr;
  Counter* rejected_bad_request = nullptr;
  Counter* rejected_max_connections = nullptr;
  RouteMetrics unmatched;  // requests no route took: parse errors, 404

  void init(MetricsRegistry* r, const std::string& name) {
    registry = r;
    server = name;
    unmatched.route = "unmatched";
    unmatched.method = "other";
    if (registry == nullptr) return;
    open_connections = &registry->gauge("tally_http_open_connections", "HTTP connections open now",
                                        {{"server", server}});
    connections_total = &registry->counter("tally_http_connections_total",
                                           "HTTP connections accepted", {{"server", server}});
    auto rejected = [&](const char* reason) {
      return &registry->counter("tally_http_rejected_total",
                                "HTTP requests or connections refused by a limit or as malformed",
                                {{"server", server}, {"reason", reason}});
    };
    rejected_body = rejected("body_too_large");
    rejected_header = rejected("header_too_large");
    rejected_bad_request = rejected("bad_request");
    rejected_max_connections = rejected("max_connections");
  }

  std::unique_ptr<RouteMetrics> make_route(const std::string& route, const std::string& method,
                                           bool with_latency) {
    auto m = std::make_unique<RouteMetrics>();
    m->route = route;
    m->method = method;
    if (registry != nullptr && with_latency) {
      m->latency = &registry->histogram(
          "tally_http_request_duration_seconds",
          "Time from a request's arrival to its response being handed to the socket",
          {{"server", server}, {"route", route}, {"method", method}});
    }
    return m;
  }

  void count(RouteMetrics& m, int status) {
    if (registry == nullptr) return;
    auto& slot = m.by_code[static_cast<size_t>(status - kMinStatus)];
    Counter* c = slot.load(std::memory_order_acquire);
    if (c == nullptr) {
      c = &registry->counter("tally_http_requests_total",
                             "HTTP requests answered, by route, method and status",
                             {{"server", server},
                              {"route", m.route},
                              {"method", m.method},
                              {"code", std::to_string(status)}});
      slot.store(c, std::memory_order_release);
    }
    c->inc();
  }

  static void inc(Counter* c) {
    if (c != nullptr) c->inc();
  }
};

// Closed when the server stops: from then on a Responder does nothing. Responders take the mutex
// while they post, so the io_context cannot be stopped and destroyed under them.
struct Gate {
  std::mutex mu;
  bool open = true;
};

class Connection;

// What connections share; lives in the server's Impl, which outlives every connection.
struct ServerCore {
  HttpServerOptions options;
  std::vector<std::unique_ptr<Route>> routes;
  std::map<std::string, Route*, std::less<>> exact;
  std::vector<Route*> prefixes;  // longest first
  ServerMetrics metrics;
  std::shared_ptr<Gate> gate = std::make_shared<Gate>();
  std::string over_limit_response;  // a complete 503 response

  std::mutex conns_mu;
  std::condition_variable conns_cv;
  std::unordered_map<uint64_t, std::weak_ptr<Connection>> conns;
  uint64_t next_conn_id = 0;

  const Route* find_route(std::string_view path, std::string& suffix) const {
    if (auto it = exact.find(path); it != exact.end()) return it->second;
    for (const Route* r : prefixes) {
      if (path.starts_with(r->key)) {
        suffix.assign(path.substr(r->key.size()));
        return r;
      }
    }
    return nullptr;
  }

  void unregister(uint64_t id) {
    std::lock_guard lock(conns_mu);
    conns.erase(id);
    if (conns.empty()) conns_cv.notify_all();
  }

  std::vector<std::shared_ptr<Connection>> live_connections() {
    std::vector<std::shared_ptr<Connection>> out;
    std::lock_guard lock(conns_mu);
    for (auto& [id, weak] : conns) {
      if (auto c = weak.lock()) out.push_back(std::move(c));
    }
    return out;
  }
};

// One request that a handler is working on.
struct Pending {
  std::weak_ptr<Connection> conn;
  std::shared_ptr<Gate> gate;
  std::thread::id handler_thread;  // set before the handler runs, constant afterwards
  std::atomic<bool> responded{false};
  std::atomic<bool> in_handler{true};
  // Written only by the handler's own thread while the handler runs (an immediate response).
  std::optional<HttpResponse> sync_response;
};

void deliver(const std::shared_ptr<Pending>& p, HttpResponse response);

// ---------------------------------------------------------------------------------------------
// Connection: everything below runs on the connection's strand.

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(ServerCore& core, tcp::socket socket, uint64_t id, std::string remote)
      : core_(core),
        id_(id),
        remote_(std::move(remote)),
        stream_(std::move(socket)),
        executor_(stream_.get_executor()),
        timer_(executor_) {
    if (core_.metrics.open_connections != nullptr) core_.metrics.open_connections->inc();
    ServerMetrics::inc(core_.metrics.connections_total);
  }

  ~Connection() {
    if (core_.metrics.open_connections != nullptr) core_.metrics.open_connections->dec();
    core_.unregister(id_);
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Callable from any thread: the strand, copied at construction and never changed.
  const net::any_io_executor& executor() const { return executor_; }

  void start() {
    net::dispatch(executor(), [self = shared_from_this()] { self->do_read(); });
  }
  void drain() {
    net::post(executor(), [self = shared_from_this()] { self->on_drain(); });
  }
  void force_close() {
    net::post(executor(), [self = shared_from_this()] { self->close(); });
  }

  // The response to `p`, if it is still the request being handled.
  void complete(const std::shared_ptr<Pending>& p, HttpResponse response) {
    if (closed_ || p != pending_) return;
    pending_.reset();
    timer_.cancel();
    write_response(std::move(response));
  }

 private:
  void do_read() {
    if (closed_) return;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(
        std::min<size_t>(core_.options.max_header_bytes, std::numeric_limits<uint32_t>::max())));
    parser_->body_limit(static_cast<uint64_t>(core_.options.max_body_bytes));
    reading_ = true;
    stream_.expires_after(core_.options.read_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec || parser_->is_done()) {
      on_read(ec);
      return;
    }
    auto& header = parser_->get();
    auto expect = header.find(http::field::expect);
    if (expect != header.end() && iequals(expect->value(), "100-continue")) {
      stream_.expires_after(core_.options.write_timeout);
      net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                       [self = shared_from_this()](beast::error_code wec, size_t) {
                         if (wec) {
                           self->close();
                           return;
                         }
                         self->stream_.expires_after(self->core_.options.read_timeout);
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec == http::error::body_limit) {
      ServerMetrics::inc(core_.metrics.rejected_body);
      reject(413,
             "request body exceeds " + std::to_string(core_.options.max_body_bytes) + " bytes");
      return;
    }
    if (ec == http::error::header_limit) {
      ServerMetrics::inc(core_.metrics.rejected_header);
      reject(431,
             "request header exceeds " + std::to_string(core_.options.max_header_bytes) + " bytes");
      return;
    }
    if (ec == http::error::end_of_stream || ec == http::error::partial_message) {
      close();  // the client went away, possibly in the middle of a request
      return;
    }
    if (ec && &ec.category() == &beast::error_code(http::error::bad_target).category()) {
      ServerMetrics::inc(core_.metrics.rejected_bad_request);
      reject(400, "malformed request: " + ec.message());
      return;
    }
    if (ec) {
      close();  // timeout, reset, or closed by stop()
      return;
    }
    dispatch(parser_->release());
  }

  // Answers an unreadable request and closes: the rest of the stream cannot be trusted.
  void reject(int status, std::string message) {
    keep_alive_ = false;
    head_ = false;
    version_ = 11;
    route_metrics_ = &core_.metrics.unmatched;
    started_ = Clock::now();
    write_response(HttpResponse::error(status, message));
  }

  void answer(RouteMetrics* m, HttpResponse response) {
    route_metrics_ = m;
    write_response(std::move(response));
  }

  void dispatch(http::request<http::string_body>&& msg) {
    started_ = Clock::now();
    version_ = msg.version();
    keep_alive_ = msg.keep_alive();
    head_ = false;

    HttpRequest req;
    req.method.assign(msg.method_string());
    req.target.assign(msg.target());
    if (req.target.empty() || req.target.front() != '/') {
      ServerMetrics::inc(core_.metrics.rejected_bad_request);
      answer(&core_.metrics.unmatched,
             HttpResponse::error(400, "the request target must be an absolute path"));
      return;
    }
    size_t q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos &&
        !parse_query(std::string_view(req.target).substr(q + 1), req.query)) {
      ServerMetrics::inc(core_.metrics.rejected_bad_request);
      answer(&core_.metrics.unmatched,
             HttpResponse::error(400, "malformed query string: bad percent-escape"));
      return;
    }
    const Route* route = core_.find_route(req.path, req.path_suffix);
    if (route == nullptr) {
      answer(&core_.metrics.unmatched, HttpResponse::error(404, "no route for " + req.path));
      return;
    }
    const Handler* handler = route->find(req.method);
    if (handler == nullptr && req.method == "HEAD") {
      handler = route->find("GET");
      head_ = handler != nullptr;
    }
    if (handler == nullptr) {
      HttpResponse r =
          HttpResponse::error(405, "method " + req.method + " is not allowed on " + route->pattern);
      r.headers.emplace_back("Allow", route->allow);
      answer(route->metrics_for("other"), std::move(r));
      return;
    }
    route_metrics_ = route->metrics_for(req.method);
    req.headers.reserve(static_cast<size_t>(std::distance(msg.begin(), msg.end())));
    for (const auto& field : msg) {
      req.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    req.body = std::move(msg.body());
    req.remote = remote_;
    invoke(*handler, std::move(req));
  }

  void invoke(const Handler& handler, HttpRequest&& req) {
    auto p = std::make_shared<Pending>();
    p->conn = weak_from_this();
    p->gate = core_.gate;
    p->handler_thread = std::this_thread::get_id();
    pending_ = p;
    try {
      handler(std::move(req), [p](HttpResponse r) { deliver(p, std::move(r)); });
    } catch (const std::exception& e) {
      if (!p->responded.exchange(true)) {
        p->sync_response = HttpResponse::error(500, std::string("handler failed: ") + e.what());
      }
    } catch (...) {
      if (!p->responded.exchange(true)) {
        p->sync_response = HttpResponse::error(500, "handler failed");
      }
    }
    p->in_handler.store(false, std::memory_order_release);
    if (p->sync_response) {
      pending_.reset();
      write_response(std::move(*p->sync_response));
      return;
    }
    // Answered later (by the Responder through complete(), or here with 504). The timer's wait
    // keeps the connection alive meanwhile.
    timer_.expires_after(core_.options.request_timeout);
    timer_.async_wait([self = shared_from_this(), p](beast::error_code ec) {
      if (ec || p->responded.exchange(true)) return;
      self->complete(
          p, HttpResponse::error(
                 504, "no response within " +
                          std::to_string(self->core_.options.request_timeout.count()) + " ms"));
    });
  }

  void write_response(HttpResponse r) {
    int status = r.status;
    if (status < 200 || status > kMaxStatus) {
      status = 500;
      r = HttpResponse::error(500,
                              "handler returned an invalid status " + std::to_string(r.status));
    }
    if (route_metrics_ != nullptr) {
      core_.metrics.count(*route_metrics_, status);
      if (route_metrics_->latency != nullptr)
        route_metrics_->latency->observe(Clock::now() - started_);
    }
    res_ = http::response<http::string_body>{};
    res_.version(version_);
    res_.result(static_cast<unsigned>(status));
    bool no_body = status == 204 || status == 304;
    if (!r.content_type.empty() && !no_body && safe_header("Content-Type", r.content_type)) {
      res_.set(http::field::content_type, r.content_type);
    }
    for (const auto& [name, value] : r.headers) {
      if (safe_header(name, value)) res_.insert(name, value);
    }
    if (no_body) r.body.clear();
    res_.body() = std::move(r.body);
    res_.prepare_payload();
    if (head_) {
      size_t n = res_.body().size();
      res_.body().clear();
      if (!no_body) res_.content_length(n);
    }
    bool keep = keep_alive_ && !draining_;
    res_.keep_alive(keep);
    stream_.expires_after(core_.options.write_timeout);
    http::async_write(stream_, res_,
                      [self = shared_from_this(), keep](beast::error_code ec, size_t) {
                        self->on_write(ec, keep);
                      });
  }

  void on_write(beast::error_code ec, bool keep) {
    if (ec) {
      close();
      return;
    }
    if (!keep) {
      linger_close();  // the client was told; it closes when it has read the response
      return;
    }
    if (draining_) {
      // stop() came while the response was being written with keep-alive: the client expects
      // the connection to stay, so it will not close it; close like an idle connection unless
      // it already sent more.
      beast::error_code available_ec;
      if (buffer_.size() == 0 && stream_.socket().available(available_ec) == 0 && !available_ec) {
        close();
      } else {
        linger_close();
      }
      return;
    }
    do_read();
  }

  void on_drain() {
    draining_ = true;
    if (closed_ || lingering_) return;
    // Idle between requests: nothing is lost by closing now. A request being read or handled
    // finishes and is answered with Connection: close.
    if (reading_ && buffer_.size() == 0 && parser_ && !parser_->got_some()) close();
  }

  void linger_close() {
    if (closed_ || lingering_) return;
    lingering_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) {
      close();
      return;
    }
    buffer_.consume(buffer_.size());
    stream_.expires_after(std::min(kLingerTimeout, core_.options.read_timeout));
    do_linger();
  }

  void do_linger() {
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) {
                                self->close();  // EOF from the client, or the linger timeout
                                return;
                              }
                              self->do_linger();
                            });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    pending_.reset();
    timer_.cancel();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  ServerCore& core_;
  const uint64_t id_;
  const std::string remote_;
  beast::tcp_stream stream_;
  const net::any_io_executor executor_;
  net::steady_timer timer_;  // the request deadline
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  std::shared_ptr<Pending> pending_;
  // The request being answered.
  RouteMetrics* route_metrics_ = nullptr;
  Clock::time_point started_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool head_ = false;
  // Connection state.
  bool reading_ = false;
  bool draining_ = false;
  bool lingering_ = false;
  bool closed_ = false;
};

void deliver(const std::shared_ptr<Pending>& p, HttpResponse response) {
  if (p->responded.exchange(true)) return;  // the first response wins
  if (p->in_handler.load(std::memory_order_acquire) &&
      std::this_thread::get_id() == p->handler_thread) {
    p->sync_response = std::move(response);  // written by invoke() when the handler returns
    return;
  }
  std::lock_guard lock(p->gate->mu);
  if (!p->gate->open) return;
  std::shared_ptr<Connection> conn = p->conn.lock();
  if (!conn) return;
  net::post(conn->executor(),
            [conn, p, r = std::move(response)]() mutable { conn->complete(p, std::move(r)); });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public helpers

std::optional<std::string_view> HttpRequest::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (iequals(n, name)) return std::string_view(v);
  }
  return std::nullopt;
}

std::optional<std::string_view> HttpRequest::query_param(std::string_view name) const {
  for (const auto& [n, v] : query) {
    if (n == name) return std::string_view(v);
  }
  return std::nullopt;
}

HttpResponse HttpResponse::json(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse HttpResponse::text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  return r;
}

HttpResponse HttpResponse::error(int status, std::string_view message) {
  return json(status, json_error_body(status, message));
}

HttpResponse HttpResponse::from_error(const Error& error) {
  return HttpResponse::error(error_http_status(error.code), error.message);
}

std::optional<std::string> http_percent_decode(std::string_view s, bool plus_is_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex(s[i + 1]);
      int lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// HttpServer

class HttpServer::Impl {
 public:
  explicit Impl(HttpServerOptions options)
      : io_(static_cast<int>(std::max<size_t>(options.threads, 1))),
        accept_strand_(net::make_strand(io_)),
        acceptor_(accept_strand_),
        accept_retry_(accept_strand_) {
    const auto& o = options;
    auto bad = [](const std::string& what) { throw std::invalid_argument("HttpServer: " + what); };
    if (o.threads == 0) bad("threads must be at least 1");
    if (o.read_timeout.count() <= 0) bad("read_timeout must be positive");
    if (o.write_timeout.count() <= 0) bad("write_timeout must be positive");
    if (o.request_timeout.count() <= 0) bad("request_timeout must be positive");
    if (o.max_connections == 0) bad("max_connections must be at least 1");
    if (o.max_header_bytes == 0) bad("max_header_bytes must be at least 1");
    if (o.listen_backlog <= 0) bad("listen_backlog must be positive");
    for (const auto* c : o.connection_contexts) {
      if (c == nullptr) bad("connection_contexts must not hold a null io_context");
    }
    core_.options = std::move(options);
    core_.metrics.init(core_.options.metrics, core_.options.name);
    std::string body = json_error_body(503, "too many connections");
    core_.over_limit_response =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  }

  ~Impl() {
    stop(milliseconds(5000));
    std::lock_guard lock(core_.gate->mu);
    core_.gate->open = false;
  }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void route(std::string_view method, std::string_view path, Handler handler) {
    std::lock_guard lock(lifecycle_mu_);
    if (started_) throw std::logic_error("HttpServer::route after start()");
    std::string m(method);
    std::string p(path);
    if (!valid_method(m)) throw std::invalid_argument("HttpServer: invalid method \"" + m + "\"");
    if (p.empty() || p.front() != '/' || p.find('*') < p.size() - 1 ||
        p.find_first_of("?# ") != std::string::npos) {
      throw std::invalid_argument("HttpServer: invalid route path \"" + p + "\"");
    }
    if (!handler) throw std::invalid_argument("HttpServer: empty handler for " + m + " " + p);
    Route* r = nullptr;
    for (auto& existing : core_.routes) {
      if (existing->pattern == p) r = existing.get();
    }
    if (r == nullptr) {
      auto route = std::make_unique<Route>();
      route->pattern = p;
      route->prefix = p.back() == '*';
      route->key = route->prefix ? p.substr(0, p.size() - 1) : p;
      r = route.get();
      core_.routes.push_back(std::move(route));
      if (r->prefix) {
        core_.prefixes.push_back(r);
        std::stable_sort(
            core_.prefixes.begin(), core_.prefixes.end(),
            [](const Route* a, const Route* b) { return a->key.size() > b->key.size(); });
      } else {
        core_.exact.emplace(r->key, r);
      }
    }
    if (r->find(m) != nullptr) {
      throw std::invalid_argument("HttpServer: duplicate route " + m + " " + p);
    }
    r->handlers.emplace_back(std::move(m), std::move(handler));
  }

  Status start() {
    std::lock_guard lock(lifecycle_mu_);
    if (started_) return make_error(ErrorCode::kInternal, "HttpServer already started");
    finalize_routes();
    const auto& o = core_.options;
    std::string where = o.address + ":" + std::to_string(o.port);
    beast::error_code ec;
    auto address = net::ip::make_address(o.address, ec);
    if (ec) return make_error(ErrorCode::kInvalidArgument, "invalid listen address " + o.address);
    tcp::endpoint endpoint(address, o.port);
    auto failed = [&](const char* step) {
      beast::error_code ignored;
      acceptor_.close(ignored);
      return make_error(ErrorCode::kUnavailable, std::string("cannot listen on ") + where + ": " +
                                                     step + ": " + ec.message());
    };
    acceptor_.open(endpoint.protocol(), ec);
    if (ec) return failed("open");
    acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (ec) return failed("setsockopt");
    acceptor_.bind(endpoint, ec);
    if (ec) return failed("bind");
    acceptor_.listen(o.listen_backlog, ec);
    if (ec) return failed("listen");
    port_ = acceptor_.local_endpoint(ec).port();
    accepting_ = true;
    do_accept();
    work_.emplace(io_.get_executor());
    threads_.reserve(o.threads);
    for (size_t i = 0; i < o.threads; ++i) threads_.emplace_back([this] { io_.run(); });
    started_ = true;
    return ok_status();
  }

  void stop(milliseconds grace) {
    std::lock_guard lock(lifecycle_mu_);
    if (!started_ || stopped_) return;
    stopped_ = true;
    net::post(accept_strand_, [this] {
      accepting_ = false;
      beast::error_code ec;
      acceptor_.close(ec);
      accept_retry_.cancel();
      for (auto& c : core_.live_connections()) c->drain();
      std::lock_guard accept_lock(accept_mu_);
      acceptor_closed_ = true;
    });
    {
      // The pending accept holds the next connection's socket, made on one of
      // options.connection_contexts. Left queued in io_ when the threads stop, it would be
      // destroyed with io_, after its owner may have destroyed that context (a use after free at
      // shutdown). Closing the acceptor aborts it; let it come back while the threads still run.
      std::unique_lock accept_lock(accept_mu_);
      accept_cv_.wait_for(accept_lock, kAcceptCloseWait,
                          [this] { return acceptor_closed_ && !accept_outstanding_; });
    }
    auto all_closed = [this] { return core_.conns.empty(); };
    bool drained;
    {
      std::unique_lock conns_lock(core_.conns_mu);
      drained = core_.conns_cv.wait_for(conns_lock, grace, all_closed);
    }
    if (!drained) {
      for (auto& c : core_.live_connections()) c->force_close();
      std::unique_lock conns_lock(core_.conns_mu);
      core_.conns_cv.wait_for(conns_lock, kForceCloseWait, all_closed);
    }
    {
      std::lock_guard gate_lock(core_.gate->mu);
      core_.gate->open = false;
    }
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  uint16_t port() const { return port_.load(); }
  void post(std::function<void()> fn) { net::post(io_, std::move(fn)); }
  net::io_context& io() { return io_; }

 private:
  void finalize_routes() {
    for (auto& r : core_.routes) {
      std::string allow;
      bool has_get = false;
      bool has_head = false;
      for (const auto& [m, h] : r->handlers) {
        has_get |= m == "GET";
        has_head |= m == "HEAD";
        r->metrics.emplace_back(m, core_.metrics.make_route(r->pattern, m, true));
      }
      if (has_get && !has_head) {
        r->metrics.emplace_back("HEAD", core_.metrics.make_route(r->pattern, "HEAD", true));
      }
      r->metrics.emplace_back("other", core_.metrics.make_route(r->pattern, "other", false));
      std::vector<std::string> methods;
      for (const auto& [m, h] : r->handlers) methods.push_back(m);
      if (has_get && !has_head) methods.emplace_back("HEAD");
      std::sort(methods.begin(), methods.end());
      for (const auto& m : methods) {
        if (!allow.empty()) allow += ", ";
        allow += m;
      }
      r->allow = std::move(allow);
    }
  }

  // On accept_strand_ from here on.
  void do_accept() {
    const auto& contexts = core_.options.connection_contexts;
    net::io_context& io = contexts.empty() ? io_ : *contexts[next_context_++ % contexts.size()];
    {
      std::lock_guard accept_lock(accept_mu_);
      accept_outstanding_ = true;
    }
    acceptor_.async_accept(net::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
      on_accept(ec, std::move(socket));
    });
  }

  void on_accept(beast::error_code ec, tcp::socket socket) {
    {
      std::lock_guard accept_lock(accept_mu_);
      accept_outstanding_ = false;
    }
    accept_cv_.notify_all();
    if (!accepting_) {
      beast::error_code ignored;
      socket.close(ignored);
      return;
    }
    if (ec) {
      // Out of descriptors or a transient error: try again shortly instead of spinning.
      accept_retry_.expires_after(kAcceptRetryDelay);
      accept_retry_.async_wait([this](beast::error_code wec) {
        if (!wec && accepting_) do_accept();
      });
      return;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::string remote = endpoint_string(socket.remote_endpoint(ignored));
    uint64_t id = 0;
    bool over = false;
    {
      std::lock_guard lock(core_.conns_mu);
      over = core_.conns.size() >= core_.options.max_connections;
      id = core_.next_conn_id++;
    }
    if (over) {
      reject_over_limit(socket);
    } else {
      auto conn = std::make_shared<Connection>(core_, std::move(socket), id, std::move(remote));
      {
        std::lock_guard lock(core_.conns_mu);
        core_.conns.emplace(id, conn);
      }
      conn->start();
    }
    do_accept();
  }

  // Best effort and never blocking: the 503 fits in an empty socket buffer.
  void reject_over_limit(tcp::socket& socket) {
    ServerMetrics::inc(core_.metrics.rejected_max_connections);
    beast::error_code ignored;
    socket.non_blocking(true, ignored);
    socket.send(net::buffer(core_.over_limit_response), 0, ignored);
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }

  // Declared first, destroyed last: connections destroyed with io_ still reach it.
  ServerCore core_;
  std::mutex lifecycle_mu_;
  bool started_ = false;
  bool stopped_ = false;
  std::atomic<uint16_t> port_{0};

  net::io_context io_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  net::strand<net::io_context::executor_type> accept_strand_;
  tcp::acceptor acceptor_;
  net::steady_timer accept_retry_;
  bool accepting_ = false;   // on accept_strand_
  size_t next_context_ = 0;  // on accept_strand_: the next of options.connection_contexts
  // Whether an async_accept is pending, and whether stop() has closed the acceptor: stop() waits
  // for both (closed, none pending) before it stops io_.
  std::mutex accept_mu_;
  std::condition_variable accept_cv_;
  bool accept_outstanding_ = false;  // guarded by accept_mu_
  bool acceptor_closed_ = false;     // guarded by accept_mu_
  std::vector<std::thread> threads_;
};

HttpServer::HttpServer(HttpServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpServer::~HttpServer() = default;

void HttpServer::route(std::string_view method, std::string_view path, Handler handler) {
  impl_->route(method, path, std::move(handler));
}

Status HttpServer::start() {
  return impl_->start();
}

void HttpServer::stop(std::chrono::milliseconds grace) {
  impl_->stop(grace);
}

uint16_t HttpServer::port() const {
  return impl_->port();
}

void HttpServer::post(std::function<void()> fn) {
  impl_->post(std::move(fn));
}

boost::asio::io_context& HttpServer::io_context() {
  return impl_->io();
}

}  // namespace tally
