// HttpClient: a small blocking HTTP/1.1 client for service-to-service calls (the processor's
// writers calling the cluster proxy). One client talks to one host:port over one kept-alive
// connection, reconnecting when needed. Boost.Beast lives in http_client.cpp only.
//
// Threading contract: a client is used by one thread at a time and blocks that thread for up to
// the timeout per request, so never call it on an io_context thread (an HttpServer handler);
// writer and background threads are fine. Errors are Results: kUnavailable for connection
// failures, kTimeout when the whole exchange takes longer than the timeout. An HTTP error status is
// not an error here: the caller reads HttpClientResponse::status.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/core/result.h"

namespace tally {

struct HttpClientResponse {
  int status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string header(std::string_view name) const;  // "" when absent (case-insensitive name)
};

struct HttpUrl {
  std::string host;
  uint16_t port = 80;
  std::string base_path;  // without a trailing '/', "" for none
};

// Parses "http://host:port[/base]"; kInvalidArgument naming the URL otherwise (https is not
// supported: services talk over loopback or a private network).
Result<HttpUrl> parse_http_url(std::string_view url);

class HttpClient {
 public:
  HttpClient(std::string host, uint16_t port, std::chrono::milliseconds timeout);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request (target: path and query) and reads the whole response. Retries once on a
  // fresh connection when a kept-alive one turns out to be closed before anything was read.
  Result<HttpClientResponse> request(
      std::string_view method, std::string_view target, std::string_view body = {},
      const std::vector<std::pair<std::string, std::string>>& headers = {},
      std::string_view content_type = "application/json");
  // The timeout of the next requests (each request's whole exchange).
  void set_timeout(std::chrono::milliseconds timeout);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally
