// The one list of the network's tensors: names, shapes and offsets of every trainable parameter
// (one contiguous buffer; gradients and optimizer moments mirror it) and of every non-trainable
// buffer (batch-norm running statistics, a second buffer). The same list drives allocation,
// pointers, initialisation, serialisation and the checks on loading.
//
// Names (PyTorch-like, so a reference implementation can map them one to one):
//   loc.conv{0..5}.weight (c_i, c_{i-1}, 3, 3)            loc.conv{i}.bn.{weight,bias}        (c_i)
//   loc.fc1.{weight (loc_fc, c_5·loc_h/32·loc_w/32), bias}  loc.fc1.bn.{weight,bias}          (loc_fc)
//   loc.fc2.{weight (2K, loc_fc), bias (2K)}               — K control points as (x, y) pairs
//   backbone.stem.weight (r_0, 3, 3, 3)                    backbone.stem.bn.{weight,bias}
//   backbone.stage{s}.block{b}.conv1.weight (r_s, in, 1, 1)   .bn1.{weight,bias}
//                              .conv2.weight (r_s, r_s, 3, 3) .bn2.{weight,bias}
//                              .down.weight (r_s, in, 1, 1)   .down.bn.{weight,bias}   (block 0 only)
//   backbone.proj.{weight (d, r_4), bias (d)}              — only when r_4 != d_model
//   encoder.layer{i}.self_attn.in_proj.{weight (3d, d), bias (3d)}  .self_attn.out_proj.{weight (d, d), bias}
//                   .norm1.{weight,bias} .ffn.fc1.{weight (ffn, d), bias} .ffn.fc2.{weight (d, ffn), bias} .norm2
//   encoder.norm.{weight,bias}
//   decoder.embed.weight (num_classes + 1, d)              — the last row is BOS
//   decoder.layer{i}.self_attn.* (as the encoder's) .norm1
//                   .cross_attn.q_proj.{weight (d, d), bias} .cross_attn.kv_proj.{weight (2d, d), bias}
//                   .cross_attn.out_proj.{weight (d, d), bias} .norm2  .ffn.* .norm3
//   decoder.norm.{weight,bias}
//   classifier.{weight (num_classes, d), bias}
// Buffers: every "<bn>.running_mean" and "<bn>.running_var" for each batch norm above.
// in_proj packs the query, key and value projections in that order (rows 0..d-1 = query).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace safl::model {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // in floats, within its buffer
  int64_t numel = 0;
};

struct Layout {
  std::vector<TensorSpec> params;
  std::vector<TensorSpec> buffers;
  int64_t param_floats = 0;
  int64_t buffer_floats = 0;

  // Throws safl::Error when the name is not in the list.
  const TensorSpec& param(const std::string& name) const;
  const TensorSpec& buffer(const std::string& name) const;
};

Layout make_layout(const Config& config);

}  // namespace safl::model
