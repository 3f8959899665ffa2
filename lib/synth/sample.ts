// One synthetic word image, start to finish. Every choice comes from the sample's own random
// streams (random.ts), so sample i of a seed is the same in any order, process or worker.
//
//  1. font face and word (fonts.ts, words.ts); letter size 16–56 px, sometimes letter-spaced
//  2. the text's coverage, rendered by sharp/Pango (render.ts): the word, and sometimes one letter
//     on either side of it, a space away (Note [neighbouring letters])
//  3. on that canvas: an outline (dilated coverage), and a drop shadow or an extrusion (Note
//     [extruded letters]), each now and then; now and then hollow or neon letters (Note [sign looks])
//     or faint ink (Note [faint text])
//  4. a crop rectangle around the word's ink with uneven margins, now and then cutting into the
//     letters' tops or bottoms (Note [clipped letters])
//  5. the crop is placed on its surface: horizontal stretch, slant, rotation, perspective (a
//     homography) and a curved baseline; the output is an upright box around the warped word
//     (Note [the image's extent])
//  6. every output pixel is mapped back to the surface (Note [one inverse map]); there the
//     background (colour, gradient, smooth and fine texture, a band of another colour along the
//     sign's edge), then shadow, outline and text (solid, gradient or textured fill) are composited
//  7. in image space: stray lines and objects at the edges, uneven lighting, a colour cast, a
//     camera's limited range, blur (Gaussian or motion), sensor noise
//  8. JPEG compression (by sharp) for about half the samples; the others stay raw pixels
//
// Sizes are natural: 16–56 px letters give images about 15 to 90 px high, and small ones, blurred,
// stand in for the low resolution of distant text (the recogniser resizes every image to 64×256).
//
// Note [neighbouring letters]: word crops in photographs often show slivers of the letters next to
// the word. A neighbour is a single round letter a space (sometimes widened) from the word; the
// margin on its side reaches 5–30% into that letter's ink, so no whole extra character ever shows.
//
// Note [the image's extent]: word crops in datasets are upright rectangles around the word. A
// slanted, turned or perspective crop's bounding box would reach past the word's ends at its
// corners and show more of a neighbouring letter than intended; so only the image's height is
// that of the warped crop. Its width is that of the warped word ink, found from the ink's runs row
// by row, plus the (stretched) side margin; where a neighbouring letter is drawn, the edge is put
// 5–30% of the way into that letter's warped ink instead.
//
// Note [extruded letters]: the letters of shop signs are often solid blocks (channel letters, cut
// panels) photographed from the side, so each letter shows a side face: a band of the letter's own
// hue, darker or lighter, as wide as the letter is deep, along one direction. The generator makes it
// from the text's coverage swept over whole-pixel steps along that direction (the maximum of the
// shifted copies), drawn opaque in a shade of the ink beneath the text, where a drop shadow would
// go (the two share a plane and never come together).
//
// Note [sign looks]: three things the misread shop signs of SVT show that the generator drew rarely
// or never. Hollow letters (one sample in 16): only an outline in the ink's colour, the inside the
// sign's background. Neon (one in 25): a bright, nearly white core in a coloured glow (the
// coverage blurred by 6–15% of the letter size) on a dark background, in place of any shadow. And
// half the extruded letters turn their side face sideways (within 26° of horizontal, as channel
// letters seen from the pavement do) and half are painted in a neutral grey or metal rather than a
// shade of the ink, so the face is a different colour from the letter. All of it is drawn from a
// stream of its own (signLook), so the other samples stay as they were.
//
// Note [faint text]: many of SVT's misread photographs are grey on grey, dim signs whose letters
// differ from the wall by a few hundredths of luminance, where the colour stream's lowest contrast
// (contrastingColour's 0.12 to 0.42) never goes. One sample in 12 with plain letters gets ink whose
// luminance is 0.03–0.12 from the background's, from a stream of its own.
//
// Note [clipped letters]: shop signs are often cropped tightly, the tops or bottoms of tall letters
// cut off by the box (a neon or channel-letter sign filling the frame). For one sample in seven
// whose ink is at least half the letter size tall, the crop's top, bottom or both are moved into
// the ink by 3–12% of the letter size (at most 12% of the ink's height), whatever margin step 4
// drew. The cut comes from a stream of its own, so the other samples stay as they were.
//
// Note [one inverse map]: everything that lies on the sign (text, outline, shadow, background
// texture, the band along its edge) is evaluated in surface coordinates found by inverting the warp
// for each output pixel, so all of it follows the same perspective and curve at the cost of one
// inverse map per pixel; lines, lighting and noise belong to the scene and the camera and are
// applied in image coordinates.
import type { RawImage } from '../image.js';
import {
  contrastingColour,
  dilate,
  gaussianBlur,
  homography,
  hsvToRgb,
  invert3,
  luminance,
  motionBlur,
  project,
  randomColour,
  type Mat3,
  sampleBilinear,
  scratch,
  Scratch,
  sweep,
  toBytes,
  ValueNoise,
  withLuminance,
  type Rgb,
} from './augment.js';
import { pickFace, type FontFamily } from './fonts.js';
import { normalTable, Rng } from './random.js';
import { coverageInto, renderLine, sharp, type RenderedLine } from './render.js';
import type { WordGenerator, WordKind } from './words.js';

