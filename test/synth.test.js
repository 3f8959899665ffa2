// The synthetic word-image generator: determinism, labels, images, the word mix, fonts, word lists
// of the user's, the DataSource, `safl synth` (folder and LMDB output) and the exact option errors.
'use strict';
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const sharp = require('sharp');
const { renderSample, createSynthSource, resolveSynthOptions, MAX_LABEL_LENGTH } = require('../dist/synth/index.js');
const { bundledFamilies, readFontInfo, BUNDLED_FAMILIES } = require('../dist/synth/fonts.js');
const { renderLine } = require('../dist/synth/render.js');
const { gaussianBlur, homography, project, invert3, sweep } = require('../dist/synth/augment.js');
const { loadDictionary } = require('../dist/synth/words.js');
const { clippedLetters, faintContrast, signLook } = require('../dist/synth/sample.js');
const { Rng } = require('../dist/synth/random.js');
const { DEFAULT_CHARSET } = require('../dist/charset.js');
const { FolderSource } = require('../dist/data/folder.js');
const { LmdbSource } = require('../dist/data/lmdb.js');

const root = path.join(__dirname, '..');

function digest(sample) {
  const bytes = Buffer.isBuffer(sample.image) ? sample.image : sample.image.data;
  return crypto.createHash('sha256').update(bytes).digest('hex');
}

/** Width and height of a sample's image, decoding it when it is JPEG. */
async function sizeOf(image) {
  if (!Buffer.isBuffer(image)) return { width: image.width, height: image.height };
  const { width, height, format } = await sharp(image).metadata();
  assert.equal(format, 'jpeg');
  return { width, height };
}

function tempDir(name) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `safl-synth-${name}-`));
}

/** Runs `safl synth` (lib/commands/synth.js) in a child process; resolves to { status, stdout, stderr }. */
function synth(args) {
  const script =
    "require(process.argv[1]).synthCommand(process.argv.slice(2)).then((c) => { process.exitCode = c; }, " +
    "(e) => { process.stderr.write('safl: ' + e.message + '\\n'); process.exitCode = 1; });";
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, path.join(root, 'dist', 'commands', 'synth.js'), ...args]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

