// The network's tensor list (see layout.h).
#include "model/layout.h"

#include "common/error.h"

namespace safl::model {
namespace {

class Builder {
 public:
  explicit Builder(Layout& layout) : layout_(layout) {}

  void param(const std::string& name, std::vector<int64_t> shape) { add(layout_.params, layout_.param_floats, name, std::move(shape)); }

  // Batch norm over `channels`: affine parameters plus running statistics.
  void batchnorm(const std::string& prefix, int64_t channels) {
    param(prefix + ".weight", {channels});
    param(prefix + ".bias", {channels});
    add(layout_.buffers, layout_.buffer_floats, prefix + ".running_mean", {channels});
    add(layout_.buffers, layout_.buffer_floats, prefix + ".running_var", {channels});
  }

  void linear(const std::string& prefix, int64_t out, int64_t in) {
    param(prefix + ".weight", {out, in});
    param(prefix + ".bias", {out});
  }

  void layernorm(const std::string& prefix, int64_t d) {
    param(prefix + ".weight", {d});
    param(prefix + ".bias", {d});
  }

 private:
  static void add(std::vector<TensorSpec>& list, int64_t& total, const std::string& name, std::vector<int64_t> shape) {
    TensorSpec spec;
    spec.name = name;
    spec.numel = 1;
    for (const int64_t d : shape) spec.numel *= d;
    spec.shape = std::move(shape);
    spec.offset = total;
    total += spec.numel;
    list.push_back(std::move(spec));
  }

  Layout& layout_;
};

const TensorSpec& find(const std::vector<TensorSpec>& list, const std::string& name, const char* kind) {
  for (const auto& spec : list)
    if (spec.name == name) return spec;
  detail::fail(ErrorKind::Generic, "model layout: no ", kind, " named '", name, "'");
}

}  // namespace

const TensorSpec& Layout::param(const std::string& name) const { return find(params, name, "parameter"); }
const TensorSpec& Layout::buffer(const std::string& name) const { return find(buffers, name, "buffer"); }

Layout make_layout(const Config& c) {
  Layout layout;
  Builder b(layout);
  const int64_t d = c.d_model;

  int64_t in = 3;
  for (size_t i = 0; i < c.loc_channels.size(); ++i) {
    const std::string p = "loc.conv" + std::to_string(i);
    b.param(p + ".weight", {c.loc_channels[i], in, 3, 3});
    b.batchnorm(p + ".bn", c.loc_channels[i]);
    in = c.loc_channels[i];
  }
  b.linear("loc.fc1", c.loc_fc, in * (c.loc_h / 32) * (c.loc_w / 32));
  b.batchnorm("loc.fc1.bn", c.loc_fc);
  b.linear("loc.fc2", 2 * c.fiducials, c.loc_fc);

  b.param("backbone.stem.weight", {c.res_channels[0], 3, 3, 3});
  b.batchnorm("backbone.stem.bn", c.res_channels[0]);
  in = c.res_channels[0];
  for (size_t s = 0; s < c.res_channels.size(); ++s) {
    const int64_t out = c.res_channels[s];
    for (int64_t blk = 0; blk < c.res_blocks[s]; ++blk) {
      const std::string p = "backbone.stage" + std::to_string(s) + ".block" + std::to_string(blk);
      b.param(p + ".conv1.weight", {out, in, 1, 1});
      b.batchnorm(p + ".bn1", out);
      b.param(p + ".conv2.weight", {out, out, 3, 3});
      b.batchnorm(p + ".bn2", out);
      if (blk == 0) {  // every stage's first block changes the shape (stride 2 in height)
        b.param(p + ".down.weight", {out, in, 1, 1});
        b.batchnorm(p + ".down.bn", out);
      }
      in = out;
    }
  }
  if (in != d) b.linear("backbone.proj", d, in);

  for (int64_t i = 0; i < c.enc_layers; ++i) {
    const std::string p = "encoder.layer" + std::to_string(i);
    b.linear(p + ".self_attn.in_proj", 3 * d, d);
    b.linear(p + ".self_attn.out_proj", d, d);
    b.layernorm(p + ".norm1", d);
    b.linear(p + ".ffn.fc1", c.ffn, d);
    b.linear(p + ".ffn.fc2", d, c.ffn);
    b.layernorm(p + ".norm2", d);
  }
  b.layernorm("encoder.norm", d);

  b.param("decoder.embed.weight", {c.num_classes + 1, d});
  for (int64_t i = 0; i < c.dec_layers; ++i) {
    const std::string p = "decoder.layer" + std::to_string(i);
    b.linear(p + ".self_attn.in_proj", 3 * d, d);
    b.linear(p + ".self_attn.out_proj", d, d);
    b.layernorm(p + ".norm1", d);
    b.linear(p + ".cross_attn.q_proj", d, d);
    b.linear(p + ".cross_attn.kv_proj", 2 * d, d);
    b.linear(p + ".cross_attn.out_proj", d, d);
    b.layernorm(p + ".norm2", d);
    b.linear(p + ".ffn.fc1", c.ffn, d);
    b.linear(p + ".ffn.fc2", d, c.ffn);
    b.layernorm(p + ".norm3", d);
  }
  b.layernorm("decoder.norm", d);
  b.linear("classifier", c.num_classes, d);
  return layout;
}

}  // namespace safl::model
