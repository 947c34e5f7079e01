// Unit tests for common/http: a real HttpServer on 127.0.0.1 port 0, driven by a raw POSIX socket
// client written here (so the bytes on the wire are exactly what the test says): routing, query
// decoding, limits (413, 431, max connections), keep-alive, pipelining, asynchronous and missing
// responses (504), Connection: close, HEAD, malformed requests, the admin endpoints and graceful
// stop with a request in flight.
#include "common/http/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/http/admin_endpoints.h"
#include "common/metrics/metrics_registry.h"

namespace tally {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// A minimal blocking HTTP/1.1 client over a loopback socket.

struct Response {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (n.size() == name.size() &&
          std::equal(n.begin(), n.end(), name.begin(),
                     [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        return v;
      }
    }
    return std::nullopt;
  }
};

class Client {
 public:
  explicit Client(uint16_t port, std::chrono::milliseconds timeout = 5000ms) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // One response; std::nullopt on EOF, error or timeout. `head`: the response has no body.
  std::optional<Response> read(bool head = false) {
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return std::nullopt;
    }
    Response r;
    std::string_view head_text(buf_.data(), end);
    size_t line_end = head_text.find("\r\n");
    std::string_view status_line = head_text.substr(0, line_end);
    if (status_line.size() < 12) return std::nullopt;
    r.status = std::stoi(std::string(status_line.substr(9, 3)));
    size_t pos = line_end == std::string_view::npos ? head_text.size() : line_end + 2;
    while (pos < head_text.size()) {
      size_t next = head_text.find("\r\n", pos);
      if (next == std::string_view::npos) next = head_text.size();
      std::string_view line = head_text.substr(pos, next - pos);
      size_t colon = line.find(':');
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      r.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
      pos = next + 2;
    }
    buf_.erase(0, end + 4);
    size_t length = 0;
    if (auto cl = r.header("Content-Length"); cl && !head) length = std::stoul(*cl);
    while (buf_.size() < length) {
      if (!fill()) return std::nullopt;
    }
    r.body = buf_.substr(0, length);
    buf_.erase(0, length);
    return r;
  }

