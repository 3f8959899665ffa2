// Pixel operations of the synthetic generator, on Float32Array planes in [0, 1] (one channel, or RGB
// interleaved): colours with a chosen contrast, smooth value noise, separable Gaussian blur and max
// filter (for outlines), a directional sweep (for extruded letters), the projective-plus-curve warp
// that places text on its surface, and the conversion to 8-bit pixels. Plain loops: images are a
// few tens of thousands of pixels.
//
// Note [scratch planes]: the float planes of a sample (text coverage, outline, shadow, the image,
// temporaries) are views of buffers kept from one sample to the next: allocating them anew for every
// sample made garbage collection a tenth of the generator's time. They are used only in the
// synchronous part of making a sample (after its text is rendered, before it is encoded), so
// samples made concurrently in one thread never share them.
import type { Rng } from './random.js';

/** The scratch planes of a sample (Note [scratch planes]). */
export const enum Scratch {
  Text,
  Outline,
  Shadow,
  Image,
  Temp,
}

const scratchBuffers: Float32Array[] = [];

/** A view of `length` floats of scratch buffer `which`, zeroed when `zero` (Note [scratch planes]). */
export function scratch(which: Scratch, length: number, zero: boolean): Float32Array {
  let buffer = scratchBuffers[which];
  if (buffer === undefined || buffer.length < length) {
    buffer = new Float32Array(Math.max(length, 2 * (buffer?.length ?? 0)));
    scratchBuffers[which] = buffer;
    return buffer.subarray(0, length);
  }
  const view = buffer.subarray(0, length);
  if (zero) view.fill(0);
  return view;
}

export type Rgb = [number, number, number];

/** Relative luminance of an sRGB colour, as the eye weighs the channels (Rec. 601). */
export function luminance(c: Rgb): number {
  return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
}

/** The colour of hue h, saturation s and value v, each in [0, 1]. */
export function hsvToRgb(h: number, s: number, v: number): Rgb {
  const f = (n: number) => {
    const k = (n + h * 6) % 6;
    return v - v * s * Math.max(0, Math.min(k, 4 - k, 1));
  };
  return [f(5), f(3), f(1)];
}

/** A colour of a random hue; `neutral` ones are nearly grey, others mostly of modest saturation. */
export function randomColour(rng: Rng, neutral: boolean): Rgb {
  return hsvToRgb(rng.next(), neutral ? rng.uniform(0, 0.12) : 0.12 + 0.8 * rng.next() ** 1.6, rng.uniform(0.05, 1));
}

/** `c` made darker or lighter, keeping its hue, until its luminance is `target` (in [0, 1]). */
export function withLuminance(c: Rgb, target: number): Rgb {
  const l = luminance(c);
  if (target <= l) {
    const k = l > 0 ? target / l : 0;
    return [c[0] * k, c[1] * k, c[2] * k];
  }
  const k = l < 1 ? (target - l) / (1 - l) : 0;
  return [c[0] + (1 - c[0]) * k, c[1] + (1 - c[1]) * k, c[2] + (1 - c[2]) * k];
}

/**
 * A colour whose luminance differs from `against`'s by about `contrast` (in (0, 1)): darker when
 * `against` is light, lighter when it is dark (the other way round when there is no room).
 */
export function contrastingColour(rng: Rng, against: Rgb, contrast: number, neutral: boolean): Rgb {
  const l = luminance(against);
  const darker = l - contrast >= 0 && (l + contrast > 1 || l >= 0.5 || rng.chance(0.15));
  const target = darker ? rng.uniform(Math.max(0, l - contrast - 0.3), l - contrast) : rng.uniform(Math.min(1, l + contrast), Math.min(1, l + contrast + 0.3));
  return withLuminance(randomColour(rng, neutral), Math.min(1, Math.max(0, target)));
}

/**
 * Smooth random values in [-1, 1] over the unit square: random values at the corners of `cellsX` ×
 * `cellsY` cells, interpolated with smoothstep; outside the square the edge values continue.
 */
export class ValueNoise {
  private readonly grid: Float32Array;
  private readonly stride: number;

  constructor(rng: Rng, private readonly cellsX: number, private readonly cellsY: number) {
    this.stride = cellsX + 1;
    this.grid = new Float32Array((cellsX + 1) * (cellsY + 1));
    for (let i = 0; i < this.grid.length; i++) this.grid[i] = rng.uniform(-1, 1);
  }

