// Recognizer: reads the text in word images with a SAFL model. It loads a model file (or makes an
// untrained model), decodes images with sharp (lib/image.ts), and runs the network in the native
// addon (native/addon/model_binding.cpp) off the event loop.
//
// Note [batching pipeline]: every input becomes a job. Jobs are decoded as they arrive (at most
// two batches' worth at a time, so a long queue does not hold thousands of decoded images) and
// wait in `ready`; the network runs on up to batchSize ready images at a time (batchSize / views
// with views, Note [views] in image.ts), one native call in flight per model. While a batch runs
// natively, the next images decode on libuv's workers: a two-stage pipeline. A batch starts when a
// batch's worth of images is ready or when nothing more is being decoded, so concurrent calls from
// many callers merge into full batches, and a lone call does not wait for company. Each job
// settles its own promise: one bad image fails only its own input. With one native call in
// flight, one batch tensor per recognizer serves every batch (grown to the largest batch so far):
// a service that runs for days allocates it once or twice instead of some megabytes per batch,
// which glibc's malloc would otherwise scatter across its heap.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_CHARSET, SPECIAL_CLASSES, decodeTokens, validateCharset, type RecognizedChar } from './charset.js';
import { MAX_VIEWS, checkInput, decodeViews, toTensor, type CheckedInput, type ImageInput } from './image.js';
import { encodeMetadata, readMetadata, readModelFile, writeFileAtomic, type ModelConfig } from './model-file.js';
import { DEFAULT_DICTIONARY_WEIGHT, WordSet, chooseReading, englishWords } from './dictionary.js';
import { DEVICES, PRECISIONS, addonFor, checkPrecisionOn, loadCpuAddon, loadCudaAddon, packageRoot, type Device, type Precision } from './native.js';
import { describe } from './validate.js';
import * as check from './validate.js';

/** One recognised word. */
export interface RecognitionResult {
  /** The word: `chars` joined. */
  text: string;
  /** The word's confidence in [0, 1]: the product of its characters' probabilities and of the end-of-word's. */
  confidence: number;
  /** Each character with its probability. */
  chars: RecognizedChar[];
}

/** Options of {@link Recognizer.load} and {@link Recognizer.create}. */
export interface RecognizerOptions {
  /**
   * Where the network runs: 'cpu', 'cuda', or 'auto' (default). 'auto' is the CPU until the CUDA
   * backend has passed its GPU tests (it has not run on a GPU yet). 'cuda' without a usable GPU
   * throws (see {@link Recognizer.load}); the GPU decodes greedily only, so 'cuda' with a
   * beamWidth over 1 throws too.
   */
  device?: Device;
  /**
   * Size of the native thread pool, 1…1024 (default: the hardware threads). The pool is shared by
   * the whole process, so this sets it for every recogniser.
   */
  threads?: number;
  /**
   * Most images per native call, 1…1024 (default 32); with `views` N, the images of one call
   * have at most batchSize views in all (batchSize / N images, at least one), so the network's
   * memory stays that of batchSize images.
   */
  batchSize?: number;
  /** Beam width of the decoder, 1…64; 1 (the default) is greedy decoding. */
  beamWidth?: number;
  /**
   * Views of each image, 1…8 (default 1): with more, each image is also read with margins of
   * repeated edge pixels added around it, and the most confident reading is kept (README,
   * "Views"). Each view is one more pass through the network, so N views take about N times
   * as long.
   */
  views?: number;
  /**
   * Precision of the network's matrix products on the CPU: 'float32' (default) or 'bfloat16'.
   * 'bfloat16' rounds both operands of every product to bfloat16 (8 bits of mantissa) and adds in
   * float32: on CPUs with AMX (Intel Xeon 4th generation and later) about twice as fast, with
   * AVX512-BF16 (AMD Zen 4 and later) 1.4 to 2.2 times, with confidences that move in the
   * third digit (README, "Benchmarks"). On other CPUs the products stay float32
   * (`info().bfloat16Matmul` and `info().bfloat16Unit` say which). Device 'cuda' takes 'float32' only.
   */
  precision?: Precision;
  /**
   * A word prior: 'english' (the words and names the synthetic generator draws, about 68,000) or
   * an array of your own words (another language, a domain's vocabulary). Among an image's
   * readings — beam search's finished hypotheses and one per view — a known word is kept over a
   * more confident unknown one unless that is over e^dictionaryWeight times as confident (README,
   * "Dictionary"; words compared in lower case with only letters and digits). It chooses among
   * readings the model made, so it needs a beamWidth or views over 1. Default: none.
   */
  dictionary?: 'english' | readonly string[];
  /**
   * How much a known word counts, 0…100 in natural-log units of confidence (default 2, chosen on
   * synthetic images); needs a dictionary. 0 is the same as no dictionary.
   */
  dictionaryWeight?: number;
}

