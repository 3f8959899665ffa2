// Trainer: trains a SAFL model on DataSources (lib/data/source.ts). Each step is one native call
// (native/addon/train_binding.cpp): forward, focal-loss backward, gradient clipping and Adam/AdamW.
// This file holds what surrounds it: option checks, the learning-rate schedules, the seeded data
// order, batch assembly (decode with sharp, encode labels), validation, metrics.jsonl, and
// checkpoints that let a resumed run continue the same loss curve.
//
// Note [two-stage pipeline]: while the native step of batch t runs on the core's thread pool, the
// images of batch t+1 are fetched and decoded on libuv's workers. Samples are drawn from the
// sampler before any image is decoded and replacements (for skipped samples) are drawn in a fixed
// order, so the batches do not depend on how fast anything decodes.
//
// Note [deterministic data order]: the samples of each batch come from lib/data/mix.ts's
// MixedSampler (sources mixed by ratio, finite ones shuffled without replacement per epoch), a
// pure function of the seed and a few counters. A checkpoint written after step t stores the
// sampler state from before batch t+1 was drawn (that batch is already being decoded), so a resumed
// run draws batch t+1 again. Samples skipped for their label or image are replaced by further
// draws, in order. Dropout seeds are a hash of the seed and the step.
//
// Note [exact resume]: a checkpoint holds the parameters, batch-norm statistics and Adam moments
// as float32 (bit for bit), the Adam step count, and the sampler state; the native step is
// deterministic for a given thread count and precision (the gradient norm is even independent of
// the thread count). So a run resumed with the same thread count and precision repeats the
// uninterrupted run's losses exactly, and the tests compare them with ===, not with a tolerance:
// any difference means lost state. The precision is stored with the options and may be changed on
// resume (the curve then goes on from the same state, with other rounding).
//
// Note [fine-tuning]: Trainer.create({ init: modelFile }) starts a new run from a model file's
// weights and batch-norm statistics instead of random ones: its configuration and charset come from
// the file (a config or charset given beside it must agree), and everything else is a new run's —
// Adam's moments at zero, step 0, the schedule and its warm-up from the start. The file's own
// training summary is kept as `init` in the new run's, so a model says what it was fine-tuned from.
import { appendFile, mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { DEFAULT_CHARSET, SPECIAL_CLASSES, decodeTokens, validateCharset } from './charset.js';
import { LabelEncoder, type TooLongPolicy, type UnknownCharPolicy } from './data/labels.js';
import { DatasetScore } from './data/metrics.js';
import { MixedSampler, type SamplerState } from './data/mix.js';
import type { DataSource, Sample } from './data/source.js';
import { checkInput, decodeImage, readFileBytes, toTensor } from './image.js';
import { configCharsetProblem, encodeMetadata, readMetadata, readModelFile, writeFileAtomic, type ModelConfig } from './model-file.js';
import { DEVICES, PRECISIONS, addonFor, checkPrecisionOn, loadCpuAddon, loadCudaAddon, type Device, type Precision } from './native.js';
import { describe } from './validate.js';
import * as check from './validate.js';

// ---- public types ------------------------------------------------------------------------------

export type Schedule = 'inverse-sqrt' | 'cosine' | 'constant';
export type LossName = 'focal' | 'cross-entropy';
export type OptimizerName = 'adam' | 'adamw';
/** Labels with characters outside the charset: 'skip' the sample or map them to 'unk'. */
export type { UnknownCharPolicy } from './data/labels.js';
/** Labels longer than the model's max_len: 'skip' the sample or stop with an 'error'. */
export type LongLabelPolicy = TooLongPolicy;

/** The options of a training run (see {@link Trainer.create} for ranges and defaults). */
export interface TrainOptions {
  /** Images per step, 2…4096 (default 64; batch norm needs at least 2). */
  batchSize?: number;
  /** Steps of the whole run, 1…10^9 (default 100000). */
  iterations?: number;
  /** Peak learning rate, > 0 and ≤ 10 (default 0.001). */
  lr?: number;
  /** 'inverse-sqrt' (default: the paper's), 'cosine' or 'constant', each after a linear warm-up. */
  schedule?: Schedule;
  /** Warm-up steps, 0…10^9 (default: 10% of iterations, at most 1000). */
  warmup?: number;
  /** 'focal' (default) or 'cross-entropy'. */
  loss?: LossName;
  /** Focal loss γ, 0…100 (default 2; ignored by cross-entropy). */
  gamma?: number;
  /** Focal loss α, > 0 and ≤ 100 (default 1; ignored by cross-entropy). */
  alpha?: number;
  /** 'adam' (default; weightDecay as an L2 term) or 'adamw' (decoupled weight decay). */
  optimizer?: OptimizerName;
  /** Adam β1 and β2 in [0, 1) (defaults 0.9 and 0.98) and ε > 0 (default 1e-9). */
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Weight decay, 0…1 (default 0). */
  weightDecay?: number;
  /** Global gradient-norm clipping threshold, 0…10^6; 0 turns clipping off (default 5). */
  clip?: number;
  /**
   * Labels with characters outside the charset: 'skip' the sample (default) or map them to UNK.
   * Labels are put in NFC first, and a character whose other case is in the charset takes that
   * case (lib/data/labels.ts, Note [label normalisation]).
   */
  unknownChars?: UnknownCharPolicy;
  /** Labels longer than max_len: 'skip' the sample (default, counted) or 'error' (stop the run). */
  longLabels?: LongLabelPolicy;
  /** Where checkpoint.safetensors, model.safetensors and metrics.jsonl go (default: none written). */
  checkpointDir?: string;
  /** Steps between checkpoints, 1…10^9 (default 1000); one is also written at the end and by stop(). */
  checkpointEvery?: number;
  /** Steps between validations (when a validation source is given), 1…10^9 (default 1000). */
  validateEvery?: number;
  /** Most validation samples per validation, 1…10^9 (default: all of a finite source, 1000 of a generator). */
  validateSamples?: number;
  /** Steps per metrics.jsonl line and per averaged report, 1…10^9 (default 10). */
  logEvery?: number;
  /**
   * Precision of the matrix products of each step's forward and backward on the CPU: 'float32'
   * (default) or 'bfloat16' (mixed precision: the products' operands rounded to bfloat16 and
   * added in float32, on CPUs with AMX or AVX512-BF16; weights, optimizer state, batch norm and the
   * loss stay float32). Elsewhere 'bfloat16' changes nothing. Faster steps, but so
   * far less learnt per step than float32 (README, "Training your own recogniser"). Device 'cuda'
   * takes 'float32' only. May change when a run is resumed.
   */
  precision?: Precision;
  /** Free-form JSON kept in checkpoints and in the model file's training summary. */
  notes?: Record<string, unknown>;
}

/** Options of {@link Trainer.create}. */
export interface TrainerCreateOptions extends TrainOptions {
  /** 'tiny' (default), 'base', or a whole configuration (num_classes may be left out). */
  config?: 'tiny' | 'base' | (Omit<ModelConfig, 'num_classes'> & { num_classes?: number });
  /** The characters the model reads (default: the 94 printable ASCII characters without space). */
  charset?: string | readonly string[];
  /** Seed of the initialisation, the data order and dropout, 0…2^53−1 (default 0). */
  seed?: number;
  /** 'auto' (default: the CPU until the CUDA backend has passed its GPU tests), 'cpu' or 'cuda' (not yet run on a GPU). */
  device?: Device;
  /** Size of the native thread pool, 1…1024 (process-wide; default: the hardware threads). */
  threads?: number;
  /**
   * A model file to fine-tune (Note [fine-tuning]): the run starts from its weights, with its
   * configuration and charset (config and charset, when given too, must agree with the file's).
   */
  init?: string;
}

/** What may change when a run is resumed (everything else comes from the checkpoint). */
export interface TrainerResumeOptions {
  /** A new total number of steps. */
  iterations?: number;
  checkpointDir?: string;
  checkpointEvery?: number;
  validateEvery?: number;
  validateSamples?: number;
  logEvery?: number;
  precision?: Precision;
  device?: Device;
  threads?: number;
  /** The configuration the caller expects: an Error names every difference from the checkpoint's. */
  config?: TrainerCreateOptions['config'];
}

/** A training source and its share of the batches. */
export interface WeightedSource {
  source: DataSource;
  /** Relative share of the samples, > 0 (default 1). */
  ratio?: number;
}

/** What {@link Trainer.train} reads and reports to. */
export interface TrainData {
  /** Training sources, mixed by ratio (at least one). */
  sources: ReadonlyArray<DataSource | WeightedSource>;
  /** A held-out source, read every validateEvery steps. */
  validation?: DataSource;
  /** Called after every step. */
  onStep?: (step: StepReport) => void;
  /** Called after every validation. */
  onValidation?: (report: ValidationReport) => void;
  /** Warnings (skipped steps and samples); default: written to stderr as "safl: warning: …". */
  onWarning?: (message: string) => void;
}

/** One step, as reported to onStep. */
export interface StepReport {
  step: number;
  iterations: number;
  /** The batch's mean loss over its non-padding tokens (NaN or infinite when skipped). */
  loss: number;
  /** Fraction of non-padding target tokens whose teacher-forced argmax is right. */
  tokenAccuracy: number;
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Images per second over the logging window. */
  imagesPerSecond: number;
  /** The step made no update (non-finite loss or gradient). */
  skipped: boolean;
}

/** The result of {@link Trainer.evaluate} and of each validation. */
export interface ValidationReport {
  step: number;
  source: string;
  /** Samples read. */
  samples: number;
  /** Samples whose image could not be read or decoded (counted as wrong, as `safl eval` does). */
  unreadable: number;
  /** Word accuracy by the standard protocol (lower case, only a–z and 0–9 kept, exact match). */
  accuracy: number;
  /**
   * Accuracy with case kept (letters and digits only), or null when the labels do not keep case
   * (lib/data/metrics.ts, Note [which labels keep case]).
   */
  caseSensitiveAccuracy: number | null;
  seconds: number;
}

/** What {@link Trainer.train} resolves with. */
export interface TrainResult {
  /** Steps done in total (including those of the runs this one resumed). */
  steps: number;
  /** stop() ended the run before `iterations`. */
  stopped: boolean;
  /** Mean loss and token accuracy of the last logging window. */
  loss: number;
  tokenAccuracy: number;
  validation?: ValidationReport;
  /** Paths written (undefined without checkpointDir). */
  checkpoint?: string;
  model?: string;
}

// ---- constants ---------------------------------------------------------------------------------

/** The format of checkpoint files (a model file says 'safl-model/1'). */
export const CHECKPOINT_FORMAT = 'safl-checkpoint/1';
/** The run stops with an Error after this many skipped (non-finite) steps in a row. */
export const MAX_CONSECUTIVE_SKIPS = 5;
/** The run stops with an Error after this many unusable samples in a row. */
const MAX_CONSECUTIVE_BAD_SAMPLES = 1000;
/** Warnings shown per kind of skipped sample before they are only counted. */
const WARNINGS_PER_KIND = 5;

const PRESETS = ['tiny', 'base'] as const;
const SCHEDULES = ['inverse-sqrt', 'cosine', 'constant'] as const;
const LOSSES = ['focal', 'cross-entropy'] as const;
const OPTIMIZERS = ['adam', 'adamw'] as const;
const MAX_STEPS = 1e9;
const CLOSED = 'the trainer is closed';

// ---- the native class --------------------------------------------------------------------------

interface NativeStepResult {
  loss: number;
  correct: number;
  tokens: number;
  gradNorm: number;
  skipped: boolean;
}
interface NativeWord {
  tokens: Int32Array;
  probs: Float32Array;
  confidence: number;
}
interface NativeTrainer {
  config(): string;
  optimizerStep(): number;
  step(images: Float32Array, targets: Int32Array, batch: number, options: Record<string, number | boolean | string>): Promise<NativeStepResult>;
  recognize(images: Float32Array, batch: number, beamWidth: number, precision: 'float32'): Promise<NativeWord[]>;
  save(dtype: 'float32' | 'float16', metadata: Record<string, string>, withOptimizer: boolean): Promise<Buffer>;
  load(bytes: Uint8Array, source: string, withOptimizer: boolean): Promise<void>;
  close(): void;
}
interface NativeAddon {
  NativeTrainer: { create(configJson: string, seed: number): Promise<NativeTrainer> };
  NativeModel: { preset(name: 'tiny' | 'base', numClasses: number): string };
}

/**
 * The addon that runs `device`, and the device it runs on ('auto' resolved). Throws "device 'cuda'
 * is not available: <reason>" for 'cuda' without a usable GPU, and refuses bfloat16 products there.
 */
function nativeAddon(device: Device, precision: Precision): { addon: NativeAddon; device: 'cpu' | 'cuda' } {
  const chosen = addonFor(device);
  checkPrecisionOn(chosen.device, precision);
  return { addon: chosen.addon as unknown as NativeAddon, device: chosen.device };
}

function setPoolThreads(threads: number): void {
  loadCpuAddon().setThreads(threads);
  loadCudaAddon()?.setThreads(threads);
}

// ---- options -----------------------------------------------------------------------------------

/** Every option of a run, resolved (stored in checkpoints as "run"). */
export interface ResolvedOptions {
  seed: number;
  batchSize: number;
  iterations: number;
  lr: number;
  schedule: Schedule;
  warmup: number;
  loss: LossName;
  gamma: number;
  alpha: number;
  optimizer: OptimizerName;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  clip: number;
  unknownChars: UnknownCharPolicy;
  longLabels: LongLabelPolicy;
  checkpointDir: string | undefined;
  checkpointEvery: number;
  validateEvery: number;
  validateSamples: number | undefined;
  logEvery: number;
  precision: Precision;
  notes: Record<string, unknown>;
  /** The model file the run was fine-tuned from and its training summary (Note [fine-tuning]). */
  init: InitRecord | null;
}

/** Where a fine-tuned run started (Note [fine-tuning]). */
export interface InitRecord {
  /** The model file, as given. */
  model: string;
  /** Its training summary. */
  training: Record<string, unknown>;
}

const TRAIN_OPTION_KEYS = [
  'batchSize', 'iterations', 'lr', 'schedule', 'warmup', 'loss', 'gamma', 'alpha', 'optimizer', 'beta1', 'beta2',
  'eps', 'weightDecay', 'clip', 'unknownChars', 'longLabels', 'checkpointDir', 'checkpointEvery', 'validateEvery',
  'validateSamples', 'logEvery', 'precision', 'notes',
] as const;
const CREATE_OPTION_KEYS = [...TRAIN_OPTION_KEYS, 'config', 'charset', 'seed', 'device', 'threads', 'init'] as const;
const RESUME_OPTION_KEYS = [
  'iterations', 'checkpointDir', 'checkpointEvery', 'validateEvery', 'validateSamples', 'logEvery', 'precision', 'device', 'threads',
  'config',
] as const;

function checkKeys(raw: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(raw)) {
    if (raw[key] !== undefined && !allowed.includes(key)) {
      throw new TypeError(`Expected one of ${allowed.join(', ')} for the options of ${where} but received '${key}'`);
    }
  }
}

