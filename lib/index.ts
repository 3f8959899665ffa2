// safl's public API: Recognizer reads the text in word images; Trainer trains (or fine-tunes) the
// model; info() and setThreads() describe and size the native core.
import { type BFloat16Unit, cudaUnavailableReason, loadCpuAddon, loadCudaAddon, type SimdLevel } from './native.js';
import * as check from './validate.js';

export type { BFloat16Unit, Device, Precision, SimdLevel } from './native.js';
export { Recognizer, defaultModelPath } from './recognizer.js';
export type { CreateOptions, RecognitionResult, RecognizerOptions, SaveOptions } from './recognizer.js';
export type { ImageInput, RawImage } from './image.js';
export { MAX_PIXELS, MAX_VIEWS } from './image.js';
export type { RecognizedChar } from './charset.js';
export { DEFAULT_CHARSET } from './charset.js';
export type { ModelConfig, ModelMetadata } from './model-file.js';
export { MODEL_FORMAT } from './model-file.js';

/** What this installation of safl can run on. */
export interface Info {
  /** Package version. */
  version: string;
  /** Devices that work here: always 'cpu', plus 'cuda' when the CUDA addon loads and a GPU answers. */
  devices: Array<'cpu' | 'cuda'>;
  /** Why 'cuda' is not in `devices` (empty when it is). */
  cudaUnavailableReason: string;
  /** The CPU kernels' SIMD path now, and the best this CPU supports. */
  simd: SimdLevel;
  simdSupported: SimdLevel;
  /**
   * Whether `precision: 'bfloat16'` makes the CPU's matrix products bfloat16 here (the 'avx512'
   * SIMD path on a CPU with AMX or AVX512-BF16); elsewhere they stay float32.
   */
  bfloat16Matmul: boolean;
  /**
   * What multiplies them: 'amx' (the tile unit of Intel Xeon 4th generation and later),
   * 'avx512-bf16' (the VDPBF16PS instruction: AMD Zen 4 and later, Intel Cooper Lake), or null
   * where `bfloat16Matmul` is false.
   */
  bfloat16Unit: BFloat16Unit | null;
  /** Threads of the native pool, and the machine's hardware threads. */
  threads: number;
  hardwareThreads: number;
}

const { version } = require('../package.json') as { version: string };

/**
 * Describes the native core: devices, SIMD path, threads.
 * @example
 * ```ts
 * import { info } from 'safl';
 * console.log(info().devices); // [ 'cpu' ]
 * ```
 */
export function info(): Info {
  const cpu = loadCpuAddon().info();
  const reason = cudaUnavailableReason();
  return {
    version,
    devices: reason === '' ? ['cpu', 'cuda'] : ['cpu'],
    cudaUnavailableReason: reason,
    simd: cpu.simd,
    simdSupported: cpu.simdSupported,
    bfloat16Matmul: cpu.bfloat16Matmul,
    bfloat16Unit: cpu.bfloat16Unit,
    threads: cpu.threads,
    hardwareThreads: cpu.hardwareThreads,
  };
}

/**
 * Sets the size of the native thread pool that runs the CPU kernels (default: the number of
 * hardware threads). One pool serves every recogniser and trainer in the process.
 * @param threads - an integer from 1 to 1024.
 * @throws TypeError when `threads` is not an integer; RangeError when it is outside 1…1024.
 */
export function setThreads(threads: number): void {
  const n = check.integer(threads, 'threads', 1, 1024);
  loadCpuAddon().setThreads(n);
  loadCudaAddon()?.setThreads(n);
}

export { Trainer, learningRate, CHECKPOINT_FORMAT, MAX_CONSECUTIVE_SKIPS } from './trainer.js';
export type {
  TrainOptions,
  TrainerCreateOptions,
  TrainerResumeOptions,
  InitRecord,
  TrainData,
  WeightedSource,
  StepReport,
  ValidationReport,
  TrainResult,
  Schedule,
  LossName,
  OptimizerName,
  UnknownCharPolicy,
  LongLabelPolicy,
} from './trainer.js';
export { openSource, parseSourceSpec } from './data/index.js';
export { FolderSource } from './data/folder.js';
export { LmdbSource, LmdbWriter, writeLmdb } from './data/lmdb.js';
export { MixedSource, MixedSampler } from './data/mix.js';
export { LabelEncoder } from './data/labels.js';
export type { DataSource, Sample } from './data/source.js';
export { createSynthSource, renderSample } from './synth/index.js';