/** Options of {@link Recognizer.create}. */
export interface CreateOptions extends RecognizerOptions {
  /**
   * 'tiny' (default) or 'base' (DESIGN.md §1, Configs), or a whole configuration; its
   * `num_classes` may be left out (it follows from the charset).
   */
  config?: 'tiny' | 'base' | (Omit<ModelConfig, 'num_classes'> & { num_classes?: number });
  /** The characters the model reads: a string or an array of single characters (default: the 94 printable ASCII characters without space). */
  charset?: string | readonly string[];
  /** Seed of the random initialisation, an integer 0…2^53−1 (default 0). */
  seed?: number;
}

/** Options of {@link Recognizer.save}. */
export interface SaveOptions {
  /** 'float32' (default) or 'float16' (half the size; values rounded to nearest even). */
  dtype?: 'float32' | 'float16';
  /** A JSON-serialisable summary of the training, stored in the file (default: the model's current one). */
  training?: Record<string, unknown>;
}

// The addon's NativeModel (native/addon/model_binding.cpp).
interface NativeReading {
  tokens: Int32Array;
  probs: Float32Array;
  confidence: number;
}
interface NativeWord extends NativeReading {
  /** Beam search's other finished readings, most confident first (empty for greedy decoding). */
  alternatives: NativeReading[];
}
interface NativeModel {
  config(): string;
  metadata(): Record<string, string>;
  recognize(images: Float32Array, batch: number, beamWidth: number, precision: Precision): Promise<NativeWord[]>;
  save(dtype: 'float32' | 'float16', metadata: Record<string, string>): Promise<Buffer>;
  close(): void;
}
interface NativeModelClass {
  preset(name: 'tiny' | 'base', numClasses: number): string;
  create(configJson: string, seed: number): Promise<NativeModel>;
  fromBuffer(bytes: Uint8Array, source: string): Promise<NativeModel>;
}

interface Job {
  input: CheckedInput;
  resolve(result: RecognitionResult): void;
  reject(error: Error): void;
  pixels?: Buffer[]; // its views, decoded: each (in_h, in_w, 3) bytes
}

/** A first-in first-out queue with O(1) removal from the front. */
class Queue<T> {
  #items: T[] = [];
  #head = 0;
  get length(): number {
    return this.#items.length - this.#head;
  }
  push(item: T): void {
    this.#items.push(item);
  }
  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined;
    const item = this.#items[this.#head++];
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
}

const DTYPES = ['float32', 'float16'] as const;
const PRESETS = ['tiny', 'base'] as const;
const CLOSED = 'the recognizer is closed';
const constructing = Symbol('Recognizer');

interface CheckedOptions {
  device: Device;
  threads: number | undefined;
  batchSize: number;
  beamWidth: number;
  views: number;
  precision: Precision;
  dictionary: WordSet | undefined;
  dictionaryWeight: number;
}

function checkDictionary(value: unknown): WordSet {
  if (value === 'english') return englishWords();
  const what = "'english' or a non-empty array of words";
  if (!Array.isArray(value)) throw new TypeError(`Expected ${what} for dictionary but received ${describe(value)}`);
  value.forEach((word: unknown, i) => {
    if (typeof word !== 'string') throw new TypeError(`Expected a string for dictionary[${i}] but received ${describe(word)}`);
  });
  const words = new WordSet(value as string[]);
  if (words.size === 0) throw new RangeError(`Expected ${what} (each with a letter or digit) for dictionary but received ${describe(value)}`);
  return words;
}