const optional = <T>(value: unknown, fallback: T, read: (v: unknown) => T): T => (value === undefined ? fallback : read(value));

function steps(value: unknown, option: string, min = 1): number {
  return check.integer(value, option, min, MAX_STEPS);
}

function directory(value: unknown, option: string): string {
  if (typeof value !== 'string' || value === '') throw new TypeError(`Expected a directory path for ${option} but received ${describe(value)}`);
  return value;
}

function resolveOptions(raw: Record<string, unknown>, seed: number): ResolvedOptions {
  const iterations = optional(raw.iterations, 100000, (v) => steps(v, 'iterations'));
  const notes = raw.notes === undefined ? {} : check.options(raw.notes, 'notes');
  try {
    JSON.stringify(notes);
  } catch (err) {
    throw new TypeError(`Expected JSON-serialisable data for notes but received ${describe(notes)} (${(err as Error).message})`);
  }
  return {
    seed,
    batchSize: optional(raw.batchSize, 64, (v) => check.integer(v, 'batchSize', 2, 4096)),
    iterations,
    lr: optional(raw.lr, 1e-3, (v) => check.number(v, 'lr', 0, 10, true)),
    schedule: optional(raw.schedule, 'inverse-sqrt' as Schedule, (v) => check.oneOf(v, 'schedule', SCHEDULES)),
    warmup: optional(raw.warmup, Math.min(1000, Math.round(iterations / 10)), (v) => steps(v, 'warmup', 0)),
    loss: optional(raw.loss, 'focal' as LossName, (v) => check.oneOf(v, 'loss', LOSSES)),
    gamma: optional(raw.gamma, 2, (v) => check.number(v, 'gamma', 0, 100)),
    alpha: optional(raw.alpha, 1, (v) => check.number(v, 'alpha', 0, 100, true)),
    optimizer: optional(raw.optimizer, 'adam' as OptimizerName, (v) => check.oneOf(v, 'optimizer', OPTIMIZERS)),
    beta1: optional(raw.beta1, 0.9, (v) => check.number(v, 'beta1', 0, 0.999999)),
    beta2: optional(raw.beta2, 0.98, (v) => check.number(v, 'beta2', 0, 0.999999)),
    eps: optional(raw.eps, 1e-9, (v) => check.number(v, 'eps', 0, 1, true)),
    weightDecay: optional(raw.weightDecay, 0, (v) => check.number(v, 'weightDecay', 0, 1)),
    clip: optional(raw.clip, 5, (v) => check.number(v, 'clip', 0, 1e6)),
    unknownChars: optional(raw.unknownChars, 'skip' as UnknownCharPolicy, (v) => check.oneOf(v, 'unknownChars', ['skip', 'unk'] as const)),
    longLabels: optional(raw.longLabels, 'skip' as LongLabelPolicy, (v) => check.oneOf(v, 'longLabels', ['skip', 'error'] as const)),
    checkpointDir: optional(raw.checkpointDir, undefined as string | undefined, (v) => directory(v, 'checkpointDir')),
    checkpointEvery: optional(raw.checkpointEvery, 1000, (v) => steps(v, 'checkpointEvery')),
    validateEvery: optional(raw.validateEvery, 1000, (v) => steps(v, 'validateEvery')),
    validateSamples: optional(raw.validateSamples, undefined as number | undefined, (v) => steps(v, 'validateSamples')),
    logEvery: optional(raw.logEvery, 10, (v) => steps(v, 'logEvery')),
    precision: optional(raw.precision, 'float32' as Precision, (v) => check.oneOf(v, 'precision', PRECISIONS)),
    notes,
    init: (raw.init as InitRecord | null | undefined) ?? null,
  };
}

