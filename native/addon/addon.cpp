// The N-API module: what the TypeScript layer (lib/native.ts) calls. Every export validates its
// arguments (TypeError/RangeError in the package's message form) and maps C++ errors to JS ones.
// Heavy work runs in PromiseWorkers; nothing here blocks the event loop for long.
#include <napi.h>

#include <vector>

#include "addon/model_binding.h"
#include "addon/napi_util.h"
#include "addon/promise_worker.h"
#include "addon/train_binding.h"
#include "common/cpu_features.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"
#include "ops/gemm.h"

#ifdef SAFL_WITH_CUDA
#include <cuda_runtime.h>

#include <string>

#include "model/network_cuda.h"
#endif

namespace safl::addon {
namespace {

#ifdef SAFL_WITH_CUDA
// Note [kernels need sm_80]: the kernels use TF32 tensor cores and cp.async, and the build holds
// machine code for sm_80 and sm_90 plus sm_90 PTX (CMakeLists.txt): a GPU older than compute
// capability 8.0 answers but cannot run them, so info() reports it unavailable and 'auto' stays
// on the CPU instead of failing at the first kernel launch.
constexpr int kMinComputeMajor = 8;

// Whether the first GPU can run the network; when not, *reason says why.
bool cuda_usable(std::string* reason, cudaDeviceProp* prop) {
  if (!model::cuda_device_available(reason)) return false;
  const cudaError_t status = cudaGetDeviceProperties(prop, 0);
  if (status != cudaSuccess) {
    *reason = cudaGetErrorString(status);
    return false;
  }
  if (prop->major < kMinComputeMajor) {
    *reason = std::string(prop->name) + " has compute capability " + std::to_string(prop->major) + "." +
              std::to_string(prop->minor) + "; safl's CUDA kernels need 8.0 or newer";
    return false;
  }
  return true;
}
#endif

// info(): what this build is and what the machine offers.
Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  Napi::Array backends = Napi::Array::New(env);
  backends.Set(uint32_t(0), "cpu");
  Napi::Object cuda = Napi::Object::New(env);
#ifdef SAFL_WITH_CUDA
  cuda.Set("built", true);
  std::string reason;
  cudaDeviceProp prop{};
  int devices = 0;
  if (cuda_usable(&reason, &prop) && cudaGetDeviceCount(&devices) == cudaSuccess) {
    backends.Set(uint32_t(1), "cuda");
    cuda.Set("available", true);
    cuda.Set("devices", devices);
    cuda.Set("name", prop.name);
  } else {
    cuda.Set("available", false);
    cuda.Set("reason", reason.empty() ? "no GPU found" : reason);
  }
#else
  cuda.Set("built", false);
  cuda.Set("available", false);
  cuda.Set("reason", "this addon was built without CUDA");
#endif
  out.Set("backends", backends);
  out.Set("cuda", cuda);
  out.Set("simd", simd_level_name(simd_level()));
  out.Set("simdSupported", simd_level_name(simd_level_supported()));
  out.Set("bfloat16Matmul", bfloat16_matmul_available());
  const std::string unit = bfloat16_matmul_unit();
  out.Set("bfloat16Unit", unit.empty() ? env.Null() : Napi::String::New(env, unit));
  out.Set("threads", num_threads());
  out.Set("hardwareThreads", hardware_threads());
  return out;
}

// setThreads(n): resize the core's thread pool.
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    set_num_threads(static_cast<int>(read_integer(info[0], "threads", 1, 1024)));
    return info.Env().Undefined();
  });
}

// setSimd(level): lower (or restore) the SIMD path, for tests and benchmarks.
Napi::Value SetSimd(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    const std::string name = read_string(info[0], "simd");
    SimdLevel level;
    if (name == "generic") level = SimdLevel::Generic;
    else if (name == "avx2") level = SimdLevel::Avx2;
    else if (name == "avx512") level = SimdLevel::Avx512;
    else throw_range_error(info.Env(), "'generic', 'avx2' or 'avx512'", "simd", info[0]);
    set_simd_level(level);
    return info.Env().Undefined();
  });
}

// gemm(a, b, m, n, k, transA, transB) → Promise<Float32Array>: C (m, n) = op(A) · op(B) on the
// thread pool, off the event loop. The inputs stay referenced until the worker is done.
class GemmWorker : public PromiseWorker {
 public:
  GemmWorker(Napi::Env env, Napi::Float32Array a, Napi::Float32Array b, int64_t m, int64_t n, int64_t k,
             bool trans_a, bool trans_b)
      : PromiseWorker(env), m_(m), n_(n), k_(k), trans_a_(trans_a), trans_b_(trans_b) {
    a_ = Napi::Persistent(a);
    b_ = Napi::Persistent(b);
    c_ = Napi::Persistent(Napi::Float32Array::New(env, size_t(m * n)));
    a_data_ = a.Data();
    b_data_ = b.Data();
    c_data_ = c_.Value().Data();
  }

 protected:
  void Run() override {
    cpu::sgemm(c_data_, n_, a_data_, trans_a_ ? m_ : k_, trans_a_, b_data_, trans_b_ ? k_ : n_, trans_b_, m_, n_, k_,
               1.0f, 0.0f);
  }
  Napi::Value Result(Napi::Env) override { return c_.Value(); }

 private:
  int64_t m_, n_, k_;
  bool trans_a_, trans_b_;
  Napi::Reference<Napi::Float32Array> a_, b_, c_;
  const float* a_data_;
  const float* b_data_;
  float* c_data_;
};

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    constexpr int64_t kMaxDim = int64_t(1) << 24;
    const int64_t m = read_integer(info[2], "m", 0, kMaxDim);
    const int64_t n = read_integer(info[3], "n", 0, kMaxDim);
    const int64_t k = read_integer(info[4], "k", 0, kMaxDim);
    const bool trans_a = read_boolean(info[5], "transA");
    const bool trans_b = read_boolean(info[6], "transB");
    auto a = read_float32(info[0], "a", size_t(m * k));
    auto b = read_float32(info[1], "b", size_t(k * n));
    return (new GemmWorker(info.Env(), a, b, m, n, k, trans_a, trans_b))->start();
  });
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("setSimd", Napi::Function::New(env, SetSimd, "setSimd"));
  exports.Set("gemm", Napi::Function::New(env, Gemm, "gemm"));
  register_model_binding(env, exports);
  register_train_binding(env, exports);
  return exports;
}

}  // namespace safl::addon

static Napi::Object InitSafl(Napi::Env env, Napi::Object exports) { return safl::addon::Init(env, exports); }
NODE_API_MODULE(SAFL_ADDON_NAME, InitSafl)
