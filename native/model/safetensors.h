// safetensors model files: an 8-byte little-endian header size, a JSON header naming each tensor's
// dtype, shape and byte range (plus "__metadata__", a string→string map), then the raw
// little-endian data. Readable by any safetensors reader. Parsing checks the header size, the
// JSON, dtypes, shapes against byte ranges, overlaps and bounds; reading a tensor checks its shape
// against what the model expects and that every value is finite. Every error names the source
// and the tensor at fault.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace safl {

enum class DType { F32, F16 };
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;  // byte range within the data section
  int64_t numel() const;
};

class SafeTensors {
 public:
  // Parses (and keeps) the bytes of a whole file; `source` names it in errors (a path, "buffer").
  static SafeTensors parse(std::vector<uint8_t> bytes, const std::string& source);

  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;

  // Copies tensor `name` into out as float32 (converting float16), after checking that it exists,
  // has `expected_shape`, and holds only finite values.
  void read(const std::string& name, const std::vector<int64_t>& expected_shape, float* out) const;

 private:
  std::string source_;
  std::vector<uint8_t> bytes_;
  size_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
};

struct TensorView {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
};

// Serialises tensors (in the given order) and metadata; float16 rounds to nearest even.
std::vector<uint8_t> write_safetensors(const std::vector<TensorView>& tensors,
                                       const std::map<std::string, std::string>& metadata, DType dtype);

// "[2, 3]" for messages.
std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace safl
