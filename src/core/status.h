// Status and Result<T>: the checked error type returned at every API boundary
// (loading files, parsing configs and requests). Messages say what was wrong,
// where (file, tensor, field) and what was expected.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace r1 {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // bad input from a user or a file
  kNotFound,         // missing file, tensor or key
  kOutOfRange,       // a value outside its allowed range
  kUnsupported,      // valid input that we do not handle
  kResourceExhausted,
  kIo,        // the operating system refused (open, mmap, read)
  kInternal,  // a bug of ours
  kCancelled,
  kUnavailable,
};

const char* error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  bool is_ok() const { return code_ == ErrorCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

template <typename... Args>
Status make_error(ErrorCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Status(code, fmt::format(f, std::forward<Args>(args)...));
}

// Result<T> holds a T or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Status status) : v_(std::move(status)) {}

  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const {
    static const Status kOkStatus;
    return is_ok() ? kOkStatus : std::get<1>(v_);
  }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }

 private:
  std::variant<T, Status> v_;
};

// Thrown only where a Status cannot be returned (constructors, deep call
// chains that the caller converts back to a Status at the boundary).
class Error : public std::exception {
 public:
  explicit Error(Status s) : status_(std::move(s)), what_(status_.to_string()) {}
  const Status& status() const { return status_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  Status status_;
  std::string what_;
};

}  // namespace r1

#define R1_CONCAT_INNER(a, b) a##b
#define R1_CONCAT(a, b) R1_CONCAT_INNER(a, b)

// R1_RETURN_IF_ERROR(expr): return the Status of expr when it is not ok.
#define R1_RETURN_IF_ERROR(expr)                \
  do {                                          \
    ::r1::Status r1_status_ = (expr);           \
    if (!r1_status_.is_ok()) return r1_status_; \
  } while (0)

// R1_ASSIGN_OR_RETURN(lhs, expr): lhs = value of a Result, or return its Status.
#define R1_ASSIGN_OR_RETURN(lhs, expr) \
  R1_ASSIGN_OR_RETURN_IMPL(R1_CONCAT(r1_result_, __LINE__), lhs, expr)
#define R1_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.is_ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
