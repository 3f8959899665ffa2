// NativeModel: the SAFL network (model/network.h) as a JavaScript class. lib/recognizer.ts is its
// one caller and validates options and model metadata first; the checks here are the last line.
//
//   NativeModel.preset(name, numClasses) → string                  config JSON of 'tiny' or 'base'
//   NativeModel.create(configJson, seed) → Promise<NativeModel>    random initialisation
//   NativeModel.fromBuffer(bytes, source) → Promise<NativeModel>   a safetensors model file
//   model.config() → string                                        config JSON
//   model.metadata() → { [key]: string }                           the file's __metadata__ ({} if created)
//   model.recognize(images, B, beamWidth) → Promise<Array<{ tokens, probs, confidence }>>
//   model.save(dtype, metadata) → Promise<Buffer>                  dtype 'float32' or 'float16'
//   model.close()                                                  frees the network's memory
//
// Note [one call at a time]: a Network runs one call at a time. Every worker takes the model's
// mutex on its worker thread, never on the event loop; lib/recognizer.ts keeps one call in flight
// per model anyway, so the lock is uncontended in practice.
//
// Note [closing while a call runs]: close() must neither block the event loop nor free the network
// under a call. Calls are counted on the main thread, when their worker is made and when it is
// destroyed (after its promise settles); close() frees the network at once when no call is
// pending, else the last pending call frees it. Calls made after close() throw "the recognizer is
// closed"; calls made before it finish normally.
#include "addon/model_binding.h"

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "addon/napi_util.h"
#include "addon/promise_worker.h"
#include "model/config.h"
#include "model/json.h"
#include "model/network.h"
#include "model/safetensors.h"

namespace safl::addon {
namespace {

constexpr int64_t kMaxBatch = 4096;
constexpr int64_t kMaxBeamWidth = 64;
constexpr int64_t kMaxSeed = (int64_t(1) << 53) - 1;  // Number.MAX_SAFE_INTEGER

struct ModelState {
  model::Config config;
  std::map<std::string, std::string> metadata;
  int64_t bytes = 0;  // parameters and buffers, reported to V8's garbage collector
  std::mutex mutex;   // Note [one call at a time]
  std::unique_ptr<model::Network> network;
  // Main thread only (Note [closing while a call runs]).
  bool closed = false;
  int pending_calls = 0;
};

// Counts one call for as long as its worker lives (made and destroyed on the main thread).
class PendingCall {
 public:
  explicit PendingCall(std::shared_ptr<ModelState> state) : state_(std::move(state)) { ++state_->pending_calls; }
  ~PendingCall() {
    if (--state_->pending_calls == 0 && state_->closed) state_->network.reset();
  }
  PendingCall(const PendingCall&) = delete;
  PendingCall& operator=(const PendingCall&) = delete;
  ModelState& state() { return *state_; }

 private:
  std::shared_ptr<ModelState> state_;
};

// The network, locked for one call on a worker thread (Note [one call at a time]).
class NetworkLock {
 public:
  explicit NetworkLock(ModelState& state) : state_(state), lock_(state.mutex) {}
  model::Network& network() { return *state_.network; }

 private:
  ModelState& state_;
  std::lock_guard<std::mutex> lock_;
};

std::shared_ptr<ModelState> make_state(std::unique_ptr<model::Network> network,
                                       std::map<std::string, std::string> metadata) {
  auto state = std::make_shared<ModelState>();
  state->config = network->config();
  state->metadata = std::move(metadata);
  state->bytes = (network->layout().param_floats + network->layout().buffer_floats) * int64_t(sizeof(float));
  state->network = std::move(network);
  return state;
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
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "NativeModel is made by NativeModel.create() or NativeModel.fromBuffer()");
    state_ = *info[0].As<Napi::External<std::shared_ptr<ModelState>>>().Data();
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), state_->bytes);
    accounted_ = true;
  }

  void Finalize(Napi::Env env) override { release_memory_accounting(env); }

  // Builds the JS object around a state (main thread, from a worker's Result()).
  static Napi::Value Instantiate(Napi::FunctionReference& constructor, Napi::Env env, std::shared_ptr<ModelState>& state) {
    return constructor.New({Napi::External<std::shared_ptr<ModelState>>::New(env, &state)});
  }

 private:
  static Napi::Value Preset(const Napi::CallbackInfo& info);
  static Napi::Value Create(const Napi::CallbackInfo& info);
  static Napi::Value FromBuffer(const Napi::CallbackInfo& info);
  Napi::Value ConfigJson(const Napi::CallbackInfo& info);
  Napi::Value MetadataObject(const Napi::CallbackInfo& info);
  Napi::Value Recognize(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  void release_memory_accounting(Napi::Env env) {
    if (accounted_) Napi::MemoryManagement::AdjustExternalMemory(env, -state_->bytes);
    accounted_ = false;
  }

  std::shared_ptr<ModelState> state_;
  bool accounted_ = false;  // state_->bytes is counted in V8's external memory
};

