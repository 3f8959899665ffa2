// Datasets as the trainer and `safl eval` read them: folder datasets (labels.tsv), LMDB datasets in
// the STR layout (a file written by Python's lmdb, and files written by safl's writer), opening by
// spec, the label policy, the mixing sampler, and the accuracy metrics. Every bad input is checked
// with its exact message.
'use strict';
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const sharp = require('sharp');
const data = require('../dist/data/index.js');
const { tempDir } = require('./helpers/model.js');
const { PY_LMDB, PY_COUNT, pyFixtureSample, makeFolderDataset, makeLmdbDataset } = require('./helpers/datasets.js');

const { FolderSource, LmdbFile, LmdbSource, LmdbWriter, writeLmdb, writeLmdbEntries, openSource, parseSourceSpec } = data;

/** Deterministic pseudo-random bytes (incompressible test images and values). */
function noise(length, seed) {
  const out = Buffer.alloc(length);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s & 0xff;
  }
  return out;
}

describe('folder datasets (labels.tsv)', () => {
  it('reads samples in file order: paths, labels as written, origins; BOM, CRLF and blank lines', async () => {
    const dir = tempDir('SVT');
    await makeFolderDataset(dir, ['Hello', 'a b', 'wörd'], {
      bom: true,
      crlf: true,
      lines: ['images/0000.png\tHello', '', '   ', 'images/0001.png\ta b', 'images/0002.png\twörd'],
    });
    const source = await FolderSource.open(dir);
    assert.equal(source.size, 3);
    assert.equal(source.name, path.basename(dir));
    const samples = await Promise.all([0, 1, 2].map((i) => source.get(i)));
    assert.deepEqual(samples.map((s) => s.label), ['Hello', 'a b', 'wörd']);
    assert.deepEqual(samples.map((s) => s.image), [0, 1, 2].map((i) => path.join(dir, `images/000${i}.png`)));
    assert.equal(samples[2].origin, `${path.basename(dir)}/images/0002.png`);
    // The labels file may be given itself.
    assert.equal((await FolderSource.open(path.join(dir, 'labels.tsv'))).size, 3);
  });

  it('keeps everything after the first tab as the label, and allows an empty label', async () => {
    const dir = tempDir('tabs');
    await makeFolderDataset(dir, ['x', 'y'], { lines: ['images/0000.png\tleft\tright', 'images/0001.png\t'] });
    const source = await FolderSource.open(dir);
    assert.equal((await source.get(0)).label, 'left\tright');
    assert.equal((await source.get(1)).label, '');
  });

  it('refuses a line without a tab, naming file:line', async () => {
    const dir = tempDir('notab');
    await makeFolderDataset(dir, ['a', 'b'], { lines: ['images/0000.png\ta', '', 'images/0001.png b'] });
    await assert.rejects(FolderSource.open(dir), {
      message: `${path.join(dir, 'labels.tsv')}:3: expected 'path<TAB>label' but found no tab`,
    });
  });

  it('refuses a line with no path before the tab', async () => {
    const dir = tempDir('nopath');
    await makeFolderDataset(dir, ['a'], { lines: ['\ta'] });
    await assert.rejects(FolderSource.open(dir), { message: `${path.join(dir, 'labels.tsv')}:1: no image path before the tab` });
  });

  it('refuses a missing directory, a directory without labels.tsv and an empty labels.tsv', async () => {
    const missing = path.join(tempDir('gone'), 'nothing');
    await assert.rejects(FolderSource.open(missing), { message: `${missing}: no such file or directory` });
    const bare = tempDir('bare');
    await assert.rejects(FolderSource.open(bare), { message: `${bare}: no labels.tsv in this directory` });
    const empty = tempDir('empty');
    fs.writeFileSync(path.join(empty, 'labels.tsv'), '\ufeff\n\n  \n');
    await assert.rejects(FolderSource.open(empty), {
      message: `${path.join(empty, 'labels.tsv')}: the dataset is empty (no 'path<TAB>label' lines)`,
    });
  });

  it('reports a missing image when its sample is read, naming the path', async () => {
    const dir = tempDir('holes');
    await makeFolderDataset(dir, ['a', 'b']);
    fs.rmSync(path.join(dir, 'images', '0001.png'));
    fs.mkdirSync(path.join(dir, 'images', 'sub.png'));
    fs.appendFileSync(path.join(dir, 'labels.tsv'), 'images/sub.png\tc\n');
    const source = await FolderSource.open(dir);
    assert.equal((await source.get(0)).label, 'a');
    await assert.rejects(source.get(1), { message: `${path.join(dir, 'images', '0001.png')}: no such file` });
    await assert.rejects(source.get(2), { message: `${path.join(dir, 'images', 'sub.png')}: is a directory` });
    await assert.rejects(source.get(3), { name: 'RangeError', message: 'Expected an integer between 0 and 2 for index but received 3' });
  });
});

