// CUDA error handling and device buffers shared by the kernels, the addon and the tests.
// Every runtime call and kernel launch is checked; a failure throws safl::Error naming the call
// and file:line (never exit/abort). Host-compilable: included by .cu and by plain C++ files that
// link the CUDA runtime (tests, the CUDA addon).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "common/error.h"

#define SAFL_CUDA_CHECK(call)                                                                  \
  do {                                                                                         \
    const cudaError_t safl_status_ = (call);                                                   \
    if (safl_status_ != cudaSuccess)                                                           \
      ::safl::detail::fail(::safl::ErrorKind::Generic, "CUDA error at ", __FILE__, ":", __LINE__, \
                           ": ", #call, ": ", cudaGetErrorString(safl_status_));               \
  } while (0)

// After a <<<...>>> launch: configuration errors surface here, with the launching file:line.
#define SAFL_CUDA_CHECK_LAUNCH() SAFL_CUDA_CHECK(cudaGetLastError())

namespace safl::cuda {

// Threads per block for 1-D elementwise kernels, and the grid that covers n elements.
constexpr int kBlock1D = 256;
inline unsigned grid_1d(size_t n) { return static_cast<unsigned>((n + kBlock1D - 1) / kBlock1D); }

// An owned device array of T (float unless said otherwise); moves, never copies.
template <class T = float>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n) SAFL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), n * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host.data()); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), n_(other.n_) { other.ptr_ = nullptr; other.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(ptr_, other.ptr_);
    std::swap(n_, other.n_);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return n_; }
  void upload(const T* host) { if (n_) SAFL_CUDA_CHECK(cudaMemcpy(ptr_, host, n_ * sizeof(T), cudaMemcpyHostToDevice)); }
  void download(T* host) const { if (n_) SAFL_CUDA_CHECK(cudaMemcpy(host, ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost)); }
  std::vector<T> to_host() const {
    std::vector<T> host(n_);
    download(host.data());
    return host;
  }
  void zero() { if (n_) SAFL_CUDA_CHECK(cudaMemset(ptr_, 0, n_ * sizeof(T))); }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

}  // namespace safl::cuda
