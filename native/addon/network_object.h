// What the JavaScript classes around a model::Network share: NativeModel (model_binding.cpp) and
// NativeTrainer (train_binding.cpp). Each class's state holds a NetworkHandle — the network with
// its lock, the count of pending calls that lets close() free it, and the memory reported to V8 —
// beside what only that class keeps. Here too: the plumbing of the static factories, the
// recognize() method, the worker behind save(), and the argument readers both classes use.
//
// Note [one call at a time]: a Network runs one call at a time. Every worker takes the handle's
// mutex on its worker thread (NetworkLock), never on the event loop; the TypeScript layer keeps one
// call in flight per object anyway, so the lock is uncontended in practice.
//
// Note [closing while a call runs]: close() must neither block the event loop nor free the network
// under a call. Calls are counted on the main thread (PendingCall), when their worker is made and
// when it is destroyed (after its promise settles); close() frees the network at once when no call
// is pending, else the last pending call frees it. Calls made after close() throw the handle's
// closed message ("the recognizer is closed"); calls made before it finish normally.
//
// Note [the network that runs]: the CPU addon (safl.node) runs the model::Network itself. The
// CUDA addon (safl_cuda.node, built with SAFL_WITH_CUDA) runs a model::CudaNetwork made from it
// when the handle is made; the host Network stays as the copy that files are read into and
// written from. The device is the truth while training, so whatever reads the host's parameters
// or buffers takes NetworkLock::synced(), which downloads them first. The memory reported to V8
// is the host memory the state holds; device memory is not V8's to manage.
#pragma once
#include <napi.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "addon/napi_util.h"
#include "addon/promise_worker.h"
#include "common/matmul_precision.h"
#include "model/config.h"
#include "model/network.h"
#include "model/safetensors.h"
#ifdef SAFL_WITH_CUDA
#include "model/network_cuda.h"
#endif

namespace safl::addon {

// The network that runs the calls (Note [the network that runs]).
#ifdef SAFL_WITH_CUDA
using RunningNetwork = model::CudaNetwork;
#else
using RunningNetwork = model::Network;
#endif

constexpr int64_t kMaxBatch = 4096;
constexpr int64_t kMaxSafeInteger = (int64_t(1) << 53) - 1;  // Number.MAX_SAFE_INTEGER

// ---- the handle ----------------------------------------------------------------------------------

class NetworkHandle {
 public:
  // bytes: the memory the class's state holds, reported to V8's garbage collector while the object
  // is open. closed_message: the Error calls throw after close(). release_extras: frees what the
  // state keeps beside the network (the trainer's Adam moments), called when the network is freed.
  // With CUDA, copies the network to the device (on the caller's thread: a factory's worker),
  // throwing safl::Error when no device answers or its memory runs out.
  NetworkHandle(std::unique_ptr<model::Network> network, int64_t bytes, std::string closed_message,
                std::function<void()> release_extras = nullptr);
  NetworkHandle(const NetworkHandle&) = delete;
  NetworkHandle& operator=(const NetworkHandle&) = delete;

  const model::Config& config() const { return config_; }

  // Main thread only.
  void report_memory(Napi::Env env);    // when the JS object is made
  void withdraw_memory(Napi::Env env);  // when it is closed or collected
  void check_open(Napi::Env env) const;
  void close(Napi::Env env);  // Note [closing while a call runs]

 private:
  friend class PendingCall;
  friend class NetworkLock;

  void release();

  const model::Config config_;
  const int64_t bytes_;
  const std::string closed_message_;
  const std::function<void()> release_extras_;
  std::mutex mutex_;  // Note [one call at a time]
  std::unique_ptr<model::Network> network_;
#ifdef SAFL_WITH_CUDA
  std::unique_ptr<model::CudaNetwork> device_;  // made from network_ (Note [the network that runs])
#endif
  // Main thread only (Note [closing while a call runs]).
  bool closed_ = false;
  int pending_calls_ = 0;
  bool memory_reported_ = false;
};

// The handle in a class's state (a struct with a `handle` member), sharing the state's ownership:
// whoever holds it keeps the whole state alive.
template <class State>
std::shared_ptr<NetworkHandle> handle_of(const std::shared_ptr<State>& state) {
  return std::shared_ptr<NetworkHandle>(state, &state->handle);
}

// Counts one call for as long as its worker lives (made and destroyed on the main thread).
class PendingCall {
 public:
  explicit PendingCall(std::shared_ptr<NetworkHandle> handle);
  ~PendingCall();
  PendingCall(const PendingCall&) = delete;
  PendingCall& operator=(const PendingCall&) = delete;
  NetworkHandle& handle() { return *handle_; }

 private:
  std::shared_ptr<NetworkHandle> handle_;
};

// The network, locked for one call on a worker thread (Note [one call at a time]).
class NetworkLock {
 public:
  explicit NetworkLock(NetworkHandle& handle) : handle_(handle), lock_(handle.mutex_) {}
  // The network that runs calls: the host Network on the CPU, the CudaNetwork with CUDA.
  RunningNetwork& running();
  // The host Network with the running network's parameters and buffers (Note [the network that
  // runs]): what saving reads.
  model::Network& synced();
  // The host Network as it is, for writing into: a file is loaded into it, then reload() makes
  // the running network from it.
  model::Network& host() { return *handle_.network_; }
  // Makes the running network from the host Network again, after a load into host(). With CUDA a
  // new device network is made before the old one is freed: when that fails, the old one runs on.
  void reload();

