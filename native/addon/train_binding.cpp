// NativeTrainer: a SAFL network (model/network.h) with its Adam moments and step count, trained one
// batch per native call. lib/trainer.ts is its one caller and validates options first; the checks
// here are the last line.
//
//   NativeTrainer.create(configJson, seed) → Promise<NativeTrainer>   random initialisation
//   trainer.config() → string                                         config JSON
//   trainer.optimizerStep() → number                                  Adam updates made so far
//   trainer.step(images, targets, B, options) → Promise<{ loss, correct, tokens, gradNorm, skipped }>
//   trainer.recognize(images, B, beamWidth) → Promise<Array<{ tokens, probs, confidence }>>
//   trainer.save(dtype, metadata, withOptimizer) → Promise<Buffer>
//   trainer.load(bytes, source) → Promise<undefined>                  a checkpoint of the same config
//   trainer.close()                                                   frees the network's memory
//
// step() is one training step in one call: the training forward (batch norm on batch statistics,
// dropout seeded by options.dropoutSeed) and backward with the focal loss (gamma, alpha; gamma 0
// and alpha 1 is cross-entropy), the global gradient norm, the clip factor (options.maxNorm; 0
// turns clipping off), and Adam or AdamW (options.decoupled) with the learning rate lr for this
// step (the schedule lives in lib/trainer.ts). `correct` counts the non-PAD target tokens the
// teacher-forced logits predict (argmax), `tokens` the non-PAD targets.
//
// Checkpoints (save with withOptimizer): the network's parameters and buffers, "optimizer.m" and
// "optimizer.v" (P floats each, laid out as the parameters), all float32, and the metadata the
// caller passes plus "optimizer_step". load() reads one back into a trainer of the same config.
//
// Note [skipped steps leave the state unchanged]: when the loss or the gradient norm is NaN or
// infinite, step() makes no optimizer update, does not count the step, and restores the batch-norm
// running statistics the forward pass had already updated (a non-finite batch would otherwise
// poison them for inference). It resolves with skipped: true; the caller decides when to give up.
//
// Note [recognize is a small duplicate]: the conversion of decoded words to JS objects repeats the
// dozen lines of model_binding.cpp's RecognizeWorker; sharing them would mean a helper in
// napi_util, which other bindings own.
//
// One call at a time and closing while a call runs work as in model_binding.cpp (its Notes [one
// call at a time] and [closing while a call runs]).
#include "addon/train_binding.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "addon/napi_util.h"
#include "addon/promise_worker.h"
#include "model/config.h"
#include "model/json.h"
#include "model/network.h"
#include "model/safetensors.h"
#include "ops/optimizer.h"

namespace safl::addon {
namespace {

constexpr int64_t kMaxBatch = 4096;
constexpr int64_t kMaxBeamWidth = 64;
constexpr int64_t kMaxSeed = (int64_t(1) << 53) - 1;  // Number.MAX_SAFE_INTEGER
constexpr const char* kMomentName = "optimizer.m";
constexpr const char* kVelocityName = "optimizer.v";
constexpr const char* kStepKey = "optimizer_step";
constexpr const char* kClosed = "the trainer is closed";

struct TrainerState {
  model::Config config;
  int64_t bytes = 0;  // parameters, gradients, moments and buffers, reported to V8's garbage collector
  std::mutex mutex;   // one call at a time (model_binding.cpp)
  std::unique_ptr<model::Network> network;
  std::vector<float> m, v;  // Adam moments, (param_floats) each
  int64_t optimizer_step = 0;
  // Main thread only.
  bool closed = false;
  int pending_calls = 0;
};

// Frees the network and the moments (main thread, when closed and no call is pending).
void release(TrainerState& state) {
  state.network.reset();
  std::vector<float>().swap(state.m);
  std::vector<float>().swap(state.v);
}

// Counts one call for as long as its worker lives (made and destroyed on the main thread).
class PendingCall {
 public:
  explicit PendingCall(std::shared_ptr<TrainerState> state) : state_(std::move(state)) { ++state_->pending_calls; }
  ~PendingCall() {
    if (--state_->pending_calls == 0 && state_->closed) release(*state_);
  }
  PendingCall(const PendingCall&) = delete;
  PendingCall& operator=(const PendingCall&) = delete;
  TrainerState& state() { return *state_; }