describe('synthetic generator', () => {
  let samples; // samples 0…199 of seed 11
  before(async function () {
    this.timeout(60000);
    samples = [];
    for (let i = 0; i < 200; i++) samples.push(await renderSample(11, i));
  });

  it('is deterministic: the same seed and index give the same bytes, in any order', async () => {
    const again = [];
    for (const i of [150, 3, 77, 0]) again.push([i, await renderSample(11, i)]);
    for (const [i, s] of again) {
      assert.equal(digest(s), digest(samples[i]), `sample ${i}`);
      assert.equal(s.label, samples[i].label);
    }
    const digests = new Set(samples.slice(0, 50).map(digest));
    assert.equal(digests.size, 50, 'different indices give different images');
    const otherSeed = await renderSample(12, 0);
    assert.notEqual(digest(otherSeed), digest(samples[0]));
  });

  it('gives the same samples from worker threads as in this thread', async () => {
    const source = createSynthSource({ seed: 11, workers: 2 });
    try {
      const indices = [9, 1, 5, 0, 7];
      const got = await Promise.all(indices.map((i) => source.sample(i)));
      got.forEach((s, k) => assert.equal(digest(s), digest(samples[indices[k]]), `sample ${indices[k]}`));
    } finally {
      await source.close();
    }
  });

  it('labels are within the charset and at most 25 characters', () => {
    const charset = new Set(DEFAULT_CHARSET);
    for (const s of samples) {
      assert.ok(s.label.length >= 1 && [...s.label].length <= MAX_LABEL_LENGTH, s.label);
      for (const c of s.label) assert.ok(charset.has(c), `${JSON.stringify(s.label)} has ${JSON.stringify(c)}`);
    }
  });

  it('maps labels into a smaller charset and keeps a smaller maximum length', async () => {
    const charset = 'abcdefghijklmnopqrstuvwxyz0123456789';
    let upperDrawn = 0;
    for (let i = 0; i < 60; i++) {
      const s = await renderSample(5, i, { charset, maxLength: 6 });
      assert.match(s.label, /^[a-z0-9]{1,6}$/);
      assert.equal(s.label, s.text.toLowerCase());
      if (/[A-Z]/.test(s.text)) upperDrawn++;
    }
    assert.ok(upperDrawn > 10, `only ${upperDrawn} texts drawn with capitals`);
  });

  it('images decode and have sane sizes', async () => {
    let jpeg = 0;
    for (const s of samples) {
      const { width, height } = await sizeOf(s.image);
      if (Buffer.isBuffer(s.image)) jpeg++;
      else {
        assert.equal(s.image.channels, 3);
        assert.equal(s.image.data.length, width * height * 3);
      }
      assert.ok(height >= 8 && height <= 200, `height ${height} of ${s.label}`);
      assert.ok(width >= 8 && width <= 2000, `width ${width} of ${s.label}`);
    }
    assert.ok(jpeg > 50 && jpeg < 150, `${jpeg} of 200 are JPEG`);
  });

  it('draws American and British spellings both, each word once (Note [spellings] in words.ts)', () => {
    const { tiers } = loadDictionary();
    const level10 = new Set(tiers[0]);
    for (const word of ['center', 'centre', 'color', 'colour']) assert.ok(level10.has(word), word);
    const all = new Set(tiers.flat());
    for (const word of ['theater', 'theatre', 'harbor', 'harbour', 'jewelry', 'jewellery']) assert.ok(all.has(word), word);
    for (const tier of tiers) assert.equal(new Set(tier).size, tier.length, 'no word twice within a level');
  });

  it('mixes dictionary words, names, made-up words, numbers, random strings and codes, in every case', () => {
    const count = (pred) => samples.filter(pred).length;
    const kinds = {};
    for (const s of samples) kinds[s.kind] = (kinds[s.kind] ?? 0) + 1;
    for (const kind of ['word', 'name', 'pseudo', 'number', 'random', 'code']) assert.ok(kinds[kind] >= 5, `${kind}: ${kinds[kind]}`);
    // Note [names]: one word of a name, in any case, now and then decorated like a word.
    const names = new Set(loadDictionary().names.map((n) => n.toLowerCase()));
    const plainNames = samples.filter((s) => s.kind === 'name' && /^\p{L}+$/u.test(s.label));
    assert.ok(plainNames.length >= 5 && plainNames.every((s) => names.has(s.label.toLowerCase())), plainNames.map((s) => s.label).join(' '));
    const dictionary = new Set(loadDictionary().tiers.flat());
    const inDictionary = count((s) => dictionary.has(s.label.toLowerCase()));
    assert.ok(inDictionary >= 80, `${inDictionary} labels are dictionary words`);
    const upper = count((s) => /[A-Z]/.test(s.label) && !/[a-z]/.test(s.label));
    const lower = count((s) => /[a-z]/.test(s.label) && !/[A-Z]/.test(s.label));
    const mixed = count((s) => /[a-z]/.test(s.label) && /[A-Z]/.test(s.label));
    const numbers = count((s) => /^[0-9]+$/.test(s.label));
    assert.ok(upper >= 50, `upper case: ${upper}`);
    assert.ok(upper > lower, `upper ${upper} vs lower ${lower}: signs are upper-case heavy`);
    assert.ok(lower >= 25, `lower case: ${lower}`);
    assert.ok(mixed >= 25, `mixed case: ${mixed}`);
    assert.ok(numbers >= 8, `digit strings: ${numbers}`);
    assert.ok(new Set(samples.map((s) => s.font)).size >= 40, 'many faces are used');
  });

  it('loads every bundled font, each face distinct from the others and from the fallback font', async function () {
    this.timeout(30000);
    const families = bundledFamilies();
    assert.equal(families.length, BUNDLED_FAMILIES.length);
    const fallback = { file: undefined, family: 'No Such Font At All', style: 'Regular' };
    const render = async (face) => {
      const line = await renderLine(face, 24, 'Hamburgefonstiv 0123', 0, undefined, undefined, 0);
      assert.ok(line.word !== undefined, `${face.name} drew no ink`);
      return crypto.createHash('sha256').update(line.rgba).digest('hex');
    };
    const seen = new Map([[await render(fallback), 'the fallback font']]);
    let faces = 0;
    for (const family of families) {
      assert.ok(family.faces.length >= 1, family.group);
      for (const face of family.faces) {
        const key = await render(face);
        assert.ok(!seen.has(key), `${face.name} (${face.file}) renders like ${seen.get(key)}`);
        seen.set(key, face.name);
        faces++;
      }
    }
    assert.ok(faces >= 100, `${faces} faces`);
  });

  it('reads font names and refuses a file that is not a font', () => {
    const roboto = bundledFamilies().find((f) => f.group === 'Roboto');
    const bold = roboto.faces.find((f) => f.weight === 700 && !f.italic);
    assert.deepEqual([bold.family, bold.style, bold.group], ['Roboto', 'Bold', 'Roboto']);
    const info = readFontInfo(bold.file);
    assert.equal(info.coversAlphanumerics, true);
    assert.equal(info.lowerIsUpper, false);
    const notFont = path.join(tempDir('font'), 'x.ttf');
    fs.writeFileSync(notFont, 'hello, world');
    assert.throws(() => readFontInfo(notFont), { message: `${notFont}: not a TrueType or OpenType font (unknown signature)` });
  });

  it('blurs as a plain separable Gaussian does, and maps four points by their homography', () => {
    const reference = (data, w, h, ch, sigma) => {
      const r = Math.max(1, Math.ceil(2 * sigma));
      const k = Array.from({ length: 2 * r + 1 }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)));
      const sum = k.reduce((a, b) => a + b);
      const clamp = (v, n) => Math.min(n - 1, Math.max(0, v));
      const rows = new Float64Array(data.length);
      const out = new Float64Array(data.length);
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++)
          for (let c = 0; c < ch; c++)
            rows[(y * w + x) * ch + c] = k.reduce((a, kj, j) => a + (kj / sum) * data[(y * w + clamp(x + j - r, w)) * ch + c], 0);
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++)
          for (let c = 0; c < ch; c++)
            out[(y * w + x) * ch + c] = k.reduce((a, kj, j) => a + (kj / sum) * rows[(clamp(y + j - r, h) * w + x) * ch + c], 0);
      return out;
    };
    let seed = 1;
    const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    for (const [w, h, ch, sigma] of [[37, 11, 3, 0.7], [5, 4, 3, 1.6], [2, 3, 1, 2.2], [1, 1, 3, 1], [64, 20, 1, 0.3]]) {
      const data = Float32Array.from({ length: w * h * ch }, random);
      const expected = reference(data, w, h, ch, sigma);
      gaussianBlur(data, w, h, ch, sigma);
      data.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-5, `${w}×${h}×${ch} σ=${sigma} at ${i}: ${v} vs ${expected[i]}`));
    }
    const from = [0, 0, 100, 0, 100, 30, 0, 30];
    const to = [3, -2, 96, 5, 110, 40, -4, 28];
    const m = homography(from, to);
    const back = invert3(m);
    for (let i = 0; i < 4; i++) {
      const [x, y] = project(m, from[2 * i], from[2 * i + 1]);
      assert.ok(Math.abs(x - to[2 * i]) < 1e-9 && Math.abs(y - to[2 * i + 1]) < 1e-9);
      const [u, v] = project(back, x, y);
      assert.ok(Math.abs(u - from[2 * i]) < 1e-9 && Math.abs(v - from[2 * i + 1]) < 1e-9);
    }
  });

  it('cuts into the letters of one crop in seven, by 3-12% of the letter size, at most 12% of the ink', () => {
    // Note [clipped letters] in lib/synth/sample.ts, over many samples' streams.
    const size = 40;
    let clipped = 0;
    const sides = { top: 0, bottom: 0, both: 0 };
    for (let index = 0; index < 4000; index++) {
      const [top, bottom] = clippedLetters(new Rng(7, index, 10), size, 30);
      if (top === 0 && bottom === 0) continue;
      clipped++;
      sides[top > 0 && bottom > 0 ? 'both' : top > 0 ? 'top' : 'bottom']++;
      for (const cut of [top, bottom].filter((c) => c > 0)) {
        assert.ok(cut >= 0.03 * size - 1e-9 && cut <= Math.min(0.12 * size, 0.12 * 30) + 1e-9, `cut ${cut}`);
      }
    }
    assert.ok(clipped > 0.12 * 4000 && clipped < 0.18 * 4000, `${clipped} of 4000 clipped`);
    assert.ok(sides.top > 0.3 * clipped && sides.bottom > 0.3 * clipped && sides.both > 0.1 * clipped, JSON.stringify(sides));
    // Ink shorter than half the letter size (a dash, dots) is never cut.
    for (let index = 0; index < 500; index++) assert.deepEqual(clippedLetters(new Rng(7, index, 10), size, 19), [0, 0]);
  });

  it('draws hollow letters for one sample in 16, neon for one in 25, sideways or neutral side faces for half', () => {
    // Note [sign looks] in lib/synth/sample.ts, over many samples' streams.
    const counts = { plain: 0, hollow: 0, neon: 0 };
    let sideways = 0;
    let neutral = 0;
    for (let index = 0; index < 8000; index++) {
      const look = signLook(new Rng(7, index, 11));
      counts[look.look]++;
      if (look.sideAngle !== undefined) {
        sideways++;
        // Within 0.45 rad (26°) of horizontal, to the right or to the left.
        const fromHorizontal = Math.min(Math.abs(look.sideAngle), Math.abs(look.sideAngle - Math.PI));
        assert.ok(fromHorizontal <= 0.45, `side angle ${look.sideAngle}`);
      }
      if (look.neutralSide) neutral++;
      assert.ok(look.strokeWidth >= 0.04 && look.strokeWidth <= 0.1, `stroke ${look.strokeWidth}`);
      assert.ok(look.glow >= 0.06 && look.glow <= 0.15, `glow ${look.glow}`);
    }
    assert.ok(counts.hollow > 0.05 * 8000 && counts.hollow < 0.075 * 8000, JSON.stringify(counts));
    assert.ok(counts.neon > 0.03 * 8000 && counts.neon < 0.05 * 8000, JSON.stringify(counts));
    assert.ok(sideways > 0.45 * 8000 && sideways < 0.55 * 8000, `${sideways} sideways`);
    assert.ok(neutral > 0.45 * 8000 && neutral < 0.55 * 8000, `${neutral} neutral`);
  });

  it('draws faint ink, 0.03-0.12 of luminance from the background, for one sample in 12', () => {
    // Note [faint text] in lib/synth/sample.ts, over many samples' streams.
    const drawn = Array.from({ length: 6000 }, (_, index) => faintContrast(new Rng(7, index, 12))).filter((c) => c !== undefined);
    assert.ok(drawn.length > 0.065 * 6000 && drawn.length < 0.1 * 6000, `${drawn.length} of 6000 faint`);
    for (const c of drawn) assert.ok(c >= 0.03 && c <= 0.12, `contrast ${c}`);
  });

  it('sweeps coverage along a direction: the maximum of its shifted copies, cut at the plane\'s edges', () => {
    // One pixel swept by (3, 2): shifted by (1, 1), (2, 1) and (3, 2), the rounded thirds of the way.
    const dot = new Float32Array(6 * 5);
    dot[1 * 6 + 1] = 0.5;
    const out = new Float32Array(dot.length).fill(9);
    sweep(out, dot, 6, 5, 3, 2);
    const lit = [...out.keys()].filter((i) => out[i] !== 0).map((i) => [i % 6, Math.floor(i / 6)]);
    assert.deepEqual(lit, [[2, 2], [3, 2], [4, 3]]);
    // Against a plain reference, in every direction, with shifts that leave the plane.
    let seed = 3;
    const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    for (const [w, h, dx, dy] of [[9, 7, 2.6, -1.2], [9, 7, -4, 0.4], [5, 4, 0.2, 0.3], [4, 3, -6, -5], [12, 6, 0, 2]]) {
      const coverage = Float32Array.from({ length: w * h }, random);
      const n = Math.max(1, Math.round(Math.max(Math.abs(dx), Math.abs(dy))));
      const expected = new Float32Array(w * h);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          for (let k = 1; k <= n; k++) {
            const [u, v] = [x - Math.round((k * dx) / n), y - Math.round((k * dy) / n)];
            if (u >= 0 && u < w && v >= 0 && v < h) expected[y * w + x] = Math.max(expected[y * w + x], coverage[v * w + u]);
          }
        }
      }
      const swept = new Float32Array(w * h).fill(-1);
      sweep(swept, coverage, w, h, dx, dy);
      assert.deepEqual(swept, expected, `${w}×${h} by (${dx}, ${dy})`);
    }
  });

  it('is a DataSource: name, size, get(i) with an origin; bad indices are refused', async () => {
    const source = createSynthSource({ seed: 11 });
    assert.equal(source.name, 'synth');
    assert.equal(source.size, Infinity);
    const s = await source.get(3);
    assert.equal(s.label, samples[3].label);
    assert.equal(s.origin, `synth/11/3 (${samples[3].font})`);
    await assert.rejects(source.get(-1), { name: 'RangeError', message: 'Expected a non-negative safe integer for index but received -1' });
    await assert.rejects(source.get(1.5), { name: 'TypeError', message: 'Expected a non-negative safe integer for index but received 1.5' });
    const sized = createSynthSource({ size: 10 });
    assert.equal(sized.size, 10);
    await assert.rejects(sized.get(10), { name: 'RangeError', message: 'Expected an integer between 0 and 9 for index but received 10' });
  });

  it('refuses bad options with exact messages', async () => {
    assert.throws(() => createSynthSource({ seed: -1 }), { name: 'RangeError', message: 'Expected an integer between 0 and 9007199254740991 for seed but received -1' });
    assert.throws(() => createSynthSource({ seed: '1' }), { name: 'TypeError', message: "Expected an integer between 0 and 9007199254740991 for seed but received '1'" });
    assert.throws(() => createSynthSource({ maxLength: 26 }), { name: 'RangeError', message: 'Expected an integer between 1 and 25 for maxLength but received 26' });
    assert.throws(() => createSynthSource({ charset: '' }), { name: 'RangeError', message: "Expected a non-empty charset for charset but received ''" });
    assert.throws(() => createSynthSource({ systemFonts: 1 }), { name: 'TypeError', message: 'Expected a boolean for systemFonts but received 1' });
    assert.throws(() => createSynthSource({ fonts: 'a.ttf' }), { name: 'TypeError', message: "Expected an array of font file or directory paths for fonts but received 'a.ttf'" });
    assert.throws(() => createSynthSource({ fonts: ['/no/such/font.ttf'] }), { message: '/no/such/font.ttf: no such file or directory' });
    assert.throws(() => createSynthSource({ workers: 65 }), { name: 'RangeError', message: 'Expected an integer between 0 and 64 for workers but received 65' });
    assert.throws(() => createSynthSource({ size: 0 }), { name: 'RangeError', message: 'Expected an integer between 1 and 9007199254740991 for size but received 0' });
    assert.throws(() => createSynthSource(5), { name: 'TypeError', message: 'Expected an object for options but received 5' });
    await assert.rejects(renderSample(1, -2), { name: 'RangeError', message: 'Expected an integer between 0 and 9007199254740991 for index but received -2' });
    assert.throws(() => createSynthSource({ words: 5 }), { name: 'TypeError', message: 'Expected a file path for words but received 5' });
    assert.throws(() => createSynthSource({ words: '/no/such/words.txt' }), {
      message: "/no/such/words.txt: cannot read the word list (ENOENT: no such file or directory, open '/no/such/words.txt')",
    });
    const empty = path.join(tempDir('words'), 'empty.txt');
    fs.writeFileSync(empty, '\n  \n');
    assert.throws(() => createSynthSource({ words: empty }), { message: `${empty}: the word list holds no words (one per line expected)` });
    const latin = path.join(tempDir('words'), 'latin.txt');
    fs.writeFileSync(latin, 'street\ncafe\n');
    assert.throws(() => createSynthSource({ words: latin, charset: 'абв0123' }), {
      message: `${latin}: none of the word list's words can be written with the charset (7 characters) in at most 25 characters`,
    });
    assert.deepEqual(resolveSynthOptions({}), { seed: 0, charset: [...DEFAULT_CHARSET], maxLength: 25, systemFonts: false, fonts: [], words: null });
  });

  it('draws words from a word list of the user\'s, and made-up words and letters from its alphabet', async function () {
    this.timeout(60000);
    const words = ['москва', 'улица', 'метро', 'хлеб', 'молоко', 'аптека', 'банк', 'вход', 'выход', 'кафе', 'почта', 'магазин'];
    const file = path.join(tempDir('words'), 'ru.txt');
    fs.writeFileSync(file, `${words.join('\n')}\r\n\n`);
    const lower = 'абвгдежзийклмнопрстуфхцчшщъыьэюя';
    const charset = `${lower}${lower.toUpperCase()}0123456789`;
    const source = createSynthSource({ seed: 5, charset, words: file });
    const drawn = [];
    for (let i = 0; i < 80; i++) drawn.push(await source.sample(i));
    const kinds = {};
    for (const s of drawn) {
      kinds[s.kind] = (kinds[s.kind] ?? 0) + 1;
      assert.ok([...s.label].every((c) => charset.includes(c)), `label ${s.label} (${s.kind})`);
      if (s.kind === 'word') assert.ok(words.includes(s.label.toLowerCase()), `word ${s.label}`);
      if (s.kind === 'pseudo' || s.kind === 'random') assert.match(s.label.toLowerCase(), /^[а-я]+$/, `${s.kind} ${s.label}`);
    }
    assert.ok(kinds.word >= 20 && kinds.pseudo >= 2 && kinds.random >= 2 && kinds.number >= 2, JSON.stringify(kinds));
    assert.equal(kinds.name, undefined, 'the English names are left out with a word list');
    // Worker threads read the same list and make the same samples.
    const pooled = createSynthSource({ seed: 5, charset, words: file, workers: 2 });
    try {
      for (let i = 0; i < 8; i++) assert.equal(digest(await pooled.sample(i)), digest(drawn[i]), `sample ${i}`);
    } finally {
      await pooled.close();
    }
  });
});

