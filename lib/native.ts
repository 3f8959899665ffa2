// Loading the native addons. The CPU addon comes through node-gyp-build (prebuilds/ or build/);
// node-gyp-build knows nothing of CUDA, so the CUDA addon is loaded by explicit path, and only
// when asked for ('cuda') or allowed ('auto'). A missing driver or GPU never crashes the process:
// 'auto' falls back to the CPU quietly, 'cuda' throws an Error that says why. The environment
// variable SAFL_CUDA_ADDON names another CUDA addon file to load instead (scripts/gpu-check.sh
// tests the one it builds this way).
import { existsSync } from 'node:fs';
import path from 'node:path';
import nodeGypBuild from 'node-gyp-build';

/** Where a network runs: 'auto' picks (recognizer.ts and trainer.ts say how). */
export const DEVICES = ['auto', 'cpu', 'cuda'] as const;
export type Device = (typeof DEVICES)[number];
export type SimdLevel = 'generic' | 'avx2' | 'avx512';
/** What multiplies bfloat16 products on the CPU (common/matmul_precision.h). */
export type BFloat16Unit = 'amx' | 'avx512-bf16';

export interface CudaInfo {
  built: boolean;
  available: boolean;
  reason?: string;
  devices?: number;
  name?: string;
}

/** The precisions of the CPU's matrix products (RecognizerOptions.precision, TrainOptions.precision). */
export const PRECISIONS = ['float32', 'bfloat16'] as const;
export type Precision = (typeof PRECISIONS)[number];

/** Throws for a precision the device cannot run: the CUDA kernels multiply in float32 only. */
export function checkPrecisionOn(device: 'cpu' | 'cuda', precision: Precision): void {
  if (device === 'cuda' && precision !== 'float32') {
    throw new Error(`device 'cuda' multiplies in float32 only: precision '${precision}' needs device 'cpu'`);
  }
}

export interface AddonInfo {
  backends: Array<'cpu' | 'cuda'>;
  cuda: CudaInfo;
  simd: SimdLevel;
  simdSupported: SimdLevel;
  bfloat16Matmul: boolean;
  bfloat16Unit: BFloat16Unit | null;
  threads: number;
  hardwareThreads: number;
}

/** The functions every addon build exports (native/addon/addon.cpp). */
export interface Addon {
  info(): AddonInfo;
  setThreads(threads: number): void;
  setSimd(level: SimdLevel): void;
  gemm(a: Float32Array, b: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean): Promise<Float32Array>;
}

export const packageRoot = path.join(__dirname, '..');

let cpuAddon: Addon | undefined;
let cudaAddon: Addon | null | undefined; // null: looked for and not loadable
let cudaLoadError = '';

export function loadCpuAddon(): Addon {
  cpuAddon ??= nodeGypBuild(packageRoot) as Addon;
  return cpuAddon;
}

function cudaAddonPaths(): string[] {
  const override = process.env.SAFL_CUDA_ADDON;
  if (override !== undefined && override !== '') return [path.resolve(override)];
  const platform = `${process.platform}-${process.arch}`;
  return [
    path.join(packageRoot, 'build', 'Release', 'safl_cuda.node'),
    path.join(packageRoot, 'prebuilds', platform, 'safl_cuda.node'),
  ];
}

/** The CUDA addon, or null with the reason in cudaUnavailableReason(). */
export function loadCudaAddon(): Addon | null {
  if (cudaAddon !== undefined) return cudaAddon;
  const file = cudaAddonPaths().find((p) => existsSync(p));
  if (file === undefined) {
    const override = process.env.SAFL_CUDA_ADDON;
    cudaLoadError =
      override !== undefined && override !== ''
        ? `SAFL_CUDA_ADDON names ${path.resolve(override)}, which does not exist`
        : 'no CUDA addon was built (it is built when nvcc is present at install time)';
    cudaAddon = null;
    return null;
  }
  try {
    cudaAddon = require(file) as Addon;
  } catch (err) {
    cudaLoadError = `the CUDA addon ${file} did not load: ${(err as Error).message}`;
    cudaAddon = null;
  }
  return cudaAddon;
}

export function cudaUnavailableReason(): string {
  const addon = loadCudaAddon();
  if (addon === null) return cudaLoadError;
  const { cuda } = addon.info();
  return cuda.available ? '' : `no usable GPU: ${cuda.reason ?? 'unknown reason'}`;
}

// Note [auto stays on the CPU]: the CUDA network (native/cuda/network*.cu) has not yet run on a
// GPU: its parity tests against the CPU have never passed. Until they have, 'auto' runs on the
// CPU everywhere, so that nobody gets answers from unverified kernels without asking for them;
// 'cuda' runs on the GPU for whoever asks. (Once the GPU check passes, 'auto' is to pick the GPU
// when one answers, except with a beam wider than 1, which only the CPU decodes: Recognizer's
// nativeModelClass then has to send 'auto' with a beam to the CPU.)

/** The addon for a device: 'auto' is the CPU (Note [auto stays on the CPU]). */
export function addonFor(device: Device): { addon: Addon; device: 'cpu' | 'cuda' } {
  if (device !== 'cuda') return { addon: loadCpuAddon(), device: 'cpu' };
  const reason = cudaUnavailableReason();
  if (reason !== '') throw new Error(`device 'cuda' is not available: ${reason}`);
  return { addon: loadCudaAddon() as Addon, device: 'cuda' };
}