 private:
  std::shared_ptr<TrainerState> state_;
};

std::shared_ptr<TrainerState> make_state(std::unique_ptr<model::Network> network) {
  auto state = std::make_shared<TrainerState>();
  const model::Layout& layout = network->layout();
  state->config = network->config();
  state->bytes = (4 * layout.param_floats + layout.buffer_floats) * int64_t(sizeof(float));
  state->m.assign(layout.param_floats, 0.0f);
  state->v.assign(layout.param_floats, 0.0f);
  network->grads();  // allocated now, so that the memory reported is the memory held
  state->network = std::move(network);
  return state;
}

// "d_model is 32 in the checkpoint but 256 in this trainer; heads …", or "" when the configs agree.
std::string config_differences(const model::Config& file, const model::Config& ours) {
  const json::Value a = model::config_to_json(file), b = model::config_to_json(ours);
  std::ostringstream out;
  for (const auto& [key, value] : a.as_object("config")) {
    const json::Value* other = b.find(key);
    const std::string theirs = json::write(value), mine = other ? json::write(*other) : "absent";
    if (theirs == mine) continue;
    if (out.tellp() > 0) out << "; ";
    out << key << " is " << theirs << " in the checkpoint but " << mine << " in this trainer";
  }
  return out.str();
}

// A number option of step(): finite and within [lo, hi].
double read_number(const Napi::Object& options, const char* key, double lo, double hi) {
  const Napi::Value value = options.Get(key);
  std::ostringstream what;
  what << "a number between " << lo << " and " << hi;
  const std::string option = std::string("options.") + key;
  if (!value.IsNumber()) throw_type_error(options.Env(), what.str(), option, value);
  const double x = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x) || x < lo || x > hi) throw_range_error(options.Env(), what.str(), option, value);
  return x;
}

class NativeTrainer : public Napi::ObjectWrap<NativeTrainer> {
 public:
  static Napi::Function Define(Napi::Env env, Napi::FunctionReference* constructor) {
    return DefineClass(env, "NativeTrainer",
                       {StaticMethod("create", &NativeTrainer::Create, napi_default, constructor),
                        InstanceMethod<&NativeTrainer::ConfigJson>("config"),
                        InstanceMethod<&NativeTrainer::OptimizerStep>("optimizerStep"),
                        InstanceMethod<&NativeTrainer::Step>("step"),
                        InstanceMethod<&NativeTrainer::Recognize>("recognize"),
                        InstanceMethod<&NativeTrainer::Save>("save"),
                        InstanceMethod<&NativeTrainer::Load>("load"),
                        InstanceMethod<&NativeTrainer::Close>("close")});
  }

  // Called only by create(), with the new trainer's state in an External.
  explicit NativeTrainer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTrainer>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "NativeTrainer is made by NativeTrainer.create()");
    state_ = *info[0].As<Napi::External<std::shared_ptr<TrainerState>>>().Data();
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), state_->bytes);
    accounted_ = true;
  }

  void Finalize(Napi::Env env) override { release_memory_accounting(env); }

  static Napi::Value Instantiate(Napi::FunctionReference& constructor, Napi::Env env,
                                 std::shared_ptr<TrainerState>& state) {
    return constructor.New({Napi::External<std::shared_ptr<TrainerState>>::New(env, &state)});
  }

 private:
  static Napi::Value Create(const Napi::CallbackInfo& info);
  Napi::Value ConfigJson(const Napi::CallbackInfo& info);
  Napi::Value OptimizerStep(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value Recognize(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  void check_open(Napi::Env env) const {
    if (state_->closed) throw Napi::Error::New(env, kClosed);
  }
  void release_memory_accounting(Napi::Env env) {
    if (accounted_) Napi::MemoryManagement::AdjustExternalMemory(env, -state_->bytes);
    accounted_ = false;
  }

  std::shared_ptr<TrainerState> state_;
  bool accounted_ = false;
};

// ---- create --------------------------------------------------------------------------------------

class CreateWorker : public PromiseWorker {
 public:
  CreateWorker(Napi::Env env, Napi::FunctionReference* constructor, const model::Config& config, uint64_t seed)
      : PromiseWorker(env), constructor_(constructor), config_(config), seed_(seed) {}

 protected:
  void Run() override {
    auto network = std::make_unique<model::Network>(config_);
    network->init_random(seed_);
    state_ = make_state(std::move(network));
  }
  Napi::Value Result(Napi::Env env) override { return NativeTrainer::Instantiate(*constructor_, env, state_); }

 private:
  Napi::FunctionReference* constructor_;
  model::Config config_;
  uint64_t seed_;
  std::shared_ptr<TrainerState> state_;
};

Napi::Value NativeTrainer::Create(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string text = read_string(info[0], "config");
    const uint64_t seed = uint64_t(read_integer(info[1], "seed", 0, kMaxSeed));
    const model::Config config = model::config_from_json(json::parse(text, "config"), "config");
    auto* constructor = static_cast<Napi::FunctionReference*>(info.Data());
    return (new CreateWorker(info.Env(), constructor, config, seed))->start();
  });
}