/** One generated word image. */
export interface SynthSample {
  /** Raw RGB pixels, or JPEG bytes when the sample was given JPEG artefacts. */
  image: RawImage | Buffer;
  /** The label (the text, mapped into the charset). */
  label: string;
  /** The text as drawn. */
  text: string;
  /** What kind of string the text is. */
  kind: WordKind;
  /** The font face it was drawn in, e.g. "Oswald Bold". */
  font: string;
}

/** What samples are made from: fonts, words and the seed. */
export interface GeneratorContext {
  seed: number;
  families: readonly FontFamily[];
  words: WordGenerator;
}

/**
 * Letters drawn beside a word (Note [neighbouring letters]): round ones only, whose slivers look
 * like no character; a sliver of a letter with a straight stem (l, H, 1) would read as an I.
 */
const NEIGHBOUR_CHARS = [...'aceosCGOQS0689'];

/** Streams of a sample's generator (Note [independent streams] in random.ts). */
const enum Stream {
  Font = 1,
  Word,
  Layout,
  Effects,
  Geometry,
  Colour,
  Texture,
  Camera,
  Scene,
  Clip,
  Sign,
  Faint,
}

/** Makes sample `index` of `ctx.seed`. */
export async function generateSample(ctx: GeneratorContext, index: number): Promise<SynthSample> {
  const rng = new Rng(ctx.seed, index);
  const face = pickFace(ctx.families, rng.fork(Stream.Font));
  const word = ctx.words.next(rng.fork(Stream.Word), face.caseless);

  // 1–2. The text, with a letter on either side now and then.
  const lay = rng.fork(Stream.Layout);
  const size = lay.logUniform(16, 56);
  const spacing = lay.chance(0.2) ? size * lay.uniform(-0.03, 0.3) : 0;
  const before = lay.chance(0.2) ? lay.pick(NEIGHBOUR_CHARS) : undefined;
  const after = lay.chance(0.2) ? lay.pick(NEIGHBOUR_CHARS) : undefined;
  const line = await renderLine(face, size, word.text, spacing, before, after, size * lay.uniform(-0.05, 0.3));

  // 3–7, synchronously (Note [scratch planes] in augment.ts).
  const { rgb, width, height } = drawSample(rng, lay, size, line);
  const cam = rng.fork(Stream.Camera);
  camera(cam, rgb, width, height, size);

  // 8. Compression.
  const quality = cam.chance(0.45) ? cam.int(20, 92) : 0;
  const pixels = toBytes(rgb);
  const meta = { label: word.label, text: word.text, kind: word.kind, font: face.name };
  if (quality === 0) return { image: { data: pixels, width, height, channels: 3 }, ...meta };
  return { image: await sharp()(pixels, { raw: { width, height, channels: 3 } }).jpeg({ quality }).toBuffer(), ...meta };
}

/** A curved baseline: the vertical offset at u of a crop `width` wide. */
interface Curve {
  kind: 'none' | 'arc' | 'wave';
  amplitude: number;
  frequency: number;
  phase: number;
  width: number;
}

function curveAt(c: Curve, u: number): number {
  if (c.kind === 'arc') {
    const t = (2 * u) / c.width - 1;
    return c.amplitude * (1 - t * t);
  }
  return c.kind === 'wave' ? c.amplitude * 0.5 * Math.sin((2 * Math.PI * c.frequency * u) / c.width + c.phase) : 0;
}

