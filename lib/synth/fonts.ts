// The fonts the synthetic generator draws with: 30 Google Fonts families shipped as TrueType files in
// @expo-google-fonts/* packages (OFL-1.1 or Apache-2.0), chosen for the faces text in photographs is
// set in — sans, condensed, serif, slab, heavy display, typewriter, script; optionally the system's
// fonts and the user's own files. A small reader of the TrueType/OpenType tables (name, OS/2, cmap)
// gives each file's family and style, which is how Pango is asked for it.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Rng } from './random.js';

/** One font file and how to ask Pango for it. */
export interface FontFace {
  /** The .ttf or .otf file. */
  file: string;
  /** Legacy family name (name table ID 1), e.g. "Roboto Black": with `style`, names exactly this file. */
  family: string;
  /** Legacy subfamily (name table ID 2): "Regular", "Bold", "Italic" or "Bold Italic". */
  style: string;
  /** The family this face belongs to (name table ID 16 when present), e.g. "Roboto". */
  group: string;
  /** Human-readable name of the face, e.g. "Roboto Black Italic". */
  name: string;
  /** OS/2 weight class, 100 (thin) to 900 (black). */
  weight: number;
  italic: boolean;
  /** The face has no lower case (its lower-case letters are capitals or small capitals). */
  caseless: boolean;
  /** What kind of face: used only to describe and to weigh the choice. */
  category: FontCategory;
}

export type FontCategory = 'sans' | 'condensed' | 'serif' | 'slab' | 'display' | 'script' | 'system' | 'user';

/** A family of faces and how often it is drawn. */
export interface FontFamily {
  group: string;
  category: FontCategory;
  /** Relative frequency of the family. */
  weight: number;
  faces: FontFace[];
  /** Relative frequency of each face within the family (regular and bold most often). */
  faceWeights: number[];
}

/**
 * The bundled families: package, kind, relative frequency, and whether the face has no lower case
 * (Note [labels and the charset] in words.ts). Frequencies put about half the samples in sans and
 * condensed sans, a quarter in serif faces, the rest in slab, typewriter, display and script faces.
 */
export const BUNDLED_FAMILIES: ReadonlyArray<{ pkg: string; category: FontCategory; weight: number; caseless?: boolean }> = [
  { pkg: 'roboto', category: 'sans', weight: 1.2 },
  { pkg: 'open-sans', category: 'sans', weight: 1 },
  { pkg: 'lato', category: 'sans', weight: 1 },
  { pkg: 'montserrat', category: 'sans', weight: 1 },
  { pkg: 'oswald', category: 'condensed', weight: 1 },
  { pkg: 'barlow-condensed', category: 'condensed', weight: 0.8 },
  { pkg: 'pt-sans-narrow', category: 'condensed', weight: 0.7 },
  { pkg: 'anton', category: 'condensed', weight: 0.6 },
  { pkg: 'bebas-neue', category: 'condensed', weight: 0.6, caseless: true },
  { pkg: 'league-gothic', category: 'condensed', weight: 0.5 },
  { pkg: 'teko', category: 'condensed', weight: 0.4 },
  { pkg: 'archivo-black', category: 'display', weight: 0.6 },
  { pkg: 'russo-one', category: 'display', weight: 0.4 },
  { pkg: 'righteous', category: 'display', weight: 0.4 },
  { pkg: 'bangers', category: 'display', weight: 0.3, caseless: true },
  { pkg: 'playfair-display', category: 'serif', weight: 0.8 },
  { pkg: 'pt-serif', category: 'serif', weight: 0.9 },
  { pkg: 'libre-baskerville', category: 'serif', weight: 0.7 },
  { pkg: 'crimson-text', category: 'serif', weight: 0.6 },
  { pkg: 'dm-serif-display', category: 'serif', weight: 0.6 },
  { pkg: 'abril-fatface', category: 'serif', weight: 0.4 },
  { pkg: 'cinzel', category: 'serif', weight: 0.4, caseless: true },
  { pkg: 'roboto-slab', category: 'slab', weight: 0.8 },
  { pkg: 'zilla-slab', category: 'slab', weight: 0.6 },
  { pkg: 'courier-prime', category: 'slab', weight: 0.4 },
  { pkg: 'space-mono', category: 'slab', weight: 0.3 },
  { pkg: 'special-elite', category: 'slab', weight: 0.3 },
  { pkg: 'lobster', category: 'script', weight: 0.4 },
  { pkg: 'pacifico', category: 'script', weight: 0.3 },
  { pkg: 'permanent-marker', category: 'script', weight: 0.4, caseless: true },
];

// ---- reading font files --------------------------------------------------------------------------

/** What the font tables say about one file. */
export interface FontInfo {
  family: string;
  style: string;
  group: string;
  name: string;
  weight: number;
  italic: boolean;
  /** The cmap maps every one of A–Z, a–z and 0–9. */
  coversAlphanumerics: boolean;
  /** Every lower-case letter maps to the same glyph as its capital. */
  lowerIsUpper: boolean;
}