function checkOptions(options: Record<string, unknown>): CheckedOptions {
  const checked = {
    device: options.device === undefined ? 'auto' : check.oneOf(options.device, 'device', DEVICES),
    threads: options.threads === undefined ? undefined : check.integer(options.threads, 'threads', 1, 1024),
    batchSize: options.batchSize === undefined ? 32 : check.integer(options.batchSize, 'batchSize', 1, 1024),
    beamWidth: options.beamWidth === undefined ? 1 : check.integer(options.beamWidth, 'beamWidth', 1, 64),
    views: options.views === undefined ? 1 : check.integer(options.views, 'views', 1, MAX_VIEWS),
    precision: options.precision === undefined ? 'float32' : check.oneOf(options.precision, 'precision', PRECISIONS),
    dictionary: options.dictionary === undefined ? undefined : checkDictionary(options.dictionary),
    dictionaryWeight:
      options.dictionaryWeight === undefined ? DEFAULT_DICTIONARY_WEIGHT : check.number(options.dictionaryWeight, 'dictionaryWeight', 0, 100),
  };
  if (checked.dictionary === undefined && options.dictionaryWeight !== undefined) {
    throw new TypeError(`Expected a dictionary with dictionaryWeight but received dictionary ${describe(options.dictionary)}`);
  }
  if (checked.dictionary !== undefined && checked.beamWidth === 1 && checked.views === 1) {
    throw new RangeError(
      'Expected beamWidth or views over 1 with a dictionary (it chooses among their readings) but received beamWidth 1 and views 1',
    );
  }
  return checked;
}

/** A beam cannot be wider than the number of classes it chooses from. */
function checkBeamWidth(beamWidth: number, numClasses: number): void {
  check.integer(beamWidth, 'beamWidth', 1, Math.min(64, numClasses));
}

/**
 * The NativeModel class of the addon that runs `device`, and the device it runs on ('auto'
 * resolved). Throws "device 'cuda' is not available: <reason>" for 'cuda' without a usable GPU.
 *
 * Note [beam search on the CPU]: the CUDA network decodes greedily only (CudaNetwork::recognize
 * in native/cuda/network.cu), so 'auto' with a beam wider than 1 runs on the CPU, and 'cuda'
 * with one is an Error at load time rather than at every recognize().
 */
function nativeModelClass(options: CheckedOptions): { NativeModel: NativeModelClass; device: 'cpu' | 'cuda' } {
  const chosen = addonFor(options.device); // 'auto' is the CPU for now (Note [auto stays on the CPU] in native.ts)
  if (chosen.device === 'cuda' && options.beamWidth > 1) {
    throw new Error(`device 'cuda' decodes greedily only: beamWidth ${options.beamWidth} needs device 'cpu' (or 'auto', which picks it)`);
  }
  checkPrecisionOn(chosen.device, options.precision);
  return { NativeModel: (chosen.addon as unknown as { NativeModel: NativeModelClass }).NativeModel, device: chosen.device };
}

/** Sizes the native thread pool of every loaded addon (as setThreads() in index.ts). */
function setPoolThreads(threads: number): void {
  loadCpuAddon().setThreads(threads);
  loadCudaAddon()?.setThreads(threads);
}

/**
 * The shortest decimal that reads back as the same float32: the native side stores dropout as a
 * float, and 0.1 should stay 0.1 in configs and model files, not 0.10000000149011612.
 */
function shortestFloat32(x: number): number {
  for (let digits = 1; digits < 9; digits++) {
    const candidate = Number(x.toPrecision(digits));
    if (Math.fround(candidate) === Math.fround(x)) return candidate;
  }
  return x;
}

/** Where {@link Recognizer.load} looks for the model shipped with the package. */
export function defaultModelPath(): string {
  return path.join(packageRoot, 'models', 'default.safetensors');
}

/**
 * Reads the text in cropped word images.
 *
 * Calls may come from anywhere and at any time: inputs from concurrent {@link Recognizer.recognize}
 * calls are merged into batches (up to `batchSize` images per native call), images are decoded
 * while the previous batch runs, and the event loop is never blocked by the network.
 *
 * @example
 * ```ts
 * import { Recognizer } from 'safl';
 * const recognizer = await Recognizer.load('model.safetensors', { batchSize: 64 });
 * const { text, confidence } = await recognizer.recognize('word.png');
 * const words = await recognizer.recognize(['a.png', 'b.jpg', pngBuffer]);
 * await recognizer.close();
 * ```
 */