Napi::Value NativeTrainer::ConfigJson(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), json::write(model::config_to_json(state_->config)));
}

Napi::Value NativeTrainer::OptimizerStep(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(state_->optimizer_step));
}

// ---- step ----------------------------------------------------------------------------------------

struct StepOptions {
  float gamma, alpha;
  uint64_t dropout_seed;
  AdamOptions adam;
  float max_norm;  // 0: no clipping
};

class StepWorker : public PromiseWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<TrainerState> state, Napi::Float32Array images, Napi::Int32Array targets,
             int64_t batch, const StepOptions& options)
      : PromiseWorker(env), call_(std::move(state)), batch_(batch), options_(options) {
    images_ref_ = Napi::Persistent(images);
    targets_ref_ = Napi::Persistent(targets);
    images_ = images.Data();
    targets_ = targets.Data();
  }

 protected:
  void Run() override {
    TrainerState& s = call_.state();
    std::lock_guard<std::mutex> lock(s.mutex);
    model::Network& network = *s.network;
    const int64_t P = network.layout().param_floats, nbuf = network.layout().buffer_floats;
    const int64_t pad = s.config.pad(), T = s.config.tgt_len();
    for (int64_t i = 0; i < batch_ * T; ++i) tokens_ += targets_[i] != pad;
    // Note [skipped steps leave the state unchanged].
    const std::vector<float> running_stats(network.buffers(), network.buffers() + nbuf);
    loss_ = network.forward_backward(images_, targets_, batch_, options_.gamma, options_.alpha, options_.dropout_seed,
                                     &correct_);
    if (std::isfinite(loss_)) grad_norm_ = cpu::grad_norm(network.grads(), P);
    if (!std::isfinite(loss_) || !std::isfinite(grad_norm_)) {
      std::copy(running_stats.begin(), running_stats.end(), network.buffers());
      skipped_ = true;
      return;
    }
    const float scale = options_.max_norm > 0.0f ? clip_factor(grad_norm_, options_.max_norm) : 1.0f;
    cpu::adam_step(network.params(), s.m.data(), s.v.data(), network.grads(), P, s.optimizer_step + 1, scale,
                   options_.adam);
    ++s.optimizer_step;
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("loss", double(loss_));
    out.Set("correct", double(correct_));
    out.Set("tokens", double(tokens_));
    out.Set("gradNorm", grad_norm_);
    out.Set("skipped", skipped_);
    return out;
  }

 private:
  PendingCall call_;
  Napi::Reference<Napi::Float32Array> images_ref_;
  Napi::Reference<Napi::Int32Array> targets_ref_;
  const float* images_;
  const int32_t* targets_;
  int64_t batch_;
  StepOptions options_;
  float loss_ = 0.0f;
  int64_t correct_ = 0, tokens_ = 0;
  double grad_norm_ = NAN;
  bool skipped_ = false;
};

