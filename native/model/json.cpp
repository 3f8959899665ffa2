// JSON parser and writer (see json.h). Recursive descent with a depth limit, so a hostile header
// cannot exhaust the stack.
#include "model/json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common/error.h"

namespace safl::json {
namespace {

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::Null: return "null";
    case Value::Kind::Bool: return "a boolean";
    case Value::Kind::Number: return "a number";
    case Value::Kind::String: return "a string";
    case Value::Kind::Array: return "an array";
    default: return "an object";
  }
}

[[noreturn]] void wrong_kind(const std::string& what, const char* expected, Value::Kind got) {
  detail::fail(ErrorKind::Generic, what, ": expected ", expected, " but received ", kind_name(got));
}

class Parser {
 public:
  Parser(const std::string& text, const std::string& source) : text_(text), source_(source) {}

  Value document() {
    Value v = value(0);
    skip_space();
    if (pos_ != text_.size()) error("unexpected text after the JSON value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void error(const std::string& what) {
    detail::fail(ErrorKind::Generic, source_, ": invalid JSON at byte ", pos_, ": ", what);
  }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\r' || text_[pos_] == '\t')) ++pos_;
  }

  bool consume(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void expect_literal(const char* word) {
    for (const char* p = word; *p; ++p, ++pos_)
      if (pos_ >= text_.size() || text_[pos_] != *p) error(std::string("expected '") + word + "'");
  }

  Value value(int depth) {
    if (depth > kMaxDepth) error("nesting deeper than 64 levels");
    skip_space();
    if (pos_ >= text_.size()) error("unexpected end of input");
    const char c = text_[pos_];
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') return Value(string());
    if (c == 't') { expect_literal("true"); return Value(true); }
    if (c == 'f') { expect_literal("false"); return Value(false); }
    if (c == 'n') { expect_literal("null"); return Value(); }
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    error(std::string("unexpected character '") + c + "'");
  }

  Value object(int depth) {
    ++pos_;  // '{'
    Value::Object members;
    if (consume('}')) return Value(std::move(members));
    do {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"') error("expected a string key");
      std::string key = string();
      if (!consume(':')) error("expected ':'");
      members.emplace_back(std::move(key), value(depth + 1));
    } while (consume(','));
    if (!consume('}')) error("expected ',' or '}'");
    return Value(std::move(members));
  }

  Value array(int depth) {
    ++pos_;  // '['
    Value::Array items;
    if (consume(']')) return Value(std::move(items));
    do {
      items.push_back(value(depth + 1));
    } while (consume(','));
    if (!consume(']')) error("expected ',' or ']'");
    return Value(std::move(items));
  }

  Value number() {
    const size_t start = pos_;
    if (text_[pos_] == '-') ++pos_;
    auto digits = [&] {
      const size_t from = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      if (pos_ == from) error("expected a digit");
    };
    digits();
    if (pos_ < text_.size() && text_[pos_] == '.') { ++pos_; digits(); }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      digits();
    }
    return Value(std::strtod(text_.substr(start, pos_ - start).c_str(), nullptr));
  }