/** Everything paintSurface needs: the warp back to the crop, and what lies on the surface. */
interface Surface {
  /** Image → crop: inverse homography, then the curve; (minX, minY) is the image's top-left. */
  inverse: Mat3;
  curve: Curve;
  minX: number;
  minY: number;
  /** The crop in canvas coordinates. */
  cropX: number;
  cropY: number;
  cropW: number;
  cropH: number;
  /** Coverage planes on the canvas; outline and shadow may be absent. */
  canvasW: number;
  canvasH: number;
  text: Float32Array;
  outline: Float32Array | undefined;
  shadow: Float32Array | undefined;
  shadowDx: number;
  shadowDy: number;
  // Colours.
  background: Rgb;
  background2: Rgb;
  gradientDx: number;
  gradientDy: number;
  band: 'none' | 'top' | 'bottom';
  bandEdge: number;
  bandColour: Rgb;
  smooth: ValueNoise | undefined;
  smoothAmp: number;
  fine: ValueNoise | undefined;
  fineAmp: number;
  grain: number;
  grainRng: Rng;
  ink: Rgb;
  ink2: Rgb;
  fill: 'solid' | 'gradient' | 'texture';
  fillNoise: ValueNoise | undefined;
  fillNoiseAmp: number;
  inkTop: number;
  inkBottom: number;
  opacity: number;
  outlineColour: Rgb;
  shadowColour: Rgb;
  shadowOpacity: number;
}

/** The side face of an extruded letter (Note [extruded letters]): the ink's hue, mostly darker. */
function sideColour(col: Rng, ink: Rgb): Rgb {
  const l = luminance(ink);
  return withLuminance(ink, col.chance(0.7) ? l * col.uniform(0.3, 0.75) : l + (1 - l) * col.uniform(0.25, 0.6));
}

/** The choices of Note [sign looks] for one sample. */
export interface SignLook {
  look: 'plain' | 'hollow' | 'neon';
  /** For extruded letters: the side face's direction (radians, 0 = right, y down) instead of the drawn one. */
  sideAngle: number | undefined;
  /** For extruded letters: a neutral side face (grey, metal) instead of a shade of the ink. */
  neutralSide: boolean;
  /** The hollow letters' outline width and the neon glow's blur, as fractions of the letter size. */
  strokeWidth: number;
  glow: number;
}

/** Note [sign looks]: every sample draws the same values from its stream, whatever it uses. */
export function signLook(sign: Rng): SignLook {
  const r = sign.next();
  const sideways = sign.chance(0.5);
  const angle = (sign.chance(0.5) ? 0 : Math.PI) + sign.uniform(-0.45, 0.45);
  return {
    look: r < 1 / 16 ? 'hollow' : r < 1 / 16 + 1 / 25 ? 'neon' : 'plain',
    sideAngle: sideways ? angle : undefined,
    neutralSide: sign.chance(0.5),
    strokeWidth: sign.uniform(0.04, 0.1),
    glow: sign.uniform(0.06, 0.15),
  };
}

/** Note [faint text]: how far the ink's luminance is from the background's, or undefined. */
export function faintContrast(faint: Rng): number | undefined {
  return faint.chance(1 / 12) ? faint.uniform(0.03, 0.12) : undefined;
}

/**
 * How far the crop cuts into the letters at its top and bottom (Note [clipped letters]), in
 * pixels: 0, 0 for most samples.
 */
export function clippedLetters(clip: Rng, size: number, inkHeight: number): [number, number] {
  if (!clip.chance(0.15) || inkHeight < 0.5 * size) return [0, 0];
  const r = clip.next();
  const cut = () => Math.min(size * clip.uniform(0.03, 0.12), 0.12 * inkHeight);
  if (r < 0.4) return [cut(), 0];
  if (r < 0.8) return [0, cut()];
  return [cut(), cut()];
}

