// Model files for tests: a micro configuration of the SAFL network (fast on any CPU), made once per
// mocha process with Recognizer.create + save, and a small safetensors reader/writer to build the
// broken model files safl must refuse.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Recognizer } = require('../../dist/index.js');

/** Every layer of the real network, a few channels wide (num_classes 97: the default charset). */
const MICRO_CONFIG = Object.freeze({
  in_h: 64, in_w: 256, loc_h: 32, loc_w: 64, rect_h: 32, rect_w: 100, fiducials: 20,
  loc_channels: [4, 4, 4, 4, 4, 4], loc_fc: 8,
  res_channels: [4, 4, 8, 8, 8], res_blocks: [1, 1, 1, 1, 1],
  d_model: 16, heads: 2, ffn: 16, enc_layers: 1, dec_layers: 1,
  max_len: 25, num_classes: 97, dropout: 0.1,
});

let tempRoot;
/** A fresh directory under one temporary root, removed when the process exits. */
function tempDir(name) {
  if (tempRoot === undefined) {
    tempRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'safl-test-'));
    process.on('exit', () => fs.rmSync(tempRoot, { recursive: true, force: true }));
  }
  return fs.mkdtempSync(path.join(tempRoot, `${name}-`));
}

/**
 * A copy of this package without its default model, as an install without models/ would be:
 * dist/ and package.json copied (so that the package root is the copy's), the addon builds and
 * node_modules linked. Returns the copy's root.
 */
function packageWithoutModel() {
  const root = path.join(__dirname, '..', '..');
  const copy = tempDir('package');
  fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'));
  for (const linked of ['build', 'prebuilds', 'node_modules']) {
    if (fs.existsSync(path.join(root, linked))) fs.symlinkSync(path.join(root, linked), path.join(copy, linked));
  }
  return copy;
}

let microModel;
/** The path of a micro model file (seed 7), made on first use. */
function microModelFile() {
  microModel ??= (async () => {
    const file = path.join(tempDir('model'), 'micro.safetensors');
    const recognizer = await Recognizer.create({ config: MICRO_CONFIG, seed: 7 });
    await recognizer.save(file);
    await recognizer.close();
    return file;
  })();
  return microModel;
}

/** Splits a safetensors file into its header (parsed JSON) and data section. */
function readSafetensors(bytes) {
  const size = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + size).toString('utf8')), data: bytes.subarray(8 + size) };
}

/** Joins a header (JSON-serialisable) and a data section into a safetensors file. */
function writeSafetensors(header, data) {
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - (text.length % 8)) % 8);
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  return Buffer.concat([size, Buffer.from(text), data]);
}

/** A copy of a model file with its metadata changed by `edit(metadata)`. */
function withMetadata(bytes, edit) {
  const { header, data } = readSafetensors(bytes);
  edit(header.__metadata__);
  return writeSafetensors(header, data);
}

/**
 * Checks that two recognition results (or arrays of them) agree: same text and characters, and
 * probabilities within 1e-5 (batches of different sizes may round differently).
 */
function assertSameResults(actual, expected) {
  const assert = require('node:assert/strict');
  if (Array.isArray(expected)) {
    assert.equal(actual.length, expected.length);
    expected.forEach((e, i) => assertSameResults(actual[i], e));
    return;
  }
  assert.equal(actual.text, expected.text);
  assert.ok(Math.abs(actual.confidence - expected.confidence) <= 1e-5, `confidence ${actual.confidence} vs ${expected.confidence}`);
  assert.deepEqual(actual.chars.map((c) => c.char), expected.chars.map((c) => c.char));
  actual.chars.forEach((c, i) => assert.ok(Math.abs(c.p - expected.chars[i].p) <= 1e-5));
}

/**
 * `count` damaged copies of a safetensors file, from a fixed pseudo-random sequence (`seed`):
 * bytes overwritten in the header, bytes overwritten in the tensor data, the file cut short, or
 * another header size, in turn. For the loaders' "never crash, always a message" tests.
 */
function* damagedCopies(bytes, count, seed) {
  let state = seed >>> 0;
  const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const below = (n) => Math.floor(random() * n);
  const headerEnd = 8 + Number(bytes.readBigUInt64LE(0));
  for (let i = 0; i < count; i++) {
    let damaged = Buffer.from(bytes);
    const kind = i % 4;
    if (kind === 0) for (let k = 0; k <= below(4); k++) damaged[8 + below(headerEnd - 8)] = below(256);
    if (kind === 1) for (let k = 0; k <= below(8); k++) damaged[headerEnd + below(bytes.length - headerEnd)] = below(256);
    if (kind === 2) damaged = damaged.subarray(0, below(bytes.length));
    if (kind === 3) damaged.writeBigUInt64LE(BigInt(below(2 ** 31)) * BigInt(1 + below(512)), 0);
    yield damaged;
  }
}

module.exports = {
  MICRO_CONFIG, assertSameResults, damagedCopies, tempDir, microModelFile, packageWithoutModel, readSafetensors, writeSafetensors, withMetadata,
};
