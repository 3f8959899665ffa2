// The synthetic word-image generator: options, one sample by (seed, index), and the generator as a
// DataSource for training. How a sample is made is in sample.ts; fonts, words and pixel operations
// in their own files. A pool of worker threads (pool.ts) makes samples in parallel.
import { DEFAULT_CHARSET, validateCharset } from '../charset.js';
import type { DataSource, Sample } from '../data/source.js';
import * as check from '../validate.js';
import { describe } from '../validate.js';
import { bundledFamilies, systemFamilies, userFamilies, type FontFamily } from './fonts.js';
import { SynthPool } from './pool.js';
import { generateSample, type GeneratorContext, type SynthSample } from './sample.js';
import { readWordList, WordGenerator } from './words.js';

export type { SynthSample } from './sample.js';
export type { WordKind } from './words.js';
export type { FontFace, FontFamily } from './fonts.js';

/** Options of the synthetic generator. */
export interface SynthOptions {
  /** Seed, a non-negative safe integer (default 0). Sample i of a seed is always the same image. */
  seed?: number;
  /** Characters labels may hold: a string or an array of single characters (default: the 94 printable ASCII characters). */
  charset?: string | readonly string[];
  /** Most characters in a label, 1–25 (default 25, the model's maximum). */
  maxLength?: number;
  /** Also draw with the system's fonts (default false: only the bundled fonts, the same on every machine). */
  systemFonts?: boolean;
  /** More fonts: .ttf/.otf files, or directories searched for them (default none). */
  fonts?: readonly string[];
  /**
   * A word list to draw words from instead of the English one: a UTF-8 text file, one word per
   * line (default: English). Made-up words and random letter strings then follow its letters.
   */
  words?: string;
}

/** Options of the generator as a DataSource. */
export interface SynthSourceOptions extends SynthOptions {
  /** Number of samples the source claims to hold: a positive integer, or Infinity (the default). */
  size?: number;
  /**
   * Worker threads that make samples, 0–64 (default 0: samples are made in the calling thread,
   * text rendering and encoding on libuv's threads). With workers, call close() when done.
   */
  workers?: number;
}

/** Options after their checks: plain data, so they can be sent to a worker thread. */
export interface ResolvedSynthOptions {
  seed: number;
  charset: string[];
  maxLength: number;
  systemFonts: boolean;
  fonts: string[];
  /** The word list's path, or null for English. */
  words: string | null;
}

/** The most characters a label may have: the model's maximum sequence length (DESIGN.md §1). */
export const MAX_LABEL_LENGTH = 25;

/**
 * Checks generator options and fills in defaults.
 * @throws TypeError or RangeError in the form "Expected <what> for <option> but received <value>".
 */
export function resolveSynthOptions(options: unknown): ResolvedSynthOptions {
  const raw = check.options(options, 'options');
  const fonts = raw.fonts === undefined ? [] : raw.fonts;
  if (!Array.isArray(fonts) || fonts.some((f) => typeof f !== 'string' || f === '')) {
    throw new TypeError(`Expected an array of font file or directory paths for fonts but received ${describe(fonts)}`);
  }
  return {
    seed: raw.seed === undefined ? 0 : check.integer(raw.seed, 'seed', 0, Number.MAX_SAFE_INTEGER),
    charset: raw.charset === undefined ? [...DEFAULT_CHARSET] : validateCharset(raw.charset, 'charset'),
    maxLength: raw.maxLength === undefined ? MAX_LABEL_LENGTH : check.integer(raw.maxLength, 'maxLength', 1, MAX_LABEL_LENGTH),
    systemFonts: raw.systemFonts === undefined ? false : check.boolean(raw.systemFonts, 'systemFonts'),
    fonts: [...(fonts as string[])],
    words: raw.words === undefined ? null : check.filePath(raw.words, 'words'),
  };
}

/** The font families the options select: bundled, then the system's, then the user's. */
export function fontFamilies(options: ResolvedSynthOptions): FontFamily[] {
  const families = [...bundledFamilies(), ...(options.systemFonts ? systemFamilies() : []), ...userFamilies(options.fonts)];
  if (families.length === 0) {
    throw new Error('no fonts: the @expo-google-fonts packages are not installed and no other fonts were given (systemFonts, fonts)');
  }
  return families;
}

