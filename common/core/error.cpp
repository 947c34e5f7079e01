#include "common/core/result.h"

namespace tally {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid_argument";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kAlreadyExists:
      return "already_exists";
    case ErrorCode::kConflict:
      return "conflict";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kTimeout:
      return "timeout";
    case ErrorCode::kPermissionDenied:
      return "permission_denied";
    case ErrorCode::kUnauthenticated:
      return "unauthenticated";
    case ErrorCode::kReadOnly:
      return "read_only";
    case ErrorCode::kUnsupported:
      return "unsupported";
    case ErrorCode::kResourceExhausted:
      return "resource_exhausted";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "internal";
}

int error_http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kAlreadyExists:
      return 409;
    case ErrorCode::kConflict:
      return 409;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kTimeout:
      return 504;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kReadOnly:
      return 403;
    case ErrorCode::kUnsupported:
      return 400;
    case ErrorCode::kResourceExhausted:
      return 429;
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

std::string_view error_sqlstate(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "22023";
    case ErrorCode::kNotFound:
      return "42704";
    case ErrorCode::kAlreadyExists:
      return "42710";
    case ErrorCode::kConflict:
      return "40001";
    case ErrorCode::kUnavailable:
      return "08006";
    case ErrorCode::kTimeout:
      return "57014";
    case ErrorCode::kPermissionDenied:
      return "42501";
    case ErrorCode::kUnauthenticated:
      return "28P01";
    case ErrorCode::kReadOnly:
      return "25006";
    case ErrorCode::kUnsupported:
      return "0A000";
    case ErrorCode::kResourceExhausted:
      return "53300";
    case ErrorCode::kInternal:
      return "XX000";
  }
  return "XX000";
}

}  // namespace tally