/** Steps 3–6: canvas, outline and shadow, crop, warp, surface; returns the image (a scratch plane). */
function drawSample(rng: Rng, lay: Rng, size: number, line: RenderedLine): { rgb: Float32Array; width: number; height: number } {
  const ink = line.word ?? { x0: 0, y0: 0, x1: line.width, y1: line.height };

  // The canvas: the line with a margin around it, for outlines and shadows to spread into.
  const margin = Math.ceil(size * 0.25);
  const canvasW = line.width + 2 * margin;
  const canvasH = line.height + 2 * margin;
  const text = scratch(Scratch.Text, canvasW * canvasH, true);
  coverageInto(line, text, canvasW, margin, margin);

  // 3. Outline and shadow (and Note [sign looks]).
  const sign = rng.fork(Stream.Sign);
  const look = signLook(sign);
  const fx = rng.fork(Stream.Effects);
  let outline: Float32Array | undefined;
  if (fx.chance(0.12)) {
    outline = scratch(Scratch.Outline, text.length, false);
    dilate(outline, text, canvasW, canvasH, Math.max(1, Math.round(size * fx.uniform(0.03, 0.09))));
  }
  if (look.look === 'hollow' && outline === undefined) {
    outline = scratch(Scratch.Outline, text.length, false);
    dilate(outline, text, canvasW, canvasH, Math.max(1, Math.round(size * look.strokeWidth)));
  }
  let shadow: Float32Array | undefined;
  let shadowDx = 0;
  let shadowDy = 0;
  let extruded = false;
  if (fx.chance(0.12)) {
    shadow = scratch(Scratch.Shadow, text.length, false);
    shadow.set(outline ?? text);
    if (fx.chance(0.5)) gaussianBlur(shadow, canvasW, canvasH, 1, size * fx.uniform(0.02, 0.08));
    shadowDx = size * fx.uniform(-0.08, 0.08);
    shadowDy = size * fx.uniform(0.03, 0.1);
  } else if (fx.chance(0.1)) {
    // Note [extruded letters]: mostly downwards, to either side; now and then upwards.
    extruded = true;
    shadow = scratch(Scratch.Shadow, text.length, false);
    const depth = size * fx.uniform(0.04, 0.16);
    const drawn = (fx.chance(0.8) ? 0.5 : -0.5) * Math.PI + fx.uniform(-0.45, 0.45) * Math.PI;
    const angle = look.sideAngle ?? drawn;
    sweep(shadow, outline ?? text, canvasW, canvasH, depth * Math.cos(angle), depth * Math.sin(angle));
  }
  if (look.look === 'neon') {
    // The glow takes the place of any outline, shadow or extrusion.
    outline = undefined;
    extruded = false;
    shadow = scratch(Scratch.Shadow, text.length, false);
    shadow.set(text);
    gaussianBlur(shadow, canvasW, canvasH, 1, size * look.glow);
    const gain = sign.uniform(1.3, 2.2);
    for (let i = 0; i < shadow.length; i++) shadow[i] = Math.min(1, shadow[i] * gain);
    shadowDx = 0;
    shadowDy = 0;
  }

  // 4. The crop, in canvas coordinates (Note [neighbouring letters]).
  const verticalPad = () => size * (lay.chance(0.7) ? lay.uniform(-0.02, 0.12) : lay.uniform(0.12, 0.45));
  const sidePad = () => size * (lay.chance(0.6) ? lay.uniform(0, 0.1) : lay.uniform(0.1, 0.5));
  const { before: left, after: right } = line;
  const showLeft = lay.uniform(0.05, 0.3);
  const showRight = lay.uniform(0.05, 0.3);
  const padLeft = left ? ink.x0 - left.x1 + (left.x1 - left.x0) * showLeft : sidePad();
  const padRight = right ? right.x0 - ink.x1 + (right.x1 - right.x0) * showRight : sidePad();
  const cropX = margin + ink.x0 - padLeft;
  let cropY = margin + ink.y0 - verticalPad();
  const cropW = margin + ink.x1 + padRight - cropX;
  let cropH = margin + ink.y1 + verticalPad() - cropY;
  const [clipTop, clipBottom] = clippedLetters(rng.fork(Stream.Clip), size, ink.y1 - ink.y0);
  cropY += clipTop;
  cropH -= clipTop + clipBottom;

  // 5. The warp: crop coordinates (u, v) → curve → homography → image coordinates.
  const geo = rng.fork(Stream.Geometry);
  const r = geo.next();
  const angle = ((r < 0.15 ? 0 : r < 0.85 ? geo.clampedNormal(0, 2.5, -8, 8) : geo.uniform(-15, 15)) * Math.PI) / 180;
  const slant = geo.chance(0.3) ? geo.clampedNormal(0, 0.15, -0.4, 0.4) : 0;
  const stretch = geo.logUniform(0.8, 1.25);
  const jitter = geo.chance(0.35) ? geo.uniform(0.02, 0.12) * cropH : 0;
  const turn = geo.chance(0.3) ? geo.logUniform(0.75, 1.33) : 1; // one end nearer the camera
  const curve: Curve = {
    kind: geo.chance(0.2) ? (geo.chance(0.5) ? 'arc' : 'wave') : 'none',
    amplitude: cropH * geo.uniform(0.08, 0.35) * (geo.chance(0.5) ? 1 : -1),
    frequency: geo.uniform(0.3, 1),
    phase: geo.uniform(0, 2 * Math.PI),
    width: cropW,
  };
  const corners = [0, 0, cropW, 0, cropW, cropH, 0, cropH];
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const placed: number[] = [];
  for (let i = 0; i < 4; i++) {
    const xc = corners[2 * i] - cropW / 2;
    const yc = (corners[2 * i + 1] - cropH / 2) * (corners[2 * i] === 0 ? turn : 1 / turn);
    const x = stretch * xc + slant * yc;
    placed.push(cos * x - sin * yc + geo.normal() * jitter, sin * x + cos * yc + geo.normal() * jitter);
  }
  const forward = homography(corners, placed);
  // The image: as tall as the warped crop, as wide as the warped ink and margins (Note [the image's extent]).
  const inkTop = margin + ink.y0 - cropY;
  const inkBottom = margin + ink.y1 - cropY;
  let minY = Infinity;
  let maxY = -Infinity;
  for (let i = 0; i <= 24; i++) {
    const u = (cropW * i) / 24;
    for (const v of [0, cropH]) {
      const y = project(forward, u, v + curveAt(curve, u))[1];
      minY = Math.min(minY, y);
      maxY = Math.max(maxY, y);
    }
  }
  // Where each part's ink lands, from its inked runs row by row.
  const extent = (part: number): [number, number] => {
    let lo = Infinity;
    let hi = -Infinity;
    for (let y = 0; y < line.height; y++) {
      const row = 2 * (part * line.height + y);
      if (line.rows[row] < 0) continue;
      const v = margin + y + 0.5 - cropY;
      for (const x of [line.rows[row], line.rows[row + 1]]) {
        const u = margin + x - cropX;
        const px = project(forward, u, v + curveAt(curve, u))[0];
        lo = Math.min(lo, px);
        hi = Math.max(hi, px);
      }
    }
    return [lo, hi];
  };
  let [minX, maxX] = line.word ? extent(1) : [project(forward, 0, 0)[0], project(forward, cropW, 0)[0]];
  if (left) {
    const [lo, hi] = extent(0);
    minX = Math.min(minX, hi - (hi - lo) * showLeft);
  } else minX -= padLeft * stretch;
  if (right) {
    const [lo, hi] = extent(2);
    maxX = Math.max(maxX, lo + (hi - lo) * showRight);
  } else maxX += padRight * stretch;
  const width = Math.max(4, Math.ceil(maxX - minX));
  const height = Math.max(4, Math.ceil(maxY - minY));

  // 6. Colours and textures of the surface (Note [one inverse map]).
  const col = rng.fork(Stream.Colour);
  let background = randomColour(col, col.chance(0.45));
  const contrast = col.chance(0.1) ? col.uniform(0.12, 0.25) : col.uniform(0.25, 0.75);
  let inkColour = contrastingColour(col, background, contrast, col.chance(0.5));
  let fill: Surface['fill'] = col.chance(0.2) ? 'gradient' : col.chance(0.15) ? 'texture' : 'solid';
  const ink2 = fill === 'gradient' ? contrastingColour(col, background, contrast * col.uniform(0.7, 1.3), col.chance(0.5)) : inkColour;
  let opacity = col.chance(0.12) ? col.uniform(0.55, 0.95) : 1;
  let outlineColour = contrastingColour(col, inkColour, col.uniform(0.3, 0.7), col.chance(0.6));
  let shadowColour = extruded
    ? sideColour(col, inkColour)
    : withLuminance(background, luminance(background) * col.uniform(0, 0.4));
  let shadowOpacity = extruded ? 1 : col.uniform(0.4, 0.9);
  let background2 = col.chance(0.6)
    ? withLuminance(randomColour(col, col.chance(0.5)), Math.min(1, Math.max(0, luminance(background) + col.clampedNormal(0, 0.12, -0.3, 0.3))))
    : background;
  // Note [sign looks] and Note [faint text], over what the colour stream drew.
  const faintness = faintContrast(rng.fork(Stream.Faint));
  if (extruded && look.neutralSide) shadowColour = withLuminance(randomColour(sign, true), sign.uniform(0.1, 0.9));
  if (look.look === 'hollow') {
    // The outline in the letters' colour; inside, the background (or, now and then, a pale or dark fill).
    outlineColour = inkColour;
    inkColour = sign.chance(0.7) ? background : contrastingColour(sign, outlineColour, sign.uniform(0.3, 0.7), sign.chance(0.5));
    fill = 'solid';
    opacity = 1;
  } else if (look.look === 'neon') {
    const hue = hsvToRgb(sign.next(), sign.uniform(0.5, 1), 1);
    background = withLuminance(background, sign.uniform(0.01, 0.15));
    background2 = withLuminance(background2, Math.min(0.2, luminance(background2)));
    shadowColour = hue;
    shadowOpacity = sign.uniform(0.7, 1);
    inkColour = withLuminance(hue, sign.uniform(0.8, 0.97));
    fill = 'solid';
    opacity = 1;
  } else if (faintness !== undefined) {
    const l = luminance(background);
    inkColour = withLuminance(inkColour, l < 0.5 ? l + faintness : l - faintness);
    fill = 'solid';
    opacity = 1;
  }
  const gradientAngle = col.uniform(0, 2 * Math.PI);

  const tex = rng.fork(Stream.Texture);
  const smooth = tex.chance(0.55) ? new ValueNoise(tex, tex.int(2, 12), tex.int(1, 4)) : undefined;
  const smoothAmp = tex.uniform(0.03, 0.18);
  const cells = (length: number) => Math.max(2, Math.round(length / (size * tex.uniform(0.04, 0.3))));
  const fine = tex.chance(0.3) ? new ValueNoise(tex, cells(cropW), cells(cropH)) : undefined;
  const fineAmp = tex.uniform(0.03, 0.12);
  const fillNoise = fill === 'texture' ? new ValueNoise(tex, tex.int(4, 24), tex.int(2, 6)) : undefined;
  const fillNoiseAmp = tex.uniform(0.1, 0.3);
  // A band of another colour along the top or bottom edge of the sign, in the margin beyond the ink.
  const band = tex.chance(0.25) ? (tex.chance(0.5) ? 'top' : 'bottom') : 'none';
  const bandEdge = band === 'top' ? inkTop * tex.uniform(0.05, 0.9) : inkBottom + (cropH - inkBottom) * tex.uniform(0.1, 0.95);
  const bandColour = randomColour(tex, tex.chance(0.4));
  const grain = tex.chance(0.25) ? tex.uniform(0.01, 0.06) : 0;

  const rgb = scratch(Scratch.Image, width * height * 3, false);
  paintSurface(rgb, width, height, {
    inverse: invert3(forward),
    curve,
    minX,
    minY,
    cropX,
    cropY,
    cropW,
    cropH,
    canvasW,
    canvasH,
    text,
    outline,
    shadow,
    shadowDx,
    shadowDy,
    background,
    background2,
    gradientDx: Math.cos(gradientAngle),
    gradientDy: Math.sin(gradientAngle),
    band,
    bandEdge,
    bandColour,
    smooth,
    smoothAmp,
    fine,
    fineAmp,
    grain,
    grainRng: tex,
    ink: inkColour,
    ink2,
    fill,
    fillNoise,
    fillNoiseAmp,
    inkTop,
    inkBottom,
    opacity,
    outlineColour,
    shadowColour,
    shadowOpacity,
  });
  sceneClutter(rng.fork(Stream.Scene), rgb, width, height, size);
  return { rgb, width, height };
}

