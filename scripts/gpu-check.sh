#!/usr/bin/env bash
# The GPU check (npm run test:gpu), for a machine with an NVIDIA GPU and nvcc. In order:
#   1. builds the core, the CUDA kernels, the native tests and benchmarks — and the addons too
#      where Node and node_modules are present (cmake-js configures the same build folder);
#   2. runs the native tests (the CPU-vs-CUDA parity tests run only when a GPU answers);
#   3. with Node: test/device.test.js against the CUDA addon just built (SAFL_CUDA_ADDON);
#   4. the CUDA benchmarks (GEMM, attention, the whole network) and, when PyTorch sees the GPU,
#      scripts/parity/torch_gpu_bench.py on the same configs and batch sizes;
#   5. writes the side-by-side table of the two whole-network benchmarks to $OUT/benchmark.md.
# Node is not needed. Without a GPU the check still builds and runs its CPU-only parts: the GPU
# tests skip and the benchmarks print "no GPU". Results go to ${OUT:-gpu-results}; the exit status
# is non-zero when a test or benchmark failed.
#   bash scripts/gpu-check.sh
# Environment: CUDA_ARCHS (default: the first GPU's compute capability, e.g. 90; 90 without one)
# keeps the build short; JOBS (build parallelism, default nproc); BUILD_DIR (default build-gpu);
# BENCH_SECONDS (timed seconds per benchmark row, default 0.3).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
build=${BUILD_DIR:-build-gpu}
jobs=${JOBS:-$(nproc)}
seconds=${BENCH_SECONDS:-0.3}
mkdir -p "$out"
status=0
started=$SECONDS

# ---- the machine ---------------------------------------------------------------------------------
gpu=no
if nvidia-smi > "$out/nvidia-smi.txt" 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then gpu=yes; fi
archs=${CUDA_ARCHS:-}
if [ -z "$archs" ]; then
  capability=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
  if [[ "$capability" =~ ^[0-9]+$ ]]; then archs=$capability; else archs=90; fi
fi
with_node=no
if command -v node > /dev/null && [ -f node_modules/cmake-js/bin/cmake-js ] && [ -f node_modules/mocha/bin/mocha.js ] &&
   [ -f node_modules/typescript/bin/tsc ]; then
  with_node=yes
fi
echo "gpu-check: GPU $gpu, CUDA architectures $archs, Node tests $with_node, results in $out"

# ---- 1. build ------------------------------------------------------------------------------------
definitions=(-DSAFL_CUDA=ON -DSAFL_BUILD_TESTS=ON "-DCMAKE_CUDA_ARCHITECTURES=$archs")
if [ "$with_node" = yes ]; then
  node node_modules/cmake-js/bin/cmake-js configure --directory . --out "$build" "${definitions[@]/#-D/--CD}" \
    > "$out/configure.log" 2>&1 || { tail -50 "$out/configure.log"; exit 1; }
else
  cmake -S . -B "$build" "${definitions[@]}" > "$out/configure.log" 2>&1 || { tail -50 "$out/configure.log"; exit 1; }
fi
cmake --build "$build" --parallel "$jobs" > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
echo "gpu-check: built in $((SECONDS - started)) s"

# ---- 2. native tests -----------------------------------------------------------------------------
timeout 300 "$build/safl_tests" > "$out/tests.txt" 2>&1 || status=$?
grep -E "^(FAIL|skip)|mismatch|native:" "$out/tests.txt" || true
tail -3 "$out/tests.txt"

