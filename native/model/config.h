// The SAFL network's configuration: the tiny and base presets of DESIGN.md §1, custom configs
// from JSON (as stored in a model file's metadata), and the class layout of the output layer.
//
// Classes: indices 0 … charset_size−1 are the characters of the model's charset, then EOS, PAD and
// UNK; num_classes = charset_size + 3. The decoder's embedding has one more row, BOS.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/json.h"

namespace safl::model {

struct Config {
  // Images: network input, localisation-network input, rectified image (H×W each).
  int64_t in_h = 64, in_w = 256;
  int64_t loc_h = 32, loc_w = 64;
  int64_t rect_h = 32, rect_w = 100;
  int64_t fiducials = 20;                  // TPS control points K (two rows of K/2)
  std::vector<int64_t> loc_channels;       // six conv widths
  int64_t loc_fc = 0;                      // hidden width of the localisation FC
  std::vector<int64_t> res_channels;       // five ResNet-45 stage widths
  std::vector<int64_t> res_blocks;         // basic blocks per stage
  int64_t d_model = 0, heads = 0, ffn = 0;
  int64_t enc_layers = 0, dec_layers = 0;
  int64_t max_len = 25;                    // characters per word; the decoder runs max_len + 1 steps (EOS)
  int64_t num_classes = 0;                 // charset size + 3
  float dropout = 0.1f;                    // Transformer dropout in training

  int64_t charset_size() const { return num_classes - 3; }
  int64_t eos() const { return num_classes - 3; }
  int64_t pad() const { return num_classes - 2; }
  int64_t unk() const { return num_classes - 1; }
  int64_t bos() const { return num_classes; }  // embedding row only
  int64_t head_dim() const { return d_model / heads; }
  // Length of the backbone's output sequence (its width after the stage strides: 100 → 25).
  int64_t seq_len() const { return rect_w / 4; }
  int64_t tgt_len() const { return max_len + 1; }

  // Throws safl::Error naming the first field out of range (`what` prefixes the message).
  void validate(const std::string& what) const;
};

// "tiny" or "base" with the given number of classes (97 for the default charset).
Config preset(const std::string& name, int64_t num_classes);

json::Value config_to_json(const Config& config);
// Reads every field (all required), then validates; errors name `what`.field.
Config config_from_json(const json::Value& value, const std::string& what);

}  // namespace safl::model
