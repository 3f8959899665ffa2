// The pieces NativeModel and NativeTrainer share (see network_object.h): the network handle with
// the network that runs on the CPU or, in the CUDA addon, on the device, the factory plumbing,
// recognize() with its conversion of decoded words to JS, the save worker, and the argument readers.
#include "addon/network_object.h"

#include <cstring>

#include "model/json.h"

namespace safl::addon {

constexpr int64_t kMaxBeamWidth = 64;

// ---- the handle ----------------------------------------------------------------------------------

NetworkHandle::NetworkHandle(std::unique_ptr<model::Network> network, int64_t bytes, std::string closed_message,
                             std::function<void()> release_extras)
    : config_(network->config()),
      bytes_(bytes),
      closed_message_(std::move(closed_message)),
      release_extras_(std::move(release_extras)),
      network_(std::move(network)) {
#ifdef SAFL_WITH_CUDA
  device_ = std::make_unique<model::CudaNetwork>(*network_);
#endif
}

void NetworkHandle::report_memory(Napi::Env env) {
  if (!memory_reported_) Napi::MemoryManagement::AdjustExternalMemory(env, bytes_);
  memory_reported_ = true;
}

void NetworkHandle::withdraw_memory(Napi::Env env) {
  if (memory_reported_) Napi::MemoryManagement::AdjustExternalMemory(env, -bytes_);
  memory_reported_ = false;
}

void NetworkHandle::check_open(Napi::Env env) const {
  if (closed_) throw Napi::Error::New(env, closed_message_);
}

void NetworkHandle::close(Napi::Env env) {
  if (!closed_) {
    closed_ = true;
    if (pending_calls_ == 0) release();
  }
  withdraw_memory(env);
}

void NetworkHandle::release() {
#ifdef SAFL_WITH_CUDA
  device_.reset();
#endif
  network_.reset();
  if (release_extras_) release_extras_();
}

PendingCall::PendingCall(std::shared_ptr<NetworkHandle> handle) : handle_(std::move(handle)) {
  ++handle_->pending_calls_;
}

PendingCall::~PendingCall() {
  if (--handle_->pending_calls_ == 0 && handle_->closed_) handle_->release();
}

// ---- the lock ------------------------------------------------------------------------------------

#ifdef SAFL_WITH_CUDA

RunningNetwork& NetworkLock::running() { return *handle_.device_; }

model::Network& NetworkLock::synced() {
  handle_.device_->download(*handle_.network_);
  return *handle_.network_;
}

void NetworkLock::reload() {
  // The new network is made before the assignment frees the old one.
  handle_.device_ = std::make_unique<model::CudaNetwork>(*handle_.network_);
}

#else

RunningNetwork& NetworkLock::running() { return *handle_.network_; }

model::Network& NetworkLock::synced() { return *handle_.network_; }

void NetworkLock::reload() {}

#endif

// ---- the classes and their factories -------------------------------------------------------------

void export_class(Napi::Env env, Napi::Object exports, const char* name,
                  Napi::Function (*define)(Napi::Env, Napi::FunctionReference*)) {
  auto* constructor = new Napi::FunctionReference();
  Napi::Function cls = define(env, constructor);
  *constructor = Napi::Persistent(cls);
  env.AddCleanupHook([constructor] { delete constructor; });
  exports.Set(name, cls);
}

CreateArguments read_create_arguments(const Napi::CallbackInfo& info) {
  const std::string text = read_string(info[0], "config");
  const uint64_t seed = uint64_t(read_integer(info[1], "seed", 0, kMaxSafeInteger));
  return {model::config_from_json(json::parse(text, "config"), "config"), seed};
}

std::unique_ptr<model::Network> random_network(const CreateArguments& arguments) {
  auto network = std::make_unique<model::Network>(arguments.config);
  network->init_random(arguments.seed);
  return network;
}

// ---- recognize -----------------------------------------------------------------------------------

namespace {

// { tokens: Int32Array, probs: Float32Array, confidence: number } of one reading.
Napi::Object reading_to_js(Napi::Env env, const model::Decoded& d) {
  auto tokens = Napi::Int32Array::New(env, d.tokens.size());
  auto probs = Napi::Float32Array::New(env, d.probs.size());
  if (!d.tokens.empty()) std::memcpy(tokens.Data(), d.tokens.data(), d.tokens.size() * sizeof(int32_t));
  if (!d.probs.empty()) std::memcpy(probs.Data(), d.probs.data(), d.probs.size() * sizeof(float));
  Napi::Object reading = Napi::Object::New(env);
  reading.Set("tokens", tokens);
  reading.Set("probs", probs);
  reading.Set("confidence", double(d.confidence));
  return reading;
}

// For each word, its reading with `alternatives`: an array of the beam's other finished readings
// (Note [alternatives] in network_decode.cpp; empty for greedy decoding).
Napi::Array words_to_js(Napi::Env env, const std::vector<model::Decoded>& decoded) {
  Napi::Array out = Napi::Array::New(env, decoded.size());
  for (size_t i = 0; i < decoded.size(); ++i) {
    Napi::Object word = reading_to_js(env, decoded[i]);
    Napi::Array alternatives = Napi::Array::New(env, decoded[i].alternatives.size());
    for (size_t k = 0; k < decoded[i].alternatives.size(); ++k)
      alternatives.Set(uint32_t(k), reading_to_js(env, decoded[i].alternatives[k]));
    word.Set("alternatives", alternatives);
    out.Set(uint32_t(i), word);
  }
  return out;
}

class RecognizeWorker : public PromiseWorker {
 public:
  RecognizeWorker(Napi::Env env, std::shared_ptr<NetworkHandle> handle, Napi::Float32Array images, int64_t batch,
                  int64_t beam_width, MatmulPrecision precision)
      : PromiseWorker(env),
        call_(std::move(handle)),
        images_(images),
        batch_(batch),
        beam_width_(beam_width),
        precision_(precision) {}

