// safetensors reading and writing (see safetensors.h).
#include "model/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "common/error.h"
#include "model/half.h"
#include "model/json.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; F32 tensors are copied as they are");

namespace safl {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // a header this big is not a model file

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void write_u64_le(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

}  // namespace

const char* dtype_name(DType dtype) { return dtype == DType::F32 ? "F32" : "F16"; }
size_t dtype_size(DType dtype) { return dtype == DType::F32 ? 4 : 2; }

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

SafeTensors SafeTensors::parse(std::vector<uint8_t> bytes, const std::string& source) {
  SafeTensors st;
  st.source_ = source;
  const uint64_t size = bytes.size();
  SAFL_CHECK(size >= 8, source, ": not a safetensors file: ", size,
             " bytes, but the file must start with an 8-byte header size");
  const uint64_t header_size = read_u64_le(bytes.data());
  SAFL_CHECK(header_size <= size - 8 && header_size <= kMaxHeaderBytes, source,
             ": not a safetensors file or truncated: header size ", header_size, " but the file has ", size, " bytes");
  const std::string header_text(reinterpret_cast<const char*>(bytes.data() + 8), header_size);
  const json::Value header = json::parse(header_text, source + " header");
  SAFL_CHECK(header.is_object(), source, ": the header must be a JSON object");
  st.data_start_ = 8 + header_size;
  const uint64_t data_size = size - st.data_start_;

  for (const auto& [name, entry] : header.as_object(source)) {
    if (name == "__metadata__") {
      for (const auto& [key, value] : entry.as_object(source + ": __metadata__"))
        st.metadata_[key] = value.as_string(source + ": __metadata__." + key);
      continue;
    }
    const std::string where = source + ": tensor '" + name + "'";
    TensorInfo info;
    info.name = name;
    const std::string& dtype = entry.at("dtype", where).as_string(where + " dtype");
    if (dtype == "F32") info.dtype = DType::F32;
    else if (dtype == "F16") info.dtype = DType::F16;
    else detail::fail(ErrorKind::Generic, where, ": expected dtype F32 or F16 but received ", dtype);
    for (const auto& d : entry.at("shape", where).as_array(where + " shape"))
      info.shape.push_back(d.as_integer(where + " shape", 0, int64_t(1) << 40));
    const auto& offsets = entry.at("data_offsets", where).as_array(where + " data_offsets");
    SAFL_CHECK(offsets.size() == 2, where, ": expected data_offsets [begin, end] but received ", offsets.size(), " numbers");
    info.begin = uint64_t(offsets[0].as_integer(where + " data_offsets", 0, int64_t(1) << 50));
    info.end = uint64_t(offsets[1].as_integer(where + " data_offsets", 0, int64_t(1) << 50));
    SAFL_CHECK(info.begin <= info.end && info.end <= data_size, where, ": data_offsets [", info.begin, ", ", info.end,
               "] fall outside the data section of ", data_size, " bytes (truncated file?)");
    const uint64_t expected_bytes = uint64_t(info.numel()) * dtype_size(info.dtype);
    SAFL_CHECK(info.end - info.begin == expected_bytes, where, ": shape ", shape_string(info.shape), " of ", dtype,
               " needs ", expected_bytes, " bytes but data_offsets span ", info.end - info.begin);
    st.tensors_.push_back(std::move(info));
  }
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : st.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    SAFL_CHECK(by_offset[i]->begin >= by_offset[i - 1]->end, source, ": tensors '", by_offset[i - 1]->name, "' and '",
               by_offset[i]->name, "' overlap");
  st.bytes_ = std::move(bytes);
  return st;
}

const TensorInfo* SafeTensors::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

void SafeTensors::read(const std::string& name, const std::vector<int64_t>& expected_shape, float* out) const {
  const TensorInfo* info = find(name);
  SAFL_CHECK(info != nullptr, source_, ": tensor '", name, "' is missing");
  SAFL_CHECK(info->shape == expected_shape, source_, ": tensor '", name, "': expected shape ", shape_string(expected_shape),
             " but received ", shape_string(info->shape));
  const uint8_t* src = bytes_.data() + data_start_ + info->begin;
  const int64_t n = info->numel();
  if (info->dtype == DType::F32) {
    std::memcpy(out, src, size_t(n) * 4);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(uint16_t(src[2 * i] | (src[2 * i + 1] << 8)));
  }
  for (int64_t i = 0; i < n; ++i)
    SAFL_CHECK(std::isfinite(out[i]), source_, ": tensor '", name, "' holds a non-finite value (", out[i], ") at index ", i);
}

std::vector<uint8_t> write_safetensors(const std::vector<TensorView>& tensors,
                                       const std::map<std::string, std::string>& metadata, DType dtype) {
  json::Value header{json::Value::Object{}};
  if (!metadata.empty()) {
    json::Value meta{json::Value::Object{}};
    for (const auto& [key, value] : metadata) meta.set(key, value);
    header.set("__metadata__", meta);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    SAFL_CHECK(t.name != "__metadata__" && header.find(t.name) == nullptr, "write_safetensors: duplicate or reserved tensor name '", t.name, "'");
    int64_t n = 1;
    json::Value::Array shape;
    for (const int64_t d : t.shape) {
      shape.emplace_back(d);
      n *= d;
    }
    const uint64_t bytes = uint64_t(n) * dtype_size(dtype);
    json::Value entry{json::Value::Object{}};
    entry.set("dtype", dtype_name(dtype));
    entry.set("shape", shape);
    entry.set("data_offsets", json::Value::Array{json::Value(int64_t(offset)), json::Value(int64_t(offset + bytes))});
    header.set(t.name, entry);
    offset += bytes;
  }
  std::string header_text = json::write(header);
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  std::vector<uint8_t> out(8 + header_text.size() + offset);
  write_u64_le(out.data(), header_text.size());
  std::memcpy(out.data() + 8, header_text.data(), header_text.size());
  uint8_t* data = out.data() + 8 + header_text.size();
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (const int64_t d : t.shape) n *= d;
    if (dtype == DType::F32) {
      std::memcpy(data, t.data, size_t(n) * 4);
      data += n * 4;
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = float_to_half(t.data[i]);
        *data++ = uint8_t(h & 0xFF);
        *data++ = uint8_t(h >> 8);
      }
    }
  }
  return out;
}

}  // namespace safl