describe('safl synth', () => {
  let expected; // labels and sizes of samples 0…23 of seed 11
  before(async () => {
    expected = [];
    for (let i = 0; i < 24; i++) {
      const s = await renderSample(11, i);
      expected.push({ label: s.label, ...(await sizeOf(s.image)) });
    }
  });

  it('writes N images and labels.tsv, readable as a folder dataset, and a preview', async function () {
    this.timeout(60000);
    const out = path.join(tempDir('cli'), 'set');
    const { status, stdout, stderr } = await synth(['--count', '24', '--out', out, '--seed', '11', '--workers', '2', '--preview']);
    assert.equal(stderr, '');
    assert.equal(status, 0);
    assert.match(stdout, new RegExp(`^wrote 24 samples to ${out} \\(folder\\) in [0-9.]+ s, [0-9.]+ samples/s; preview: ${out}/preview.png\\n$`));
    const images = fs.readdirSync(path.join(out, 'images')).sort();
    assert.equal(images.length, 24);
    assert.ok(images.every((f, i) => f === `${String(i).padStart(9, '0')}.${f.endsWith('.jpg') ? 'jpg' : 'png'}`));
    const source = await FolderSource.open(out);
    assert.equal(source.size, 24);
    for (let i = 0; i < 24; i++) {
      const s = await source.get(i);
      assert.equal(s.label, expected[i].label, `label ${i}`);
      const meta = await sharp(s.image).metadata();
      assert.equal(meta.width, expected[i].width);
    }
    const preview = await sharp(path.join(out, 'preview.png')).metadata();
    assert.equal(preview.format, 'png');
  });

  it('writes an LMDB dataset in the STR layout', async function () {
    this.timeout(60000);
    const out = path.join(tempDir('lmdb'), 'set.lmdb');
    const { status, stderr } = await synth(['--count', '12', '--out', out, '--seed', '11', '--workers', '1']);
    assert.equal(stderr, '');
    assert.equal(status, 0);
    const source = await LmdbSource.open(out);
    assert.equal(source.size, 12);
    const first = await source.get(0);
    assert.equal(first.label, expected[0].label);
    await source.close?.();
  });

  it('refuses bad options with exact messages', async () => {
    const full = tempDir('full');
    fs.writeFileSync(path.join(full, 'x'), '');
    const cases = [
      [[], 'safl: Expected an integer between 1 and 100000000 for --count but received undefined'],
      [['--count', '0', '--out', 'x'], 'safl: Expected an integer between 1 and 100000000 for --count but received 0'],
      [['--count', 'ten', '--out', 'x'], "safl: Expected an integer between 1 and 100000000 for --count but received 'ten'"],
      [['--count', '5'], 'safl: Expected a directory or a .lmdb path for --out but received undefined'],
      [['--count', '5', '--out', full], `safl: ${full}: exists and is not empty`],
      [['--count', '5', '--out', path.join(full, 'x')], `safl: ${path.join(full, 'x')}: exists and is not a directory`],
      [['--count', '5', '--out', 'nowhere', '--workers', '0'], 'safl: Expected an integer between 1 and 64 for --workers but received 0'],
      [['--count', '5', '--out', 'nowhere', '--seed=-1'], 'safl: Expected an integer between 0 and 9007199254740991 for --seed but received -1'],
      [['--count', '5', '--out', 'nowhere', '--max-length', '30'], 'safl: Expected an integer between 1 and 25 for --max-length but received 30'],
      [['--count', '5', '--out', 'nowhere', '--charset', ''], "safl: Expected a non-empty charset for --charset but received ''"],
      [['--count', '5', '--out', 'nowhere', '--charset', 'ab\tc'], "safl: Expected a charset without tabs or line breaks (labels.tsv cannot hold them; write a .lmdb instead) for --charset but received 'ab\\tc'"],
      [['--count', '5', '--out', 'nowhere', '--font', '/no/such.ttf'], 'safl: /no/such.ttf: no such file or directory'],
      [['--count', '5', '--out', 'nowhere', '--words', ''], "safl: Expected a file path for --words but received ''"],
      [['--count', '5', '--out', 'nowhere', '--words', '/no/such.txt'], "safl: /no/such.txt: cannot read the word list (ENOENT: no such file or directory, open '/no/such.txt')"],
    ];
    const results = await Promise.all(cases.map(([args]) => synth(args)));
    results.forEach(({ status, stderr, stdout }, k) => {
      assert.equal(stderr, `${cases[k][1]}\n`, `case ${k}: ${cases[k][0].join(' ')}`);
      assert.equal(status, 1);
      assert.equal(stdout, '');
    });
    assert.ok(!fs.existsSync('nowhere'));
  });

  it('prints a complete help text', async () => {
    const { status, stdout } = await synth(['--help']);
    assert.equal(status, 0);
    for (const option of ['--count', '--out', '--seed', '--charset', '--max-length', '--workers', '--system-fonts', '--font', '--words', '--preview', '--help']) {
      assert.ok(stdout.includes(option), option);
    }
  });

});