  /** The value at (u, v). */
  at(u: number, v: number): number {
    const x = (u <= 0 ? 0 : u >= 1 ? 1 : u) * this.cellsX;
    const y = (v <= 0 ? 0 : v >= 1 ? 1 : v) * this.cellsY;
    const x0 = x >= this.cellsX ? this.cellsX - 1 : Math.floor(x);
    const y0 = y >= this.cellsY ? this.cellsY - 1 : Math.floor(y);
    let tx = x - x0;
    let ty = y - y0;
    tx = tx * tx * (3 - 2 * tx);
    ty = ty * ty * (3 - 2 * ty);
    const g = this.grid;
    const i = y0 * this.stride + x0;
    const a = g[i] + (g[i + 1] - g[i]) * tx;
    const b = g[i + this.stride] + (g[i + this.stride + 1] - g[i + this.stride]) * tx;
    return a + (b - a) * ty;
  }
}

function gaussianKernel(sigma: number): Float32Array {
  const radius = Math.max(1, Math.ceil(2 * sigma)); // taps beyond 2σ carry under 5% of the weight
  const k = new Float32Array(2 * radius + 1);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) sum += k[i + radius] = Math.exp((-i * i) / (2 * sigma * sigma));
  for (let i = 0; i < k.length; i++) k[i] /= sum;
  return k;
}

/** Filters each row with kernel `k` (edges clamped), from `src` into `dst`; `channels` interleaved. */
function filterRows(src: Float32Array, dst: Float32Array, w: number, h: number, channels: number, k: Float32Array): void {
  const r = (k.length - 1) / 2;
  const rowLength = w * channels;
  for (let y = 0; y < h; y++) {
    const row = y * rowLength;
    // Interior: every tap inside the row, one flat loop over the row's values.
    const first = Math.min(r, w) * channels;
    const last = Math.max(first, (w - r) * channels);
    for (let i = first; i < last; i++) {
      let acc = 0;
      for (let j = 0, at = row + i - r * channels; j < k.length; j++, at += channels) acc += k[j] * src[at];
      dst[row + i] = acc;
    }
    // The ends: taps beyond the row read its first or last pixel.
    for (let x = 0; x < w; x++) {
      if (x >= r && x < w - r) {
        x = w - r - 1;
        continue;
      }
      for (let c = 0; c < channels; c++) {
        let acc = 0;
        for (let j = -r; j <= r; j++) {
          const t = x + j < 0 ? 0 : x + j >= w ? w - 1 : x + j;
          acc += k[j + r] * src[row + t * channels + c];
        }
        dst[row + x * channels + c] = acc;
      }
    }
  }
}

/** Filters each column with kernel `k` (edges clamped), a whole row at a time. */
function filterColumns(src: Float32Array, dst: Float32Array, w: number, h: number, channels: number, k: Float32Array): void {
  const r = (k.length - 1) / 2;
  const rowLength = w * channels;
  for (let y = 0; y < h; y++) {
    const out = y * rowLength;
    dst.fill(0, out, out + rowLength);
    for (let j = -r; j <= r; j++) {
      const from = (y + j < 0 ? 0 : y + j >= h ? h - 1 : y + j) * rowLength;
      const weight = k[j + r];
      for (let i = 0; i < rowLength; i++) dst[out + i] += weight * src[from + i];
    }
  }
}

/** Gaussian blur of standard deviation `sigma` pixels, in place. */
export function gaussianBlur(data: Float32Array, w: number, h: number, channels: number, sigma: number): void {
  if (sigma < 0.1) return;
  const k = gaussianKernel(sigma);
  const tmp = scratch(Scratch.Temp, data.length, false);
  filterRows(data, tmp, w, h, channels, k);
  filterColumns(tmp, data, w, h, channels, k);
}

/** Horizontal motion blur: the mean over `length` pixels, in place. */
export function motionBlur(data: Float32Array, w: number, h: number, channels: number, length: number): void {
  const taps = Math.max(1, Math.round(length)) | 1;
  const k = new Float32Array(taps).fill(1 / taps);
  const tmp = scratch(Scratch.Temp, data.length, false);
  filterRows(data, tmp, w, h, channels, k);
  data.set(tmp);
}

/** Grey-level dilation of `src` by a square of half-width `radius` (the outline of text), into `out`. */
export function dilate(out: Float32Array, src: Float32Array, w: number, h: number, radius: number): void {
  const tmp = scratch(Scratch.Temp, src.length, false);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let m = 0;
      for (let j = Math.max(0, x - radius); j <= Math.min(w - 1, x + radius); j++) m = Math.max(m, src[y * w + j]);
      tmp[y * w + x] = m;
    }
  }
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      let m = 0;
      for (let j = Math.max(0, y - radius); j <= Math.min(h - 1, y + radius); j++) m = Math.max(m, tmp[j * w + x]);
      out[y * w + x] = m;
    }
  }
}