# ---- 3. the JS device tests against the CUDA addon -----------------------------------------------
if [ "$with_node" = yes ]; then
  addon=$(find "$build" -name safl_cuda.node -print -quit)
  if [ -z "$addon" ]; then
    echo "gpu-check: no safl_cuda.node in $build"
    status=1
  elif ! node -e "require('node-gyp-build')('.')" > /dev/null 2>&1; then
    echo "gpu-check: device tests skipped: the CPU addon is not built (npm install or npm run build first)"
  else
    node node_modules/typescript/bin/tsc -p tsconfig.json > "$out/tsc.log" 2>&1 || { cat "$out/tsc.log"; status=1; }
    SAFL_CUDA_ADDON="$PWD/$addon" timeout 300 node node_modules/mocha/bin/mocha.js --no-config --timeout 180000 \
      test/device.test.js > "$out/device-tests.txt" 2>&1 || status=$?
    cat "$out/device-tests.txt"
  fi
fi

# ---- 4. benchmarks -------------------------------------------------------------------------------
rm -f "$out/safl-model.jsonl" "$out/torch-model.jsonl"
for bench in "$build"/safl_bench_cuda_*; do
  [ -x "$bench" ] || continue
  name=$(basename "$bench")
  arguments=()
  if [ "$name" = safl_bench_cuda_model ]; then arguments=(--seconds "$seconds" --json "$out/safl-model.jsonl"); fi
  timeout 240 "$bench" ${arguments[@]+"${arguments[@]}"} > "$out/$name.txt" 2>&1 || status=$?
  cat "$out/$name.txt"
done
if [ "$gpu" = yes ] && python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' > /dev/null 2>&1; then
  timeout 240 python3 scripts/parity/torch_gpu_bench.py --seconds "$seconds" --json "$out/torch-model.jsonl" \
    > "$out/torch_gpu_bench.txt" 2>&1 || status=$?
  cat "$out/torch_gpu_bench.txt"
else
  echo "gpu-check: PyTorch benchmark skipped (no GPU, or no PyTorch that sees it)"
fi

# ---- 5. the side-by-side table -------------------------------------------------------------------
if [ -s "$out/safl-model.jsonl" ] && command -v python3 > /dev/null; then
  python3 - "$out" <<'EOF' || status=$?
import json, os, sys

out = sys.argv[1]

def rows(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {(r["config"], r["mode"], r["batch"]): r for r in map(json.loads, filter(str.strip, f))}

safl, torch = rows("safl-model.jsonl"), rows("torch-model.jsonl")
first_torch = next(iter(torch.values()), None)
lines = [
    "# Whole-network throughput: safl CUDA vs PyTorch",
    "",
    f"GPU: {next(iter(safl.values()))['gpu']}. safl: native/bench/bench_cuda_model.cpp (hand-written kernels, "
    "TF32 tensor cores). PyTorch: scripts/parity/torch_gpu_bench.py "
    + (f"(PyTorch {first_torch['torch']}, eager, bf16 autocast)" if first_torch else "(not run)")
    + ". Random weights, EOS suppressed (greedy runs all 26 steps), images copied from the host each "
    "iteration. train = forward + backward + clipping + Adam; greedy = decoding with a key/value cache; "
    "forward = teacher-forced inference.",
    "",
    "| config | mode | batch | safl images/s | PyTorch images/s | safl / PyTorch |",
    "|---|---|---:|---:|---:|---:|",
]
modes = {"train": 0, "greedy": 1, "forward": 2}
configs = {"tiny": 0, "base": 1}
for key in sorted(set(safl) | set(torch), key=lambda k: (configs.get(k[0], 9), modes.get(k[1], 9), k[2])):
    s, t = safl.get(key), torch.get(key)
    ratio = f"{s['img_per_s'] / t['img_per_s']:.2f}" if s and t and t["img_per_s"] > 0 else "—"
    cell = lambda r: f"{r['img_per_s']:.1f}" if r else "—"  # noqa: E731
    lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {cell(s)} | {cell(t)} | {ratio} |")
with open(os.path.join(out, "benchmark.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
else
  echo "gpu-check: no whole-network benchmark rows (or no python3), so no benchmark.md"
fi

echo "gpu-check: done in $((SECONDS - started)) s, status $status"
exit "$status"