/** "d_model is 32 in the <what> but 256 in this run; …" (empty when the configs agree). */
function configDifferences(found: ModelConfig, expected: ModelConfig, what: string): string {
  const keys = [...new Set([...Object.keys(found), ...Object.keys(expected)])];
  return keys
    .filter((k) => JSON.stringify((found as unknown as Record<string, unknown>)[k]) !== JSON.stringify((expected as unknown as Record<string, unknown>)[k]))
    .map((k) => {
      const show = (c: ModelConfig) => JSON.stringify((c as unknown as Record<string, unknown>)[k]) ?? 'absent';
      return `${k} is ${show(found)} in the ${what} but ${show(expected)} in this run`;
    })
    .join('; ');
}

/**
 * The configuration JSON for a preset name or a configuration object; num_classes follows from
 * the charset (and must agree with it when given).
 */
function configJsonFor(addon: NativeAddon, config: unknown, numClasses: number, charsetLength: number): string {
  if (config === undefined || typeof config === 'string') {
    return addon.NativeModel.preset(config === undefined ? 'tiny' : check.oneOf(config, 'config', PRESETS), numClasses);
  }
  const object = check.options(config, 'config');
  if (object.num_classes !== undefined && object.num_classes !== numClasses) {
    throw new RangeError(
      `Expected ${numClasses} (the charset's ${charsetLength} characters + ${SPECIAL_CLASSES}) for config.num_classes but received ${describe(object.num_classes)}`,
    );
  }
  return JSON.stringify({ ...object, num_classes: numClasses });
}

/**
 * Checks that the configuration a caller gave (a preset name or an object) is the one a file holds:
 * Error "<file>: the <what> is of another configuration (<every difference>)" otherwise.
 */
function expectConfig(addon: NativeAddon, given: unknown, charset: readonly string[], found: ModelConfig, file: string, what: string): void {
  const expected = JSON.parse(configJsonFor(addon, given, charset.length + SPECIAL_CLASSES, charset.length)) as ModelConfig;
  expected.dropout = shortestFloat32(expected.dropout);
  const differences = configDifferences(found, expected, what);
  if (differences !== '') throw new Error(`${file}: the ${what} is of another configuration (${differences})`);
}

/**
 * A native trainer of the configuration a file holds, loaded from it (a checkpoint with its
 * optimizer state, or a model file's weights alone). The configuration is the file's, so an error
 * creating the trainer names the file too.
 */