 protected:
  void Run() override {
    NetworkLock lock(call_.handle());
    const MatmulPrecisionScope precision(precision_);  // the CPU's products; CUDA ignores it
    decoded_ = lock.running().recognize(images_.data(), batch_, beam_width_);
  }
  Napi::Value Result(Napi::Env env) override { return words_to_js(env, decoded_); }

 private:
  PendingCall call_;
  HeldArray<float> images_;  // (B, 3, in_h, in_w)
  int64_t batch_, beam_width_;
  MatmulPrecision precision_;
  std::vector<model::Decoded> decoded_;
};

}  // namespace

Napi::Value recognize(const Napi::CallbackInfo& info, std::shared_ptr<NetworkHandle> handle) {
  return guarded(info, [&]() -> Napi::Value {
    const model::Config& c = handle->config();
    const int64_t batch = read_integer(info[1], "batch", 1, kMaxBatch);
    const int64_t beam_width = read_integer(info[2], "beamWidth", 1, kMaxBeamWidth);
    auto images = read_float32(info[0], "images", size_t(batch * 3 * c.in_h * c.in_w));
    const MatmulPrecision precision = read_precision(info[3], "precision");
    handle->check_open(info.Env());
    return (new RecognizeWorker(info.Env(), std::move(handle), images, batch, beam_width, precision))->start();
  });
}

// ---- save ----------------------------------------------------------------------------------------

namespace {

class SaveWorker : public BufferWorker {
 public:
  SaveWorker(Napi::Env env, std::shared_ptr<NetworkHandle> handle, DType dtype,
             std::map<std::string, std::string> metadata)
      : BufferWorker(env), call_(std::move(handle)), dtype_(dtype), metadata_(std::move(metadata)) {}

 protected:
  void Run() override {
    NetworkLock lock(call_.handle());
    bytes_ = lock.synced().save(dtype_, metadata_);
  }

 private:
  PendingCall call_;
  DType dtype_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace

Napi::Value save_network(Napi::Env env, std::shared_ptr<NetworkHandle> handle, DType dtype,
                         std::map<std::string, std::string> metadata) {
  return (new SaveWorker(env, std::move(handle), dtype, std::move(metadata)))->start();
}

// ---- argument readers ----------------------------------------------------------------------------

DType read_dtype(const Napi::Value& value) {
  const std::string name = read_string(value, "dtype");
  if (name == "float32") return DType::F32;
  if (name == "float16") return DType::F16;
  throw_range_error(value.Env(), "'float32' or 'float16'", "dtype", value);
}

MatmulPrecision read_precision(const Napi::Value& value, const char* option) {
  const std::string name = read_string(value, option);
  if (name == "float32") return MatmulPrecision::Float32;
  if (name == "bfloat16") return MatmulPrecision::BFloat16;
  throw_range_error(value.Env(), "'float32' or 'bfloat16'", option, value);
}

std::map<std::string, std::string> read_metadata(const Napi::Value& value) {
  if (!value.IsObject() || value.IsArray()) throw_type_error(value.Env(), "an object", "metadata", value);
  const Napi::Object object = value.As<Napi::Object>();
  const Napi::Array keys = object.GetPropertyNames();
  std::map<std::string, std::string> metadata;
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    const std::string key = keys.Get(i).ToString().Utf8Value();
    const Napi::Value entry = object.Get(key);
    if (!entry.IsString()) throw_type_error(value.Env(), "a string", "metadata." + key, entry);
    metadata[key] = entry.As<Napi::String>().Utf8Value();
  }
  return metadata;
}

Napi::Uint8Array read_bytes(const Napi::Value& value, const char* option) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw_type_error(value.Env(), "a Buffer or Uint8Array", option, value);
  return value.As<Napi::Uint8Array>();
}

model::Config file_config(const SafeTensors& file, const std::string& source) {
  const auto config_text = file.metadata().find("config");
  SAFL_CHECK(config_text != file.metadata().end(), source, ": the metadata has no \"config\"");
  return model::config_from_json(json::parse(config_text->second, source + ": config"), source + ": config");
}

}  // namespace safl::addon
