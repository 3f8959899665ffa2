// Opening datasets from what a user types: a folder with labels.tsv, an LMDB environment (a
// directory holding data.mdb, as the STR datasets ship, or a data file), or 'synth' for the
// built-in generator; and the ':ratio' suffix that mixes give them ("MJ:0.5").
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { FolderSource, LABELS_FILE } from './folder.js';
import { LmdbSource } from './lmdb.js';
import type { DataSource } from './source.js';
import { describe } from '../validate.js';

export type { DataSource, Sample } from './source.js';
export { FolderSource, LABELS_FILE } from './folder.js';
export { LmdbFile, LmdbSource, LmdbWriter, writeLmdb, writeLmdbEntries, strKey, MAX_LMDB_SAMPLES, type LmdbWriterOptions } from './lmdb.js';
export { MixedSampler, MixedSource, type Draw, type MixPart, type MixedSample, type SamplerState } from './mix.js';
export { LabelEncoder, type LabelPolicyOptions, type SkipCounts, type TooLongPolicy, type UnknownCharPolicy } from './labels.js';
export * from './metrics.js';

/** Options handed to the synthetic generator when the spec is 'synth'. */
export interface OpenSourceOptions {
  /** Passed to lib/synth's createSynthSource as they are (seed, charset…). */
  synth?: Record<string, unknown>;
}

const NOT_A_DATASET =
  "not a dataset (expected a folder with labels.tsv, an LMDB directory holding data.mdb, an LMDB data file, or 'synth')";

/**
 * Opens a dataset:
 * - `synth`: the synthetic generator (lib/synth), endless;
 * - a directory holding `labels.tsv`: a folder dataset;
 * - a directory holding `data.mdb`: an LMDB dataset in the STR layout;
 * - a file: `labels.tsv` itself, or an LMDB data file (`.mdb`, `.lmdb`, or any file that starts
 *   like one).
 * A ':ratio' suffix is not part of the spec: see {@link parseSourceSpec}.
 * @throws Error naming the path when it is missing, not a dataset, or a broken or empty dataset.
 */
export async function openSource(spec: string, options: OpenSourceOptions = {}): Promise<DataSource> {
  if (typeof spec !== 'string' || spec === '') throw new TypeError(`Expected a dataset path or 'synth' for dataset but received ${describe(spec)}`);
  if (spec === 'synth' && !existsSync(spec)) return openSynth(options.synth ?? {});
  const info = await stat(spec).catch(() => undefined);
  if (info === undefined) throw new Error(`${spec}: no such file or directory`);
  if (info.isDirectory()) {
    if (existsSync(path.join(spec, LABELS_FILE))) return FolderSource.open(spec);
    if (existsSync(path.join(spec, 'data.mdb'))) return LmdbSource.open(spec);
    throw new Error(`${spec}: ${NOT_A_DATASET}`);
  }
  if (path.extname(spec).toLowerCase() === '.tsv') return FolderSource.open(spec);
  return LmdbSource.open(spec).catch((err: Error) => {
    // A file that is not LMDB at all is better called "not a dataset" than "not a valid LMDB file".
    if (/no LMDB magic number|too short/.test(err.message) && !/\.(l?mdb)$/i.test(spec)) throw new Error(`${spec}: ${NOT_A_DATASET}`);
    throw err;
  });
}

/** lib/synth's entry point, looked up at run time so that this module builds without it. */
async function openSynth(options: Record<string, unknown>): Promise<DataSource> {
  const modulePath = path.join(__dirname, '..', 'synth', 'index.js');
  if (!existsSync(modulePath)) throw new Error("'synth': the synthetic generator is not part of this build of safl");
  const synth = require(modulePath) as { createSynthSource?: (options: Record<string, unknown>) => DataSource | Promise<DataSource> };
  if (typeof synth.createSynthSource !== 'function') throw new Error("'synth': lib/synth does not export createSynthSource");
  return synth.createSynthSource(options);
}

/**
 * Splits "path:ratio" into the spec and its ratio (default 1). A spec that exists as a path is
 * taken whole even if it ends in ':<number>'.
 * @throws RangeError "Expected a positive ratio for <option> but received '<text>'" for a ratio of 0
 *   or one that is not a finite number.
 */
export function parseSourceSpec(text: string, option = 'dataset'): { spec: string; ratio: number } {
  if (typeof text !== 'string' || text === '') throw new TypeError(`Expected a dataset path or 'synth' for ${option} but received ${describe(text)}`);
  const match = /^(.+):([^:/\\]*)$/.exec(text);
  if (match === null || existsSync(text) || !/^[0-9.eE+-]+$/.test(match[2])) return { spec: text, ratio: 1 };
  const ratio = Number(match[2]);
  if (!Number.isFinite(ratio) || ratio <= 0 || match[2].trim() === '') {
    throw new RangeError(`Expected a positive ratio for ${option} but received ${describe(match[2])}`);
  }
  return { spec: match[1], ratio };
}
