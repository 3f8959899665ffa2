// Image inputs and their preprocessing (DESIGN.md §1.1), with sharp: decode anything sharp reads,
// honour EXIF orientation, flatten alpha on white, convert to sRGB, resize to the model's input
// size (64×256, bilinear, aspect not kept) and scale to [-1, 1] in CHW order.
//
// Note [sharp's threads]: libvips may spread one image over several threads; safl calls
// sharp.concurrency(1) when it first loads sharp. Word crops are small, so one thread per image is
// enough, and the native pool already uses every core for the network: more threads per image would
// only compete with it. Several images still decode at once, one per libuv worker. The setting is
// process-wide: it applies to every use of this copy of sharp in the process.
//
// Note [the resize kernel]: sharp's 'linear' kernel is bilinear interpolation when enlarging; when
// reducing, libvips widens the triangle filter to the reduction factor (as Pillow's BILINEAR does),
// so it averages every source pixel instead of sampling four. Shrink-on-load is off, so a JPEG is
// reduced by the same kernel as every other format.
//
// Note [orientation and resizing]: libvips resizes an image before it applies the EXIF rotation
// (with the target size turned to match), so a rotated image is not pixel-identical to the same
// image stored upright: resampling is not exactly symmetric under a quarter turn (a mean
// difference of a few levels of 255 at sharp edges). Training and recognition decode the same
// way, so they agree; a second pass to turn first would cost every image a decode.
//
// Note [views]: word crops from photographs and detectors are framed loosely or tightly, and a
// reading can hinge on it (a letter at the edge, an outline, a side face). With `views` N > 1 an
// image is read N times, framed by the first N entries of VIEW_MARGINS: as it is, then with margins
// added on the left and right and on the top and bottom (the edge pixels repeated outwards, as
// a looser crop of the same sign would show), and the most confident reading is kept. The image is
// decoded once; each view is its margins added, then the usual resize. View 0 is the same pixels as
// a one-view decode (except for EXIF-rotated images, Note [orientation and resizing]). The
// margins and their order were chosen on the real-dev sets (README, "Views"); wider ones, and
// crops that cut into the image, made fewer readings right there.
import { readFile } from 'node:fs/promises';
import type sharpModule from 'sharp';
import { describe } from './validate.js';
import * as check from './validate.js';

/** Raw pixels: `height` rows of `width` pixels of `channels` bytes each, no padding. */
export interface RawImage {
  /** The pixels, row-major, channels interleaved; length `width · height · channels`. */
  data: Uint8Array | Uint8ClampedArray;
  /** Width in pixels, at least 1. */
  width: number;
  /** Height in pixels, at least 1. */
  height: number;
  /** 1 grey, 2 grey and alpha, 3 RGB, 4 RGB and alpha. */
  channels: 1 | 2 | 3 | 4;
}

/**
 * One image to read: a path to an image file, a Buffer (or Uint8Array) holding an encoded image
 * (PNG, JPEG, WebP, TIFF, GIF, AVIF…), or raw pixels.
 */
export type ImageInput = string | Uint8Array | RawImage;

/** Images above this many pixels (width × height) are refused before they are decoded. */
export const MAX_PIXELS = 100_000_000;

/**
 * The framings of Note [views]: the margin added on each side, as fractions of the image's width
 * (left and right) and height (top and bottom).
 */
export const VIEW_MARGINS: readonly (readonly [number, number])[] = Object.freeze([
  [0, 0],
  [0.04, 0.06],
  [0.02, 0.03],
  [0.08, 0.12],
  [0.04, 0],
  [0, 0.06],
  [0.06, 0.09],
  [0.02, 0],
] as const);

/** Most views of one image (Note [views]). */
export const MAX_VIEWS = VIEW_MARGINS.length;

/** An input after its synchronous checks; `label` names it in errors (a path, or "input[3]"). */
export type CheckedInput =
  | { kind: 'file'; label: string; path: string }
  | { kind: 'encoded'; label: string; bytes: Uint8Array }
  | { kind: 'raw'; label: string; data: Uint8Array; width: number; height: number; channels: 1 | 2 | 3 | 4 };

let sharpInstance: typeof sharpModule | undefined;

/** sharp, loaded on first use (so `safl info` and training code that never decodes stay light). */
function sharp(): typeof sharpModule {
  if (sharpInstance === undefined) {
    sharpInstance = require('sharp') as typeof sharpModule;
    sharpInstance.concurrency(1); // Note [sharp's threads]
  }
  return sharpInstance;
}

function tooLarge(label: string, width: number, height: number): Error {
  return new Error(`${label}: image is larger than 100 megapixels (${width}×${height})`);
}

/**
 * Checks an input's type and, for raw pixels, its size; `label` is what errors call it when it is
 * not a path ("input", "input[3]").
 * @throws TypeError or RangeError in the form "Expected <what> for <option> but received <value>";
 * Error "<label>: image is larger than 100 megapixels (W×H)" for raw pixels over the limit.
 */