 private:
  NetworkHandle& handle_;
  std::lock_guard<std::mutex> lock_;
};

// ---- the classes and their factories -------------------------------------------------------------

// Defines a class with define(env, constructor) and exports it as `name`. The constructor reference
// lives as long as the environment: it is the data of the class's static factory methods, whose
// workers need it to wrap the objects they make.
void export_class(Napi::Env env, Napi::Object exports, const char* name,
                  Napi::Function (*define)(Napi::Env, Napi::FunctionReference*));

// For a class's constructor: the state its factory's worker passes in an External, with the state's
// memory now reported to V8. Called any other way, the constructor throws TypeError `how_made`.
template <class State>
std::shared_ptr<State> adopt_state(const Napi::CallbackInfo& info, const char* how_made) {
  if (info.Length() != 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), how_made);
  std::shared_ptr<State> state = *info[0].As<Napi::External<std::shared_ptr<State>>>().Data();
  state->handle.report_memory(info.Env());
  return state;
}

// A static factory's worker: makes the class's state off the event loop, then resolves with a new
// object of the class around it.
template <class State>
class FactoryWorker : public PromiseWorker {
 public:
  // info: the factory's call; its data is the class's constructor (export_class).
  explicit FactoryWorker(const Napi::CallbackInfo& info)
      : PromiseWorker(info.Env()), constructor_(static_cast<Napi::FunctionReference*>(info.Data())) {}

 protected:
  virtual std::shared_ptr<State> make() = 0;  // on the worker thread

 private:
  void Run() final { state_ = make(); }
  Napi::Value Result(Napi::Env env) final {
    return constructor_->New({Napi::External<std::shared_ptr<State>>::New(env, &state_)});
  }

  Napi::FunctionReference* constructor_;
  std::shared_ptr<State> state_;
};

// The arguments of create(configJson, seed), checked.
struct CreateArguments {
  model::Config config;
  uint64_t seed;
};
CreateArguments read_create_arguments(const Napi::CallbackInfo& info);

// A network of the config with random weights drawn from the seed.
std::unique_ptr<model::Network> random_network(const CreateArguments& arguments);

template <class State>
using MakeState = std::shared_ptr<State> (*)(std::unique_ptr<model::Network>);

template <class State>
class CreateWorker : public FactoryWorker<State> {
 public:
  CreateWorker(const Napi::CallbackInfo& info, CreateArguments arguments, MakeState<State> make_state)
      : FactoryWorker<State>(info), arguments_(std::move(arguments)), make_state_(make_state) {}

 protected:
  std::shared_ptr<State> make() override { return make_state_(random_network(arguments_)); }

 private:
  CreateArguments arguments_;
  MakeState<State> make_state_;
};

// The static method create(configJson, seed) → Promise<object>: a random network, which make_state
// turns into the class's state on the worker thread.
template <class State>
Napi::Value create(const Napi::CallbackInfo& info, MakeState<State> make_state) {
  return guarded(info, [&]() -> Napi::Value {
    CreateArguments arguments = read_create_arguments(info);
    return (new CreateWorker<State>(info, std::move(arguments), make_state))->start();
  });
}

// ---- methods and workers -------------------------------------------------------------------------

// The method recognize(images, B, beamWidth) → Promise<Array<{ tokens, probs, confidence, alternatives }>>.
Napi::Value recognize(const Napi::CallbackInfo& info, std::shared_ptr<NetworkHandle> handle);

// A worker that resolves with the bytes its Run() writes, as a Buffer.
class BufferWorker : public PromiseWorker {
 public:
  using PromiseWorker::PromiseWorker;

 protected:
  std::vector<uint8_t> bytes_;

 private:
  Napi::Value Result(Napi::Env env) final { return Napi::Buffer<uint8_t>::Copy(env, bytes_.data(), bytes_.size()); }
};

// Starts saving the network (its parameters and buffers in dtype, with the metadata) as a
// safetensors file → Promise<Buffer>.
Napi::Value save_network(Napi::Env env, std::shared_ptr<NetworkHandle> handle, DType dtype,
                         std::map<std::string, std::string> metadata);

// A typed array argument, referenced until the worker holding it is destroyed, so that the worker
// thread may read its data.
template <class T>
class HeldArray {
 public:
  explicit HeldArray(Napi::TypedArrayOf<T> array)
      : ref_(Napi::Persistent(array)), data_(array.Data()), size_(array.ElementLength()) {}
  const T* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  Napi::Reference<Napi::TypedArrayOf<T>> ref_;
  const T* data_;
  size_t size_;
};

// ---- argument readers ----------------------------------------------------------------------------

// save()'s dtype: 'float32' or 'float16' (RangeError otherwise).
DType read_dtype(const Napi::Value& value);
// A precision of the matrix products: 'float32' or 'bfloat16' (RangeError otherwise, naming `option`).
MatmulPrecision read_precision(const Napi::Value& value, const char* option);
// save()'s metadata: an object of strings (TypeError otherwise).
std::map<std::string, std::string> read_metadata(const Napi::Value& value);
// A Buffer or Uint8Array (TypeError otherwise).
Napi::Uint8Array read_bytes(const Napi::Value& value, const char* option);

// The config that a model file's metadata holds under "config"; errors name the file by `source`.
model::Config file_config(const SafeTensors& file, const std::string& source);

}  // namespace safl::addon