  // True when the server closes the connection (EOF or reset) before the receive timeout.
  bool closed_by_peer() {
    for (;;) {
      char c[4096];
      ssize_t n = ::recv(fd_, c, sizeof(c), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }

  std::string& buffered() { return buf_; }

 private:
  bool fill() {
    char chunk[65536];
    ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

std::string get_request(std::string_view target, std::string_view extra_headers = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: test\r\n" + std::string(extra_headers) +
         "\r\n";
}

std::optional<Response> get(uint16_t port, std::string_view target) {
  Client c(port);
  if (!c.connected() || !c.send(get_request(target))) return std::nullopt;
  return c.read();
}

// Runs functions on threads of their own after a delay (an "other thread" for handlers that
// respond later); joins them before the server in the fixture goes away.
class Later {
 public:
  ~Later() { join(); }
  void run(std::chrono::milliseconds delay, std::function<void()> fn) {
    std::lock_guard lock(mu_);
    threads_.emplace_back([delay, fn = std::move(fn)] {
      std::this_thread::sleep_for(delay);
      fn();
    });
  }
  void join() {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

 private:
  std::mutex mu_;
  std::vector<std::thread> threads_;
};

HttpServerOptions test_options() {
  HttpServerOptions o;
  o.address = "127.0.0.1";
  o.port = 0;
  o.threads = 2;
  o.name = "test";
  return o;
}

class HttpServerTest : public ::testing::Test {
 protected:
  // A server on an ephemeral port with the test routes and the admin endpoints.
  void start(HttpServerOptions options = test_options()) {
    options.metrics = &metrics_;
    server_ = std::make_unique<HttpServer>(std::move(options));
    server_->route("GET", "/hello", [](HttpRequest&&, Responder respond) {
      respond(HttpResponse::text(200, "hello"));
    });
    server_->route("GET", "/echo", [](HttpRequest&& req, Responder respond) {
      std::string out = "path=" + req.path + "\n";
      for (const auto& [k, v] : req.query) out += k + "=" + v + "\n";
      if (auto h = req.header("x-TEST")) out += "x-test: " + std::string(*h) + "\n";
      if (auto a = req.query_param("a")) out += "first a: " + std::string(*a) + "\n";
      out += "remote ok: " + std::to_string(req.remote.rfind("127.0.0.1:", 0) == 0) + "\n";
      respond(HttpResponse::text(200, std::move(out)));
    });
    server_->route("POST", "/echo", [](HttpRequest&& req, Responder respond) {
      respond(HttpResponse::text(200, std::move(req.body)));
    });
    server_->route("GET", "/slow", [this](HttpRequest&& req, Responder respond) {
      std::string id(req.query_param("id").value_or(""));
      later_.run(100ms, [respond = std::move(respond), id] {
        respond(HttpResponse::text(200, "slow " + id));
      });
    });
    server_->route("GET", "/never", [this](HttpRequest&&, Responder respond) {
      std::lock_guard lock(mu_);
      kept_.push_back(std::move(respond));
    });
    server_->route("GET", "/twice", [](HttpRequest&&, Responder respond) {
      respond(HttpResponse::text(200, "first"));
      respond(HttpResponse::text(500, "second"));
    });
    server_->route("GET", "/throws",
                   [](HttpRequest&&, Responder) -> void { throw std::runtime_error("boom"); });
    add_admin_routes(*server_, metrics_, [this] {
      std::lock_guard lock(mu_);
      return health_;
    });
    Status s = server_->start();
    ASSERT_TRUE(s.ok()) << s.error().message;
    port_ = server_->port();
    ASSERT_NE(port_, 0);
  }

  // Destroyed in reverse: later_'s threads are joined while the server runs, the server goes
  // before the responders it handed out (kept_) and before the registry it registered in.
  MetricsRegistry metrics_;
  std::mutex mu_;
  std::vector<Responder> kept_;
  HealthStatus health_;
  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
  Later later_;
};

// ---------------------------------------------------------------------------------------------

TEST_F(HttpServerTest, GetRouteAnswersWithBody) {
  start();
  auto r = get(port_, "/hello");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
  EXPECT_EQ(r->header("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(r->header("Content-Length"), "5");
}

TEST_F(HttpServerTest, QueryParametersAreDecoded) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send(
      get_request("/echo?a=hello%20world&b=x+y&c=%E2%9C%93&d&e=&a=2&%3D=%26", "X-Test: yes\r\n")));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body,
            "path=/echo\n"
            "a=hello world\n"
            "b=x y\n"
            "c=\xE2\x9C\x93\n"
            "d=\n"
            "e=\n"
            "a=2\n"
            "==&\n"
            "x-test: yes\n"
            "first a: hello world\n"
            "remote ok: 1\n");

  ASSERT_TRUE(c.send(get_request("/echo?a=%zz")));
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(r->body,
            R"({"error":{"code":400,"message":"malformed query string: bad percent-escape"}})");
}

TEST_F(HttpServerTest, UnknownPathIs404AndOtherMethodIs405) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send(get_request("/nope")));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->header("Content-Type"), "application/json");
  EXPECT_EQ(r->body, R"({"error":{"code":404,"message":"no route for /nope"}})");

  ASSERT_TRUE(c.send("DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n"));
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->header("Allow"), "GET, HEAD");
  EXPECT_EQ(r->body,
            R"({"error":{"code":405,"message":"method DELETE is not allowed on /hello"}})");
}

TEST_F(HttpServerTest, PrefixRoutesExactBeatsPrefixLongestPrefixWins) {
  HttpServer server(test_options());
  auto reply = [](std::string tag) {
    return [tag](HttpRequest&& req, Responder respond) {
      respond(HttpResponse::text(200, tag + "|" + req.path_suffix));
    };
  };
  server.route("GET", "/v1/*", reply("v1"));
  server.route("GET", "/v1/videos/*", reply("videos"));
  server.route("GET", "/v1/videos/special", reply("special"));
  ASSERT_TRUE(server.start().ok());
  EXPECT_EQ(get(server.port(), "/v1/videos/dQw4w9WgXcQ/stats?x=1")->body,
            "videos|dQw4w9WgXcQ/stats");
  EXPECT_EQ(get(server.port(), "/v1/videos/special")->body, "special|");
  EXPECT_EQ(get(server.port(), "/v1/top")->body, "v1|top");
  EXPECT_EQ(get(server.port(), "/v2")->status, 404);
}