/** Step 6: every pixel of the image, mapped back to the surface and composited there. */
function paintSurface(rgb: Float32Array, width: number, height: number, s: Surface): void {
  const [i0, i1, i2, i3, i4, i5, i6, i7, i8] = s.inverse;
  const { curve, minX, minY, cropX, cropY, cropW, cropH, canvasW, canvasH, text, outline, shadow, shadowDx, shadowDy } = s;
  const { background, background2, gradientDx, gradientDy, band, bandEdge, bandColour, smooth, smoothAmp, fine, fineAmp } = s;
  const { grain, grainRng, ink, ink2, fill, fillNoise, fillNoiseAmp, inkTop, inkBottom, opacity } = s;
  const { outlineColour, shadowColour, shadowOpacity } = s;
  const curved = curve.kind !== 'none';
  const gradient = fill === 'gradient';
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const px = x + 0.5 + minX;
      const py = y + 0.5 + minY;
      const iw = 1 / (i6 * px + i7 * py + i8);
      const u = (i0 * px + i1 * py + i2) * iw;
      const v = (i3 * px + i4 * py + i5) * iw - (curved ? curveAt(curve, u) : 0);
      const su = u / cropW;
      const sv = v / cropH;
      // Background: gradient or band, shaded by texture.
      const g = Math.min(1, Math.max(0, 0.5 + 0.8 * ((su - 0.5) * gradientDx + (sv - 0.5) * gradientDy)));
      let br: number;
      let bg: number;
      let bb: number;
      if ((band === 'top' && v < bandEdge) || (band === 'bottom' && v > bandEdge)) {
        br = bandColour[0];
        bg = bandColour[1];
        bb = bandColour[2];
      } else {
        br = background[0] + (background2[0] - background[0]) * g;
        bg = background[1] + (background2[1] - background[1]) * g;
        bb = background[2] + (background2[2] - background[2]) * g;
      }
      let shade = 1;
      if (smooth !== undefined) shade += smoothAmp * smooth.at(su, sv);
      if (fine !== undefined) shade += fineAmp * fine.at(su, sv);
      if (grain > 0) shade += grain * (grainRng.next() * 2 - 1);
      br *= shade;
      bg *= shade;
      bb *= shade;
      // Shadow, outline, text: coverage from the canvas.
      const cx = u + cropX - 0.5;
      const cy = v + cropY - 0.5;
      if (shadow !== undefined) {
        const a = shadowOpacity * sampleBilinear(shadow, canvasW, canvasH, cx - shadowDx, cy - shadowDy);
        br += (shadowColour[0] - br) * a;
        bg += (shadowColour[1] - bg) * a;
        bb += (shadowColour[2] - bb) * a;
      }
      // Bilinear weights at (cx, cy), shared by outline and text; the canvas's margin is empty,
      // so a sample whose four neighbours are not all inside it is 0.
      const fx = Math.floor(cx);
      const fy = Math.floor(cy);
      if (fx < 0 || fy < 0 || fx + 1 >= canvasW || fy + 1 >= canvasH) {
        const o = 3 * (y * width + x);
        rgb[o] = br;
        rgb[o + 1] = bg;
        rgb[o + 2] = bb;
        continue;
      }
      const tx = cx - fx;
      const ty = cy - fy;
      const w00 = (1 - tx) * (1 - ty);
      const w01 = tx * (1 - ty);
      const w10 = (1 - tx) * ty;
      const w11 = tx * ty;
      const p = fy * canvasW + fx;
      if (outline !== undefined) {
        const a = w00 * outline[p] + w01 * outline[p + 1] + w10 * outline[p + canvasW] + w11 * outline[p + canvasW + 1];
        br += (outlineColour[0] - br) * a;
        bg += (outlineColour[1] - bg) * a;
        bb += (outlineColour[2] - bb) * a;
      }
      const coverage = opacity * (w00 * text[p] + w01 * text[p + 1] + w10 * text[p + canvasW] + w11 * text[p + canvasW + 1]);
      if (coverage > 0) {
        let fr = ink[0];
        let fg = ink[1];
        let fb = ink[2];
        if (gradient) {
          const t = Math.min(1, Math.max(0, (v - inkTop) / Math.max(1, inkBottom - inkTop)));
          fr += (ink2[0] - fr) * t;
          fg += (ink2[1] - fg) * t;
          fb += (ink2[2] - fb) * t;
        } else if (fillNoise !== undefined) {
          const k = 1 + fillNoiseAmp * fillNoise.at(su, sv);
          fr *= k;
          fg *= k;
          fb *= k;
        }
        br += (fr - br) * coverage;
        bg += (fg - bg) * coverage;
        bb += (fb - bb) * coverage;
      }
      const o = 3 * (y * width + x);
      rgb[o] = br;
      rgb[o + 1] = bg;
      rgb[o + 2] = bb;
    }
  }
}

