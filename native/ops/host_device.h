// SAFL_HOST_DEVICE marks inline per-element math that both backends share (bilinear weights, TPS
// kernel, focal term): __host__ __device__ under nvcc, nothing under a plain C++ compiler.
#pragma once
#ifdef __CUDACC__
#define SAFL_HOST_DEVICE __host__ __device__ inline
#else
#define SAFL_HOST_DEVICE inline
#endif