export class Recognizer {
  /** The network's configuration. */
  readonly config: Readonly<ModelConfig>;
  /** The characters the model reads; class i is charset[i]. */
  readonly charset: readonly string[];
  /** The training summary stored in the model file ({} for an untrained model). */
  readonly training: Readonly<Record<string, unknown>>;
  /** Where the network runs ('auto' resolved). */
  readonly device: 'cpu' | 'cuda';
  /** Most images per native call ({@link RecognizerOptions.batchSize}). */
  readonly batchSize: number;
  /** Beam width of the decoder (1: greedy). */
  readonly beamWidth: number;
  /** Views of each image ({@link RecognizerOptions.views}). */
  readonly views: number;
  /** Precision of the matrix products, as asked for ({@link RecognizerOptions.precision}). */
  readonly precision: Precision;
  /** How much a known word counts ({@link RecognizerOptions.dictionaryWeight}); undefined without a dictionary. */
  readonly dictionaryWeight: number | undefined;

  #model: NativeModel;
  #closed = false;
  #closing: Promise<void> | undefined;
  #waiting = new Queue<Job>();
  #decoding = 0;
  #ready: Job[] = [];
  #running = false;
  #imagesPerCall: number; // batchSize / views, at least 1
  #dictionary: WordSet | undefined;
  #batchTensor: Float32Array | undefined; // (≥ batch · views, 3, in_h, in_w): the largest batch so far
  #idleWaiters: Array<() => void> = [];

  /** Use {@link Recognizer.load} or {@link Recognizer.create}. */
  private constructor(
    token: symbol,
    model: NativeModel,
    device: 'cpu' | 'cuda',
    charset: string[],
    training: Record<string, unknown>,
    options: CheckedOptions,
  ) {
    if (token !== constructing) throw new TypeError('Recognizer is made by Recognizer.load() or Recognizer.create()');
    this.#model = model;
    const config = JSON.parse(model.config()) as ModelConfig;
    config.dropout = shortestFloat32(config.dropout);
    this.config = Object.freeze(config);
    this.charset = Object.freeze(charset);
    this.training = Object.freeze(training);
    this.device = device;
    this.batchSize = options.batchSize;
    this.beamWidth = options.beamWidth;
    this.views = options.views;
    this.#imagesPerCall = Math.max(1, Math.floor(options.batchSize / options.views));
    this.precision = options.precision;
    this.#dictionary = options.dictionary;
    this.dictionaryWeight = options.dictionary === undefined ? undefined : options.dictionaryWeight;
  }

  /**
   * Loads a model file.
   * @param model - a path to a `.safetensors` model file, or its bytes; without it, the model
   *   installed with the package (`models/default.safetensors`).
   * @param options - device ('auto' | 'cpu' | 'cuda', default 'auto'), threads (1…1024),
   *   batchSize (1…1024, default 32), beamWidth (1…64, default 1), views (1…8, default 1),
   *   precision ('float32' default, or 'bfloat16'), dictionary ('english' or an array of words)
   *   and dictionaryWeight (0…100, default 2).
   * @throws TypeError / RangeError for a bad argument ("Expected <what> for <option> but received <value>").
   * @throws Error naming the file: missing, empty, not a safl model file, an unsupported format
   *   version, invalid metadata, or a tensor that is truncated, of the wrong shape or not finite.
   * @throws Error for device 'cuda' without a usable GPU: "device 'cuda' is not available: <reason>"
   *   (no CUDA addon was built, it did not load, no GPU or driver answers, or the GPU is too old);
   *   "device 'cuda' decodes greedily only: …" with a beamWidth over 1, "device 'cuda' multiplies in
   *   float32 only: …" with precision 'bfloat16'.
   * @example
   * ```ts
   * const recognizer = await Recognizer.load('model.safetensors', { device: 'cpu', threads: 4 });
   * ```
   */
  static async load(model?: string | Uint8Array, options?: RecognizerOptions): Promise<Recognizer> {
    if (model !== undefined && typeof model !== 'string' && !(model instanceof Uint8Array)) {
      throw new TypeError(`Expected a path or a Buffer for model but received ${describe(model)}`);
    }
    const checked = checkOptions(check.options(options, 'options'));
    const chosen = nativeModelClass(checked);
    let source: string;
    let bytes: Uint8Array;
    if (typeof model === 'string' || model === undefined) {
      source = model ?? defaultModelPath();
      if (model === undefined && !existsSync(source)) {
        throw new Error(`no default model is installed (expected ${source}); pass a model file to Recognizer.load()`);
      }
      bytes = await readModelFile(source);
    } else {
      source = 'model buffer';
      bytes = model;
    }
    const metadata = readMetadata(bytes, source);
    checkBeamWidth(checked.beamWidth, metadata.config.num_classes);
    const native = await chosen.NativeModel.fromBuffer(bytes, source);
    if (checked.threads !== undefined) setPoolThreads(checked.threads);
    return new Recognizer(constructing, native, chosen.device, metadata.charset, metadata.training, checked);
  }