Napi::Value NativeTrainer::Step(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const model::Config& c = state_->config;
    const int64_t batch = read_integer(info[2], "batch", 2, kMaxBatch);
    auto images = read_float32(info[0], "images", size_t(batch * 3 * c.in_h * c.in_w));
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw_type_error(env, "an Int32Array", "targets", info[1]);
    auto targets = info[1].As<Napi::Int32Array>();
    if (targets.ElementLength() != size_t(batch * c.tgt_len()))
      throw_range_error(env, "an Int32Array of length " + std::to_string(batch * c.tgt_len()), "targets", info[1]);
    if (!info[3].IsObject() || info[3].IsArray()) throw_type_error(env, "an object", "options", info[3]);
    const Napi::Object o = info[3].As<Napi::Object>();
    StepOptions options;
    options.gamma = float(read_number(o, "gamma", 0, 1e3));
    options.alpha = float(read_number(o, "alpha", 1e-6, 1e3));
    options.dropout_seed = uint64_t(read_integer(o.Get("dropoutSeed"), "options.dropoutSeed", 0, kMaxSeed));
    options.adam.lr = float(read_number(o, "lr", 0, 1e3));
    options.adam.beta1 = float(read_number(o, "beta1", 0, 0.999999));
    options.adam.beta2 = float(read_number(o, "beta2", 0, 0.999999));
    options.adam.eps = float(read_number(o, "eps", 1e-30, 1));
    options.adam.weight_decay = float(read_number(o, "weightDecay", 0, 1e3));
    options.adam.decoupled_weight_decay = read_boolean(o.Get("decoupled"), "options.decoupled");
    options.max_norm = float(read_number(o, "maxNorm", 0, 1e9));
    check_open(env);
    return (new StepWorker(env, state_, images, targets, batch, options))->start();
  });
}

// ---- recognize (Note [recognize is a small duplicate]) -------------------------------------------

class RecognizeWorker : public PromiseWorker {
 public:
  RecognizeWorker(Napi::Env env, std::shared_ptr<TrainerState> state, Napi::Float32Array images, int64_t batch,
                  int64_t beam_width)
      : PromiseWorker(env), call_(std::move(state)), batch_(batch), beam_width_(beam_width) {
    images_ref_ = Napi::Persistent(images);
    images_ = images.Data();
  }

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(call_.state().mutex);
    decoded_ = call_.state().network->recognize(images_, batch_, beam_width_);
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

Napi::Value NativeTrainer::Recognize(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const model::Config& c = state_->config;
    const int64_t batch = read_integer(info[1], "batch", 1, kMaxBatch);
    const int64_t beam_width = read_integer(info[2], "beamWidth", 1, kMaxBeamWidth);
    auto images = read_float32(info[0], "images", size_t(batch * 3 * c.in_h * c.in_w));
    check_open(info.Env());
    return (new RecognizeWorker(info.Env(), state_, images, batch, beam_width))->start();
  });
}

// ---- save and load -------------------------------------------------------------------------------

class SaveWorker : public PromiseWorker {
 public:
  SaveWorker(Napi::Env env, std::shared_ptr<TrainerState> state, DType dtype,
             std::map<std::string, std::string> metadata, bool with_optimizer)
      : PromiseWorker(env), call_(std::move(state)), dtype_(dtype), metadata_(std::move(metadata)),
        with_optimizer_(with_optimizer) {}

 protected:
  void Run() override {
    TrainerState& s = call_.state();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (!with_optimizer_) {
      bytes_ = s.network->save(dtype_, metadata_);
      return;
    }
    const model::Network& network = *s.network;
    const model::Layout& layout = network.layout();
    const float* params = s.network->params();
    const float* buffers = s.network->buffers();
    std::vector<TensorView> views;
    for (const model::TensorSpec& spec : layout.params) views.push_back({spec.name, spec.shape, params + spec.offset});
    for (const model::TensorSpec& spec : layout.buffers) views.push_back({spec.name, spec.shape, buffers + spec.offset});
    views.push_back({kMomentName, {layout.param_floats}, s.m.data()});
    views.push_back({kVelocityName, {layout.param_floats}, s.v.data()});
    metadata_[kStepKey] = std::to_string(s.optimizer_step);
    bytes_ = write_safetensors(views, metadata_, DType::F32);
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Buffer<uint8_t>::Copy(env, bytes_.data(), bytes_.size()); }

 private:
  PendingCall call_;
  DType dtype_;
  std::map<std::string, std::string> metadata_;
  bool with_optimizer_;
  std::vector<uint8_t> bytes_;
};

