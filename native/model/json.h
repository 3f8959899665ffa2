// A small JSON value, parser and writer for model-file headers (safetensors) and configs. The core
// has no dependencies beyond the standard library, so this is ours: objects keep insertion order,
// numbers are doubles, strings are UTF-8. Parse errors throw safl::Error with the byte offset.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace safl::json {

class Value {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : kind_(Kind::Bool), bool_(b) {}
  Value(double x) : kind_(Kind::Number), number_(x) {}
  Value(int x) : Value(double(x)) {}
  Value(int64_t x) : Value(double(x)) {}
  Value(const char* s) : kind_(Kind::String), string_(s) {}
  Value(std::string s) : kind_(Kind::String), string_(std::move(s)) {}
  Value(Array a) : kind_(Kind::Array), array_(std::move(a)) {}
  Value(Object o) : kind_(Kind::Object), object_(std::move(o)) {}

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool is_number() const { return kind_ == Kind::Number; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_array() const { return kind_ == Kind::Array; }
  bool is_object() const { return kind_ == Kind::Object; }
  bool is_bool() const { return kind_ == Kind::Bool; }

  // Typed access; a mismatch throws safl::Error naming `what` (e.g. "config.d_model").
  bool as_bool(const std::string& what) const;
  double as_number(const std::string& what) const;
  // A number that is an integer in [lo, hi].
  int64_t as_integer(const std::string& what, int64_t lo, int64_t hi) const;
  const std::string& as_string(const std::string& what) const;
  const Array& as_array(const std::string& what) const;
  const Object& as_object(const std::string& what) const;

  // Object member or nullptr.
  const Value* find(const std::string& key) const;
  // Object member; throws naming `what`.key when absent.
  const Value& at(const std::string& key, const std::string& what) const;
  // Appends (or replaces) an object member; the value must be an object.
  void set(const std::string& key, Value value);

 private:
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  Array array_;
  Object object_;
};

// Parses a whole document (trailing whitespace only). `source` names it in error messages.
Value parse(const std::string& text, const std::string& source);
// Compact serialisation (no spaces); numbers that are integers print without a fraction.
std::string write(const Value& value);

}  // namespace safl::json
