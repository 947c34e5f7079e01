// Result<T>: the value of a request-path operation or the Error that stopped it.
// Request paths never throw; they return a Result. Exceptions are for start-up only.
// Error codes map to HTTP statuses and SQLSTATEs in exactly one place (error.cpp).
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tally {

enum class ErrorCode {
  kInvalidArgument,    // the caller sent something malformed: 400 / 22023
  kNotFound,           // 404 / 42704
  kAlreadyExists,      // 409 / 42710
  kConflict,           // a compare-and-set or idempotency overlap: 409 / 40001
  kUnavailable,        // a dependency is down; retry later: 503 / 08006
  kTimeout,            // 504 / 57014
  kPermissionDenied,   // 403 / 42501
  kUnauthenticated,    // 401 / 28P01
  kReadOnly,           // 403 / 25006
  kUnsupported,        // 400 / 0A000
  kResourceExhausted,  // 429 / 53300
  kInternal,           // a bug or an unexpected state: 500 / XX000
};

struct Error {
  ErrorCode code;
  std::string message;
};

std::string_view error_code_name(ErrorCode code);
int error_http_status(ErrorCode code);
std::string_view error_sqlstate(ErrorCode code);

inline Error make_error(ErrorCode code, std::string message) {
  return Error{code, std::move(message)};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : state_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return ok(); }

  const T& value() const& {
    assert(ok());
    return std::get<T>(state_);
  }
  T& value() & {
    assert(ok());
    return std::get<T>(state_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(state_));
  }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<Error>(state_);
  }

 private:
  std::variant<T, Error> state_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const {
    assert(failed_);
    return error_;
  }

 private:
  Error error_{ErrorCode::kInternal, {}};
  bool failed_ = false;
};

using Status = Result<void>;

inline Status ok_status() {
  return Status{};
}

}  // namespace tally
