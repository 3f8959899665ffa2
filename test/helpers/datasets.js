// Small datasets for tests, made in temporary directories: folder datasets (labels.tsv and PNG
// images made with sharp), LMDB datasets written by safl's writer, and the rules of the LMDB
// fixture written by Python's lmdb (test/fixtures/make-str-lmdb.py).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { wordPng } = require('./images.js');
const { writeLmdb } = require('../../dist/data/index.js');

/** test/fixtures/str-lmdb: 200 samples written by Python's lmdb (LMDB 0.9). */
const PY_LMDB = path.join(__dirname, '..', 'fixtures', 'str-lmdb');
const PY_WORDS = ['Hello', 'wörd', 'STRASSE', 'straße', '42', 'a b', '日本'];
const PY_COUNT = 200;
/** The fixture's sample i (0-based): its label and its image's size. */
function pyFixtureSample(i) {
  const n = i + 1;
  const big = n === 7 || n === 150;
  return { label: PY_WORDS[n % 7] + n, width: big ? 120 : 8 + (n % 32), height: big ? 40 : 8 };
}

/**
 * Writes a folder dataset into `dir`: one PNG per label (images/0000.png…) and labels.tsv.
 * `options.lines` replaces the generated lines of labels.tsv (written as given, joined by '\n').
 */
async function makeFolderDataset(dir, labels, options = {}) {
  fs.mkdirSync(path.join(dir, 'images'), { recursive: true });
  const lines = [];
  for (const [i, label] of labels.entries()) {
    const relative = `images/${String(i).padStart(4, '0')}.png`;
    fs.writeFileSync(path.join(dir, relative), await wordPng(i + 1));
    lines.push(`${relative}\t${label}`);
  }
  const text = (options.lines ?? lines).join(options.crlf ? '\r\n' : '\n') + '\n';
  fs.writeFileSync(path.join(dir, 'labels.tsv'), (options.bom ? '\ufeff' : '') + text);
  return dir;
}

/** Writes an LMDB dataset (directory with data.mdb) with safl's writer: one PNG per label. */
async function makeLmdbDataset(dir, labels) {
  const samples = [];
  for (const [i, label] of labels.entries()) samples.push({ image: await wordPng(i + 1), label });
  await writeLmdb(dir, samples);
  return dir;
}

module.exports = { PY_LMDB, PY_COUNT, pyFixtureSample, makeFolderDataset, makeLmdbDataset };