/** Step 7, the camera: uneven light, colour cast, limited range, blur, sensor noise. */
function camera(cam: Rng, rgb: Float32Array, width: number, height: number, size: number): void {
  if (cam.chance(0.45)) lighting(cam, rgb, width, height);
  if (cam.chance(0.3)) {
    const cast: Rgb = [1 + cam.clampedNormal(0, 0.06, -0.2, 0.2), 1 + cam.clampedNormal(0, 0.06, -0.2, 0.2), 1 + cam.clampedNormal(0, 0.06, -0.2, 0.2)];
    for (let i = 0; i < rgb.length; i += 3) {
      rgb[i] *= cast[0];
      rgb[i + 1] *= cast[1];
      rgb[i + 2] *= cast[2];
    }
  }
  if (cam.chance(0.5)) {
    // A camera's limited range: no pure black or white.
    const lo = cam.uniform(0, 0.15);
    const hi = cam.uniform(0.8, 1);
    for (let i = 0; i < rgb.length; i++) rgb[i] = lo + (hi - lo) * rgb[i];
  }
  if (cam.chance(0.05)) motionBlur(rgb, width, height, 3, size * cam.uniform(0.05, 0.15));
  else if (cam.chance(0.6)) gaussianBlur(rgb, width, height, 3, size * cam.uniform(0.004, 0.035));
  if (cam.chance(0.6)) {
    // Sensor noise, from the noise table (Note [the noise table]).
    const normals = normalTable();
    const wrap = normals.length - 1;
    let at = cam.nextUint32() & wrap;
    const stride = (cam.nextUint32() | 1) & wrap;
    const sigma = cam.uniform(0.004, 0.04);
    const chroma = cam.chance(0.5) ? sigma * cam.uniform(0.2, 0.6) : 0;
    for (let i = 0; i < rgb.length; i += 3) {
      const n = sigma * normals[at];
      at = (at + stride) & wrap;
      if (chroma > 0) {
        for (let c = 0; c < 3; c++) {
          rgb[i + c] += n + chroma * normals[at];
          at = (at + stride) & wrap;
        }
      } else {
        rgb[i] += n;
        rgb[i + 1] += n;
        rgb[i + 2] += n;
      }
    }
  }
}