TEST_F(HttpServerTest, BodyOverLimitIs413NamingTheLimit) {
  start();  // the default limit: 1 MiB
  Client c(port_);
  std::string body(1024 * 1024 + 1, 'x');
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(r->body, R"({"error":{"code":413,"message":"request body exceeds 1048576 bytes"}})");
  EXPECT_EQ(r->header("Connection"), "close");
  EXPECT_TRUE(c.closed_by_peer());

  // A body within the limit is delivered whole.
  Client d(port_);
  std::string small(1000, 'y');
  ASSERT_TRUE(d.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + small));
  r = d.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, small);
}

TEST_F(HttpServerTest, ExpectContinueGetsInterimResponse) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send(
      "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
  auto interim = c.read(true);
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  ASSERT_TRUE(c.send("abc"));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "abc");
}

TEST_F(HttpServerTest, HugeHeaderIs431) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send(get_request("/hello", "X-Big: " + std::string(20000, 'a') + "\r\n")));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  EXPECT_EQ(r->body, R"({"error":{"code":431,"message":"request header exceeds 16384 bytes"}})");
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(HttpServerTest, KeepAliveServesTwoRequestsOnOneConnection) {
  start();
  Client c(port_);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(c.send(get_request("/hello")));
    auto r = c.read();
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello");
    EXPECT_NE(r->header("Connection"), "close");
  }
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  start();
  Client c(port_);
  // The first is slow (answered 100 ms later from another thread), the second immediate.
  ASSERT_TRUE(
      c.send(get_request("/slow?id=1") + get_request("/hello") + get_request("/slow?id=3")));
  auto r1 = c.read();
  auto r2 = c.read();
  auto r3 = c.read();
  ASSERT_TRUE(r1 && r2 && r3);
  EXPECT_EQ(r1->body, "slow 1");
  EXPECT_EQ(r2->body, "hello");
  EXPECT_EQ(r3->body, "slow 3");
}

TEST_F(HttpServerTest, HandlerRespondsLaterFromAnotherThread) {
  HttpServer server(test_options());
  std::promise<std::thread::id> handler_thread;
  std::promise<std::thread::id> responder_thread;
  Later later;
  server.route("GET", "/later", [&](HttpRequest&&, Responder respond) {
    handler_thread.set_value(std::this_thread::get_id());
    later.run(50ms, [&, respond = std::move(respond)] {
      responder_thread.set_value(std::this_thread::get_id());
      respond(HttpResponse::json(201, R"({"done":true})"));
    });
  });
  ASSERT_TRUE(server.start().ok());
  auto r = get(server.port(), "/later");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, R"({"done":true})");
  EXPECT_NE(handler_thread.get_future().get(), responder_thread.get_future().get());
  later.join();
}

TEST_F(HttpServerTest, ConnectionContextsCarryConnectionsHandlersAndLaterResponses) {
  // Two io_contexts of the owner, one thread each: connections go round robin to them, and the
  // handler and a later response (posted on the same io_context) run on the owner's threads.
  boost::asio::io_context a(1);
  boost::asio::io_context b(1);
  auto guard_a = boost::asio::make_work_guard(a);
  auto guard_b = boost::asio::make_work_guard(b);
  std::thread ta([&] { a.run(); });
  std::thread tb([&] { b.run(); });
  const std::thread::id id_a = ta.get_id();
  const std::thread::id id_b = tb.get_id();
  std::mutex mu;
  std::vector<std::thread::id> handler_threads;
  std::vector<std::thread::id> respond_threads;
  {
    HttpServerOptions o = test_options();
    o.connection_contexts = {&a, &b};
    HttpServer server(o);
    server.route("GET", "/where", [&](HttpRequest&&, Responder respond) {
      {
        std::lock_guard lock(mu);
        handler_threads.push_back(std::this_thread::get_id());
      }
      boost::asio::io_context& own = a.get_executor().running_in_this_thread() ? a : b;
      boost::asio::post(own, [&, respond = std::move(respond)] {
        {
          std::lock_guard lock(mu);
          respond_threads.push_back(std::this_thread::get_id());
        }
        respond(HttpResponse::text(200, "ok"));
      });
    });
    ASSERT_TRUE(server.start().ok());
    for (int i = 0; i < 4; ++i) {
      auto r = get(server.port(), "/where");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
      EXPECT_EQ(r->body, "ok");
    }
    server.stop();
  }
  guard_a.reset();
  guard_b.reset();
  ta.join();
  tb.join();
  ASSERT_EQ(handler_threads.size(), 4u);
  ASSERT_EQ(respond_threads.size(), 4u);
  EXPECT_EQ(std::count(handler_threads.begin(), handler_threads.end(), id_a), 2);
  EXPECT_EQ(std::count(handler_threads.begin(), handler_threads.end(), id_b), 2);
  EXPECT_EQ(handler_threads, respond_threads);
}

