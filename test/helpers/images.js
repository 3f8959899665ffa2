// Test images made at test time with sharp: word-like pictures (dark strokes on a light ground) in
// PNG and JPEG, and the broken inputs safl must report clearly (truncated, empty, not an image,
// over 100 megapixels).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const sharp = require('sharp');

/**
 * Raw RGB pixels of a word-like picture: `strokes` dark bars of varying height on a light
 * background, deterministic in `seed`.
 */
function wordPixels(width = 160, height = 48, seed = 1, strokes = 9) {
  const data = Buffer.alloc(width * height * 3, 235);
  let s = seed;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let k = 0; k < strokes; k++) {
    const x0 = Math.floor(((k + 0.2) * width) / strokes);
    const w = 2 + Math.floor(rand() * (width / strokes - 3));
    const y0 = Math.floor(height * (0.15 + 0.2 * rand()));
    const y1 = Math.floor(height * (0.65 + 0.25 * rand()));
    const ink = 20 + Math.floor(rand() * 40);
    for (let y = y0; y < y1; y++)
      for (let x = x0; x < Math.min(x0 + w, width); x++) data.fill(ink, 3 * (y * width + x), 3 * (y * width + x) + 3);
  }
  return { data, width, height, channels: 3 };
}

async function wordPng(seed = 1) {
  const raw = wordPixels(160, 48, seed);
  return sharp(raw.data, { raw: raw }).png().toBuffer();
}

async function wordJpeg(seed = 1, options = {}) {
  const raw = wordPixels(160, 48, seed);
  return sharp(raw.data, { raw: raw }).jpeg({ quality: 90, ...options }).toBuffer();
}

function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

function pngChunk(type, body) {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(type, 4, 'latin1');
  body.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}

/**
 * A PNG whose header claims width × height pixels (RGB) with almost no pixel data: enough for a
 * reader to learn its size and refuse it, made in microseconds.
 */
function hugePngHeader(width, height) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, deflate, no filter, no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', zlib.deflateSync(Buffer.alloc(1 + 3 * 16))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * Writes the fixture files into `dir` and returns their paths: good.png, good.jpg, sub/deep.png
 * (good images), truncated.jpg, empty.png, notes.txt, huge.png (over 100 megapixels).
 */
async function writeFixtures(dir) {
  fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
  const jpeg = await wordJpeg(2);
  const files = {
    good: [path.join(dir, 'good.png'), await wordPng(1)],
    goodJpeg: [path.join(dir, 'good.jpg'), jpeg],
    deep: [path.join(dir, 'sub', 'deep.png'), await wordPng(3)],
    truncated: [path.join(dir, 'truncated.jpg'), jpeg.subarray(0, Math.floor(jpeg.length / 2))],
    empty: [path.join(dir, 'empty.png'), Buffer.alloc(0)],
    text: [path.join(dir, 'notes.txt'), Buffer.from('these are notes, not an image\n')],
    huge: [path.join(dir, 'huge.png'), hugePngHeader(20000, 6000)],
  };
  const paths = {};
  for (const [name, [file, bytes]] of Object.entries(files)) {
    fs.writeFileSync(file, bytes);
    paths[name] = file;
  }
  return paths;
}

module.exports = { wordPixels, wordPng, wordJpeg, hugePngHeader, writeFixtures };
