// The client side of common/http: the only other translation unit that includes Boost.Beast.
// Each exchange runs asynchronous operations on a private io_context with the stream's deadline,
// so a stuck peer ends in a timeout instead of a hung thread.
#include "common/http/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <optional>

#include "common/core/host_port.h"

namespace tally {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

std::string HttpClientResponse::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (n.size() == name.size() && std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return v;
    }
  }
  return "";
}

Result<HttpUrl> parse_http_url(std::string_view url) {
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, "URL \"" + std::string(url) + "\": " + why +
                                                       " (expected http://host:port[/path])");
  };
  constexpr std::string_view kScheme = "http://";
  if (url.substr(0, kScheme.size()) != kScheme) return bad("not an http:// URL");
  std::string_view rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  std::string_view hostport = rest.substr(0, slash);
  HttpUrl out;
  if (slash != std::string_view::npos) {
    out.base_path = std::string(rest.substr(slash));
    while (!out.base_path.empty() && out.base_path.back() == '/') out.base_path.pop_back();
  }
  if (hostport.find(':') == std::string_view::npos) {
    out.host = std::string(hostport);  // the default port
  } else {
    Result<HostPort> parsed = parse_host_port(hostport);
    if (!parsed.ok()) return bad(split_host_port(hostport).host.empty() ? "no host" : "bad port");
    out.host = std::move(parsed->host);
    out.port = parsed->port;
  }
  if (out.host.empty()) return bad("no host");
  return out;
}

class HttpClient::Impl {
 public:
  Impl(std::string host, uint16_t port, std::chrono::milliseconds timeout)
      : host_(std::move(host)), port_(port), timeout_(timeout) {}

  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }

  Result<HttpClientResponse> request(
      std::string_view method, std::string_view target, std::string_view body,
      const std::vector<std::pair<std::string, std::string>>& headers,
      std::string_view content_type) {
    http::request<http::string_body> req;
    req.method_string(method);
    req.target(target);
    req.version(11);
    req.set(http::field::host, host_ + ":" + std::to_string(port_));
    req.keep_alive(true);
    for (const auto& [n, v] : headers) req.set(n, v);
    if (!body.empty() || method == "POST" || method == "PUT") {
      req.set(http::field::content_type, content_type);
      req.body() = std::string(body);
      req.prepare_payload();
    }
    bool reused = stream_.has_value();
    auto r = exchange(req);
    if (!r.ok() && reused && !read_anything_) {
      stream_.reset();  // the kept-alive connection was closed by the peer: try a fresh one
      r = exchange(req);
    }
    if (!r.ok()) stream_.reset();
    return r;
  }

 private:
  Result<HttpClientResponse> exchange(http::request<http::string_body>& req) {
    read_anything_ = false;
    beast::error_code ec;
    io_.restart();
    if (!stream_) {
      buffer_.clear();
      stream_.emplace(io_);
      tcp::resolver resolver(io_);
      auto endpoints = resolver.resolve(host_, std::to_string(port_), ec);
      if (ec) return fail(ErrorCode::kUnavailable, "cannot resolve", ec);
      stream_->expires_after(timeout_);
      stream_->async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
      io_.run();
      if (ec)
        return fail(ec == beast::error::timeout ? ErrorCode::kTimeout : ErrorCode::kUnavailable,
                    "cannot connect to", ec);
      stream_->socket().set_option(tcp::no_delay(true), ec);
      io_.restart();
    }
    stream_->expires_after(timeout_);
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::async_write(*stream_, req, [&](beast::error_code e, std::size_t) {
      ec = e;
      if (e) return;
      http::async_read(*stream_, buffer_, parser, [&](beast::error_code e2, std::size_t n) {
        ec = e2;
        read_anything_ = n > 0;
      });
    });
    io_.run();
    if (ec) {
      return fail(ec == beast::error::timeout ? ErrorCode::kTimeout : ErrorCode::kUnavailable,
                  "request to", ec);
    }
    http::response<http::string_body> res = parser.release();
    HttpClientResponse out;
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    for (const auto& field : res) {
      out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    if (!res.keep_alive()) stream_.reset();
    return out;
  }

  Error fail(ErrorCode code, const char* what, const beast::error_code& ec) {
    return make_error(code, std::string(what) + " http://" + host_ + ":" + std::to_string(port_) +
                                " failed: " + ec.message());
  }

  std::string host_;
  uint16_t port_;
  std::chrono::milliseconds timeout_;
  net::io_context io_;
  std::optional<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  bool read_anything_ = false;
};

HttpClient::HttpClient(std::string host, uint16_t port, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>(std::move(host), port, timeout)) {}

void HttpClient::set_timeout(std::chrono::milliseconds timeout) {
  impl_->set_timeout(timeout);
}

HttpClient::~HttpClient() = default;

Result<HttpClientResponse> HttpClient::request(
    std::string_view method, std::string_view target, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& headers,
    std::string_view content_type) {
  return impl_->request(method, target, body, headers, content_type);
}

}  // namespace tally