  /**
   * Makes a new, untrained model (random weights, deterministic in `seed`): the start of training,
   * and a way to get model files for tests.
   * @param options - config ('tiny' default, 'base', or a whole configuration), charset, seed, and
   *   the options of {@link Recognizer.load}.
   * @throws TypeError / RangeError for a bad option; Error naming the configuration field at fault.
   * @example
   * ```ts
   * const fresh = await Recognizer.create({ config: 'tiny', charset: '0123456789', seed: 1 });
   * await fresh.save('digits-untrained.safetensors');
   * ```
   */
  static async create(options?: CreateOptions): Promise<Recognizer> {
    const raw = check.options(options, 'options');
    const checked = checkOptions(raw);
    const charset = raw.charset === undefined ? [...DEFAULT_CHARSET] : validateCharset(raw.charset, 'charset');
    const seed = raw.seed === undefined ? 0 : check.integer(raw.seed, 'seed', 0, Number.MAX_SAFE_INTEGER);
    const numClasses = charset.length + SPECIAL_CLASSES;
    checkBeamWidth(checked.beamWidth, numClasses);
    const chosen = nativeModelClass(checked);
    let configJson: string;
    if (raw.config === undefined || typeof raw.config === 'string') {
      configJson = chosen.NativeModel.preset(raw.config === undefined ? 'tiny' : check.oneOf(raw.config, 'config', PRESETS), numClasses);
    } else {
      const config = check.options(raw.config, 'config');
      if (config.num_classes !== undefined && config.num_classes !== numClasses) {
        throw new RangeError(
          `Expected ${numClasses} (the charset's ${charset.length} characters + ${SPECIAL_CLASSES}) for config.num_classes but received ${describe(config.num_classes)}`,
        );
      }
      configJson = JSON.stringify({ ...config, num_classes: numClasses });
    }
    const native = await chosen.NativeModel.create(configJson, seed);
    if (checked.threads !== undefined) setPoolThreads(checked.threads);
    return new Recognizer(constructing, native, chosen.device, charset, {}, checked);
  }

