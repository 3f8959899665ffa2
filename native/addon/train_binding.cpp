// NativeTrainer: a SAFL network (model/network.h) with its Adam moments and step count, trained one
// batch per native call. lib/trainer.ts is its one caller and validates options first; the checks
// here are the last line.
//
//   NativeTrainer.create(configJson, seed) → Promise<NativeTrainer>   random initialisation
//   trainer.config() → string                                         config JSON
//   trainer.optimizerStep() → number                                  Adam updates made so far
//   trainer.step(images, targets, B, options) → Promise<{ loss, correct, tokens, gradNorm, skipped }>
//   trainer.recognize(images, B, beamWidth, precision) → Promise<Array<{ tokens, probs, confidence, alternatives }>>
//   trainer.save(dtype, metadata, withOptimizer) → Promise<Buffer>
//   trainer.load(bytes, source, withOptimizer) → Promise<undefined>   a checkpoint (withOptimizer) or a
//                                                                     model file of the same config
//   trainer.close()                                                   frees the network's memory
//
// step() is one training step in one call: the training forward (batch norm on batch statistics,
// dropout seeded by options.dropoutSeed) and backward, their matrix products in options.precision
// ('float32' or 'bfloat16', common/matmul_precision.h), with the focal loss (gamma, alpha; gamma 0
// and alpha 1 is cross-entropy), the global gradient norm, the clip factor (options.maxNorm; 0
// turns clipping off), and Adam or AdamW (options.decoupled) with the learning rate lr for this
// step (the schedule lives in lib/trainer.ts). `correct` counts the non-PAD target tokens the
// teacher-forced logits predict (argmax), `tokens` the non-PAD targets.
//
// Checkpoints (save with withOptimizer): the network's parameters and buffers, "optimizer.m" and
// "optimizer.v" (P floats each, laid out as the parameters), all float32, and the metadata the
// caller passes plus "optimizer_step". load() reads one back into a trainer of the same config.
// load() without withOptimizer reads a model file's weights and batch-norm statistics only, to
// fine-tune it: the moments start at zero and the optimizer step count at 0, as in a new run.
//
// Note [skipped steps leave the state unchanged]: when the loss or the gradient norm is NaN or
// infinite, step() makes no optimizer update, does not count the step, and restores the batch-norm
// running statistics the forward pass had already updated (a non-finite batch would otherwise
// poison them for inference). It resolves with skipped: true; the caller decides when to give up.
//
// Note [where the optimizer state lives]: in the CPU addon the gradients are the host Network's
// and Adam's moments are TrainerState's m and v. In the CUDA addon the CudaNetwork keeps the
// gradients, the moments and the batch-norm buffers on the device; step() runs forward, backward,
// the gradient norm and Adam there, and only the loss, the counts and the norm come back.
// Checkpoints copy the parameters and moments to the host and back. The few functions that differ
// are together below ("the backend"); the workers are the same for both.
//
// The network's handle, recognize(), save() without the optimizer, and the argument readers are
// shared with NativeModel (network_object.h, also for its Notes [one call at a time], [closing
// while a call runs] and [the network that runs]).
#include "addon/train_binding.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "addon/napi_util.h"
#include "addon/network_object.h"
#include "addon/promise_worker.h"
#include "model/config.h"
#include "model/json.h"
#include "model/network.h"
#include "model/safetensors.h"
#include "ops/optimizer.h"

