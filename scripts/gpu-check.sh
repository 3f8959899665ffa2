#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and nvcc (Node is not needed): builds the core,
# the CUDA kernels and the native tests with plain CMake, runs every test (the CPU-vs-CUDA parity
# tests run only when a GPU answers) and the CUDA benchmarks. Results go to ${OUT:-gpu-results}.
#   bash scripts/gpu-check.sh            (npm run test:gpu does the same)
# CUDA_ARCHS (default "90") picks the architectures to compile for, to keep the build short.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
cmake -S . -B build-gpu -DSAFL_CUDA=ON -DSAFL_BUILD_TESTS=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-90}" > "$out/configure.log" 2>&1
cmake --build build-gpu --parallel "$(nproc)" > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
status=0
build-gpu/safl_tests > "$out/tests.txt" 2>&1 || status=$?
grep -E "^(FAIL|skip)|mismatch|native:" "$out/tests.txt" || true
for bench in build-gpu/safl_bench_cuda_*; do
  [ -x "$bench" ] || continue
  "$bench" > "$out/$(basename "$bench").txt" 2>&1 || status=$?
  cat "$out/$(basename "$bench").txt"
done
exit "$status"