/** Bilinear sample of a plane at (x, y) in pixel-centre coordinates; 0 outside. */
export function sampleBilinear(plane: Float32Array, w: number, h: number, x: number, y: number): number {
  const fx = Math.floor(x);
  const fy = Math.floor(y);
  if (fx < -1 || fy < -1 || fx >= w || fy >= h) return 0;
  const tx = x - fx;
  const ty = y - fy;
  const inX0 = fx >= 0;
  const inX1 = fx + 1 < w;
  const row0 = fy >= 0 ? fy * w : -1;
  const row1 = fy + 1 < h ? (fy + 1) * w : -1;
  const a = row0 >= 0 ? (inX0 ? plane[row0 + fx] : 0) * (1 - tx) + (inX1 ? plane[row0 + fx + 1] : 0) * tx : 0;
  const b = row1 >= 0 ? (inX0 ? plane[row1 + fx] : 0) * (1 - tx) + (inX1 ? plane[row1 + fx + 1] : 0) * tx : 0;
  return a * (1 - ty) + b * ty;
}

// ---- the warp ----------------------------------------------------------------------------------

/** A 3×3 matrix, row-major. */
export type Mat3 = Float64Array;

/** The homography taking the four points `from` to the four points `to` (x, y pairs). */
export function homography(from: readonly number[], to: readonly number[]): Mat3 {
  // Eight equations in h00…h21 (h22 = 1), solved by Gaussian elimination with partial pivoting.
  const a: number[][] = [];
  for (let i = 0; i < 4; i++) {
    const [x, y] = [from[2 * i], from[2 * i + 1]];
    const [u, v] = [to[2 * i], to[2 * i + 1]];
    a.push([x, y, 1, 0, 0, 0, -u * x, -u * y, u]);
    a.push([0, 0, 0, x, y, 1, -v * x, -v * y, v]);
  }
  for (let col = 0; col < 8; col++) {
    let pivot = col;
    for (let r = col + 1; r < 8; r++) if (Math.abs(a[r][col]) > Math.abs(a[pivot][col])) pivot = r;
    [a[col], a[pivot]] = [a[pivot], a[col]];
    for (let r = 0; r < 8; r++) {
      if (r === col) continue;
      const f = a[r][col] / a[col][col];
      for (let c = col; c < 9; c++) a[r][c] -= f * a[col][c];
    }
  }
  const m = new Float64Array(9);
  for (let i = 0; i < 8; i++) m[i] = a[i][8] / a[i][i];
  m[8] = 1;
  return m;
}

export function invert3(m: Mat3): Mat3 {
  const [a, b, c, d, e, f, g, h, i] = m;
  const A = e * i - f * h;
  const B = -(d * i - f * g);
  const C = d * h - e * g;
  const det = a * A + b * B + c * C;
  return Float64Array.from([A, -(b * i - c * h), b * f - c * e, B, a * i - c * g, -(a * f - c * d), C, -(a * h - b * g), a * e - b * d].map((x) => x / det));
}

/** Applies a homography to (x, y). */
export function project(m: Mat3, x: number, y: number): [number, number] {
  const w = m[6] * x + m[7] * y + m[8];
  return [(m[0] * x + m[1] * y + m[2]) / w, (m[3] * x + m[4] * y + m[5]) / w];
}

// ---- output --------------------------------------------------------------------------------------

/** Float RGB in [0, 1] to 8-bit RGB, rounded. */
export function toBytes(rgb: Float32Array): Uint8Array {
  const out = new Uint8Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) {
    const v = rgb[i] * 255 + 0.5;
    out[i] = v <= 0 ? 0 : v >= 255 ? 255 : v;
  }
  return out;
}

/**
 * `out` = the maximum of `coverage` shifted by k/n of (dx, dy) for k = 1…n, on whole pixels, n the
 * longer of |dx| and |dy| (the side faces of Note [extruded letters] in sample.ts); planes of w × h.
 */
export function sweep(out: Float32Array, coverage: Float32Array, w: number, h: number, dx: number, dy: number): void {
  out.fill(0);
  const n = Math.max(1, Math.round(Math.max(Math.abs(dx), Math.abs(dy))));
  for (let k = 1; k <= n; k++) {
    const sx = Math.round((k * dx) / n);
    const sy = Math.round((k * dy) / n);
    for (let y = Math.max(0, sy); y < Math.min(h, h + sy); y++) {
      const from = (y - sy) * w - sx;
      for (let x = Math.max(0, sx); x < Math.min(w, w + sx); x++) {
        const c = coverage[from + x];
        if (c > out[y * w + x]) out[y * w + x] = c;
      }
    }
  }
}
