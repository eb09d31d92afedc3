// Status: the outcome of an operation, as in LevelDB (a null pointer on success, so returning OK
// costs one word) with UCX's non-error "in progress" code for asynchronous work.
//
// Thread-safety: a Status is a value; distinct objects may be used from distinct threads freely.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace strata {

enum class StatusCode : uint8_t {
  kOk = 0,
  kInProgress = 1,  // Not an error: an asynchronous operation was posted and has not completed.
  kNotFound = 2,
  kCorruption = 3,  // Bytes failed a format or checksum check.
  kInvalidArgument = 4,
  kIOError = 5,
  kNoSpace = 6,  // A device or pool is full.
  kTimedOut = 7,
  kUnavailable = 8,  // A peer or service cannot be reached now; retrying may help.
  kAlreadyExists = 9,
  kResourceExhausted = 10,  // A bounded resource (pins, descriptors, queue slots) ran out.
  kNotSupported = 11,
  kAborted = 12,
  kPermissionDenied = 13,
  kInternal = 14,
};

// Returns the stable name of `code`, e.g. "NotFound".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;  // OK
  Status(StatusCode code, std::string_view message);
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;
  ~Status() = default;

  static Status OK() { return Status(); }
  static Status InProgress() { return Status(StatusCode::kInProgress, {}); }
  static Status NotFound(std::string_view msg) { return Status(StatusCode::kNotFound, msg); }
  static Status Corruption(std::string_view msg) { return Status(StatusCode::kCorruption, msg); }
  static Status InvalidArgument(std::string_view msg) {
    return Status(StatusCode::kInvalidArgument, msg);
  }
  static Status IOError(std::string_view msg) { return Status(StatusCode::kIOError, msg); }
  static Status NoSpace(std::string_view msg) { return Status(StatusCode::kNoSpace, msg); }
  static Status TimedOut(std::string_view msg) { return Status(StatusCode::kTimedOut, msg); }
  static Status Unavailable(std::string_view msg) { return Status(StatusCode::kUnavailable, msg); }
  static Status AlreadyExists(std::string_view msg) {
    return Status(StatusCode::kAlreadyExists, msg);
  }
  static Status ResourceExhausted(std::string_view msg) {
    return Status(StatusCode::kResourceExhausted, msg);
  }
  static Status NotSupported(std::string_view msg) { return Status(StatusCode::kNotSupported, msg); }
  static Status Aborted(std::string_view msg) { return Status(StatusCode::kAborted, msg); }
  static Status PermissionDenied(std::string_view msg) {
    return Status(StatusCode::kPermissionDenied, msg);
  }
  static Status Internal(std::string_view msg) { return Status(StatusCode::kInternal, msg); }

  bool ok() const { return state_ == nullptr; }
  bool IsInProgress() const { return code() == StatusCode::kInProgress; }
  bool IsNotFound() const { return code() == StatusCode::kNotFound; }
  bool IsCorruption() const { return code() == StatusCode::kCorruption; }
  bool IsInvalidArgument() const { return code() == StatusCode::kInvalidArgument; }
  bool IsIOError() const { return code() == StatusCode::kIOError; }
  bool IsNoSpace() const { return code() == StatusCode::kNoSpace; }
  bool IsTimedOut() const { return code() == StatusCode::kTimedOut; }

  StatusCode code() const { return state_ ? state_->code : StatusCode::kOk; }
  // The message without the code name; empty for OK.
  std::string_view message() const { return state_ ? std::string_view(state_->message) : ""; }
  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

  // Returns a copy with `context` prepended to the message ("context: message"); OK stays OK.
  Status WithContext(std::string_view context) const;

 private:
  struct State {
    StatusCode code;
    std::string message;
  };
  std::unique_ptr<State> state_;
};

}  // namespace strata

// Returns from the enclosing function when `expr` (a Status) is not OK.
#define STRATA_RETURN_IF_ERROR(expr)       \
  do {                                     \
    ::strata::Status _strata_st = (expr);  \
    if (!_strata_st.ok()) return _strata_st; \
  } while (0)
