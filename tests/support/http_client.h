// A minimal blocking HTTP/1.1 client for tests (loopback, Connection: close): one request per
// connection, the reply's status, lower-cased headers and body. Tests only; any thread.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace tally::testing {

struct HttpReply {
  int status = 0;  // 0: nothing answered (refused, timed out, malformed)
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  nlohmann::json j() const { return nlohmann::json::parse(body, nullptr, false); }
};

// `method target` to 127.0.0.1:port with an optional JSON body, bearer token and extra headers;
// waits at most `timeout_s` for each receive.
HttpReply http(int port, const std::string& method, const std::string& target,
               const std::string& body = "", const std::string& token = "", int timeout_s = 10,
               const std::vector<std::pair<std::string, std::string>>& headers = {});

}  // namespace tally::testing