Napi::Value NativeTrainer::Save(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const std::string dtype_name = read_string(info[0], "dtype");
    DType dtype;
    if (dtype_name == "float32") dtype = DType::F32;
    else if (dtype_name == "float16") dtype = DType::F16;
    else throw_range_error(env, "'float32' or 'float16'", "dtype", info[0]);
    if (!info[1].IsObject() || info[1].IsArray()) throw_type_error(env, "an object", "metadata", info[1]);
    const bool with_optimizer = read_boolean(info[2], "withOptimizer");
    if (with_optimizer && dtype != DType::F32)
      throw_range_error(env, "'float32' (a checkpoint keeps the exact state)", "dtype", info[0]);
    const Napi::Object object = info[1].As<Napi::Object>();
    const Napi::Array keys = object.GetPropertyNames();
    std::map<std::string, std::string> metadata;
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const std::string key = keys.Get(i).ToString().Utf8Value();
      const Napi::Value value = object.Get(key);
      if (!value.IsString()) throw_type_error(env, "a string", "metadata." + key, value);
      metadata[key] = value.As<Napi::String>().Utf8Value();
    }
    check_open(env);
    return (new SaveWorker(env, state_, dtype, std::move(metadata), with_optimizer))->start();
  });
}

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::shared_ptr<TrainerState> state, Napi::Uint8Array bytes, std::string source)
      : PromiseWorker(env), call_(std::move(state)), source_(std::move(source)) {
    bytes_ref_ = Napi::Persistent(bytes);
    data_ = bytes.Data();
    size_ = bytes.ByteLength();
  }

 protected:
  void Run() override {
    TrainerState& s = call_.state();
    std::lock_guard<std::mutex> lock(s.mutex);
    SafeTensors file = SafeTensors::parse(std::vector<uint8_t>(data_, data_ + size_), source_);
    const auto& metadata = file.metadata();
    const auto config_text = metadata.find("config");
    SAFL_CHECK(config_text != metadata.end(), source_, ": the metadata has no \"config\"");
    const model::Config config =
        model::config_from_json(json::parse(config_text->second, source_ + ": config"), source_ + ": config");
    const std::string differences = config_differences(config, s.config);
    SAFL_CHECK(differences.empty(), source_, ": the checkpoint is of another configuration (", differences, ")");

    const model::Layout& layout = s.network->layout();
    const auto step_text = metadata.find(kStepKey);
    SAFL_CHECK(file.find(kMomentName) && file.find(kVelocityName) && step_text != metadata.end(), source_,
               ": not a training checkpoint (no optimizer state: \"", kMomentName, "\", \"", kVelocityName,
               "\" and \"", kStepKey, "\")");
    const int64_t step = json::parse(step_text->second, source_ + ": " + kStepKey)
                             .as_integer(source_ + ": " + kStepKey, 0, kMaxSeed);
    for (const TensorInfo& t : file.tensors()) {
      const bool known = t.name == kMomentName || t.name == kVelocityName ||
                         std::any_of(layout.params.begin(), layout.params.end(),
                                     [&](const model::TensorSpec& p) { return p.name == t.name; }) ||
                         std::any_of(layout.buffers.begin(), layout.buffers.end(),
                                     [&](const model::TensorSpec& b) { return b.name == t.name; });
      SAFL_CHECK(known, source_, ": unexpected tensor '", t.name, "' (not part of this model's layout)");
    }
    // The moments first: a failure anywhere leaves the trainer as it was.
    std::vector<float> m(layout.param_floats), v(layout.param_floats);
    file.read(kMomentName, {layout.param_floats}, m.data());
    file.read(kVelocityName, {layout.param_floats}, v.data());
    s.network->load(file, /*allow_extra=*/true);
    s.m.swap(m);
    s.v.swap(v);
    s.optimizer_step = step;
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  PendingCall call_;
  std::string source_;
  Napi::Reference<Napi::Uint8Array> bytes_ref_;
  const uint8_t* data_;
  size_t size_;
};

Napi::Value NativeTrainer::Load(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw_type_error(info.Env(), "a Buffer or Uint8Array", "bytes", info[0]);
    const std::string source = read_string(info[1], "source");
    check_open(info.Env());
    return (new LoadWorker(info.Env(), state_, info[0].As<Napi::Uint8Array>(), source))->start();
  });
}

Napi::Value NativeTrainer::Close(const Napi::CallbackInfo& info) {
  if (!state_->closed) {
    state_->closed = true;
    if (state_->pending_calls == 0) release(*state_);
  }
  release_memory_accounting(info.Env());
  return info.Env().Undefined();
}

}  // namespace

void register_train_binding(Napi::Env env, Napi::Object exports) {
  auto* constructor = new Napi::FunctionReference();
  Napi::Function cls = NativeTrainer::Define(env, constructor);
  *constructor = Napi::Persistent(cls);
  env.AddCleanupHook([constructor] { delete constructor; });
  exports.Set("NativeTrainer", cls);
}

}  // namespace safl::addon