async function loadNativeTrainer(addon: NativeAddon, config: ModelConfig, seed: number, bytes: Uint8Array, file: string, withOptimizer: boolean): Promise<NativeTrainer> {
  let native: NativeTrainer;
  try {
    native = await addon.NativeTrainer.create(JSON.stringify(config), seed);
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    await native.load(bytes, file, withOptimizer);
  } catch (err) {
    native.close();
    throw err;
  }
  return native;
}

/** The shortest decimal that reads back as the same float32 (0.1 stays 0.1; see recognizer.ts). */
function shortestFloat32(x: number): number {
  for (let digits = 1; digits < 9; digits++) {
    const candidate = Number(x.toPrecision(digits));
    if (Math.fround(candidate) === Math.fround(x)) return candidate;
  }
  return x;
}

function parseConfig(json: string): ModelConfig {
  const config = JSON.parse(json) as ModelConfig;
  config.dropout = shortestFloat32(config.dropout);
  return config;
}

// ---- learning-rate schedules -------------------------------------------------------------------

/**
 * The learning rate of step `step` (1-based). Every schedule first rises linearly over `warmup`
 * steps to `lr` (step/warmup · lr), then:
 *  - 'inverse-sqrt': lr · sqrt(warmup / step), the schedule of the paper (and of "Attention is
 *    all you need", whose d_model^-0.5 factor is folded into lr);
 *  - 'cosine': lr · (1 + cos(π · (step − warmup) / (iterations − warmup))) / 2, reaching 0 at
 *    `iterations`;
 *  - 'constant': lr.
 * With warmup 0, 'inverse-sqrt' decays as lr / sqrt(step).
 */
export function learningRate(schedule: Schedule, lr: number, warmup: number, iterations: number, step: number): number {
  if (step <= warmup) return (lr * step) / warmup;
  switch (schedule) {
    case 'inverse-sqrt':
      return lr * Math.sqrt(Math.max(warmup, 1) / step);
    case 'cosine': {
      const span = iterations - warmup;
      const progress = span <= 0 ? 1 : Math.min(1, (step - warmup) / span);
      return (lr * (1 + Math.cos(Math.PI * progress))) / 2;
    }
    case 'constant':
      return lr;
  }
}

// ---- dropout seeds (Note [deterministic data order]) -------------------------------------------

function mix32(h: number, x: number): number {
  h = Math.imul(h ^ x, 0x9e3779b1);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The dropout seed of a step: an integer below 2^53, hashed from the run's seed and the step. */
function dropoutSeed(seed: number, step: number): number {
  let h = 0x5afe5afe;
  for (const part of [seed, step]) {
    h = mix32(h, part >>> 0);
    h = mix32(h, Math.floor(part / 2 ** 32) >>> 0);
  }
  const high = mix32(h, 1);
  const low = mix32(h, 2);
  return (high & 0x1fffff) * 2 ** 32 + low;
}

// ---- labels ------------------------------------------------------------------------------------

type LabelOutcome = { ok: true } | { ok: false; kind: 'unknown' | 'long'; reason: string };

// ---- checkpoints -------------------------------------------------------------------------------

/** The run state a checkpoint stores besides the tensors (metadata key "state"). */
interface CheckpointState {
  step: number;
  sampler: SamplerState | null;
  sources: Array<{ name: string; size: number | null; ratio: number }>;
  run: ResolvedOptions;
  counts: SkipCounts;
  seconds: number;
  started: string;
}

interface SkipCounts {
  skippedSteps: number;
  unknownChars: number;
  longLabels: number;
  badImages: number;
}

interface CheckpointMetadata {
  config: ModelConfig;
  charset: string[];
  state: CheckpointState;
}

/** Reads and checks a checkpoint's metadata (the tensors are checked natively). */
function readCheckpointMetadata(bytes: Uint8Array, source: string): CheckpointMetadata {
  const notCheckpoint = (why: string) => new Error(`${source}: not a safl checkpoint (${why})`);
  if (bytes.length < 8) throw notCheckpoint(`${bytes.length} bytes`);
  const headerSize = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (headerSize > bytes.length - 8) throw notCheckpoint('its header size is larger than the file: a wrong header or a truncated file');
  let metadata: Record<string, unknown>;
  try {
    const header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, headerSize).toString('utf8')) as Record<string, unknown>;
    metadata = (header.__metadata__ ?? {}) as Record<string, unknown>;
  } catch (err) {
    throw notCheckpoint(`its header is not JSON: ${(err as Error).message}`);
  }
  if (metadata.format !== CHECKPOINT_FORMAT) {
    throw notCheckpoint(
      metadata.format === undefined ? 'its metadata names no format' : `its format is ${describe(metadata.format)}, not '${CHECKPOINT_FORMAT}'`,
    );
  }
  try {
    const config = JSON.parse(metadata.config as string) as ModelConfig;
    const charset = validateCharset(JSON.parse(metadata.charset as string), 'charset');
    const problem = configCharsetProblem(config, charset);
    if (problem !== undefined) throw new Error(problem);
    const state = JSON.parse(metadata.state as string) as CheckpointState;
    if (typeof state.step !== 'number' || typeof state.run !== 'object') throw new Error('"state" lacks step or run');
    return { config, charset, state };
  } catch (err) {
    throw new Error(`${source}: invalid checkpoint metadata: ${(err as Error).message}`, { cause: err });
  }
}

// ---- batches -----------------------------------------------------------------------------------

interface Batch {
  images: Float32Array;
  targets: Int32Array;
  count: number;
}

/** A batch being prepared, and the sampler state from before it was drawn. */
interface PendingBatch {
  stateBefore: SamplerState;
  batch: Promise<Batch>;
}

const constructing = Symbol('Trainer');

/**
 * Trains a SAFL model.
 *
 * @example
 * ```ts
 * import { Trainer } from 'safl';
 * const trainer = await Trainer.create({ config: 'tiny', iterations: 50000, batchSize: 64, checkpointDir: 'run' });
 * process.on('SIGINT', () => trainer.stop());
 * const result = await trainer.train({ sources: [{ source: mySource, ratio: 1 }], validation: heldOut });
 * await trainer.close();
 * // later: (await Trainer.resume('run/checkpoint.safetensors')).train({ sources: [...] })
 * ```
 */
export class Trainer {
  /** The network's configuration. */
  readonly config: Readonly<ModelConfig>;
  /** The characters the model reads; class i is charset[i]. */
  readonly charset: readonly string[];
  /** Where the network runs. */
  readonly device: 'cpu' | 'cuda';
  /** The run's options, resolved (defaults filled in). */
  readonly options: Readonly<ResolvedOptions>;

  #native: NativeTrainer;
  #labels: LabelEncoder;
  #step: number;
  #samplerState: SamplerState | undefined;
  #sourcesRecord: CheckpointState['sources'];
  #counts: SkipCounts;
  #seconds: number;
  #started: string;
  #stopRequested = false;
  #training: Promise<TrainResult> | undefined;
  #closed = false;
  #warned = { unknown: 0, long: 0, image: 0 };