// ---- factories -------------------------------------------------------------------------------

class CreateWorker : public PromiseWorker {
 public:
  CreateWorker(Napi::Env env, Napi::FunctionReference* constructor, const model::Config& config, uint64_t seed)
      : PromiseWorker(env), constructor_(constructor), config_(config), seed_(seed) {}

 protected:
  void Run() override {
    auto network = std::make_unique<model::Network>(config_);
    network->init_random(seed_);
    state_ = make_state(std::move(network), {});
  }
  Napi::Value Result(Napi::Env env) override { return NativeModel::Instantiate(*constructor_, env, state_); }

 private:
  Napi::FunctionReference* constructor_;
  model::Config config_;
  uint64_t seed_;
  std::shared_ptr<ModelState> state_;
};

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, Napi::FunctionReference* constructor, Napi::Uint8Array bytes, std::string source)
      : PromiseWorker(env), constructor_(constructor), source_(std::move(source)) {
    bytes_ref_ = Napi::Persistent(bytes);
    data_ = bytes.Data();
    size_ = bytes.ByteLength();
  }

 protected:
  void Run() override {
    SafeTensors file = SafeTensors::parse(std::vector<uint8_t>(data_, data_ + size_), source_);
    const auto config_text = file.metadata().find("config");
    SAFL_CHECK(config_text != file.metadata().end(), source_, ": the metadata has no \"config\"");
    const model::Config config =
        model::config_from_json(json::parse(config_text->second, source_ + ": config"), source_ + ": config");
    auto network = std::make_unique<model::Network>(config);
    network->load(file);
    state_ = make_state(std::move(network), file.metadata());
  }
  Napi::Value Result(Napi::Env env) override { return NativeModel::Instantiate(*constructor_, env, state_); }

 private:
  Napi::FunctionReference* constructor_;
  std::string source_;
  Napi::Reference<Napi::Uint8Array> bytes_ref_;  // keeps the bytes alive while the worker reads them
  const uint8_t* data_;
  size_t size_;
  std::shared_ptr<ModelState> state_;
};

Napi::Value NativeModel::Preset(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string name = read_string(info[0], "config");
    const int64_t num_classes = read_integer(info[1], "numClasses", 4, 1 << 20);
    return Napi::String::New(info.Env(), json::write(model::config_to_json(model::preset(name, num_classes))));
  });
}

Napi::Value NativeModel::Create(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string text = read_string(info[0], "config");
    const uint64_t seed = uint64_t(read_integer(info[1], "seed", 0, kMaxSeed));
    const model::Config config = model::config_from_json(json::parse(text, "config"), "config");
    auto* constructor = static_cast<Napi::FunctionReference*>(info.Data());
    return (new CreateWorker(info.Env(), constructor, config, seed))->start();
  });
}

Napi::Value NativeModel::FromBuffer(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw_type_error(info.Env(), "a Buffer or Uint8Array", "bytes", info[0]);
    const std::string source = read_string(info[1], "source");
    auto* constructor = static_cast<Napi::FunctionReference*>(info.Data());
    return (new LoadWorker(info.Env(), constructor, info[0].As<Napi::Uint8Array>(), source))->start();
  });
}

// ---- the model's methods -----------------------------------------------------------------------

Napi::Value NativeModel::ConfigJson(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), json::write(model::config_to_json(state_->config)));
}

Napi::Value NativeModel::MetadataObject(const Napi::CallbackInfo& info) {
  Napi::Object out = Napi::Object::New(info.Env());
  for (const auto& [key, value] : state_->metadata) out.Set(key, value);
  return out;
}

class RecognizeWorker : public PromiseWorker {
 public:
  RecognizeWorker(Napi::Env env, std::shared_ptr<ModelState> state, Napi::Float32Array images, int64_t batch,
                  int64_t beam_width)
      : PromiseWorker(env), call_(std::move(state)), batch_(batch), beam_width_(beam_width) {
    images_ref_ = Napi::Persistent(images);
    images_ = images.Data();
  }

