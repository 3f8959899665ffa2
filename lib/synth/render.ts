// Text to pixels: sharp renders a string with Pango (libvips' text operation) in a given font file,
// size and letter spacing, as coverage (alpha) in [0, 1]. Everything after that — colours, warps,
// backgrounds, blur, noise — is done on raw pixels in augment.ts.
//
// Note [asking Pango for a file's face]: libvips adds `fontfile` to fontconfig once per process and
// Pango then picks a face by its description. The description names the file's legacy family (name
// ID 1, e.g. "Roboto Black") and subfamily (ID 2, "Italic"), which together name exactly one file,
// with a comma after the family so Pango does not read "Black" as a weight. The tests check that
// every bundled face renders differently from every other and from the fallback font.
//
// Note [one render per line]: the word and the letters drawn beside it (Note [neighbouring
// letters] in sample.ts) are rendered in one call, in pure green, red and blue: each pixel's colour
// says which part its coverage belongs to, and the space between them is the font's own. RGBA
// output is also cheaper in this sharp than a single-band mask (about 0.2 ms against 0.7 ms).
import type sharpModule from 'sharp';
import type { FontFace } from './fonts.js';

let sharpInstance: typeof sharpModule | undefined;

/** sharp, loaded on first use, one libvips thread per image (Note [sharp's threads] in image.ts). */
export function sharp(): typeof sharpModule {
  if (sharpInstance === undefined) {
    sharpInstance = require('sharp') as typeof sharpModule;
    sharpInstance.concurrency(1);
  }
  return sharpInstance;
}

/** A box in pixels: x0 ≤ x < x1, y0 ≤ y < y1. */
export interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

/** A rendered line: RGBA pixels (see Note [one render per line]) and where the ink of each part is. */
export interface RenderedLine {
  width: number;
  height: number;
  rgba: Uint8Array;
  /** The ink of the word, of the letter before it and of the letter after it (undefined: none drawn). */
  word: Box | undefined;
  before: Box | undefined;
  after: Box | undefined;
  /**
   * Each part's ink row by row: for part p (0 before, 1 word, 2 after) and row y, the first and
   * one past the last inked column at [2 (p · height + y)] and [2 (p · height + y) + 1]; −1, −1
   * for a row without its ink.
   */
  rows: Int32Array;
}

/** Pango markup reserves &, < and >. */
function escapeMarkup(text: string): string {
  return text.replace(/[&<>]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[c] as string);
}

/** Letter spacing in Pango units: 1/1024 point, and 1 point is 1 pixel at 72 dpi. */
function pangoSpacing(px: number): number {
  return Math.round(px * 1024);
}

/**
 * Renders `word` in `face` at `sizePx` pixels per em with `spacingPx` extra pixels between its
 * letters, and optionally a letter `before` and `after` it, each a space away (the space widened
 * by `gapPx`); Note [one render per line]. The line is as tall as the font's ascent plus descent.
 */
export async function renderLine(
  face: FontFace,
  sizePx: number,
  word: string,
  spacingPx: number,
  before: string | undefined,
  after: string | undefined,
  gapPx: number,
): Promise<RenderedLine> {
  const gap = `<span letter_spacing="${pangoSpacing(gapPx)}"> </span>`;
  const markup =
    (before === undefined ? '' : `<span foreground="#ff0000">${escapeMarkup(before)}</span>${gap}`) +
    `<span foreground="#00ff00" letter_spacing="${pangoSpacing(spacingPx)}">${escapeMarkup(word)}</span>` +
    (after === undefined ? '' : `${gap}<span foreground="#0000ff">${escapeMarkup(after)}</span>`);
  const { data, info } = await sharp()({
    text: {
      text: markup,
      font: `${face.family}, ${face.style} ${sizePx.toFixed(1)}px`, // Note [asking Pango for a file's face]
      fontfile: face.file,
      dpi: 72,
      rgba: true,
    },
  })
    .raw()
    .toBuffer({ resolveWithObject: true });
  const { width, height } = info;
  const boxes: Array<Box | undefined> = [undefined, undefined, undefined];
  const rows = new Int32Array(6 * height).fill(-1);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = 4 * (y * width + x);
      if (data[p + 3] <= 24) continue; // faint antialiasing does not count as ink
      const part = data[p + 1] > 0 ? 1 : data[p] > 0 ? 0 : 2;
      const row = 2 * (part * height + y);
      if (rows[row] < 0) rows[row] = x;
      rows[row + 1] = x + 1;
      const box = boxes[part];
      if (box === undefined) boxes[part] = { x0: x, y0: y, x1: x + 1, y1: y + 1 };
      else {
        if (x < box.x0) box.x0 = x;
        if (x >= box.x1) box.x1 = x + 1;
        box.y1 = y + 1;
      }
    }
  }
  const rgba = new Uint8Array(data.buffer, data.byteOffset, data.length);
  return { width, height, rgba, before: boxes[0], word: boxes[1], after: boxes[2], rows };
}

/** Writes the line's coverage (alpha / 255) into `plane` (`planeWidth` wide) with its top-left at (left, top). */
export function coverageInto(line: RenderedLine, plane: Float32Array, planeWidth: number, left: number, top: number): void {
  const { width, height, rgba } = line;
  for (let y = 0; y < height; y++) {
    const row = (top + y) * planeWidth + left;
    for (let x = 0; x < width; x++) plane[row + x] = rgba[4 * (y * width + x) + 3] / 255;
  }
}