  private constructor(
    token: symbol,
    native: NativeTrainer,
    device: 'cpu' | 'cuda',
    charset: string[],
    options: ResolvedOptions,
    restored?: CheckpointState,
  ) {
    if (token !== constructing) throw new TypeError('Trainer is made by Trainer.create() or Trainer.resume()');
    this.#native = native;
    this.config = Object.freeze(parseConfig(native.config()));
    this.charset = Object.freeze(charset);
    this.device = device;
    this.options = Object.freeze(options);
    this.#labels = new LabelEncoder({ charset, maxLength: this.config.max_len, unknown: options.unknownChars, tooLong: options.longLabels });
    this.#step = restored?.step ?? 0;
    this.#samplerState = restored?.sampler ?? undefined;
    this.#sourcesRecord = restored?.sources ?? [];
    this.#counts = restored?.counts ?? { skippedSteps: 0, unknownChars: 0, longLabels: 0, badImages: 0 };
    this.#seconds = restored?.seconds ?? 0;
    this.#started = restored?.started ?? new Date().toISOString();
  }

  /** Steps done so far (including those before a resume). */
  get step(): number {
    return this.#step;
  }

  /**
   * A new model (random weights, deterministic in `seed`, or with `init` a model file's) and the
   * options of its training run.
   * @param options - config ('tiny' default, 'base' or an object), charset, seed (0…2^53−1,
   *   default 0), device, threads, and the {@link TrainOptions}: batchSize (2…4096, default 64),
   *   iterations (default 100000), lr (peak, default 1e-3), schedule ('inverse-sqrt' default,
   *   'cosine', 'constant'), warmup (default min(1000, iterations/10)), loss ('focal' default or
   *   'cross-entropy'), gamma (default 2), alpha (default 1), optimizer ('adam' default or
   *   'adamw'), beta1/beta2/eps (0.9, 0.98, 1e-9), weightDecay (0), clip (5; 0 = off),
   *   unknownChars ('skip' | 'unk'), longLabels ('skip' | 'error'), checkpointDir,
   *   checkpointEvery (1000), validateEvery (1000), validateSamples, logEvery (10), precision
   *   ('float32' default or 'bfloat16'), notes; init, a model file to fine-tune (Note
   *   [fine-tuning]: the run starts from its weights, configuration and charset).
   * @throws TypeError / RangeError "Expected <what> for <option> but received <value>" for a bad
   *   option or an unknown option name; Error naming the configuration field at fault; Error for
   *   device 'cuda' (as {@link Recognizer.load}), also with precision 'bfloat16'; for init, the
   *   errors of {@link Recognizer.load} for a bad model file, and Error "<file>: the model reads
   *   another charset …" or "<file>: the model is of another configuration (…)" when charset or
   *   config disagree with it.
   */
  static async create(options?: TrainerCreateOptions): Promise<Trainer> {
    const raw = check.options(options, 'options');
    checkKeys(raw, CREATE_OPTION_KEYS, 'Trainer.create');
    const device = optional(raw.device, 'auto' as Device, (v) => check.oneOf(v, 'device', DEVICES));
    const threads = optional(raw.threads, undefined as number | undefined, (v) => check.integer(v, 'threads', 1, 1024));
    const initFile = optional(raw.init, undefined as string | undefined, (v) => check.filePath(v, 'init'));
    let charset = raw.charset === undefined ? [...DEFAULT_CHARSET] : validateCharset(raw.charset, 'charset');
    const seed = optional(raw.seed, 0, (v) => check.integer(v, 'seed', 0, Number.MAX_SAFE_INTEGER));
    const resolved = resolveOptions({ ...raw, init: null }, seed); // every option checked before any file is read
    // Note [fine-tuning]: the model file's bytes, config and charset.
    let init: { file: string; bytes: Uint8Array; config: ModelConfig; training: Record<string, unknown> } | undefined;
    if (initFile !== undefined) {
      const bytes = await readModelFile(initFile);
      const model = readMetadata(bytes, initFile);
      if (raw.charset !== undefined && JSON.stringify(charset) !== JSON.stringify(model.charset)) {
        throw new Error(
          `${initFile}: the model reads another charset (${model.charset.length} characters: ${describe(model.charset.join(''))}) than the charset option (${charset.length}: ${describe(charset.join(''))})`,
        );
      }
      charset = model.charset;
      init = { file: initFile, bytes, config: model.config, training: model.training };
      resolved.init = { model: initFile, training: model.training };
    }
    const { addon, device: runsOn } = nativeAddon(device, resolved.precision);
    let native: NativeTrainer;
    if (init === undefined) {
      native = await addon.NativeTrainer.create(configJsonFor(addon, raw.config, charset.length + SPECIAL_CLASSES, charset.length), seed);
    } else {
      if (raw.config !== undefined) expectConfig(addon, raw.config, charset, init.config, init.file, 'model');
      native = await loadNativeTrainer(addon, init.config, seed, init.bytes, init.file, false);
    }
    if (threads !== undefined) setPoolThreads(threads);
    return new Trainer(constructing, native, runsOn, charset, resolved);
  }

  /**
   * Continues a run from its checkpoint: weights, batch-norm statistics, Adam moments, step,
   * data order and every option. A run resumed with the same data and thread count repeats the
   * uninterrupted run's losses exactly (Note [exact resume]).
   * @param checkpoint - a checkpoint file, or a directory holding checkpoint.safetensors.
   * @param options - what may change: iterations, checkpointDir (default: the checkpoint's
   *   directory), checkpointEvery, validateEvery, validateSamples, logEvery, precision, device,
   *   threads; and config, an expectation: an Error names every field where the checkpoint
   *   differs.
   * @throws Error "<file>: no such file", "<file>: not a safl checkpoint (…)", "<file>: the
   *   checkpoint is of another configuration (<field> is <a> in the checkpoint but <b> in this
   *   run; …)"; TypeError / RangeError for a bad option.
   */
  static async resume(checkpoint: string, options?: TrainerResumeOptions): Promise<Trainer> {
    if (typeof checkpoint !== 'string' || checkpoint === '') {
      throw new TypeError(`Expected a checkpoint path for checkpoint but received ${describe(checkpoint)}`);
    }
    const raw = check.options(options, 'options');
    checkKeys(raw, RESUME_OPTION_KEYS, 'Trainer.resume');
    const device = optional(raw.device, 'auto' as Device, (v) => check.oneOf(v, 'device', DEVICES));
    const threads = optional(raw.threads, undefined as number | undefined, (v) => check.integer(v, 'threads', 1, 1024));
    const file = await checkpointFile(checkpoint);
    const bytes = await readFileBytes(file);
    const { config, charset, state } = readCheckpointMetadata(bytes, file);
    const overrides = withoutUndefined(raw, ['config', 'device', 'threads']);
    const run = resolveOptions({ ...state.run, checkpointDir: path.dirname(file), ...overrides }, state.run.seed);
    const { addon, device: runsOn } = nativeAddon(device, run.precision);
    if (raw.config !== undefined) expectConfig(addon, raw.config, charset, config, file, 'checkpoint');
    const native = await loadNativeTrainer(addon, config, 0, bytes, file, true);
    if (threads !== undefined) setPoolThreads(threads);
    const trainer = new Trainer(constructing, native, runsOn, charset, run, state);
    if (run.checkpointDir !== undefined) await trainer.#trimMetrics(run.checkpointDir);
    return trainer;
  }