const contexts = new Map<string, GeneratorContext>();

/** The fonts and word generator for resolved options, built once per distinct options. */
export function generatorContext(options: ResolvedSynthOptions): GeneratorContext {
  const key = JSON.stringify(options);
  let ctx = contexts.get(key);
  if (ctx === undefined) {
    const words =
      options.words === null
        ? new WordGenerator(options.charset, options.maxLength)
        : new WordGenerator(options.charset, options.maxLength, readWordList(options.words), options.words);
    ctx = { seed: options.seed, families: fontFamilies(options), words };
    contexts.set(key, ctx);
  }
  return ctx;
}

/**
 * Makes synthetic sample `index` of `seed`: a word image (raw RGB pixels, or JPEG bytes when the
 * sample was given compression artefacts) and its label. The same seed, index and options give the
 * same image, byte for byte, in any order and in any thread.
 * @param seed - a non-negative safe integer.
 * @param index - a non-negative safe integer.
 * @param options - charset, maxLength, systemFonts, fonts, words (its seed, if any, is overridden by `seed`).
 * @throws TypeError or RangeError for a bad argument, in the form
 * "Expected <what> for <option> but received <value>".
 * @example
 * ```ts
 * const { image, label } = await renderSample(7, 0);
 * ```
 */
export async function renderSample(seed: number, index: number, options?: SynthOptions): Promise<SynthSample> {
  const resolved = resolveSynthOptions({ ...check.options(options, 'options'), seed });
  check.integer(index, 'index', 0, Number.MAX_SAFE_INTEGER);
  return generateSample(generatorContext(resolved), index);
}

/** The generator as a DataSource (see createSynthSource). */
export interface SynthSource extends DataSource {
  readonly name: 'synth';
  /** The options it generates with. */
  readonly options: ResolvedSynthOptions;
  /** The sample with everything the generator knows about it (text, kind, font). */
  sample(index: number): Promise<SynthSample>;
  close(): Promise<void>;
}

/**
 * The synthetic generator as a DataSource: `get(i)` makes sample i of the seed (see renderSample),
 * its origin "synth/<seed>/<i> (<font>)". Deterministic: the same index always gives the same sample.
 * @throws TypeError or RangeError for a bad option, in the form
 * "Expected <what> for <option> but received <value>"; Error when no font is available.
 * @example
 * ```ts
 * const source = createSynthSource({ seed: 1, charset: 'abcdefghijklmnopqrstuvwxyz0123456789' });
 * const { image, label } = await source.get(0);
 * ```
 */
export function createSynthSource(options?: SynthSourceOptions): SynthSource {
  const raw = check.options(options, 'options');
  const { size: rawSize, workers: rawWorkers, ...rest } = raw;
  const resolved = resolveSynthOptions(rest);
  let size = Infinity;
  if (rawSize !== undefined && rawSize !== Infinity) size = check.integer(rawSize, 'size', 1, Number.MAX_SAFE_INTEGER);
  const workers = rawWorkers === undefined ? 0 : check.integer(rawWorkers, 'workers', 0, 64);
  const ctx = generatorContext(resolved);
  const pool = workers > 0 ? new SynthPool(resolved, workers) : undefined;
  const sample = (index: number): Promise<SynthSample> => {
    const what = size === Infinity ? 'a non-negative safe integer' : `an integer between 0 and ${size - 1}`;
    if (typeof index !== 'number' || !Number.isInteger(index)) return Promise.reject(new TypeError(`Expected ${what} for index but received ${describe(index)}`));
    if (index < 0 || index >= Math.min(size, Number.MAX_SAFE_INTEGER + 1)) {
      return Promise.reject(new RangeError(`Expected ${what} for index but received ${describe(index)}`));
    }
    return pool ? pool.render(index, false) : generateSample(ctx, index);
  };
  return {
    name: 'synth',
    size,
    options: resolved,
    sample,
    async get(index: number): Promise<Sample> {
      const s = await sample(index);
      return { image: s.image, label: s.label, origin: `synth/${resolved.seed}/${index} (${s.font})` };
    },
    async close(): Promise<void> {
      await pool?.close();
    },
  };
}
