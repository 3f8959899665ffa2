// Model files: safetensors with safl's metadata. The header's "__metadata__" (string → string)
// holds:
//   "format"    "safl-model/1", the version of this layout; any other value is refused
//   "config"    the network's configuration as JSON (the keys of native/model/config.h)
//   "charset"   a JSON array of the characters the model reads, one code point each
//   "training"  a JSON object summarising the training ("{}" for an untrained model)
// This module checks the header and the metadata before anything crosses into C++; the native
// loader then checks every tensor (shape, finiteness, bounds) and names the one at fault.
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { SPECIAL_CLASSES, validateCharset } from './charset.js';
import { readFileBytes } from './image.js';

/** The model-file format this version of safl reads and writes. */
export const MODEL_FORMAT = 'safl-model/1';

/** The network's configuration, as stored in a model file (see DESIGN.md §1, Configs). */
export interface ModelConfig {
  /** Network input, localisation-network input and rectified image sizes (pixels). */
  in_h: number;
  in_w: number;
  loc_h: number;
  loc_w: number;
  rect_h: number;
  rect_w: number;
  /** TPS control points (two rows of fiducials / 2). */
  fiducials: number;
  /** Six localisation conv widths, and the localisation FC's hidden width. */
  loc_channels: number[];
  loc_fc: number;
  /** Five ResNet-45 stage widths and blocks per stage. */
  res_channels: number[];
  res_blocks: number[];
  /** Transformer width, attention heads, feed-forward width, encoder and decoder layers. */
  d_model: number;
  heads: number;
  ffn: number;
  enc_layers: number;
  dec_layers: number;
  /** Longest word the decoder emits, in characters. */
  max_len: number;
  /** Charset size + 3 (EOS, PAD, UNK). */
  num_classes: number;
  /** Transformer dropout during training. */
  dropout: number;
}

/** What a model file's metadata says. */
export interface ModelMetadata {
  format: string;
  config: ModelConfig;
  charset: string[];
  training: Record<string, unknown>;
}

// A header this large is no model file (the native parser has the same limit).
const MAX_HEADER_BYTES = 100 * 2 ** 20;

/**
 * Why a file's stored config does not go with its charset — not a JSON object, or a num_classes
 * other than the characters plus the special classes — or undefined when it does. Model files and
 * checkpoints both store the two separately.
 */
export function configCharsetProblem(config: unknown, charset: readonly string[]): string | undefined {
  if (!isPlainObject(config)) return '"config" is not a JSON object';
  const expected = charset.length + SPECIAL_CLASSES;
  if (config.num_classes === expected) return undefined;
  return `the charset has ${charset.length} characters, so config.num_classes must be ${expected} but it is ${JSON.stringify(config.num_classes)}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads a model file; errors name it (missing, unreadable, empty). */
export function readModelFile(file: string): Promise<Buffer> {
  return readFileBytes(file);
}

/**
 * Reads and checks the metadata of a model file's bytes; `source` names the file in errors.
 * @throws Error "<source>: not a safl model file (…)" when the header is not a safetensors header
 * with safl metadata, "<source>: unsupported model format '<found>' (this version of safl reads
 * 'safl-model/1')", or "<source>: invalid model metadata: …".
 */
export function readMetadata(bytes: Uint8Array, source: string): ModelMetadata {
  const notModel = (why: string) => new Error(`${source}: not a safl model file (${why})`);
  if (bytes.length < 8) {
    throw notModel(`${bytes.length} bytes, but a safetensors file starts with an 8-byte header size`);
  }
  const headerSize = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerSize > BigInt(bytes.length - 8) || headerSize > BigInt(MAX_HEADER_BYTES)) {
    throw notModel(`its header size reads ${headerSize} but the file has ${bytes.length} bytes: a wrong header or a truncated file`);
  }
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, Number(headerSize)).toString('utf8'));
  } catch (err) {
    throw notModel(`its header is not JSON: ${(err as Error).message}`);
  }
  const metadata = isPlainObject(header) ? header.__metadata__ : undefined;
  if (!isPlainObject(metadata) || typeof metadata.format !== 'string') throw notModel('its metadata names no format');
  if (metadata.format !== MODEL_FORMAT) {
    throw new Error(`${source}: unsupported model format '${metadata.format}' (this version of safl reads '${MODEL_FORMAT}')`);
  }

  const invalid = (why: string) => new Error(`${source}: invalid model metadata: ${why}`);
  const json = (key: string): unknown => {
    const text = metadata[key];
    if (typeof text !== 'string') throw invalid(`"${key}" is missing`);
    try {
      return JSON.parse(text);
    } catch (err) {
      throw invalid(`"${key}" is not JSON (${(err as Error).message})`);
    }
  };
  const config = json('config');
  let charset: string[];
  try {
    charset = validateCharset(json('charset'), 'charset');
  } catch (err) {
    if (!(err instanceof TypeError || err instanceof RangeError)) throw err;
    throw invalid(err.message);
  }
  const problem = configCharsetProblem(config, charset);
  if (problem !== undefined) throw invalid(problem);
  const training = json('training');
  if (!isPlainObject(training)) throw invalid('"training" is not a JSON object');
  return { format: metadata.format, config: config as unknown as ModelConfig, charset, training };
}

/** The metadata strings of a model file. */
export function encodeMetadata(config: ModelConfig, charset: readonly string[], training: Record<string, unknown>): Record<string, string> {
  return {
    format: MODEL_FORMAT,
    config: JSON.stringify(config),
    charset: JSON.stringify(charset),
    training: JSON.stringify(training),
  };
}

/**
 * Writes a file so that readers see either the old file or the whole new one: a temporary file in
 * the same directory, flushed to disk (fsync), then renamed over `file`.
 * @throws Error "<file>: could not write (…)".
 */
export async function writeFileAtomic(file: string, data: Uint8Array): Promise<void> {
  const dir = path.dirname(file);
  const temp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(temp, 'wx');
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await rename(temp, file);
  } catch (err) {
    await handle?.close().catch(() => undefined);
    await rm(temp, { force: true }).catch(() => undefined);
    throw new Error(`${file}: could not write (${(err as Error).message})`, { cause: err });
  }
  // Make the rename itself durable. Not every platform can open a directory (Windows cannot); the
  // file's own data is already on disk there.
  const dirHandle = await open(dir, 'r').catch(() => undefined);
  if (dirHandle !== undefined) {
    await dirHandle.sync().catch(() => undefined);
    await dirHandle.close();
  }
}