  /**
   * Trains until `iterations` steps are done or {@link Trainer.stop} is called. When
   * checkpointDir is set, writes there metrics.jsonl (a line every logEvery steps and one per
   * validation), checkpoint.safetensors (every checkpointEvery steps, at the end and when stopped)
   * and, beside each checkpoint, model.safetensors (weights and the training summary, readable by
   * {@link Recognizer.load}). Every file is written atomically.
   * @throws TypeError / RangeError for bad data arguments; Error "data source '<name>' is empty";
   *   Error when the loss is not finite in {@link MAX_CONSECUTIVE_SKIPS} steps in a row; Error
   *   when a label is too long and longLabels is 'error'; Error when 1000 samples in a row cannot be
   *   used; errors of the sources themselves.
   */
  train(data: TrainData): Promise<TrainResult> {
    if (this.#closed) return Promise.reject(new Error(CLOSED));
    if (this.#training !== undefined) return Promise.reject(new Error('the trainer is already training'));
    const training = this.#train(data);
    this.#training = training;
    const forget = () => {
      this.#training = undefined;
    };
    training.then(forget, forget);
    return training;
  }

  async #train(data: TrainData): Promise<TrainResult> {
    const { sources, ratios, validation, onStep, onValidation, warn } = this.#checkData(data);
    const o = this.options;
    const record = sources.map((s, i) => ({ name: s.name, size: s.size === Infinity ? null : s.size, ratio: ratios[i] }));
    const sampler = new MixedSampler(sources.map((s, i) => ({ size: s.size, ratio: ratios[i] })), o.seed);
    if (this.#samplerState !== undefined) {
      try {
        sampler.restore(this.#samplerState);
      } catch (err) {
        const before = this.#sourcesRecord.map((s) => `${s.name} (${s.size ?? 'endless'}, ratio ${s.ratio})`).join(', ');
        const now = record.map((s) => `${s.name} (${s.size ?? 'endless'}, ratio ${s.ratio})`).join(', ');
        throw new Error(`the run was trained on other data sources: ${before}; train() was given ${now}`, { cause: err });
      }
    }
    this.#sourcesRecord = record;
    const metricsFile = o.checkpointDir === undefined ? undefined : path.join(o.checkpointDir, 'metrics.jsonl');
    if (o.checkpointDir !== undefined) await mkdir(o.checkpointDir, { recursive: true });

    let pending: PendingBatch | undefined;
    const prepare = (): PendingBatch => {
      const next = { stateBefore: sampler.state(), batch: this.#drawBatch(sampler, sources, warn) };
      next.batch.catch(() => undefined); // awaited later; an abandoned one must not be unhandled
      return next;
    };
    const window = { steps: 0, loss: 0, correct: 0, tokens: 0, images: 0, skipped: 0, start: Date.now() };
    let last = { loss: NaN, tokenAccuracy: NaN };
    let lastValidation: ValidationReport | undefined;
    let consecutiveSkips = 0;
    let runStart = Date.now();
    const elapsed = () => this.#seconds + (Date.now() - runStart) / 1000;
    try {
      if (this.#step < o.iterations) pending = prepare();
      while (pending !== undefined && !this.#stopRequested) {
        const batch = await pending.batch;
        const step = this.#step + 1;
        pending = step < o.iterations ? prepare() : undefined; // Note [two-stage pipeline]
        const lr = learningRate(o.schedule, o.lr, o.warmup, o.iterations, step);
        const result = await this.#native.step(batch.images, batch.targets, batch.count, this.#stepOptions(lr, step));
        this.#step = step;
        this.#samplerState = pending?.stateBefore ?? sampler.state();
        if (result.skipped) {
          consecutiveSkips++;
          this.#counts.skippedSteps++;
          window.skipped++;
          warn(`step ${step}: the ${Number.isFinite(result.loss) ? 'gradient norm' : 'loss'} is ${Number.isFinite(result.loss) ? result.gradNorm : result.loss}; the step is skipped`);
          if (consecutiveSkips >= MAX_CONSECUTIVE_SKIPS) {
            throw new Error(
              `training stopped: the loss or gradient was not finite in ${MAX_CONSECUTIVE_SKIPS} steps in a row (steps ${step - MAX_CONSECUTIVE_SKIPS + 1}–${step}); try a lower lr or a longer warmup`,
            );
          }
        } else {
          consecutiveSkips = 0;
          window.loss += result.loss;
          window.correct += result.correct;
          window.tokens += result.tokens;
        }
        window.steps++;
        window.images += batch.count;
        const seconds = Math.max((Date.now() - window.start) / 1000, 1e-6);
        const report: StepReport = {
          step,
          iterations: o.iterations,
          loss: result.loss,
          tokenAccuracy: result.tokens > 0 ? result.correct / result.tokens : 0,
          lr,
          gradNorm: result.gradNorm,
          imagesPerSecond: window.images / seconds,
          skipped: result.skipped,
        };
        onStep?.(report);
        if (step % o.logEvery === 0 || step === o.iterations || this.#stopRequested) {
          const counted = window.steps - window.skipped;
          last = { loss: counted > 0 ? window.loss / counted : NaN, tokenAccuracy: window.tokens > 0 ? window.correct / window.tokens : 0 };
          if (metricsFile !== undefined) {
            await appendLine(metricsFile, {
              type: 'train', step, loss: last.loss, tokenAccuracy: last.tokenAccuracy, lr, gradNorm: result.gradNorm,
              imagesPerSecond: report.imagesPerSecond, skipped: window.skipped, seconds: Math.round(elapsed() * 1000) / 1000,
            });
          }
          Object.assign(window, { steps: 0, loss: 0, correct: 0, tokens: 0, images: 0, skipped: 0, start: Date.now() });
        }
        if (validation !== undefined && (step % o.validateEvery === 0 || step === o.iterations)) {
          lastValidation = await this.evaluate(validation, { samples: o.validateSamples });
          onValidation?.(lastValidation);
          if (metricsFile !== undefined) await appendLine(metricsFile, { type: 'validation', ...lastValidation });
          window.start = Date.now(); // validation time is not training throughput
        }
        if (o.checkpointDir !== undefined && step % o.checkpointEvery === 0 && step < o.iterations && !this.#stopRequested) {
          this.#seconds = elapsed();
          runStart = Date.now();
          await this.saveCheckpoint();
          await this.saveModel(path.join(o.checkpointDir, 'model.safetensors'), { metrics: { ...last, validation: lastValidation } });
        }
      }
    } finally {
      this.#stopRequested = false;
      this.#seconds = elapsed();
      runStart = Date.now();
    }
    const result: TrainResult = { steps: this.#step, stopped: this.#step < o.iterations, ...last, validation: lastValidation };
    if (o.checkpointDir !== undefined) {
      result.checkpoint = await this.saveCheckpoint();
      result.model = path.join(o.checkpointDir, 'model.safetensors');
      await this.saveModel(result.model, { metrics: { ...last, validation: lastValidation } });
    }
    return result;
  }

  /**
   * Ends {@link Trainer.train} after the current step (it then writes its checkpoint and model).
   * Called before train(), it makes the next train() stop before its first step.
   */
  stop(): void {
    this.#stopRequested = true;
  }

  /**
   * Reads a labelled source with the model in inference mode (greedy decoding) and scores it.
   * @param source - a DataSource; its first `samples` samples are read (default: all of a
   *   finite source, 1000 of an infinite one).
   */
  async evaluate(source: DataSource, options?: { samples?: number }): Promise<ValidationReport> {
    if (this.#closed) throw new Error(CLOSED);
    checkSource(source, 'source');
    const raw = check.options(options, 'options');
    const limit = raw.samples === undefined ? undefined : steps(raw.samples, 'samples');
    const total = Math.min(limit ?? (source.size === Infinity ? 1000 : source.size), source.size);
    if (total === 0) throw new Error(`validation source '${source.name}' is empty`);
    const started = Date.now();
    const { in_h: height, in_w: width } = this.config;
    const size = 3 * height * width;
    const batchSize = this.options.batchSize;
    const score = new DatasetScore();
    // One batch decodes while the previous one is recognised.
    const load = async (begin: number) => {
      const count = Math.min(batchSize, total - begin);
      const samples = await Promise.all(Array.from({ length: count }, (_, i) => source.get(begin + i)));
      const decoded = await Promise.all(
        samples.map((sample) => decodeImage(checkInput(sample.image, sample.origin), height, width).catch(() => undefined)),
      );
      const readable = samples.filter((_, i) => decoded[i] !== undefined);
      const images = new Float32Array(readable.length * size);
      decoded.filter((p) => p !== undefined).forEach((pixels, i) => toTensor(pixels, images, i * size, height, width));
      return { readable, images, unreadable: samples.filter((_, i) => decoded[i] === undefined) };
    };
    let unreadable = 0;
    let next: ReturnType<typeof load> | undefined = load(0);
    for (let begin = 0; next !== undefined; begin += batchSize) {
      const batch: Awaited<ReturnType<typeof load>> = await next;
      next = begin + batchSize < total ? load(begin + batchSize) : undefined;
      next?.catch(() => undefined);
      for (const sample of batch.unreadable) score.add(sample.label, null);
      unreadable += batch.unreadable.length;
      if (batch.readable.length === 0) continue;
      const words = await this.#native.recognize(batch.images, batch.readable.length, 1, 'float32');
      words.forEach((word, i) => score.add(batch.readable[i].label, decodeTokens(word.tokens, word.probs, this.charset).text));
    }
    const caseSensitive = score.caseSensitive;
    return {
      step: this.#step,
      source: source.name,
      samples: score.images,
      unreadable,
      accuracy: score.images > 0 ? score.correct / score.images : 0,
      caseSensitiveAccuracy: caseSensitive === null ? null : caseSensitive.correct / caseSensitive.images,
      seconds: (Date.now() - started) / 1000,
    };
  }

  /**
   * Writes the whole training state (weights, batch-norm statistics, Adam moments, step, data
   * order, options) atomically.
   * @param file - default: <checkpointDir>/checkpoint.safetensors.
   * @returns the path written.
   */
  async saveCheckpoint(file?: string): Promise<string> {
    if (this.#closed) throw new Error(CLOSED);
    const target = file ?? (this.options.checkpointDir === undefined ? undefined : path.join(this.options.checkpointDir, 'checkpoint.safetensors'));
    if (typeof target !== 'string' || target === '') throw new TypeError(`Expected a path for file but received ${describe(file)}`);
    const state: CheckpointState = {
      step: this.#step,
      sampler: this.#samplerState ?? null,
      sources: this.#sourcesRecord,
      run: this.options,
      counts: this.#counts,
      seconds: this.#seconds,
      started: this.#started,
    };
    const metadata = {
      format: CHECKPOINT_FORMAT,
      config: JSON.stringify(this.config),
      charset: JSON.stringify(this.charset),
      training: JSON.stringify(this.trainingSummary()),
      state: JSON.stringify(state),
    };
    const bytes = await this.#native.save('float32', metadata, true);
    await writeFileAtomic(target, bytes);
    return target;
  }

  /**
   * Writes the model (weights and batch-norm statistics, no optimizer state) as a model file that
   * {@link Recognizer.load} reads, with the training summary in its metadata.
   */
  async saveModel(file: string, options?: { dtype?: 'float32' | 'float16'; metrics?: Record<string, unknown> }): Promise<void> {
    if (this.#closed) throw new Error(CLOSED);
    if (typeof file !== 'string' || file === '') throw new TypeError(`Expected a path for file but received ${describe(file)}`);
    const raw = check.options(options, 'options');
    const dtype = raw.dtype === undefined ? 'float32' : check.oneOf(raw.dtype, 'dtype', ['float32', 'float16'] as const);
    const metrics = raw.metrics === undefined ? {} : check.options(raw.metrics, 'metrics');
    const bytes = await this.#native.save(dtype, encodeMetadata(this.config, this.charset, this.trainingSummary(metrics)), false);
    await writeFileAtomic(file, bytes);
  }

  /**
   * The summary stored in model files: loss (and γ, α for focal loss), optimizer, learning-rate
   * schedule, steps, batch size, seed, precision of the products, data sources, skipped steps and samples, time, notes, and
   * `metrics` (the latest loss, token accuracy and validation) when given.
   */
  trainingSummary(metrics: Record<string, unknown> = {}): Record<string, unknown> {
    const o = this.options;
    return {
      loss: o.loss,
      ...(o.loss === 'focal' ? { gamma: o.gamma, alpha: o.alpha } : {}),
      optimizer: { name: o.optimizer, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weightDecay, clip: o.clip },
      lr: { peak: o.lr, schedule: o.schedule, warmup: o.warmup },
      steps: this.#step,
      iterations: o.iterations,
      batchSize: o.batchSize,
      seed: o.seed,
      precision: o.precision,
      sources: this.#sourcesRecord,
      skipped: this.#counts,
      started: this.#started,
      seconds: Math.round(this.#seconds),
      ...(Object.keys(o.notes).length > 0 ? { notes: o.notes } : {}),
      ...(o.init === null ? {} : { init: o.init }),
      ...(Object.keys(metrics).length > 0 ? { metrics } : {}),
    };
  }

  /**
   * Frees the native memory. A run in progress is stopped first (as by {@link Trainer.stop}, so it
   * writes its checkpoint) and awaited; its errors are left to train()'s caller. Calling close()
   * again does nothing.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#training !== undefined) {
      this.stop();
      await this.#training.catch(() => undefined);
    }
    this.#closed = true;
    this.#native.close();
  }

  // ---- internals ---------------------------------------------------------------------------------

  #checkData(data: TrainData) {
    const raw = check.options(data, 'data');
    if (!Array.isArray(raw.sources) || raw.sources.length === 0) {
      throw new TypeError(`Expected a non-empty array of data sources for sources but received ${describe(raw.sources)}`);
    }
    const sources: DataSource[] = [];
    const ratios: number[] = [];
    (raw.sources as unknown[]).forEach((entry, i) => {
      const weighted = typeof entry === 'object' && entry !== null && 'source' in entry;
      const source = (weighted ? (entry as WeightedSource).source : entry) as DataSource;
      checkSource(source, `sources[${i}]`);
      ratios.push(weighted && (entry as WeightedSource).ratio !== undefined ? check.number((entry as WeightedSource).ratio, `sources[${i}].ratio`, 0, 1e9, true) : 1);
      sources.push(source);
    });
    if (raw.validation !== undefined) checkSource(raw.validation, 'validation');
    for (const key of ['onStep', 'onValidation', 'onWarning'] as const) {
      if (raw[key] !== undefined && typeof raw[key] !== 'function') throw new TypeError(`Expected a function for ${key} but received ${describe(raw[key])}`);
    }
    sources.forEach((s) => {
      if (s.size === 0) throw new Error(`data source '${s.name}' is empty`);
    });
    if (raw.validation !== undefined && (raw.validation as DataSource).size === 0) {
      throw new Error(`validation source '${(raw.validation as DataSource).name}' is empty`);
    }
    const onWarning = (raw.onWarning as TrainData['onWarning']) ?? ((message: string) => process.stderr.write(`safl: warning: ${message}\n`));
    return {
      sources,
      ratios,
      validation: raw.validation as DataSource | undefined,
      onStep: raw.onStep as TrainData['onStep'],
      onValidation: raw.onValidation as TrainData['onValidation'],
      warn: onWarning,
    };
  }

  #stepOptions(lr: number, step: number): Record<string, number | boolean | string> {
    const o = this.options;
    const focal = o.loss === 'focal';
    return {
      gamma: focal ? o.gamma : 0,
      alpha: focal ? o.alpha : 1,
      dropoutSeed: dropoutSeed(o.seed, step),
      lr,
      beta1: o.beta1,
      beta2: o.beta2,
      eps: o.eps,
      weightDecay: o.weightDecay,
      decoupled: o.optimizer === 'adamw',
      maxNorm: o.clip,
      precision: o.precision,
    };
  }

  /**
   * Encodes a label into `targets` (T entries): its classes, EOS, then PAD; or says why the sample
   * is skipped. Throws under longLabels 'error'.
   */
  #encodeLabel(label: string, origin: string, targets: Int32Array): LabelOutcome {
    const before = this.#labels.skipped;
    const ids = this.#labels.encode(label, origin);
    if (ids === null) {
      return this.#labels.skipped.tooLong > before.tooLong
        ? { ok: false, kind: 'long', reason: `the label ${describe(label)} is longer than max_len ${this.config.max_len}` }
        : { ok: false, kind: 'unknown', reason: `the label ${describe(label)} has characters outside the charset` };
    }
    const eos = this.charset.length;
    targets.set(ids);
    targets[ids.length] = eos;
    targets.fill(eos + 1, ids.length + 1); // PAD
    return { ok: true };
  }

  /** Draws, fetches, checks and decodes one batch (Note [two-stage pipeline]). */
  async #drawBatch(sampler: MixedSampler, sources: readonly DataSource[], warn: (message: string) => void): Promise<Batch> {
    const B = this.options.batchSize;
    const { in_h: height, in_w: width } = this.config;
    const size = 3 * height * width;
    const T = this.config.max_len + 1;
    const images = new Float32Array(B * size);
    const targets = new Int32Array(B * T);
    let filled = 0;
    let badInARow = 0;
    while (filled < B) {
      const slots = sampler.nextBatch(B - filled);
      const outcomes = await Promise.all(
        slots.map(async ({ source, index }) => {
          const sample: Sample = await sources[source].get(index);
          const encoded = new Int32Array(T);
          const label = this.#encodeLabel(sample.label, sample.origin, encoded);
          if (!label.ok) return { sample, encoded, problem: label };
          try {
            const pixels = await decodeImage(checkInput(sample.image, sample.origin), height, width);
            return { sample, encoded, pixels };
          } catch (err) {
            return { sample, encoded, problem: { ok: false as const, kind: 'image' as const, reason: (err as Error).message } };
          }
        }),
      );
      for (const outcome of outcomes) {
        if ('pixels' in outcome && outcome.pixels !== undefined) {
          toTensor(outcome.pixels, images, filled * size, height, width);
          targets.set(outcome.encoded, filled * T);
          filled++;
          badInARow = 0;
          continue;
        }
        const problem = outcome.problem as { kind: 'unknown' | 'long' | 'image'; reason: string };
        // decodeImage's errors already name the sample.
        const message = problem.kind === 'image' ? problem.reason : `${outcome.sample.origin}: ${problem.reason}`;
        this.#countSkip(problem.kind, message, warn);
        if (++badInARow >= MAX_CONSECUTIVE_BAD_SAMPLES) {
          throw new Error(`${MAX_CONSECUTIVE_BAD_SAMPLES} samples in a row could not be used (the last: ${message})`);
        }
      }
    }
    return { images, targets, count: B };
  }

  #countSkip(kind: 'unknown' | 'long' | 'image', message: string, warn: (message: string) => void): void {
    const key = kind === 'unknown' ? 'unknownChars' : kind === 'long' ? 'longLabels' : 'badImages';
    this.#counts[key]++;
    const shown = ++this.#warned[kind];
    if (shown <= WARNINGS_PER_KIND) {
      warn(`${message}; the sample is skipped${shown === WARNINGS_PER_KIND ? ' (further samples skipped for this reason are only counted)' : ''}`);
    }
  }

  /** Drops the metrics lines of steps after the checkpoint (written by a run that then died). */
  async #trimMetrics(dir: string): Promise<void> {
    const file = path.join(dir, 'metrics.jsonl');
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) return;
    const lines = text.split('\n').filter((line) => line !== '');
    const kept = lines.filter((line) => {
      try {
        return (JSON.parse(line) as { step?: number }).step! <= this.#step;
      } catch {
        return false;
      }
    });
    if (kept.length !== lines.length) await writeFileAtomic(file, Buffer.from(kept.map((l) => `${l}\n`).join('')));
  }
}

function checkSource(source: unknown, option: string): asserts source is DataSource {
  const s = source as DataSource;
  if (typeof source !== 'object' || source === null || typeof s.get !== 'function' || typeof s.name !== 'string') {
    throw new TypeError(`Expected a data source { name, size, get(index) } for ${option} but received ${describe(source)}`);
  }
  if (typeof s.size !== 'number' || !(Number.isInteger(s.size) || s.size === Infinity) || s.size < 0) {
    throw new TypeError(`Expected a size that is an integer >= 0 or Infinity for ${option}.size but received ${describe(s.size)}`);
  }
}

function withoutUndefined(raw: Record<string, unknown>, drop: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(raw).filter(([k, v]) => v !== undefined && !drop.includes(k)));
}

/** A checkpoint path: the file itself, or checkpoint.safetensors in a directory. */
async function checkpointFile(given: string): Promise<string> {
  const stats = await stat(given).catch(() => undefined);
  return stats?.isDirectory() ? path.join(given, 'checkpoint.safetensors') : given;
}

async function appendLine(file: string, record: Record<string, unknown>): Promise<void> {
  await appendFile(file, `${JSON.stringify(record)}\n`);
}