function decodeName(bytes: Buffer, platform: number): string {
  if (platform === 1) return bytes.toString('latin1');
  let s = '';
  for (let k = 0; k + 1 < bytes.length; k += 2) s += String.fromCharCode(bytes.readUInt16BE(k));
  return s;
}

/** Glyph lookup from a cmap subtable of format 4 or 12; undefined when the font has neither. */
function cmapLookup(font: Buffer, cmap: number): ((codePoint: number) => number) | undefined {
  const count = font.readUInt16BE(cmap + 2);
  let best: { offset: number; format: number } | undefined;
  for (let i = 0; i < count; i++) {
    const record = cmap + 4 + 8 * i;
    const platform = font.readUInt16BE(record);
    const encoding = font.readUInt16BE(record + 2);
    const offset = cmap + font.readUInt32BE(record + 4);
    const format = font.readUInt16BE(offset);
    const unicode = platform === 0 || (platform === 3 && (encoding === 1 || encoding === 10));
    if (unicode && (format === 4 || format === 12) && (best === undefined || format === 12)) best = { offset, format };
  }
  if (best === undefined) return undefined;
  const { offset, format } = best;
  if (format === 12) {
    const groups = font.readUInt32BE(offset + 12);
    return (cp) => {
      for (let g = 0; g < groups; g++) {
        const at = offset + 16 + 12 * g;
        const start = font.readUInt32BE(at);
        if (cp >= start && cp <= font.readUInt32BE(at + 4)) return font.readUInt32BE(at + 8) + (cp - start);
      }
      return 0;
    };
  }
  const segments = font.readUInt16BE(offset + 6) / 2;
  const ends = offset + 14;
  const starts = ends + 2 * segments + 2;
  const deltas = starts + 2 * segments;
  const rangeOffsets = deltas + 2 * segments;
  return (cp) => {
    for (let s = 0; s < segments; s++) {
      if (cp > font.readUInt16BE(ends + 2 * s)) continue;
      const start = font.readUInt16BE(starts + 2 * s);
      if (cp < start) return 0;
      const delta = font.readInt16BE(deltas + 2 * s);
      const rangeOffset = font.readUInt16BE(rangeOffsets + 2 * s);
      if (rangeOffset === 0) return (cp + delta) & 0xffff;
      const glyph = font.readUInt16BE(rangeOffsets + 2 * s + rangeOffset + 2 * (cp - start));
      return glyph === 0 ? 0 : (glyph + delta) & 0xffff;
    }
    return 0;
  };
}

/**
 * Reads the family, style, weight and coverage of a TrueType or OpenType file (not a collection).
 * @throws Error "<file>: not a TrueType or OpenType font (<reason>)".
 */
export function readFontInfo(file: string): FontInfo {
  const font = readFileSync(file);
  try {
    const tag = font.toString('latin1', 0, 4);
    if (tag !== '\0\x01\0\0' && tag !== 'OTTO' && tag !== 'true') throw new Error('unknown signature');
    const tables = new Map<string, number>();
    const count = font.readUInt16BE(4);
    for (let i = 0; i < count; i++) tables.set(font.toString('latin1', 12 + 16 * i, 16 + 16 * i), font.readUInt32BE(20 + 16 * i));
    const nameTable = tables.get('name');
    if (nameTable === undefined) throw new Error('no name table');
    // Windows English names first, then Macintosh Roman names.
    const names = new Map<number, string>();
    const records = font.readUInt16BE(nameTable + 2);
    const strings = nameTable + font.readUInt16BE(nameTable + 4);
    for (const wanted of [3, 1]) {
      for (let i = 0; i < records; i++) {
        const r = nameTable + 6 + 12 * i;
        const platform = font.readUInt16BE(r);
        const language = font.readUInt16BE(r + 4);
        const id = font.readUInt16BE(r + 6);
        if (platform !== wanted || names.has(id) || (platform === 3 ? language !== 0x409 : language !== 0)) continue;
        const start = strings + font.readUInt16BE(r + 10);
        names.set(id, decodeName(font.subarray(start, start + font.readUInt16BE(r + 8)), platform));
      }
    }
    const family = names.get(1);
    if (family === undefined) throw new Error('no family name');
    const style = names.get(2) ?? 'Regular';
    const os2 = tables.get('OS/2');
    const weight = os2 !== undefined ? font.readUInt16BE(os2 + 4) : /bold/i.test(style) ? 700 : 400;
    const italic = os2 !== undefined ? (font.readUInt16BE(os2 + 62) & 1) === 1 : /italic|oblique/i.test(style);
    const cmap = tables.get('cmap');
    const glyph = cmap === undefined ? undefined : cmapLookup(font, cmap);
    const codes = (chars: string) => [...chars].map((c) => (glyph === undefined ? 0 : glyph(c.charCodeAt(0))));
    const upper = codes('ABCDEFGHIJKLMNOPQRSTUVWXYZ');
    const lower = codes('abcdefghijklmnopqrstuvwxyz');
    const figures = codes('0123456789');
    return {
      family,
      style,
      group: names.get(16) ?? family,
      name: names.get(4) ?? `${family} ${style}`,
      weight,
      italic,
      coversAlphanumerics: [...upper, ...lower, ...figures].every((g) => g !== 0),
      lowerIsUpper: upper.every((g, i) => g !== 0 && g === lower[i]),
    };
  } catch (err) {
    throw new Error(`${file}: not a TrueType or OpenType font (${(err as Error).message})`, { cause: err });
  }
}

