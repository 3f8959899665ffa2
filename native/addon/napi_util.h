// Helpers shared by the addon's bindings: argument readers that throw TypeError/RangeError in the
// package's one message form ("Expected <what> for <option> but received <value>"), and the map
// from safl::Error kinds (and other C++ exceptions) to JavaScript errors.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

#include "common/error.h"

namespace safl::addon {

// A short, printable description of a JS value for error messages (strings quoted, numbers as
// written, objects by their type).
std::string describe(const Napi::Value& value);

// Throws a JS TypeError: "Expected <what> for <option> but received <value>".
[[noreturn]] void throw_type_error(Napi::Env env, const std::string& what, const std::string& option,
                                   const Napi::Value& received);
// Throws a JS RangeError in the same form.
[[noreturn]] void throw_range_error(Napi::Env env, const std::string& what, const std::string& option,
                                    const Napi::Value& received);

// An integer in [lo, hi] (TypeError if not an integer number, RangeError if outside).
int64_t read_integer(const Napi::Value& value, const char* option, int64_t lo, int64_t hi);
bool read_boolean(const Napi::Value& value, const char* option);
std::string read_string(const Napi::Value& value, const char* option);
// A Float32Array with exactly `expected` elements (TypeError / RangeError otherwise).
Napi::Float32Array read_float32(const Napi::Value& value, const char* option, size_t expected);

// Converts the exception being handled into a JS error of the matching class: safl::Error by its
// kind, std::bad_alloc as "out of memory", anything else as Error with its what().
Napi::Error to_js_error(Napi::Env env, const std::exception& e);

// Wraps a binding body: C++ exceptions become thrown JS errors instead of crossing into N-API.
template <class Body>
Napi::Value guarded(const Napi::CallbackInfo& info, Body&& body) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw to_js_error(info.Env(), e);
  }
}

}  // namespace safl::addon