  /**
   * Reads the word in one image, or in each of an array of images.
   *
   * An input is a path, a Buffer (or Uint8Array) holding an encoded image (anything sharp reads:
   * PNG, JPEG, WebP, TIFF, GIF, AVIF…), or raw pixels `{ data, width, height, channels }`. Images
   * are oriented by their EXIF tag, flattened on white, converted to RGB and resized to the model's
   * input size (64×256) without keeping the aspect ratio.
   *
   * @returns one result for one input; for an array, an array of results in the same order.
   * @throws TypeError / RangeError for an input of the wrong type or raw pixels whose length does
   *   not match their size (option names "input", or "input[i]" in an array).
   * @throws Error naming the input (its path, or "input[i]"): missing or unreadable file, empty
   *   file, an image over 100 megapixels, or "not a decodable image (…)". For an array, the call
   *   rejects with the first error, which carries the input's position as `index`; the other inputs
   *   are still read (use one call per input to get every result and every error).
   * @throws Error "the recognizer is closed" after {@link Recognizer.close}.
   */
  recognize(input: ImageInput): Promise<RecognitionResult>;
  recognize(inputs: readonly ImageInput[]): Promise<RecognitionResult[]>;
  async recognize(input: ImageInput | readonly ImageInput[]): Promise<RecognitionResult | RecognitionResult[]> {
    if (this.#closed) throw new Error(CLOSED);
    if (!Array.isArray(input)) return this.#submit(checkInput(input, 'input'));
    const checked = (input as readonly unknown[]).map((item, i) => checkInput(item, `input[${i}]`));
    return Promise.all(
      checked.map((item, index) =>
        this.#submit(item).catch((err: Error) => {
          throw Object.assign(err, { index });
        }),
      ),
    );
  }

  /**
   * Writes the model to a safetensors file, atomically (a temporary file, flushed, then renamed).
   * @param file - where to write (a `.safetensors` path).
   * @param options - dtype 'float32' (default) or 'float16'; training, a JSON summary to store.
   * @throws TypeError / RangeError for a bad option; Error "<file>: could not write (…)";
   *   Error "the recognizer is closed".
   */
  async save(file: string, options?: SaveOptions): Promise<void> {
    if (typeof file !== 'string' || file === '') throw new TypeError(`Expected a path for file but received ${describe(file)}`);
    const raw = check.options(options, 'options');
    const dtype = raw.dtype === undefined ? 'float32' : check.oneOf(raw.dtype, 'dtype', DTYPES);
    const training = raw.training === undefined ? this.training : check.options(raw.training, 'training');
    if (this.#closed) throw new Error(CLOSED);
    const bytes = await this.#model.save(dtype, encodeMetadata(this.config, this.charset, training));
    await writeFileAtomic(file, bytes);
  }

  /**
   * Waits for the work already asked for, then frees the model's native memory. Later calls reject
   * with "the recognizer is closed". Calling it again returns the same promise.
   */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closed = true;
      this.#closing = this.#idle().then(() => {
        this.#batchTensor = undefined;
        this.#model.close();
      });
    }
    return this.#closing;
  }

  #submit(input: CheckedInput): Promise<RecognitionResult> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ input, resolve, reject });
      this.#pump();
    });
  }

  #idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #isIdle(): boolean {
    return this.#waiting.length === 0 && this.#decoding === 0 && this.#ready.length === 0 && !this.#running;
  }

  // Note [batching pipeline].
  #pump(): void {
    const { in_h: height, in_w: width } = this.config;
    while (this.#waiting.length > 0 && this.#decoding + this.#ready.length < 2 * this.#imagesPerCall) {
      const job = this.#waiting.shift() as Job;
      this.#decoding++;
      decodeViews(job.input, height, width, this.views)
        .then(
          (pixels) => {
            job.pixels = pixels;
            this.#ready.push(job);
          },
          (err: Error) => job.reject(err),
        )
        .finally(() => {
          this.#decoding--;
          this.#pump();
        });
    }
    const full = this.#ready.length >= this.#imagesPerCall;
    const nothingComing = this.#decoding === 0 && this.#waiting.length === 0;
    if (!this.#running && this.#ready.length > 0 && (full || nothingComing)) {
      this.#running = true;
      this.#runBatch(this.#ready.splice(0, this.#imagesPerCall)).finally(() => {
        this.#running = false;
        this.#pump();
      });
    }
    if (this.#isIdle()) for (const wake of this.#idleWaiters.splice(0)) wake();
  }

  async #runBatch(batch: Job[]): Promise<void> {
    const { in_h: height, in_w: width } = this.config;
    const size = 3 * height * width;
    const rows = batch.length * this.views; // job i's views are rows i·views …
    if (this.#batchTensor === undefined || this.#batchTensor.length < rows * size) {
      this.#batchTensor = new Float32Array(rows * size); // grown to the largest batch so far
    }
    const images = this.#batchTensor.subarray(0, rows * size);
    batch.forEach((job, i) => {
      (job.pixels as Buffer[]).forEach((view, v) => toTensor(view, images, (i * this.views + v) * size, height, width));
      job.pixels = undefined;
    });
    let words: NativeWord[];
    try {
      words = await this.#model.recognize(images, rows, this.beamWidth, this.precision);
    } catch (err) {
      for (const job of batch) job.reject(err as Error);
      return;
    }
    batch.forEach((job, i) => job.resolve(this.#choose(words.slice(i * this.views, (i + 1) * this.views))));
  }

  // The result of one image from its views' words: the most confident reading, on a tie the earlier
  // view (Note [views] in image.ts); with a dictionary, the best by Note [dictionary] among every
  // view's reading and alternatives.
  #choose(views: NativeWord[]): RecognitionResult {
    const readings: NativeReading[] = this.#dictionary === undefined ? views : views.flatMap((word) => [word, ...word.alternatives]);
    const results = readings.map((r): RecognitionResult => ({ ...decodeTokens(r.tokens, r.probs, this.charset), confidence: r.confidence }));
    return results[chooseReading(results, this.#dictionary, this.dictionaryWeight ?? 0)];
  }
}
