// Errors of the native core. The library never calls exit/abort: every failed check throws a
// safl::Error whose kind says which JavaScript error it becomes (Error, TypeError, RangeError).
// Messages name the op, what was expected and what was received, e.g.
//   "conv2d_forward: expected stride_h >= 1 but received 0".
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace safl {

enum class ErrorKind { Generic, Type, Range };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

namespace detail {
template <class... Parts>
[[noreturn]] void fail(ErrorKind kind, const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw Error(kind, message.str());
}
}  // namespace detail

}  // namespace safl

// SAFL_CHECK(cond, parts...): throw a generic Error built from the streamed parts when cond fails.
#define SAFL_CHECK(cond, ...)                                                 \
  do {                                                                        \
    if (!(cond)) ::safl::detail::fail(::safl::ErrorKind::Generic, __VA_ARGS__); \
  } while (0)

// SAFL_CHECK_RANGE: a size or value outside its allowed range (becomes a JS RangeError).
#define SAFL_CHECK_RANGE(cond, ...)                                           \
  do {                                                                        \
    if (!(cond)) ::safl::detail::fail(::safl::ErrorKind::Range, __VA_ARGS__); \
  } while (0)

// SAFL_CHECK_TYPE: an argument of the wrong kind (becomes a JS TypeError).
#define SAFL_CHECK_TYPE(cond, ...)                                            \
  do {                                                                        \
    if (!(cond)) ::safl::detail::fail(::safl::ErrorKind::Type, __VA_ARGS__);  \
  } while (0)
