// Configurations and the tensor layout: presets match DESIGN.md's parameter counts, JSON round
// trips, and bad configs are rejected naming the field.
#include "common/error.h"
#include "model/config.h"
#include "model/layout.h"
#include "tests/harness.h"

SAFL_TEST(model_presets_match_design_parameter_counts) {
  // DESIGN.md: tiny 5.30 M, base 44.4 M parameters with 97 classes.
  const auto tiny = safl::model::make_layout(safl::model::preset("tiny", 97));
  const auto base = safl::model::make_layout(safl::model::preset("base", 97));
  std::printf("    tiny %lld params, base %lld params\n", (long long)tiny.param_floats, (long long)base.param_floats);
  EXPECT(tiny.param_floats >= 5295000 && tiny.param_floats < 5305000);
  EXPECT(base.param_floats >= 44350000 && base.param_floats < 44450000);
  EXPECT(tiny.param("classifier.weight").shape == (std::vector<int64_t>{97, 256}));
  EXPECT(tiny.param("decoder.embed.weight").shape == (std::vector<int64_t>{98, 256}));
  EXPECT(tiny.param("loc.fc1.weight").shape == (std::vector<int64_t>{256, 128 * 2}));
  EXPECT(tiny.buffer("backbone.stem.bn.running_var").numel == 16);
  EXPECT_THROWS(tiny.param("nope"), safl::Error, "model layout: no parameter named 'nope'");
  // Offsets tile the buffer exactly.
  int64_t next = 0;
  for (const auto& spec : tiny.params) {
    EXPECT(spec.offset == next);
    next += spec.numel;
  }
  EXPECT(next == tiny.param_floats);
}

SAFL_TEST(model_config_json_roundtrip_and_errors) {
  const auto tiny = safl::model::preset("tiny", 97);
  const auto text = safl::json::write(safl::model::config_to_json(tiny));
  const auto back = safl::model::config_from_json(safl::json::parse(text, "config"), "config");
  EXPECT(safl::json::write(safl::model::config_to_json(back)) == text);
  EXPECT(back.eos() == 94 && back.pad() == 95 && back.unk() == 96 && back.bos() == 97);
  EXPECT_THROWS(safl::model::preset("huge", 97), safl::Error, "config: expected 'tiny' or 'base' but received 'huge'");
  auto bad = tiny;
  bad.heads = 3;
  EXPECT_THROWS(bad.validate("my.json"), safl::Error, "my.json: expected d_model divisible by heads but received d_model 256 and heads 3");
  bad = tiny;
  bad.res_blocks = {1, 2};
  EXPECT_THROWS(bad.validate("c"), safl::Error, "c: expected 5 res_blocks but received 2");
  auto json = safl::json::parse(text, "config");
  json.set("d_model", "wide");
  EXPECT_THROWS(safl::model::config_from_json(json, "model.safetensors config"), safl::Error,
                "model.safetensors config.d_model: expected a number but received a string");
}