  unsigned hex4() {
    if (pos_ + 4 > text_.size()) error("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[pos_++];
      code <<= 4;
      if (h >= '0' && h <= '9') code |= unsigned(h - '0');
      else if (h >= 'a' && h <= 'f') code |= unsigned(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') code |= unsigned(h - 'A' + 10);
      else error("bad hex digit in \\u escape");
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += char(code);
    } else if (code < 0x800) {
      out += char(0xC0 | (code >> 6));
      out += char(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += char(0xE0 | (code >> 12));
      out += char(0x80 | ((code >> 6) & 0x3F));
      out += char(0x80 | (code & 0x3F));
    } else {
      out += char(0xF0 | (code >> 18));
      out += char(0x80 | ((code >> 12) & 0x3F));
      out += char(0x80 | ((code >> 6) & 0x3F));
      out += char(0x80 | (code & 0x3F));
    }
  }

  std::string string() {
    ++pos_;  // '"'
    std::string out;
    for (;;) {
      if (pos_ >= text_.size()) error("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) error("unterminated escape");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = hex4();
          if (code >= 0xD800 && code < 0xDC00) {  // surrogate pair
            if (pos_ + 2 > text_.size() || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') error("lone surrogate");
            pos_ += 2;
            const unsigned low = hex4();
            if (low < 0xDC00 || low >= 0xE000) error("bad low surrogate");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          } else if (code >= 0xDC00 && code < 0xE000) {
            error("lone surrogate");
          }
          append_utf8(out, code);
          break;
        }
        default: error(std::string("bad escape '\\") + e + "'");
      }
    }
  }

  const std::string& text_;
  const std::string& source_;
  size_t pos_ = 0;
};

void write_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

void write_value(std::string& out, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Null: out += "null"; break;
    case Value::Kind::Bool: out += v.as_bool("") ? "true" : "false"; break;
    case Value::Kind::Number: {
      const double x = v.as_number("");
      SAFL_CHECK(std::isfinite(x), "json::write: cannot write the non-finite number ", x);
      char buf[32];
      if (x == std::floor(x) && std::fabs(x) < 9.007199254740992e15) std::snprintf(buf, sizeof buf, "%.0f", x);
      else std::snprintf(buf, sizeof buf, "%.17g", x);
      out += buf;
      break;
    }
    case Value::Kind::String: write_string(out, v.as_string("")); break;
    case Value::Kind::Array: {
      out += '[';
      bool first = true;
      for (const auto& item : v.as_array("")) {
        if (!first) out += ',';
        first = false;
        write_value(out, item);
      }
      out += ']';
      break;
    }
    case Value::Kind::Object: {
      out += '{';
      bool first = true;
      for (const auto& [key, item] : v.as_object("")) {
        if (!first) out += ',';
        first = false;
        write_string(out, key);
        out += ':';
        write_value(out, item);
      }
      out += '}';
      break;
    }
  }
}

}  // namespace

bool Value::as_bool(const std::string& what) const {
  if (kind_ != Kind::Bool) wrong_kind(what, "a boolean", kind_);
  return bool_;
}
double Value::as_number(const std::string& what) const {
  if (kind_ != Kind::Number) wrong_kind(what, "a number", kind_);
  return number_;
}
int64_t Value::as_integer(const std::string& what, int64_t lo, int64_t hi) const {
  const double x = as_number(what);
  if (x != std::floor(x) || x < double(lo) || x > double(hi))
    detail::fail(ErrorKind::Generic, what, ": expected an integer between ", lo, " and ", hi, " but received ", x);
  return static_cast<int64_t>(x);
}
const std::string& Value::as_string(const std::string& what) const {
  if (kind_ != Kind::String) wrong_kind(what, "a string", kind_);
  return string_;
}
const Value::Array& Value::as_array(const std::string& what) const {
  if (kind_ != Kind::Array) wrong_kind(what, "an array", kind_);
  return array_;
}
const Value::Object& Value::as_object(const std::string& what) const {
  if (kind_ != Kind::Object) wrong_kind(what, "an object", kind_);
  return object_;
}
const Value* Value::find(const std::string& key) const {
  if (kind_ != Kind::Object) return nullptr;
  for (const auto& [k, v] : object_)
    if (k == key) return &v;
  return nullptr;
}
const Value& Value::at(const std::string& key, const std::string& what) const {
  as_object(what);
  const Value* v = find(key);
  if (v == nullptr) detail::fail(ErrorKind::Generic, what, ": missing \"", key, "\"");
  return *v;
}
void Value::set(const std::string& key, Value value) {
  SAFL_CHECK(kind_ == Kind::Object, "json::Value::set: expected an object but received ", kind_name(kind_));
  for (auto& [k, v] : object_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  object_.emplace_back(key, std::move(value));
}

Value parse(const std::string& text, const std::string& source) { return Parser(text, source).document(); }

std::string write(const Value& value) {
  std::string out;
  write_value(out, value);
  return out;
}

}  // namespace safl::json