TEST_F(HttpServerTest, ConnectionContextsMayBeDestroyedBeforeTheStoppedServer) {
  // The cluster proxy's order: stop the server, destroy the contexts its connections ran on (they
  // still reach the server), then the server. Its last accept, made for one of those contexts,
  // must be gone by then: in the ASan tree a leftover one is a heap-use-after-free when the
  // server's io_context is destroyed. Repeated because stop() and that accept race.
  for (int round = 0; round < 20; ++round) {
    auto ctx = std::make_unique<boost::asio::io_context>(1);
    auto guard = boost::asio::make_work_guard(*ctx);
    std::thread t([&] { ctx->run(); });
    HttpServerOptions o = test_options();
    o.connection_contexts = {ctx.get()};
    auto server = std::make_unique<HttpServer>(o);
    server->route("GET", "/x",
                  [](HttpRequest&&, Responder respond) { respond(HttpResponse::text(200, "ok")); });
    ASSERT_TRUE(server->start().ok());
    if (round % 2 == 0) {  // with and without a connection served before the stop
      auto r = get(server->port(), "/x");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
    }
    server->stop();
    guard.reset();
    t.join();
    ctx.reset();
    server.reset();
  }
}

TEST(HttpServerOptionsTest, NullConnectionContextIsRefused) {
  HttpServerOptions o;
  o.connection_contexts = {nullptr};
  EXPECT_THROW(HttpServer{o}, std::invalid_argument);
}

TEST_F(HttpServerTest, HandlerThatNeverRespondsGets504AndConnectionStaysUsable) {
  HttpServerOptions o = test_options();
  o.request_timeout = 200ms;
  start(o);
  Client c(port_);
  auto t0 = Clock::now();
  ASSERT_TRUE(c.send(get_request("/never")));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_GE(Clock::now() - t0, 190ms);
  EXPECT_EQ(r->status, 504);
  EXPECT_EQ(r->body, R"({"error":{"code":504,"message":"no response within 200 ms"}})");
  // A response after the deadline is ignored; the connection serves the next request.
  {
    std::lock_guard lock(mu_);
    ASSERT_EQ(kept_.size(), 1u);
    kept_[0](HttpResponse::text(200, "too late"));
  }
  ASSERT_TRUE(c.send(get_request("/hello")));
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hello");
}

TEST_F(HttpServerTest, RespondingTwiceIsIgnored) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send(get_request("/twice") + get_request("/hello")));
  auto r1 = c.read();
  auto r2 = c.read();
  ASSERT_TRUE(r1 && r2);
  EXPECT_EQ(r1->status, 200);
  EXPECT_EQ(r1->body, "first");
  EXPECT_EQ(r2->body, "hello");
}

TEST_F(HttpServerTest, HandlerThatThrowsGets500) {
  start();
  auto r = get(port_, "/throws");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->body, R"({"error":{"code":500,"message":"handler failed: boom"}})");
}

TEST_F(HttpServerTest, ConnectionCloseIsHonoured) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send(get_request("/hello", "Connection: close\r\n")));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("Connection"), "close");
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(HttpServerTest, Http10WithoutKeepAliveIsClosed) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send("GET /hello HTTP/1.0\r\n\r\n"));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hello");
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(HttpServerTest, HeadOnGetRouteHasLengthButNoBody) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send("HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto r = c.read(/*head=*/true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("Content-Length"), "5");
  // No body bytes follow: the next response starts right away.
  ASSERT_TRUE(c.send(get_request("/hello")));
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
}

TEST_F(HttpServerTest, MalformedRequestIs400AndOthersKeepWorking) {
  start();
  Client other(port_);
  ASSERT_TRUE(other.send(get_request("/hello")));
  ASSERT_TRUE(other.read());

  for (std::string_view bad : {"GARBAGE\r\n\r\n", "GET /hello HTTP/9.9\r\n\r\n",
                               "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n"}) {
    Client c(port_);
    ASSERT_TRUE(c.send(bad));
    auto r = c.read();
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_NE(r->body.find(R"({"error":{"code":400,"message":"malformed request: )"),
              std::string::npos)
        << r->body;
    EXPECT_TRUE(c.closed_by_peer()) << bad;
  }
  ASSERT_TRUE(other.send(get_request("/hello")));
  auto r = other.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hello");
  EXPECT_EQ(get(port_, "/hello")->body, "hello");
}