/** Stray lines (wires, edges) and a neighbouring object at one side, over the whole image. */
function sceneClutter(rng: Rng, rgb: Float32Array, width: number, height: number, size: number): void {
  if (rng.chance(0.2)) {
    for (let n = rng.int(1, 2); n > 0; n--) {
      const nearHorizontal = rng.chance(0.6);
      const angle = nearHorizontal ? rng.clampedNormal(0, 0.1, -0.4, 0.4) : Math.PI / 2 + rng.clampedNormal(0, 0.1, -0.4, 0.4);
      // A line through a point near an edge, so that it rarely crosses the middle of the word.
      const px = nearHorizontal ? rng.uniform(0, width) : rng.chance(0.5) ? rng.uniform(0, 0.06 * width) : rng.uniform(0.94 * width, width);
      const py = nearHorizontal ? (rng.chance(0.5) ? rng.uniform(0, 0.15 * height) : rng.uniform(0.85 * height, height)) : rng.uniform(0, height);
      const nx = -Math.sin(angle);
      const ny = Math.cos(angle);
      const half = Math.max(0.5, size * rng.uniform(0.01, 0.06));
      const colour = randomColour(rng, rng.chance(0.5));
      const alpha = rng.uniform(0.5, 1);
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const d = Math.abs(nx * (x + 0.5 - px) + ny * (y + 0.5 - py));
          const a = alpha * Math.min(1, Math.max(0, half + 0.5 - d));
          if (a <= 0) continue;
          const o = 3 * (y * width + x);
          for (let c = 0; c < 3; c++) rgb[o + c] += (colour[c] - rgb[o + c]) * a;
        }
      }
    }
  }
  if (rng.chance(0.12)) {
    // Something else beside the sign: a region of another colour from one side, up to 8% in.
    const fromLeft = rng.chance(0.5);
    const edge = rng.uniform(0.01, 0.08) * width;
    const colour = randomColour(rng, rng.chance(0.5));
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const d = fromLeft ? edge - (x + 0.5) : x + 0.5 - (width - edge);
        const a = Math.min(1, Math.max(0, d + 0.5));
        if (a <= 0) continue;
        const o = 3 * (y * width + x);
        for (let c = 0; c < 3; c++) rgb[o + c] += (colour[c] - rgb[o + c]) * a;
      }
    }
  }
}

