// Argument readers and error mapping for the addon (see napi_util.h).
#include "addon/napi_util.h"

#include <cmath>
#include <new>
#include <sstream>

namespace safl::addon {

std::string describe(const Napi::Value& value) {
  if (value.IsUndefined()) return "undefined";
  if (value.IsNull()) return "null";
  if (value.IsString()) return "'" + value.As<Napi::String>().Utf8Value() + "'";
  if (value.IsNumber() || value.IsBoolean() || value.IsBigInt()) return value.ToString().Utf8Value();
  if (value.IsTypedArray()) {
    const auto array = value.As<Napi::TypedArray>();
    static const char* names[] = {"Int8Array",   "Uint8Array",   "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array", "Int32Array",   "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    const int type = static_cast<int>(array.TypedArrayType());
    std::ostringstream out;
    out << (type >= 0 && type < 11 ? names[type] : "TypedArray") << " of length " << array.ElementLength();
    return out.str();
  }
  if (value.IsArray()) return "an array";
  if (value.IsFunction()) return "a function";
  if (value.IsBuffer()) return "a Buffer";
  return "an object";
}

void throw_type_error(Napi::Env env, const std::string& what, const std::string& option, const Napi::Value& received) {
  throw Napi::TypeError::New(env, "Expected " + what + " for " + option + " but received " + describe(received));
}

void throw_range_error(Napi::Env env, const std::string& what, const std::string& option, const Napi::Value& received) {
  throw Napi::RangeError::New(env, "Expected " + what + " for " + option + " but received " + describe(received));
}

int64_t read_integer(const Napi::Value& value, const char* option, int64_t lo, int64_t hi) {
  std::ostringstream range;
  range << "an integer between " << lo << " and " << hi;
  if (!value.IsNumber()) throw_type_error(value.Env(), range.str(), option, value);
  const double x = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x) || std::floor(x) != x) throw_type_error(value.Env(), range.str(), option, value);
  if (x < double(lo) || x > double(hi)) throw_range_error(value.Env(), range.str(), option, value);
  return static_cast<int64_t>(x);
}

bool read_boolean(const Napi::Value& value, const char* option) {
  if (!value.IsBoolean()) throw_type_error(value.Env(), "a boolean", option, value);
  return value.As<Napi::Boolean>().Value();
}

std::string read_string(const Napi::Value& value, const char* option) {
  if (!value.IsString()) throw_type_error(value.Env(), "a string", option, value);
  return value.As<Napi::String>().Utf8Value();
}

Napi::Float32Array read_float32(const Napi::Value& value, const char* option, size_t expected) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw_type_error(value.Env(), "a Float32Array", option, value);
  auto array = value.As<Napi::Float32Array>();
  if (array.ElementLength() != expected) {
    std::ostringstream what;
    what << "a Float32Array of length " << expected;
    throw_range_error(value.Env(), what.str(), option, value);
  }
  return array;
}

Napi::Error to_js_error(Napi::Env env, const std::exception& e) {
  if (const auto* err = dynamic_cast<const safl::Error*>(&e)) {
    switch (err->kind()) {
      case ErrorKind::Type: return Napi::TypeError::New(env, err->what());
      case ErrorKind::Range: return Napi::RangeError::New(env, err->what());
      default: return Napi::Error::New(env, err->what());
    }
  }
  if (dynamic_cast<const std::bad_alloc*>(&e)) return Napi::Error::New(env, "safl: out of memory");
  return Napi::Error::New(env, e.what());
}

}  // namespace safl::addon
