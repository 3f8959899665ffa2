// Model-file plumbing: the JSON parser/writer, float16 conversion, and safetensors reading and
// writing with every malformed-file error naming the source and the tensor at fault.
#include <cmath>
#include <cstring>
#include <limits>

#include "common/error.h"
#include "model/half.h"
#include "model/json.h"
#include "model/safetensors.h"
#include "tests/harness.h"

using safl::DType;
using safl::SafeTensors;

SAFL_TEST(json_roundtrip_and_access) {
  const std::string text =
      R"({"a":1,"b":[true,false,null],"c":{"d":"x\"y\u00e9\ud83d\ude00"},"e":-2.5e-3,"f":12345678901})";
  const auto v = safl::json::parse(text, "doc");
  EXPECT(v.at("a", "doc").as_integer("a", 0, 10) == 1);
  EXPECT(v.at("b", "doc").as_array("b").size() == 3);
  EXPECT(v.at("c", "doc").at("d", "c").as_string("d") == "x\"y\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_NEAR(v.at("e", "doc").as_number("e"), -2.5e-3, 1e-15);
  EXPECT(safl::json::write(safl::json::parse(safl::json::write(v), "again")) == safl::json::write(v));
  EXPECT(safl::json::write(v.at("f", "doc")) == "12345678901");
  EXPECT_THROWS(v.at("missing", "config"), safl::Error, "config: missing \"missing\"");
  EXPECT_THROWS(v.at("a", "doc").as_string("config.name"), safl::Error, "config.name: expected a string but received a number");
  EXPECT_THROWS(v.at("e", "doc").as_integer("config.layers", 0, 8), safl::Error,
                "config.layers: expected an integer between 0 and 8 but received -0.0025");
}

SAFL_TEST(json_rejects_malformed_input) {
  EXPECT_THROWS(safl::json::parse("{\"a\":1,}", "h"), safl::Error, "h: invalid JSON at byte 7: expected a string key");
  EXPECT_THROWS(safl::json::parse("[1 2]", "h"), safl::Error, "expected ',' or ']'");
  EXPECT_THROWS(safl::json::parse("\"abc", "h"), safl::Error, "unterminated string");
  EXPECT_THROWS(safl::json::parse("{} x", "h"), safl::Error, "unexpected text after the JSON value");
  EXPECT_THROWS(safl::json::parse("", "h"), safl::Error, "unexpected end of input");
  EXPECT_THROWS(safl::json::parse(std::string(100, '[') + std::string(100, ']'), "h"), safl::Error, "nesting deeper than 64");
  EXPECT_THROWS(safl::json::parse("\"\\ud800\"", "h"), safl::Error, "lone surrogate");
}

SAFL_TEST(half_conversion_exact_roundtrip) {
  int mismatches = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const bool nan = ((h >> 10) & 0x1F) == 0x1F && (h & 0x3FF);
    if (!nan && safl::float_to_half(safl::half_to_float(uint16_t(h))) != h) ++mismatches;
  }
  EXPECT(mismatches == 0);
  EXPECT(safl::float_to_half(1.0f) == 0x3C00);
  EXPECT(safl::float_to_half(65504.0f) == 0x7BFF);
  EXPECT(safl::float_to_half(70000.0f) == 0x7C00);
  EXPECT(safl::float_to_half(1.0f + 1.0f / 2048.0f) == 0x3C00);  // halfway: ties to even
  EXPECT(safl::half_to_float(0x0001) == std::ldexp(1.0f, -24));
}

namespace {
std::vector<uint8_t> sample_file(DType dtype) {
  static const float a[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 7.0f};
  static const float b[2] = {0.5f, -0.125f};
  return safl::write_safetensors({{"layer.weight", {2, 3}, a}, {"layer.bias", {2}, b}}, {{"format", "safl/1"}}, dtype);
}
std::vector<uint8_t> with_header(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> bytes(8 + header.size() + data_bytes, 0);
  for (int i = 0; i < 8; ++i) bytes[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  return bytes;
}
}  // namespace

SAFL_TEST(safetensors_roundtrip_f32_and_f16) {
  const auto st = SafeTensors::parse(sample_file(DType::F32), "m.safetensors");
  EXPECT(st.metadata().at("format") == "safl/1");
  EXPECT(st.tensors().size() == 2);
  float w[6], bias[2];
  st.read("layer.weight", {2, 3}, w);
  st.read("layer.bias", {2}, bias);
  EXPECT(w[1] == -2.5f && w[4] == 1e-3f && bias[1] == -0.125f);
  const auto bytes = sample_file(DType::F32);
  EXPECT((8 + bytes[0]) % 8 == 0);  // data section aligned
  const auto half = SafeTensors::parse(sample_file(DType::F16), "h.safetensors");
  half.read("layer.weight", {2, 3}, w);
  EXPECT(w[0] == 1.0f && w[2] == 3.25f);
  EXPECT_NEAR(w[4], 1e-3, 1e-6);
}

SAFL_TEST(safetensors_rejects_malformed_files) {
  EXPECT_THROWS(SafeTensors::parse({1, 2, 3}, "tiny.bin"), safl::Error,
                "tiny.bin: not a safetensors file: 3 bytes, but the file must start with an 8-byte header size");
  auto truncated = sample_file(DType::F32);
  truncated.resize(truncated.size() - 4);
  EXPECT_THROWS(SafeTensors::parse(truncated, "cut.safetensors"), safl::Error, "cut.safetensors: tensor 'layer.");
  auto huge_header = sample_file(DType::F32);
  huge_header[5] = 1;
  EXPECT_THROWS(SafeTensors::parse(huge_header, "x"), safl::Error, "x: not a safetensors file or truncated: header size");
  EXPECT_THROWS(SafeTensors::parse(with_header("{\"t\":", 0), "j"), safl::Error, "j header: invalid JSON");
  EXPECT_THROWS(SafeTensors::parse(with_header(R"({"t":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}})", 1), "d"),
                safl::Error, "d: tensor 't': expected dtype F32 or F16 but received I8");
  EXPECT_THROWS(SafeTensors::parse(with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4), "s"),
                safl::Error, "s: tensor 't': shape [2] of F32 needs 8 bytes but data_offsets span 4");
  EXPECT_THROWS(SafeTensors::parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "o"),
                safl::Error, "o: tensors 'a' and 'b' overlap");
  const auto st = SafeTensors::parse(sample_file(DType::F32), "m");
  float w[6];
  EXPECT_THROWS(st.read("layer.weight", {3, 2}, w), safl::Error, "m: tensor 'layer.weight': expected shape [3, 2] but received [2, 3]");
  EXPECT_THROWS(st.read("nope", {1}, w), safl::Error, "m: tensor 'nope' is missing");
  const float nan_values[2] = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  const auto with_nan = SafeTensors::parse(safl::write_safetensors({{"n", {2}, nan_values}}, {}, DType::F32), "nan");
  EXPECT_THROWS(with_nan.read("n", {2}, w), safl::Error, "nan: tensor 'n' holds a non-finite value (nan) at index 1");
}