describe('LMDB datasets (STR layout)', () => {
  it('reads a dataset written by Python\'s lmdb (LMDB 0.9): every label and image, overflow pages included', async () => {
    const source = await LmdbSource.open(PY_LMDB);
    assert.equal(source.size, PY_COUNT);
    assert.equal(source.name, 'str-lmdb');
    for (let i = 0; i < PY_COUNT; i++) {
      const sample = await source.get(i);
      const expected = pyFixtureSample(i);
      assert.equal(sample.label, expected.label);
      assert.equal(sample.origin, `str-lmdb/image-${String(i + 1).padStart(9, '0')}`);
      const { width, height } = await sharp(sample.image).metadata();
      assert.deepEqual([width, height], [expected.width, expected.height], `sample ${i}`);
    }
    await source.close();
  });

  it('opens the data file itself as well as its directory', async () => {
    const file = await LmdbFile.open(path.join(PY_LMDB, 'data.mdb'));
    assert.equal(file.entries, 2 * PY_COUNT + 1);
    assert.equal((await file.get('num-samples')).toString(), String(PY_COUNT));
    assert.equal(await file.get('image-000000201'), undefined);
    assert.equal(await file.get('zzz'), undefined);
    assert.equal(await file.get(''), undefined);
    await file.close();
  });

  it('writes a dataset that reads back byte for byte: small and large images, a tree of several levels', async () => {
    const dir = path.join(tempDir('written'), 'train.lmdb');
    const samples = Array.from({ length: 700 }, (_, i) => ({
      image: noise([40, 300, 2000, 2100, 5000, 13000][i % 6], i + 1),
      label: ['Hello', 'wörd', '日本', '', 'x'.repeat(40)][i % 5] + i,
    }));
    async function* generate() {
      for (const s of samples) yield s;
    }
    assert.equal(await writeLmdb(dir, generate()), 700);
    assert.deepEqual(fs.readdirSync(dir), ['data.mdb']);
    const file = await LmdbFile.open(dir);
    assert.equal(file.entries, 1401);
    await file.close();
    const source = await LmdbSource.open(dir);
    assert.equal(source.size, 700);
    const read = await Promise.all(samples.map((_, i) => source.get(i)));
    read.forEach((sample, i) => {
      assert.equal(sample.label, samples[i].label);
      assert.ok(sample.image.equals(samples[i].image), `image ${i}`);
    });
    await source.close();
  });

  it('writes sample by sample with LmdbWriter; refuses a non-empty directory unless told to overwrite', async () => {
    const dir = path.join(tempDir('writer'), 'out.lmdb');
    const writer = LmdbWriter.create(dir);
    writer.add(Buffer.from('png bytes'), 'one');
    writer.add(new Uint8Array([1, 2, 3]), 'two');
    assert.equal(writer.count, 2);
    assert.throws(() => writer.add('a.png', 'x'), { name: 'TypeError', message: "Expected a non-empty Buffer for image but received 'a.png'" });
    assert.throws(() => writer.add(Buffer.alloc(0), 'x'), { name: 'TypeError', message: 'Expected a non-empty Buffer for image but received Buffer of length 0' });
    assert.throws(() => writer.add(Buffer.from('x'), 7), { name: 'TypeError', message: 'Expected a string for label but received 7' });
    await writer.close();
    assert.throws(() => writer.add(Buffer.from('x'), 'x'), { message: `${dir}: the writer is closed` });
    const source = await LmdbSource.open(dir);
    assert.deepEqual((await source.get(1)).image, Buffer.from([1, 2, 3]));
    await source.close();

    assert.throws(() => LmdbWriter.create(dir), { message: `${dir}: exists and is not empty (pass overwrite to replace its data.mdb)` });
    await writeLmdb(dir, [{ image: Buffer.from('new'), label: 'replaced' }], { overwrite: true });
    const replaced = await LmdbSource.open(dir);
    assert.equal(replaced.size, 1);
    assert.equal((await replaced.get(0)).label, 'replaced');
    await replaced.close();
  });

  it('leaves no file behind when writing fails or is aborted', async () => {
    const dir = path.join(tempDir('abort'), 'x.lmdb');
    async function* failing() {
      yield { image: Buffer.from('a'), label: 'a' };
      throw new Error('the generator broke');
    }
    await assert.rejects(writeLmdb(dir, failing()), { message: 'the generator broke' });
    assert.deepEqual(fs.readdirSync(dir), []);
    const writer = LmdbWriter.create(dir);
    writer.add(Buffer.from('a'), 'a');
    await writer.abort();
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('refuses an LMDB without num-samples, with a bad or zero num-samples, or with missing keys', async () => {
    const root = tempDir('badlmdb');
    const noCount = path.join(root, 'nocount');
    writeLmdbEntries(noCount, [['image-000000001', 'x'], ['label-000000001', 'a']]);
    await assert.rejects(LmdbSource.open(noCount), {
      message: `${noCount}: no num-samples key (an LMDB dataset holds num-samples, image-%09d and label-%09d)`,
    });
    const badCount = path.join(root, 'badcount');
    writeLmdbEntries(badCount, [['num-samples', 'ten']]);
    await assert.rejects(LmdbSource.open(badCount), { message: `${badCount}: num-samples is 'ten', not a whole number up to 999999999` });
    const zero = path.join(root, 'zero');
    writeLmdbEntries(zero, [['num-samples', '0']]);
    await assert.rejects(LmdbSource.open(zero), { message: `${zero}: the dataset is empty (num-samples is 0)` });

    const holes = path.join(root, 'holes');
    writeLmdbEntries(holes, [
      ['num-samples', '3'],
      ['image-000000001', 'x'],
      ['label-000000001', 'a'],
      ['label-000000002', 'b'],
      ['image-000000003', 'z'],
      ['label-000000003', Buffer.from([0xff, 0xfe])],
    ]);
    const source = await LmdbSource.open(holes);
    assert.equal((await source.get(0)).label, 'a');
    await assert.rejects(source.get(1), { message: `${holes}: no image-000000002 (num-samples is 3)` });
    await assert.rejects(source.get(2), { message: `${holes}: label-000000003 is not valid UTF-8` });
    await source.close();
  });

  it('refuses what is not an LMDB 0.9 file, naming it', async () => {
    const root = tempDir('notlmdb');
    const text = path.join(root, 'notes.mdb');
    fs.writeFileSync(text, 'x'.repeat(5000));
    await assert.rejects(LmdbFile.open(text), { message: `${text}: not a valid LMDB file (no LMDB magic number)` });
    const short = path.join(root, 'short.mdb');
    fs.writeFileSync(short, 'tiny');
    await assert.rejects(LmdbFile.open(short), { message: `${short}: not a valid LMDB file (4 bytes is too short)` });
    // LMDB 1.0's format (what the npm package lmdb writes): a 24-byte page header, version 2.
    const v2 = path.join(root, 'v2.mdb');
    const page = Buffer.alloc(8192);
    page.writeUInt16LE(0x08, 18);
    page.writeUInt32LE(0xbeefc0de, 24);
    page.writeUInt32LE(2, 28);
    fs.writeFileSync(v2, page);
    await assert.rejects(LmdbFile.open(v2), {
      message:
        `${v2}: LMDB data format version 2 (LMDB 1.0, as the npm package lmdb writes); ` +
        "safl reads format 1, the format of LMDB 0.9 that Python's lmdb and the STR dataset tools write",
    });
    const emptyDir = tempDir('nodata');
    await assert.rejects(LmdbSource.open(emptyDir), { message: `${emptyDir}: no data.mdb in this directory (not an LMDB environment)` });
  });

  it('writes files that LMDB 0.9 itself reads (mdb_dump, when installed)', async function () {
    let dump;
    const dir = path.join(tempDir('interop'), 'x.lmdb');
    await writeLmdb(dir, Array.from({ length: 300 }, (_, i) => ({ image: noise(i % 2 ? 3000 : 50, i + 7), label: `w${i}` })));
    try {
      dump = execFileSync('mdb_dump', ['-p', dir], { encoding: 'latin1', maxBuffer: 1 << 26 });
    } catch (err) {
      if (err.code === 'ENOENT') this.skip(); // lmdb-utils is not installed
      throw err;
    }
    const lines = dump.split('\n');
    const body = lines.slice(lines.indexOf('HEADER=END') + 1, lines.indexOf('DATA=END'));
    assert.equal(body.length, 2 * 601);
    assert.equal(body[body.length - 2], ' num-samples');
    assert.equal(body[body.length - 1], ' 300');
    assert.equal(body[body.indexOf(' label-000000300') + 1], ' w299');
  });
});

describe('openSource', () => {
  let folder;
  let lmdb;
  before(async () => {
    folder = await makeFolderDataset(tempDir('IC03'), ['one', 'two']);
    lmdb = await makeLmdbDataset(path.join(tempDir('lm'), 'mj.lmdb'), ['three']);
  });

  it('opens a folder, its labels.tsv, an LMDB directory and an LMDB data file', async () => {
    const a = await openSource(folder);
    assert.ok(a instanceof FolderSource);
    assert.equal(a.size, 2);
    assert.ok((await openSource(path.join(folder, 'labels.tsv'))) instanceof FolderSource);
    const b = await openSource(lmdb);
    assert.ok(b instanceof LmdbSource);
    assert.equal(b.name, 'mj.lmdb');
    assert.equal((await b.get(0)).label, 'three');
    await b.close();
    const c = await openSource(path.join(lmdb, 'data.mdb'));
    assert.equal(c.size, 1);
    await c.close();
    const d = await openSource(PY_LMDB);
    assert.equal(d.size, PY_COUNT);
    await d.close();
  });

  it('refuses a missing path, a directory that is no dataset, a file that is no dataset, and an empty dataset', async () => {
    const missing = path.join(tempDir('x'), 'missing');
    await assert.rejects(openSource(missing), { message: `${missing}: no such file or directory` });
    const other = tempDir('other');
    const notDataset = "not a dataset (expected a folder with labels.tsv, an LMDB directory holding data.mdb, an LMDB data file, or 'synth')";
    await assert.rejects(openSource(other), { message: `${other}: ${notDataset}` });
    const file = path.join(other, 'photo.png');
    fs.writeFileSync(file, 'not a dataset at all');
    await assert.rejects(openSource(file), { message: `${file}: ${notDataset}` });
    const empty = tempDir('empty');
    fs.writeFileSync(path.join(empty, 'labels.tsv'), '');
    await assert.rejects(openSource(empty), { message: `${path.join(empty, 'labels.tsv')}: the dataset is empty (no 'path<TAB>label' lines)` });
    await assert.rejects(openSource(''), { name: 'TypeError', message: "Expected a dataset path or 'synth' for dataset but received ''" });
  });

  it("opens 'synth' through lib/synth when it is built, and says so clearly when it is not", async () => {
    const built = fs.existsSync(path.join(__dirname, '..', 'dist', 'synth', 'index.js'));
    if (!built) {
      await assert.rejects(openSource('synth'), { message: "'synth': the synthetic generator is not part of this build of safl" });
      return;
    }
    const synth = await openSource('synth');
    assert.equal(synth.size, Infinity);
    await synth.close?.();
  });

  it("parses a ':ratio' suffix", () => {
    assert.deepEqual(parseSourceSpec('data/MJ:0.5'), { spec: 'data/MJ', ratio: 0.5 });
    assert.deepEqual(parseSourceSpec('synth:2'), { spec: 'synth', ratio: 2 });
    assert.deepEqual(parseSourceSpec('data/MJ'), { spec: 'data/MJ', ratio: 1 });
    assert.deepEqual(parseSourceSpec('C:\\data\\MJ'), { spec: 'C:\\data\\MJ', ratio: 1 });
    assert.deepEqual(parseSourceSpec('a:b'), { spec: 'a:b', ratio: 1 });
    assert.throws(() => parseSourceSpec('MJ:0'), { name: 'RangeError', message: "Expected a positive ratio for dataset but received '0'" });
    assert.throws(() => parseSourceSpec('MJ:-1', '--data'), { name: 'RangeError', message: "Expected a positive ratio for --data but received '-1'" });
    // A path that exists is taken whole.
    const odd = path.join(tempDir('odd'), 'set:2');
    fs.mkdirSync(odd);
    assert.deepEqual(parseSourceSpec(odd), { spec: odd, ratio: 1 });
  });
});

describe('label policy', () => {
  const charset = [...'abcABC0'];

  it('encodes labels to class ids; UNK is charset length + 2', () => {
    const encoder = new data.LabelEncoder({ charset, unknown: 'unk' });
    assert.equal(encoder.unkClass, 9);
    assert.deepEqual([...encoder.encode('aC0', 'x')], [0, 5, 6]);
    assert.deepEqual([...encoder.encode('a!b', 'x')], [0, 9, 1]);
    assert.deepEqual([...encoder.encode('', 'x')], []);
    assert.deepEqual(encoder.skipped, { unknown: 0, tooLong: 0 });
  });

  it("skips labels with unknown characters under 'skip' (the default) and counts them", () => {
    const encoder = new data.LabelEncoder({ charset });
    assert.equal(encoder.encode('a!', 'x'), null);
    assert.equal(encoder.encode('zz', 'x'), null);
    assert.deepEqual([...encoder.encode('ab', 'x')], [0, 1]);
    assert.deepEqual(encoder.skipped, { unknown: 2, tooLong: 0 });
  });

  it('uses the other case when the charset has only one, and composes labels (NFC) first', () => {
    const lower = new data.LabelEncoder({ charset: 'abcé' });
    assert.deepEqual([...lower.encode('CAB', 'x')], [2, 0, 1]);
    assert.deepEqual([...lower.encode('e\u0301', 'x')], [3]); // e + combining acute = é
    assert.deepEqual([...lower.encode('É', 'x')], [3]);
  });

  it('skips or refuses labels longer than the maximum length, by policy', () => {
    const skip = new data.LabelEncoder({ charset, maxLength: 3 });
    assert.deepEqual([...skip.encode('abc', 'x')], [0, 1, 2]);
    assert.equal(skip.encode('abca', 'x'), null);
    assert.deepEqual(skip.skipped, { unknown: 0, tooLong: 1 });
    const strict = new data.LabelEncoder({ charset, maxLength: 3, tooLong: 'error' });
    assert.throws(() => strict.encode('abcab', 'MJ/image-000000007'), {
      message: 'MJ/image-000000007: the label has 5 characters, more than the maximum of 3',
    });
    // Characters are code points: an astral character counts once.
    assert.equal(new data.LabelEncoder({ charset: ['😀'], maxLength: 2, tooLong: 'error' }).encode('😀😀', 'x').length, 2);
  });

  it('checks its options', () => {
    assert.throws(() => new data.LabelEncoder({ charset, unknown: 'drop' }), { name: 'RangeError', message: "Expected 'skip' or 'unk' for unknown but received 'drop'" });
    assert.throws(() => new data.LabelEncoder({ charset, tooLong: 'cut' }), { name: 'RangeError', message: "Expected 'skip' or 'error' for tooLong but received 'cut'" });
    assert.throws(() => new data.LabelEncoder({ charset, maxLength: 0 }), { name: 'RangeError', message: 'Expected an integer between 1 and 1000 for maxLength but received 0' });
    assert.throws(() => new data.LabelEncoder({ charset: 'aa' }), { name: 'RangeError', message: "Expected unique characters for charset but received 'a' twice" });
  });
});

describe('mixed sampler', () => {
  const { MixedSampler, MixedSource } = data;

  it('draws from each source in proportion to its ratio', () => {
    const sampler = new MixedSampler([{ size: 1000, ratio: 5 }, { size: 37, ratio: 3 }, { size: Infinity, ratio: 2 }], 11);
    const counts = [0, 0, 0];
    for (const d of sampler.nextBatch(20000)) counts[d.source]++;
    // Binomial standard deviations are about 0.35% of the draws: allow four of them.
    [0.5, 0.3, 0.2].forEach((p, k) => assert.ok(Math.abs(counts[k] / 20000 - p) < 0.015, `source ${k}: ${counts[k]}`));
  });

  it('reads a finite source without replacement: every epoch is a new permutation', () => {
    for (const size of [1, 2, 3, 17, 1000]) {
      const sampler = new MixedSampler([{ size, ratio: 1 }], 3);
      const epochs = [0, 1, 2].map(() => sampler.nextBatch(size).map((d) => d.index));
      for (const epoch of epochs) assert.deepEqual([...epoch].sort((a, b) => a - b), Array.from({ length: size }, (_, i) => i), `size ${size}`);
      if (size >= 17) {
        assert.notDeepEqual(epochs[0], epochs[1]);
        assert.notDeepEqual(epochs[0], Array.from({ length: size }, (_, i) => i)); // shuffled
      }
    }
  });

  it('reads an endless source in index order', () => {
    const sampler = new MixedSampler([{ size: Infinity, ratio: 1 }], 5);
    assert.deepEqual(sampler.nextBatch(5).map((d) => d.index), [0, 1, 2, 3, 4]);
  });

  it('is deterministic in its seed', () => {
    const parts = [{ size: 500, ratio: 1 }, { size: 80, ratio: 2 }];
    const a = new MixedSampler(parts, 9).nextBatch(300);
    assert.deepEqual(new MixedSampler(parts, 9).nextBatch(300), a);
    assert.notDeepEqual(new MixedSampler(parts, 10).nextBatch(300), a);
  });

  it('saves its state as JSON and continues exactly from it', () => {
    const parts = [{ size: 500, ratio: 1 }, { size: 80, ratio: 2 }, { size: Infinity, ratio: 0.5 }];
    const original = new MixedSampler(parts, 21);
    original.nextBatch(1234);
    const saved = JSON.parse(JSON.stringify(original.state()));
    assert.equal(saved.draws, 1234);
    const expected = original.nextBatch(700);
    const resumed = new MixedSampler(parts, 0); // the seed comes with the state
    resumed.restore(saved);
    assert.deepEqual(resumed.nextBatch(700), expected);
  });

  it('refuses a state of another mix, and things that are not states', () => {
    const sampler = new MixedSampler([{ size: 10, ratio: 1 }], 1);
    const other = new MixedSampler([{ size: 11, ratio: 1 }], 1).state();
    assert.throws(() => sampler.restore(other), {
      message: 'the sampler state is for another mix of sources: saved [{"size":11,"ratio":1}], now [{"size":10,"ratio":1}]',
    });
    assert.throws(() => sampler.restore({ version: 1 }), { name: 'TypeError', message: /^Expected a sampler state \{ version: 1, seed, draws, taken, parts \} for state but received/ });
  });

  it('checks its parts', () => {
    assert.throws(() => new MixedSampler([{ size: 10, ratio: 0 }]), { name: 'RangeError', message: 'Expected a positive number for parts[0].ratio but received 0' });
    assert.throws(() => new MixedSampler([{ size: 10, ratio: 1 }, { size: 0, ratio: 1 }]), {
      name: 'RangeError',
      message: 'Expected an integer between 1 and 4503599627370496 for parts[1].size but received 0',
    });
    assert.throws(() => new MixedSampler([]), { name: 'TypeError', message: 'Expected a non-empty array of { size, ratio } for parts but received []' });
  });

  it('MixedSource reads batches from several datasets, deterministically', async () => {
    const folder = await FolderSource.open(await makeFolderDataset(tempDir('mixa'), ['a0', 'a1', 'a2']));
    const lmdb = await LmdbSource.open(await makeLmdbDataset(path.join(tempDir('mixb'), 'b.lmdb'), ['b0', 'b1']));
    const mix = new MixedSource([{ source: folder, ratio: 1 }, { source: lmdb, ratio: 1 }], { seed: 4 });
    assert.equal(mix.name, `${folder.name}+b.lmdb`);
    const batch = await mix.nextBatch(12);
    for (const s of batch) assert.equal(s.label, `${'ab'[s.source]}${s.index}`);
    const again = new MixedSource([{ source: folder }, { source: lmdb }], { seed: 4 });
    assert.deepEqual((await again.nextBatch(12)).map((s) => s.label), batch.map((s) => s.label));
    await mix.close();
  });
});

describe('accuracy metrics', () => {
  it('standard protocol: lowercase, a-z and 0-9 only, exact match', () => {
    assert.equal(data.normalizeStandard("Hello, World! 42 é"), 'helloworld42');
    assert.ok(data.matchesStandard('Hello!', 'hello'));
    assert.ok(data.matchesStandard('SCHOOL', 'school'));
    assert.ok(!data.matchesStandard('hello', 'hell0'));
    assert.ok(data.matchesStandard('', '!!'));
  });

  it('case-sensitive: letters and digits with case kept', () => {
    assert.ok(!data.matchesCaseSensitive('Hello!', 'hello'));
    assert.ok(data.matchesCaseSensitive('Hello!', 'Hello'));
    assert.ok(data.matchesCaseSensitive("it's", 'its'));
  });

  it('scores a dataset; case-sensitive only when its labels hold both cases; unreadable images are wrong', () => {
    const upper = new data.DatasetScore();
    upper.add('DOOR', 'door');
    upper.add('THE', 'THE');
    upper.add('TRIPLE', null);
    assert.deepEqual(upper.standard, { correct: 2, images: 3 });
    assert.equal(upper.keepsCase, false);
    assert.equal(upper.caseSensitive, null);

    const mixed = new data.DatasetScore();
    assert.deepEqual(mixed.add('Hello!', 'hello'), { correct: true, correctCaseSensitive: false });
    assert.deepEqual(mixed.add('WORLD', 'WORLD'), { correct: true, correctCaseSensitive: true });
    mixed.add('x', 'y');
    assert.equal(mixed.keepsCase, true);
    assert.deepEqual(mixed.caseSensitive, { correct: 1, images: 3 });
  });

  it('averages weighted by images', () => {
    const avg = data.weightedAverage([{ correct: 3, images: 10 }, { correct: 1, images: 30 }]);
    assert.deepEqual(avg, { correct: 4, images: 40 });
    assert.equal(data.accuracy(avg), 0.1);
    assert.equal(data.weightedAverage([]), null);
    assert.equal(data.accuracy({ correct: 0, images: 0 }), 0);
  });
});