TEST_F(HttpServerTest, IdleConnectionIsClosedAfterReadTimeout) {
  HttpServerOptions o = test_options();
  o.read_timeout = 200ms;
  start(o);
  Client c(port_);
  auto t0 = Clock::now();
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_GE(Clock::now() - t0, 150ms);
}

TEST_F(HttpServerTest, OverMaxConnectionsIsAnswered503) {
  HttpServerOptions o = test_options();
  o.max_connections = 1;
  start(o);
  auto first = std::make_unique<Client>(port_);
  ASSERT_TRUE(first->send(get_request("/hello")));
  ASSERT_TRUE(first->read());
  {
    Client second(port_);
    auto r = second.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_EQ(r->body, R"({"error":{"code":503,"message":"too many connections"}})");
  }
  first.reset();
  // Once the first is gone there is room again.
  std::optional<Response> r;
  for (int i = 0; i < 50 && !(r && r->status == 200); ++i) {
    std::this_thread::sleep_for(20ms);
    r = get(port_, "/hello");
  }
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(metrics_.render_prometheus().find(
                "tally_http_rejected_total{reason=\"max_connections\",server=\"test\"} 1\n"),
            std::string::npos);
}

TEST_F(HttpServerTest, MetricsEndpointRendersServerMetrics) {
  start();
  ASSERT_TRUE(get(port_, "/hello"));
  ASSERT_TRUE(get(port_, "/nope"));
  Client c(port_);
  ASSERT_TRUE(c.send(get_request("/metrics")));
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  for (const char* line : {
           "# TYPE tally_http_requests_total counter\n",
           "tally_http_requests_total{code=\"200\",method=\"GET\",route=\"/hello\",server=\"test\"}"
           " 1\n",
           "tally_http_requests_total{code=\"404\",method=\"other\",route=\"unmatched\","
           "server=\"test\"} 1\n",
           "tally_http_request_duration_seconds_count{method=\"GET\",route=\"/hello\","
           "server=\"test\"} 1\n",
           "tally_http_open_connections{server=\"test\"} ",  // 1 to 3: closes race
           "# TYPE tally_http_request_duration_seconds histogram\n",
           "# TYPE process_resident_memory_bytes gauge\n",
           "\nprocess_resident_memory_bytes ",
       }) {
    EXPECT_NE(r->body.find(line), std::string::npos) << line << "\n---\n" << r->body;
  }
  const std::string rss_line = "\nprocess_resident_memory_bytes ";
  const size_t rss_at = r->body.find(rss_line);
  ASSERT_NE(rss_at, std::string::npos);
  EXPECT_GT(std::stoll(r->body.substr(rss_at + rss_line.size())), 1 << 20);  // a live process
}

TEST_F(HttpServerTest, HealthzAndReadyzWithReasons) {
  start();
  auto h = get(port_, "/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->body, "ok\n");

  auto ready = get(port_, "/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, R"({"ready":true,"reasons":[]})");

  {
    std::lock_guard lock(mu_);
    health_ = HealthStatus{false, {"zookeeper: connecting", "no \"topology\" yet"}};
  }
  auto not_ready = get(port_, "/readyz");
  ASSERT_TRUE(not_ready);
  EXPECT_EQ(not_ready->status, 503);
  EXPECT_EQ(not_ready->header("Content-Type"), "application/json");
  EXPECT_EQ(not_ready->body,
            R"({"ready":false,"reasons":["zookeeper: connecting","no \"topology\" yet"]})");
}