 protected:
  void Run() override {
    NetworkLock lock(call_.state());
    decoded_ = lock.network().recognize(images_, batch_, beam_width_);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, decoded_.size());
    for (size_t i = 0; i < decoded_.size(); ++i) {
      const model::Decoded& d = decoded_[i];
      auto tokens = Napi::Int32Array::New(env, d.tokens.size());
      auto probs = Napi::Float32Array::New(env, d.probs.size());
      if (!d.tokens.empty()) std::memcpy(tokens.Data(), d.tokens.data(), d.tokens.size() * sizeof(int32_t));
      if (!d.probs.empty()) std::memcpy(probs.Data(), d.probs.data(), d.probs.size() * sizeof(float));
      Napi::Object word = Napi::Object::New(env);
      word.Set("tokens", tokens);
      word.Set("probs", probs);
      word.Set("confidence", double(d.confidence));
      out.Set(uint32_t(i), word);
    }
    return out;
  }

 private:
  PendingCall call_;
  Napi::Reference<Napi::Float32Array> images_ref_;
  const float* images_;
  int64_t batch_, beam_width_;
  std::vector<model::Decoded> decoded_;
};

Napi::Value NativeModel::Recognize(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const model::Config& c = state_->config;
    const int64_t batch = read_integer(info[1], "batch", 1, kMaxBatch);
    const int64_t beam_width = read_integer(info[2], "beamWidth", 1, kMaxBeamWidth);
    auto images = read_float32(info[0], "images", size_t(batch * 3 * c.in_h * c.in_w));
    if (state_->closed) throw Napi::Error::New(info.Env(), "the recognizer is closed");
    return (new RecognizeWorker(info.Env(), state_, images, batch, beam_width))->start();
  });
}

class SaveWorker : public PromiseWorker {
 public:
  SaveWorker(Napi::Env env, std::shared_ptr<ModelState> state, DType dtype, std::map<std::string, std::string> metadata)
      : PromiseWorker(env), call_(std::move(state)), dtype_(dtype), metadata_(std::move(metadata)) {}

 protected:
  void Run() override {
    NetworkLock lock(call_.state());
    bytes_ = lock.network().save(dtype_, metadata_);
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Buffer<uint8_t>::Copy(env, bytes_.data(), bytes_.size()); }

 private:
  PendingCall call_;
  DType dtype_;
  std::map<std::string, std::string> metadata_;
  std::vector<uint8_t> bytes_;
};

Napi::Value NativeModel::Save(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string dtype_name = read_string(info[0], "dtype");
    DType dtype;
    if (dtype_name == "float32") dtype = DType::F32;
    else if (dtype_name == "float16") dtype = DType::F16;
    else throw_range_error(info.Env(), "'float32' or 'float16'", "dtype", info[0]);
    if (!info[1].IsObject() || info[1].IsArray()) throw_type_error(info.Env(), "an object", "metadata", info[1]);
    const Napi::Object object = info[1].As<Napi::Object>();
    const Napi::Array keys = object.GetPropertyNames();
    std::map<std::string, std::string> metadata;
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const std::string key = keys.Get(i).ToString().Utf8Value();
      const Napi::Value value = object.Get(key);
      if (!value.IsString()) throw_type_error(info.Env(), "a string", "metadata." + key, value);
      metadata[key] = value.As<Napi::String>().Utf8Value();
    }
    if (state_->closed) throw Napi::Error::New(info.Env(), "the recognizer is closed");
    return (new SaveWorker(info.Env(), state_, dtype, std::move(metadata)))->start();
  });
}

Napi::Value NativeModel::Close(const Napi::CallbackInfo& info) {
  state_->closed = true;
  if (state_->pending_calls == 0) state_->network.reset();
  release_memory_accounting(info.Env());
  return info.Env().Undefined();
}

}  // namespace

void register_model_binding(Napi::Env env, Napi::Object exports) {
  // The constructor reference lives as long as the environment: the factories' workers need it to
  // wrap the models they make.
  auto* constructor = new Napi::FunctionReference();
  Napi::Function cls = NativeModel::Define(env, constructor);
  *constructor = Napi::Persistent(cls);
  env.AddCleanupHook([constructor] { delete constructor; });
  exports.Set("NativeModel", cls);
}

}  // namespace safl::addon