// ---- collections of faces --------------------------------------------------------------------------

/** How often a face is drawn within its family: regular and bold most, extremes and italics less. */
function faceWeight(face: FontFace): number {
  const byWeight = face.weight < 350 ? 0.6 : face.weight < 450 ? 3 : face.weight < 650 ? 1.5 : face.weight < 750 ? 2.5 : 1.2;
  return byWeight * (face.italic ? 0.35 : 1);
}

function family(group: string, category: FontCategory, weight: number, faces: FontFace[]): FontFamily {
  faces.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return { group, category, weight, faces, faceWeights: faces.map(faceWeight) };
}

function fontFilesIn(dir: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir, { recursive: true }) as string[];
  } catch {
    return [];
  }
  return entries.filter((e) => /\.(ttf|otf)$/i.test(e)).map((e) => path.join(dir, e)).sort();
}

function face(file: string, info: FontInfo, category: FontCategory, caseless: boolean): FontFace {
  const { family: fam, style, group, name, weight, italic } = info;
  return { file, family: fam, style, group, name, weight, italic, caseless, category };
}

let bundled: FontFamily[] | undefined;

/**
 * The bundled families whose packages are installed, in table order; faces lighter than weight 300
 * (thin, hairline, extra-light) are left out, as text in photographs is rarely that thin.
 */
export function bundledFamilies(): FontFamily[] {
  if (bundled !== undefined) return bundled;
  bundled = [];
  for (const { pkg, category, weight, caseless } of BUNDLED_FAMILIES) {
    let dir: string;
    try {
      dir = path.dirname(require.resolve(`@expo-google-fonts/${pkg}/package.json`));
    } catch {
      continue;
    }
    const faces = fontFilesIn(dir)
      .map((file) => ({ file, info: readFontInfo(file) }))
      .filter(({ info }) => info.weight >= 300)
      .map(({ file, info }) => face(file, info, category, caseless === true));
    if (faces.length > 0) bundled.push(family(faces[0].group, category, weight, faces));
  }
  return bundled;
}

/** Where operating systems keep fonts. */
function systemFontDirs(): string[] {
  const home = os.homedir();
  const dirs = [
    '/usr/share/fonts',
    '/usr/local/share/fonts',
    path.join(home, '.fonts'),
    path.join(home, '.local', 'share', 'fonts'),
    '/Library/Fonts',
    '/System/Library/Fonts',
    path.join(home, 'Library', 'Fonts'),
  ];
  if (process.env.WINDIR !== undefined) dirs.push(path.join(process.env.WINDIR, 'Fonts'));
  return dirs.filter((d) => existsSync(d));
}

/**
 * Groups font files into families. Files that cannot be read, or that lack a glyph for a letter or
 * digit (symbol, math and non-Latin fonts), are skipped; faces lighter than 300 too.
 */
function familiesOf(files: string[], category: FontCategory): FontFamily[] {
  const groups = new Map<string, FontFace[]>();
  for (const file of files) {
    let info: FontInfo;
    try {
      info = readFontInfo(file);
    } catch {
      continue;
    }
    if (!info.coversAlphanumerics || info.weight < 300) continue;
    const list = groups.get(info.group) ?? [];
    list.push(face(file, info, category, info.lowerIsUpper));
    groups.set(info.group, list);
  }
  return [...groups.keys()].sort().map((g) => family(g, category, 1, groups.get(g) as FontFace[]));
}

/** The system's font families (see familiesOf), each as frequent as a bundled sans family. */
export function systemFamilies(): FontFamily[] {
  return familiesOf(systemFontDirs().flatMap(fontFilesIn), 'system');
}

/**
 * Families from the user's font files and directories (searched recursively for .ttf and .otf).
 * @throws Error "<path>: no such file or directory", or the reader's error for a file named directly
 * that is not a font.
 */
export function userFamilies(paths: readonly string[]): FontFamily[] {
  const files: string[] = [];
  for (const p of paths) {
    let isDir: boolean;
    try {
      isDir = statSync(p).isDirectory();
    } catch {
      throw new Error(`${p}: no such file or directory`);
    }
    if (isDir) files.push(...fontFilesIn(p));
    else {
      const info = readFontInfo(p);
      if (!info.coversAlphanumerics) throw new Error(`${p}: the font lacks some of the letters A–Z, a–z or the digits 0–9`);
      files.push(p);
    }
  }
  return familiesOf(files, 'user');
}

/** Picks a face: a family by its weight, then a face of it by faceWeights. */
export function pickFace(families: readonly FontFamily[], rng: Rng): FontFace {
  const fam = families[rng.weighted(families.map((f) => f.weight))];
  return fam.faces[rng.weighted(fam.faceWeights)];
}
