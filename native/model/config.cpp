// SAFL configurations (see config.h).
#include "model/config.h"

#include "common/error.h"

namespace safl::model {

Config preset(const std::string& name, int64_t num_classes) {
  Config c;
  c.num_classes = num_classes;
  if (name == "tiny") {
    c.loc_channels = {16, 32, 64, 128, 128, 128};
    c.loc_fc = 256;
    c.res_channels = {16, 32, 64, 128, 256};
    c.res_blocks = {1, 2, 2, 2, 1};
    c.d_model = 256, c.heads = 4, c.ffn = 1024, c.enc_layers = 2, c.dec_layers = 2;
  } else if (name == "base") {
    c.loc_channels = {32, 64, 128, 256, 256, 256};
    c.loc_fc = 512;
    c.res_channels = {32, 64, 128, 256, 512};
    c.res_blocks = {3, 4, 6, 6, 3};
    c.d_model = 512, c.heads = 8, c.ffn = 2048, c.enc_layers = 4, c.dec_layers = 4;
  } else {
    detail::fail(ErrorKind::Range, "config: expected 'tiny' or 'base' but received '", name, "'");
  }
  c.validate("config " + name);
  return c;
}

void Config::validate(const std::string& what) const {
  auto in_range = [&](const char* field, int64_t v, int64_t lo, int64_t hi) {
    SAFL_CHECK_RANGE(v >= lo && v <= hi, what, ": expected ", field, " between ", lo, " and ", hi, " but received ", v);
  };
  // The architecture's fixed geometry: five 2×2 pools in the localisation network, and the
  // backbone's strides (2,2),(2,2),(2,1),(2,1),(2,1) must bring the rectified height to 1.
  in_range("in_h", in_h, 1, 4096);
  in_range("in_w", in_w, 1, 4096);
  SAFL_CHECK_RANGE(loc_h % 32 == 0 && loc_w % 32 == 0 && loc_h > 0 && loc_w > 0, what,
                   ": expected loc_h and loc_w to be positive multiples of 32 but received ", loc_h, "×", loc_w);
  SAFL_CHECK_RANGE(rect_h == 32, what, ": expected rect_h 32 (five stride-2 stages bring it to 1) but received ", rect_h);
  SAFL_CHECK_RANGE(rect_w >= 4 && rect_w % 4 == 0 && rect_w <= 4096, what,
                   ": expected rect_w a multiple of 4 between 4 and 4096 but received ", rect_w);
  SAFL_CHECK_RANGE(fiducials >= 4 && fiducials % 2 == 0 && fiducials <= 64, what,
                   ": expected fiducials an even number between 4 and 64 but received ", fiducials);
  SAFL_CHECK_RANGE(loc_channels.size() == 6, what, ": expected 6 loc_channels but received ", loc_channels.size());
  for (const int64_t c : loc_channels) in_range("loc_channels", c, 1, 4096);
  in_range("loc_fc", loc_fc, 1, 16384);
  SAFL_CHECK_RANGE(res_channels.size() == 5, what, ": expected 5 res_channels but received ", res_channels.size());
  SAFL_CHECK_RANGE(res_blocks.size() == 5, what, ": expected 5 res_blocks but received ", res_blocks.size());
  for (const int64_t c : res_channels) in_range("res_channels", c, 1, 8192);
  for (const int64_t b : res_blocks) in_range("res_blocks", b, 1, 64);
  in_range("d_model", d_model, 1, 8192);
  in_range("heads", heads, 1, 256);
  SAFL_CHECK_RANGE(d_model % heads == 0, what, ": expected d_model divisible by heads but received d_model ", d_model,
                   " and heads ", heads);
  SAFL_CHECK_RANGE(d_model % 2 == 0, what, ": expected an even d_model (sinusoidal positions) but received ", d_model);
  in_range("ffn", ffn, 1, 65536);
  in_range("enc_layers", enc_layers, 0, 64);
  in_range("dec_layers", dec_layers, 1, 64);
  in_range("max_len", max_len, 1, 1024);
  in_range("num_classes", num_classes, 4, 1 << 20);
  SAFL_CHECK_RANGE(dropout >= 0.0f && dropout < 1.0f, what, ": expected dropout in [0, 1) but received ", dropout);
}

json::Value config_to_json(const Config& c) {
  auto list = [](const std::vector<int64_t>& v) {
    json::Value::Array a;
    for (const int64_t x : v) a.emplace_back(x);
    return json::Value(a);
  };
  return json::Value(json::Value::Object{
      {"in_h", c.in_h}, {"in_w", c.in_w}, {"loc_h", c.loc_h}, {"loc_w", c.loc_w},
      {"rect_h", c.rect_h}, {"rect_w", c.rect_w}, {"fiducials", c.fiducials},
      {"loc_channels", list(c.loc_channels)}, {"loc_fc", c.loc_fc},
      {"res_channels", list(c.res_channels)}, {"res_blocks", list(c.res_blocks)},
      {"d_model", c.d_model}, {"heads", c.heads}, {"ffn", c.ffn},
      {"enc_layers", c.enc_layers}, {"dec_layers", c.dec_layers},
      {"max_len", c.max_len}, {"num_classes", c.num_classes}, {"dropout", double(c.dropout)}});
}

Config config_from_json(const json::Value& v, const std::string& what) {
  Config c;
  auto integer = [&](const char* key) { return v.at(key, what).as_integer(what + "." + key, -(int64_t(1) << 40), int64_t(1) << 40); };
  auto list = [&](const char* key) {
    std::vector<int64_t> out;
    for (const auto& x : v.at(key, what).as_array(what + "." + key))
      out.push_back(x.as_integer(what + "." + key, -(int64_t(1) << 40), int64_t(1) << 40));
    return out;
  };
  c.in_h = integer("in_h"), c.in_w = integer("in_w");
  c.loc_h = integer("loc_h"), c.loc_w = integer("loc_w");
  c.rect_h = integer("rect_h"), c.rect_w = integer("rect_w");
  c.fiducials = integer("fiducials");
  c.loc_channels = list("loc_channels");
  c.loc_fc = integer("loc_fc");
  c.res_channels = list("res_channels");
  c.res_blocks = list("res_blocks");
  c.d_model = integer("d_model"), c.heads = integer("heads"), c.ffn = integer("ffn");
  c.enc_layers = integer("enc_layers"), c.dec_layers = integer("dec_layers");
  c.max_len = integer("max_len");
  c.num_classes = integer("num_classes");
  c.dropout = float(v.at("dropout", what).as_number(what + ".dropout"));
  c.validate(what);
  return c;
}

}  // namespace safl::model