TEST_F(HttpServerTest, GracefulStopCompletesInFlightRequest) {
  HttpServer server(test_options());
  std::promise<void> entered;
  Later later;
  server.route("GET", "/inflight", [&](HttpRequest&&, Responder respond) {
    entered.set_value();
    later.run(300ms,
              [respond = std::move(respond)] { respond(HttpResponse::text(200, "finished")); });
  });
  server.route("GET", "/hello",
               [](HttpRequest&&, Responder respond) { respond(HttpResponse::text(200, "hello")); });
  ASSERT_TRUE(server.start().ok());
  uint16_t port = server.port();

  Client idle(port);  // kept alive, between requests: closed at once by stop()
  ASSERT_TRUE(idle.send(get_request("/hello")));
  ASSERT_TRUE(idle.read());

  Client busy(port);
  ASSERT_TRUE(busy.send(get_request("/inflight")));
  entered.get_future().wait();
  // Like a real client: read the response, see the server's FIN, close.
  auto reader = std::async(std::launch::async, [&busy] {
    auto r = busy.read();
    bool closed = busy.closed_by_peer();
    busy.close();
    return std::make_pair(r, closed);
  });
  auto t0 = Clock::now();
  server.stop(5000ms);
  auto stop_took = Clock::now() - t0;
  EXPECT_GE(stop_took, 200ms);  // it waited for the in-flight request
  EXPECT_LT(stop_took, 1500ms);

  auto [r, closed] = reader.get();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "finished");
  EXPECT_EQ(r->header("Connection"), "close");
  EXPECT_TRUE(closed);
  EXPECT_TRUE(idle.closed_by_peer());
  Client after(port);
  EXPECT_FALSE(after.connected());
  later.join();
}

TEST_F(HttpServerTest, StopForceClosesRequestsPastTheGrace) {
  HttpServerOptions o = test_options();
  o.request_timeout = 10000ms;
  start(o);
  Client c(port_);
  ASSERT_TRUE(c.send(get_request("/never")));
  std::this_thread::sleep_for(50ms);
  auto t0 = Clock::now();
  server_->stop(200ms);
  EXPECT_LT(Clock::now() - t0, 2000ms);
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(HttpServerTest, ResponderAfterServerIsGoneDoesNothing) {
  start();
  Client c(port_);
  ASSERT_TRUE(c.send(get_request("/never")));
  for (int i = 0; i < 100; ++i) {
    {
      std::lock_guard lock(mu_);
      if (!kept_.empty()) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  server_->stop(50ms);
  server_.reset();
  std::lock_guard lock(mu_);
  ASSERT_EQ(kept_.size(), 1u);
  kept_[0](HttpResponse::text(200, "nobody listens"));
}

TEST(HttpServer, RejectsBadRoutesAndOptions) {
  HttpServer server(test_options());
  auto noop = [](HttpRequest&&, Responder) {};
  EXPECT_THROW(server.route("get", "/x", noop), std::invalid_argument);
  EXPECT_THROW(server.route("GET", "x", noop), std::invalid_argument);
  EXPECT_THROW(server.route("GET", "/a*b", noop), std::invalid_argument);
  server.route("GET", "/x", noop);
  EXPECT_THROW(server.route("GET", "/x", noop), std::invalid_argument);
  ASSERT_TRUE(server.start().ok());
  EXPECT_THROW(server.route("POST", "/y", noop), std::logic_error);

  HttpServerOptions zero = test_options();
  zero.threads = 0;
  EXPECT_THROW(HttpServer{zero}, std::invalid_argument);
}

TEST(HttpServer, StartFailsWhenThePortIsTaken) {
  HttpServer a(test_options());
  ASSERT_TRUE(a.start().ok());
  HttpServerOptions o = test_options();
  o.port = a.port();
  HttpServer b(o);
  Status s = b.start();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(s.error().message.find("cannot listen on 127.0.0.1:" + std::to_string(a.port())),
            std::string::npos)
      << s.error().message;
}

TEST(HttpPercentDecode, DecodesAndRejects) {
  EXPECT_EQ(http_percent_decode("a%20b+c", true), "a b c");
  EXPECT_EQ(http_percent_decode("a%20b+c", false), "a b+c");
  EXPECT_EQ(http_percent_decode("%e2%9C%93", false), "\xE2\x9C\x93");
  EXPECT_EQ(http_percent_decode("", true), "");
  EXPECT_EQ(http_percent_decode("%", true), std::nullopt);
  EXPECT_EQ(http_percent_decode("%4", true), std::nullopt);
  EXPECT_EQ(http_percent_decode("%g0", true), std::nullopt);
}

TEST(HttpResponse, FromErrorUsesTheMappedStatus) {
  HttpResponse r = HttpResponse::from_error(make_error(ErrorCode::kNotFound, "no video \"x\""));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, R"({"error":{"code":404,"message":"no video \"x\""}})");
}

}  // namespace
}  // namespace tally
