// NativeModel: the SAFL network (model/network.h) as a JavaScript class. lib/recognizer.ts is its
// one caller and validates options and model metadata first; the checks here are the last line.
//
//   NativeModel.preset(name, numClasses) → string                  config JSON of 'tiny' or 'base'
//   NativeModel.create(configJson, seed) → Promise<NativeModel>    random initialisation
//   NativeModel.fromBuffer(bytes, source) → Promise<NativeModel>   a safetensors model file
//   model.config() → string                                        config JSON
//   model.metadata() → { [key]: string }                           the file's __metadata__ ({} if created)
//   model.recognize(images, B, beamWidth, precision) → Promise<Array<{ tokens, probs, confidence, alternatives }>>
//   model.save(dtype, metadata) → Promise<Buffer>                  dtype 'float32' or 'float16'
//   model.close()                                                  frees the network's memory
//
// One call at a time, closing while a call runs, and where the network runs (the CPU, or the GPU in
// the CUDA addon): network_object.h (its Notes [one call at a time], [closing while a call runs]
// and [the network that runs]).
#include "addon/model_binding.h"

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "addon/napi_util.h"
#include "addon/network_object.h"
#include "model/config.h"
#include "model/json.h"
#include "model/network.h"
#include "model/safetensors.h"

namespace safl::addon {
namespace {

constexpr const char* kClosed = "the recognizer is closed";

struct ModelState {
  ModelState(std::unique_ptr<model::Network> network, int64_t bytes, std::map<std::string, std::string> metadata)
      : handle(std::move(network), bytes, kClosed), metadata(std::move(metadata)) {}
  NetworkHandle handle;
  std::map<std::string, std::string> metadata;  // the file's __metadata__ ({} if created)
};

std::shared_ptr<ModelState> make_state(std::unique_ptr<model::Network> network,
                                       std::map<std::string, std::string> metadata) {
  // Parameters and buffers, reported to V8's garbage collector.
  const model::Layout& layout = network->layout();
  const int64_t bytes = (layout.param_floats + layout.buffer_floats) * int64_t(sizeof(float));
  return std::make_shared<ModelState>(std::move(network), bytes, std::move(metadata));
}

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env, Napi::FunctionReference* constructor) {
    return DefineClass(env, "NativeModel",
                       {StaticMethod("preset", &NativeModel::Preset),
                        StaticMethod("create", &NativeModel::Create, napi_default, constructor),
                        StaticMethod("fromBuffer", &NativeModel::FromBuffer, napi_default, constructor),
                        InstanceMethod<&NativeModel::ConfigJson>("config"),
                        InstanceMethod<&NativeModel::MetadataObject>("metadata"),
                        InstanceMethod<&NativeModel::Recognize>("recognize"),
                        InstanceMethod<&NativeModel::Save>("save"),
                        InstanceMethod<&NativeModel::Close>("close")});
  }

  // Called only by the factories, with the new model's state in an External.
  explicit NativeModel(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<NativeModel>(info),
        state_(adopt_state<ModelState>(info,
                                       "NativeModel is made by NativeModel.create() or NativeModel.fromBuffer()")) {}

  void Finalize(Napi::Env env) override { state_->handle.withdraw_memory(env); }

 private:
  static Napi::Value Preset(const Napi::CallbackInfo& info);
  static Napi::Value Create(const Napi::CallbackInfo& info);
  static Napi::Value FromBuffer(const Napi::CallbackInfo& info);
  Napi::Value ConfigJson(const Napi::CallbackInfo& info);
  Napi::Value MetadataObject(const Napi::CallbackInfo& info);
  Napi::Value Recognize(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  std::shared_ptr<ModelState> state_;
};

// ---- factories -------------------------------------------------------------------------------

class LoadWorker : public FactoryWorker<ModelState> {
 public:
  LoadWorker(const Napi::CallbackInfo& info, Napi::Uint8Array bytes, std::string source)
      : FactoryWorker<ModelState>(info), bytes_(bytes), source_(std::move(source)) {}

 protected:
  std::shared_ptr<ModelState> make() override {
    SafeTensors file =
        SafeTensors::parse(std::vector<uint8_t>(bytes_.data(), bytes_.data() + bytes_.size()), source_);
    auto network = std::make_unique<model::Network>(file_config(file, source_));
    network->load(file);
    return make_state(std::move(network), file.metadata());
  }

 private:
  HeldArray<uint8_t> bytes_;
  std::string source_;
};

Napi::Value NativeModel::Preset(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string name = read_string(info[0], "config");
    const int64_t num_classes = read_integer(info[1], "numClasses", 4, 1 << 20);
    return Napi::String::New(info.Env(), json::write(model::config_to_json(model::preset(name, num_classes))));
  });
}

Napi::Value NativeModel::Create(const Napi::CallbackInfo& info) {
  return create<ModelState>(info,
                            [](std::unique_ptr<model::Network> network) { return make_state(std::move(network), {}); });
}

Napi::Value NativeModel::FromBuffer(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const Napi::Uint8Array bytes = read_bytes(info[0], "bytes");
    const std::string source = read_string(info[1], "source");
    return (new LoadWorker(info, bytes, source))->start();
  });
}

// ---- the model's methods -----------------------------------------------------------------------

Napi::Value NativeModel::ConfigJson(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), json::write(model::config_to_json(state_->handle.config())));
}

Napi::Value NativeModel::MetadataObject(const Napi::CallbackInfo& info) {
  Napi::Object out = Napi::Object::New(info.Env());
  for (const auto& [key, value] : state_->metadata) out.Set(key, value);
  return out;
}

Napi::Value NativeModel::Recognize(const Napi::CallbackInfo& info) { return recognize(info, handle_of(state_)); }

Napi::Value NativeModel::Save(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const DType dtype = read_dtype(info[0]);
    std::map<std::string, std::string> metadata = read_metadata(info[1]);
    state_->handle.check_open(info.Env());
    return save_network(info.Env(), handle_of(state_), dtype, std::move(metadata));
  });
}

Napi::Value NativeModel::Close(const Napi::CallbackInfo& info) {
  state_->handle.close(info.Env());
  return info.Env().Undefined();
}

}  // namespace

void register_model_binding(Napi::Env env, Napi::Object exports) {
  export_class(env, exports, "NativeModel", NativeModel::Define);
}

}  // namespace safl::addon