/** Uneven light: a gradient and a smooth field multiply the image; sometimes a bright spot. */
function lighting(rng: Rng, rgb: Float32Array, width: number, height: number): void {
  const amp = rng.uniform(0.1, 0.45);
  const field = new ValueNoise(rng, rng.int(1, 3), rng.int(1, 2));
  const angle = rng.uniform(0, 2 * Math.PI);
  const dx = Math.cos(angle);
  const dy = Math.sin(angle);
  const spot = rng.chance(0.15) ? { x: rng.uniform(0, 1), y: rng.uniform(0, 1), r: rng.uniform(0.1, 0.4), k: rng.uniform(0.2, 0.6) } : undefined;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const u = (x + 0.5) / width;
      const v = (y + 0.5) / height;
      const k = 1 + amp * (0.5 * ((u - 0.5) * dx + (v - 0.5) * dy) + 0.5 * field.at(u, v));
      const o = 3 * (y * width + x);
      let add = 0;
      if (spot) {
        const d2 = ((u - spot.x) * width) ** 2 + ((v - spot.y) * height) ** 2;
        add = spot.k * Math.exp(-d2 / (2 * (spot.r * height) ** 2));
      }
      rgb[o] = rgb[o] * k + add;
      rgb[o + 1] = rgb[o + 1] * k + add;
      rgb[o + 2] = rgb[o + 2] * k + add;
    }
  }
}

/** A sample's image as file bytes: its JPEG bytes as they are, raw pixels as PNG. */
export async function encodeImage(image: RawImage | Buffer): Promise<{ bytes: Buffer; extension: 'jpg' | 'png' }> {
  if (Buffer.isBuffer(image)) return { bytes: image, extension: 'jpg' };
  const { data, width, height, channels } = image;
  return { bytes: await sharp()(data, { raw: { width, height, channels } }).png().toBuffer(), extension: 'png' };
}