export function checkInput(input: unknown, label: string): CheckedInput {
  if (typeof input === 'string') {
    if (input === '') throw new TypeError(`Expected a non-empty path for ${label} but received ''`);
    return { kind: 'file', label: input, path: input };
  }
  if (input instanceof Uint8Array) {
    if (input.length === 0) {
      throw new RangeError(`Expected a non-empty Buffer for ${label} but received ${describe(input)}`);
    }
    return { kind: 'encoded', label, bytes: input };
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input) || ArrayBuffer.isView(input)) {
    throw new TypeError(
      `Expected a path, a Buffer or raw pixels { data, width, height, channels } for ${label} but received ${describe(input)}`,
    );
  }
  const raw = input as Record<string, unknown>;
  const width = check.integer(raw.width, `${label}.width`, 1, MAX_PIXELS);
  const height = check.integer(raw.height, `${label}.height`, 1, MAX_PIXELS);
  const channels = check.integer(raw.channels, `${label}.channels`, 1, 4) as 1 | 2 | 3 | 4;
  const { data } = raw;
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) {
    throw new TypeError(`Expected a Buffer, Uint8Array or Uint8ClampedArray for ${label}.data but received ${describe(data)}`);
  }
  if (width * height > MAX_PIXELS) throw tooLarge(label, width, height);
  const expected = width * height * channels;
  if (data.length !== expected) {
    throw new RangeError(
      `Expected data of length ${width}·${height}·${channels} = ${expected} for ${label}.data but received ${describe(data)}`,
    );
  }
  return { kind: 'raw', label, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height, channels };
}

/**
 * Reads a whole file, with errors that name it: "<path>: no such file", "<path>: is a directory",
 * "<path>: permission denied", "<path>: the file is empty".
 */
export async function readFileBytes(file: string): Promise<Buffer> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT' ? 'no such file'
      : code === 'EISDIR' ? 'is a directory'
      : code === 'EACCES' || code === 'EPERM' ? 'permission denied'
      : (err as Error).message;
    throw new Error(`${file}: ${reason}`, { cause: err });
  }
  if (bytes.length === 0) throw new Error(`${file}: the file is empty`);
  return bytes;
}

/**
 * Decodes and resizes one image: returns its pixels as `height × width × 3` bytes (RGB, row-major),
 * the form batches are assembled from (see toTensor).
 * @throws Error naming the input: missing or unreadable file, empty file, an image over 100
 * megapixels, or "<label>: not a decodable image (<sharp's reason>)" for anything sharp cannot read.
 */
export async function decodeImage(input: CheckedInput, height: number, width: number): Promise<Buffer> {
  return decoded(input, (pipeline) =>
    upright(pipeline)
      .resize(width, height, RESIZE) // Note [the resize kernel]
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer(),
  );
}

/**
 * Decodes one image and makes its first `views` views (Note [views]), each as decodeImage returns
 * an image. `views` must be 1…MAX_VIEWS (checked by the caller); 1 is decodeImage.
 * @throws the errors of decodeImage.
 */
export async function decodeViews(input: CheckedInput, height: number, width: number, views: number): Promise<Buffer[]> {
  if (views === 1) return [await decodeImage(input, height, width)];
  const { data, info } = await decoded(input, (pipeline) =>
    upright(pipeline).removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true }),
  );
  const sharpFn = sharp();
  const raw = { width: info.width, height: info.height, channels: 3 } as const;
  return Promise.all(
    VIEW_MARGINS.slice(0, views).map(async ([fx, fy]) => {
      const x = Math.round(fx * raw.width);
      const y = Math.round(fy * raw.height);
      // Two passes: within one pipeline sharp extends after it resizes.
      let framed: Buffer = data;
      if (x > 0 || y > 0) {
        framed = await sharpFn(data, { raw })
          .extend({ left: x, right: x, top: y, bottom: y, extendWith: 'copy' })
          .raw()
          .toBuffer();
      }
      const size = { width: raw.width + 2 * x, height: raw.height + 2 * y, channels: 3 } as const;
      return sharpFn(framed, { raw: size, limitInputPixels: false }).resize(width, height, RESIZE).raw().toBuffer();
    }),
  );
}

const RESIZE: sharpModule.ResizeOptions = { fit: 'fill', kernel: 'linear', fastShrinkOnLoad: false };

/** The first steps of every decode: EXIF orientation applied, alpha flattened on white, sRGB. */
function upright(pipeline: sharpModule.Sharp): sharpModule.Sharp {
  return pipeline.autoOrient().flatten({ background: '#ffffff' }).toColourspace('srgb');
}

/** Runs `decode` on the input's bytes, turning sharp's failures into errors that name the input. */
async function decoded<T>(input: CheckedInput, decode: (pipeline: sharpModule.Sharp) => Promise<T>): Promise<T> {
  const sharpFn = sharp();
  const source = input.kind === 'file' ? await readFileBytes(input.path) : input.kind === 'encoded' ? input.bytes : input.data;
  const options: sharpModule.SharpOptions = { limitInputPixels: MAX_PIXELS };
  if (input.kind === 'raw') options.raw = { width: input.width, height: input.height, channels: input.channels };
  try {
    return await decode(sharpFn(source, options));
  } catch (err) {
    // The header may still be readable: tell "too large" apart from "cannot be decoded".
    const size = await sharpFn(source, { limitInputPixels: false }).metadata().catch(() => undefined);
    if (size?.width !== undefined && size.height !== undefined && size.width * size.height > MAX_PIXELS) {
      throw tooLarge(input.label, size.width, size.height);
    }
    const reason = (err as Error).message.trim().replace(/:$/, '');
    throw new Error(`${input.label}: not a decodable image (${reason})`, { cause: err });
  }
}

/**
 * Writes decoded pixels (height × width × 3 bytes) into `out` at `offset` as one CHW float image
 * scaled to [-1, 1]: x / 127.5 − 1.
 */
export function toTensor(pixels: Uint8Array, out: Float32Array, offset: number, height: number, width: number): void {
  const plane = height * width;
  for (let p = 0; p < plane; p++) {
    out[offset + p] = pixels[3 * p] / 127.5 - 1;
    out[offset + plane + p] = pixels[3 * p + 1] / 127.5 - 1;
    out[offset + 2 * plane + p] = pixels[3 * p + 2] / 127.5 - 1;
  }
}