namespace safl::addon {
namespace {

constexpr const char* kMomentName = "optimizer.m";
constexpr const char* kVelocityName = "optimizer.v";
constexpr const char* kStepKey = "optimizer_step";
constexpr const char* kClosed = "the trainer is closed";

// ---- the backend (Note [where the optimizer state lives]) ----------------------------------------

#ifdef SAFL_WITH_CUDA

// The network's handle (whose CudaNetwork holds the optimizer state) and the step count.
struct TrainerState {
  TrainerState(std::unique_ptr<model::Network> network, int64_t bytes)
      : handle(std::move(network), bytes, kClosed) {}
  NetworkHandle handle;
  int64_t optimizer_step = 0;
};

std::shared_ptr<TrainerState> make_state(std::unique_ptr<model::Network> network) {
  // The host copy's parameters and buffers, reported to V8's garbage collector.
  const int64_t bytes = (network->layout().param_floats + network->layout().buffer_floats) * int64_t(sizeof(float));
  return std::make_shared<TrainerState>(std::move(network), bytes);
}

std::vector<float> copy_running_stats(NetworkLock& lock, const TrainerState&) {
  std::vector<float> stats(size_t(lock.host().layout().buffer_floats));  // (buffer_floats)
  lock.running().download_buffers(stats.data());
  return stats;
}

void restore_running_stats(NetworkLock& lock, TrainerState&, const std::vector<float>& stats) {
  lock.running().upload_buffers(stats.data());
}

double gradient_norm(NetworkLock& lock, const TrainerState&) { return lock.running().grad_norm(); }

void adam_update(NetworkLock& lock, TrainerState& state, float grad_scale, const AdamOptions& options) {
  lock.running().adam_step(state.optimizer_step + 1, grad_scale, options);
}

// Adam's moments, (param_floats) each, copied to the host.
void copy_moments(NetworkLock& lock, const TrainerState&, std::vector<float>& m, std::vector<float>& v) {
  const size_t P = size_t(lock.host().layout().param_floats);
  m.resize(P);
  v.resize(P);
  lock.running().download_moments(m.data(), v.data());
}

void set_moments(NetworkLock& lock, TrainerState&, std::vector<float>& m, std::vector<float>& v) {
  lock.running().upload_moments(m.data(), v.data());
}

#else

// The network's handle and, beside it, the Adam state: the handle frees the moments with the network.
struct TrainerState {
  TrainerState(std::unique_ptr<model::Network> network, int64_t bytes)
      : handle(std::move(network), bytes, kClosed, [this] {
          std::vector<float>().swap(m);
          std::vector<float>().swap(v);
        }) {}
  NetworkHandle handle;
  std::vector<float> m, v;  // Adam moments, (param_floats) each; used under the handle's lock
  int64_t optimizer_step = 0;
};

std::shared_ptr<TrainerState> make_state(std::unique_ptr<model::Network> network) {
  const int64_t P = network->layout().param_floats;
  // Parameters, gradients, moments and buffers, reported to V8's garbage collector.
  const int64_t bytes = (4 * P + network->layout().buffer_floats) * int64_t(sizeof(float));
  network->grads();  // allocated now, so that the memory reported is the memory held
  auto state = std::make_shared<TrainerState>(std::move(network), bytes);
  state->m.assign(P, 0.0f);
  state->v.assign(P, 0.0f);
  return state;
}

std::vector<float> copy_running_stats(NetworkLock& lock, const TrainerState&) {
  model::Network& network = lock.running();
  return std::vector<float>(network.buffers(), network.buffers() + network.layout().buffer_floats);
}

void restore_running_stats(NetworkLock& lock, TrainerState&, const std::vector<float>& stats) {
  std::copy(stats.begin(), stats.end(), lock.running().buffers());
}

double gradient_norm(NetworkLock& lock, const TrainerState&) {
  model::Network& network = lock.running();
  return cpu::grad_norm(network.grads(), network.layout().param_floats);
}

void adam_update(NetworkLock& lock, TrainerState& state, float grad_scale, const AdamOptions& options) {
  model::Network& network = lock.running();
  cpu::adam_step(network.params(), state.m.data(), state.v.data(), network.grads(), network.layout().param_floats,
                 state.optimizer_step + 1, grad_scale, options);
}

void copy_moments(NetworkLock&, const TrainerState& state, std::vector<float>& m, std::vector<float>& v) {
  m = state.m;
  v = state.v;
}

void set_moments(NetworkLock&, TrainerState& state, std::vector<float>& m, std::vector<float>& v) {
  state.m.swap(m);
  state.v.swap(v);
}

#endif

// ---- helpers -------------------------------------------------------------------------------------

// "d_model is 32 in the <what> (checkpoint or model) but 256 in this trainer; heads …", or "" when the
// configs agree.
std::string config_differences(const model::Config& file, const model::Config& ours, const char* what) {
  const json::Value a = model::config_to_json(file), b = model::config_to_json(ours);
  std::ostringstream out;
  for (const auto& [key, value] : a.as_object("config")) {
    const json::Value* other = b.find(key);
    const std::string theirs = json::write(value), mine = other ? json::write(*other) : "absent";
    if (theirs == mine) continue;
    if (out.tellp() > 0) out << "; ";
    out << key << " is " << theirs << " in the " << what << " but " << mine << " in this trainer";
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
  explicit NativeTrainer(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<NativeTrainer>(info),
        state_(adopt_state<TrainerState>(info, "NativeTrainer is made by NativeTrainer.create()")) {}

  void Finalize(Napi::Env env) override { state_->handle.withdraw_memory(env); }

 private:
  static Napi::Value Create(const Napi::CallbackInfo& info);
  Napi::Value ConfigJson(const Napi::CallbackInfo& info);
  Napi::Value OptimizerStep(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value Recognize(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  std::shared_ptr<TrainerState> state_;
};

Napi::Value NativeTrainer::Create(const Napi::CallbackInfo& info) { return create<TrainerState>(info, make_state); }

Napi::Value NativeTrainer::ConfigJson(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), json::write(model::config_to_json(state_->handle.config())));
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
  MatmulPrecision precision;  // of forward and backward's matrix products
};

class StepWorker : public PromiseWorker {
 public:
  StepWorker(Napi::Env env, const std::shared_ptr<TrainerState>& state, Napi::Float32Array images,
             Napi::Int32Array targets, int64_t batch, const StepOptions& options)
      : PromiseWorker(env), call_(handle_of(state)), state_(*state), images_(images), targets_(targets), batch_(batch),
        options_(options) {}

 protected:
  void Run() override {
    NetworkLock lock(call_.handle());
    const model::Config& c = call_.handle().config();
    const int64_t pad = c.pad(), T = c.tgt_len();
    for (int64_t i = 0; i < batch_ * T; ++i) tokens_ += targets_.data()[i] != pad;
    // Note [skipped steps leave the state unchanged].
    const std::vector<float> running_stats = copy_running_stats(lock, state_);
    {
      const MatmulPrecisionScope precision(options_.precision);  // the CPU's products; CUDA ignores it
      loss_ = lock.running().forward_backward(images_.data(), targets_.data(), batch_, options_.gamma, options_.alpha,
                                              options_.dropout_seed, &correct_);
    }
    if (std::isfinite(loss_)) grad_norm_ = gradient_norm(lock, state_);
    if (!std::isfinite(loss_) || !std::isfinite(grad_norm_)) {
      restore_running_stats(lock, state_, running_stats);
      skipped_ = true;
      return;
    }
    const float scale = options_.max_norm > 0.0f ? clip_factor(grad_norm_, options_.max_norm) : 1.0f;
    adam_update(lock, state_, scale, options_.adam);
    ++state_.optimizer_step;
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
  TrainerState& state_;  // kept alive by call_
  HeldArray<float> images_;     // (B, 3, in_h, in_w)
  HeldArray<int32_t> targets_;  // (B, tgt_len)
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
    const model::Config& c = state_->handle.config();
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
    options.dropout_seed = uint64_t(read_integer(o.Get("dropoutSeed"), "options.dropoutSeed", 0, kMaxSafeInteger));
    options.adam.lr = float(read_number(o, "lr", 0, 1e3));
    options.adam.beta1 = float(read_number(o, "beta1", 0, 0.999999));
    options.adam.beta2 = float(read_number(o, "beta2", 0, 0.999999));
    options.adam.eps = float(read_number(o, "eps", 1e-30, 1));
    options.adam.weight_decay = float(read_number(o, "weightDecay", 0, 1e3));
    options.adam.decoupled_weight_decay = read_boolean(o.Get("decoupled"), "options.decoupled");
    options.max_norm = float(read_number(o, "maxNorm", 0, 1e9));
    options.precision = read_precision(o.Get("precision"), "options.precision");
    state_->handle.check_open(env);
    return (new StepWorker(env, state_, images, targets, batch, options))->start();
  });
}

Napi::Value NativeTrainer::Recognize(const Napi::CallbackInfo& info) { return recognize(info, handle_of(state_)); }

// ---- save and load -------------------------------------------------------------------------------

// save() with withOptimizer: the checkpoint (see the top of this file).
class CheckpointWorker : public BufferWorker {
 public:
  CheckpointWorker(Napi::Env env, const std::shared_ptr<TrainerState>& state,
                   std::map<std::string, std::string> metadata)
      : BufferWorker(env), call_(handle_of(state)), state_(*state), metadata_(std::move(metadata)) {}

 protected:
  void Run() override {
    NetworkLock lock(call_.handle());
    model::Network& network = lock.synced();
    const model::Layout& layout = network.layout();
    const float* params = network.params();
    const float* buffers = network.buffers();
    std::vector<float> m, v;  // (param_floats) each
    copy_moments(lock, state_, m, v);
    std::vector<TensorView> views;
    for (const model::TensorSpec& spec : layout.params) views.push_back({spec.name, spec.shape, params + spec.offset});
    for (const model::TensorSpec& spec : layout.buffers) views.push_back({spec.name, spec.shape, buffers + spec.offset});
    views.push_back({kMomentName, {layout.param_floats}, m.data()});
    views.push_back({kVelocityName, {layout.param_floats}, v.data()});
    metadata_[kStepKey] = std::to_string(state_.optimizer_step);
    bytes_ = write_safetensors(views, metadata_, DType::F32);
  }

 private:
  PendingCall call_;
  TrainerState& state_;  // kept alive by call_
  std::map<std::string, std::string> metadata_;
};

Napi::Value NativeTrainer::Save(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const DType dtype = read_dtype(info[0]);
    std::map<std::string, std::string> metadata = read_metadata(info[1]);
    const bool with_optimizer = read_boolean(info[2], "withOptimizer");
    if (with_optimizer && dtype != DType::F32)
      throw_range_error(env, "'float32' (a checkpoint keeps the exact state)", "dtype", info[0]);
    state_->handle.check_open(env);
    if (!with_optimizer) return save_network(env, handle_of(state_), dtype, std::move(metadata));
    return (new CheckpointWorker(env, state_, std::move(metadata)))->start();
  });
}

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, const std::shared_ptr<TrainerState>& state, Napi::Uint8Array bytes, std::string source,
             bool with_optimizer)
      : PromiseWorker(env),
        call_(handle_of(state)),
        state_(*state),
        bytes_(bytes),
        source_(std::move(source)),
        with_optimizer_(with_optimizer) {}

 protected:
  void Run() override {
    NetworkLock lock(call_.handle());
    model::Network& network = lock.host();
    SafeTensors file =
        SafeTensors::parse(std::vector<uint8_t>(bytes_.data(), bytes_.data() + bytes_.size()), source_);
    const char* what = with_optimizer_ ? "checkpoint" : "model";
    const std::string differences = config_differences(file_config(file, source_), network.config(), what);
    SAFL_CHECK(differences.empty(), source_, ": the ", what, " is of another configuration (", differences, ")");

    const model::Layout& layout = network.layout();
    std::vector<float> m(layout.param_floats, 0.0f), v(layout.param_floats, 0.0f);
    int64_t step = 0;
    if (with_optimizer_) {
      const auto& metadata = file.metadata();
      const auto step_text = metadata.find(kStepKey);
      SAFL_CHECK(file.find(kMomentName) && file.find(kVelocityName) && step_text != metadata.end(), source_,
                 ": not a training checkpoint (no optimizer state: \"", kMomentName, "\", \"", kVelocityName,
                 "\" and \"", kStepKey, "\")");
      step = json::parse(step_text->second, source_ + ": " + kStepKey)
                 .as_integer(source_ + ": " + kStepKey, 0, kMaxSafeInteger);
      for (const TensorInfo& t : file.tensors()) {
        const bool known = t.name == kMomentName || t.name == kVelocityName ||
                           std::any_of(layout.params.begin(), layout.params.end(),
                                       [&](const model::TensorSpec& p) { return p.name == t.name; }) ||
                           std::any_of(layout.buffers.begin(), layout.buffers.end(),
                                       [&](const model::TensorSpec& b) { return b.name == t.name; });
        SAFL_CHECK(known, source_, ": unexpected tensor '", t.name, "' (not part of this model's layout)");
      }
      file.read(kMomentName, {layout.param_floats}, m.data());
      file.read(kVelocityName, {layout.param_floats}, v.data());
    }
    // The moments first, then the network: Network::load and reload() each leave things as they
    // were when they fail (with CUDA the device network is the trainer's state until reload()
    // replaces it), so a failure leaves the trainer as it was.
    network.load(file, /*allow_extra=*/with_optimizer_);
    lock.reload();
    set_moments(lock, state_, m, v);
    state_.optimizer_step = step;
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  PendingCall call_;
  TrainerState& state_;  // kept alive by call_
  HeldArray<uint8_t> bytes_;
  std::string source_;
  bool with_optimizer_;
};

Napi::Value NativeTrainer::Load(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const Napi::Uint8Array bytes = read_bytes(info[0], "bytes");
    const std::string source = read_string(info[1], "source");
    const bool with_optimizer = read_boolean(info[2], "withOptimizer");
    state_->handle.check_open(info.Env());
    return (new LoadWorker(info.Env(), state_, bytes, source, with_optimizer))->start();
  });
}

Napi::Value NativeTrainer::Close(const Napi::CallbackInfo& info) {
  state_->handle.close(info.Env());
  return info.Env().Undefined();
}

}  // namespace

void register_train_binding(Napi::Env env, Napi::Object exports) {
  export_class(env, exports, "NativeTrainer", NativeTrainer::Define);
}

}  // namespace safl::addon
