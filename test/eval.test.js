// `safl eval` as a user runs it: a table per dataset and the weighted average, JSON, the list of
// errors (printed or written to a file), unreadable images counted as wrong, a dataset that cannot
// be opened reported while the others are measured. The labels are made from the micro model's own
// readings, so the expected accuracies are known exactly.
'use strict';
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { Recognizer } = require('..');
const { wordPng } = require('./helpers/images.js');
const { microModelFile, tempDir } = require('./helpers/model.js');
const { makeLmdbDataset } = require('./helpers/datasets.js');

const { EVAL_HELP } = require('../dist/commands/eval.js');

/** Runs evalCommand in a child process, as the CLI would; resolves to { status, stdout, stderr }. */
function safleval(args) {
  const script =
    "require(process.argv[1]).evalCommand(process.argv.slice(2)).then((c) => { process.exitCode = c; }, " +
    "(e) => { process.stderr.write('safl: ' + e.message + '\\n'); process.exitCode = 1; });";
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, path.join(__dirname, '..', 'dist', 'commands', 'eval.js'), ...args]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const swapCase = (text) => [...text].map((c) => (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase())).join('');

describe('safl eval', () => {
  let model;
  let mixed; // 3 images: read exactly, read with case swapped and '!' added, wrong
  let upper; // 2 images, upper-case labels: one right under the standard protocol, one wrong
  let broken; // 3 images: one read exactly, one missing, one truncated
  let lmdb; // the images of `mixed` with the same labels, as LMDB
  let readings;

  before(async () => {
    model = await microModelFile();
    const pngs = await Promise.all([1, 2, 3].map((seed) => wordPng(seed)));
    const recognizer = await Recognizer.load(model);
    readings = (await recognizer.recognize(pngs)).map((r) => r.text);
    await recognizer.close();
    // The micro model reads upper and lower case letters: that is what makes the cases below differ.
    assert.match(readings[1], /[a-z]/);
    assert.match(readings[1], /[A-Z]/);

    const write = (name, entries) => {
      const dir = path.join(tempDir('eval'), name);
      fs.mkdirSync(path.join(dir, 'images'), { recursive: true });
      for (const [file, bytes] of entries.filter((e) => e[1] !== null)) fs.writeFileSync(path.join(dir, file), bytes);
      fs.writeFileSync(path.join(dir, 'labels.tsv'), entries.map(([file, , label]) => `${file}\t${label}\n`).join(''));
      return dir;
    };
    const mixedLabels = [readings[0], `${swapCase(readings[1])}!`, 'qqqq'];
    mixed = write('mixed', pngs.map((png, i) => [`images/${i}.png`, png, mixedLabels[i]]));
    upper = write('upper', [
      ['images/0.png', pngs[0], readings[0].toUpperCase()],
      ['images/1.png', pngs[1], 'NOPE'],
    ]);
    broken = write('broken', [
      ['images/0.png', pngs[2], readings[2]],
      ['images/missing.png', null, 'Gone'],
      ['images/cut.png', pngs[0].subarray(0, 40), 'Cut'],
    ]);
    lmdb = await makeLmdbDataset(path.join(tempDir('eval'), 'mixed.lmdb'), mixedLabels);
  });

  it('prints a row per dataset and the average weighted by images', async () => {
    const { status, stdout, stderr } = await safleval([model, mixed, upper]);
    assert.equal(stderr, '');
    assert.equal(status, 0);
    assert.equal(
      stdout,
      [
        'dataset  images  accuracy  case-sensitive',
        'mixed         3    66.67%          33.33%',
        'upper         2    50.00%               -',
        'average       5    60.00%          33.33%',
        '',
      ].join('\n'),
    );
  });

  it('reads LMDB datasets the same way', async () => {
    const { status, stdout } = await safleval([model, lmdb, '--batch-size', '2']);
    assert.equal(status, 0);
    assert.equal(stdout, ['dataset     images  accuracy  case-sensitive', 'mixed.lmdb       3    66.67%          33.33%', ''].join('\n'));
  });

  it('counts unreadable images as wrong, says so under the table and lists them with --errors', async () => {
    const { status, stdout, stderr } = await safleval([model, '--errors', broken]);
    assert.equal(stderr, '');
    assert.equal(status, 0);
    const [tableText, errorsText] = stdout.split('\n\n');
    assert.equal(
      tableText,
      [
        'dataset  images  accuracy  case-sensitive',
        'broken        3    33.33%          33.33%',
        'broken: 2 images could not be read, counted as wrong (listed with --errors)',
      ].join('\n'),
    );
    const lines = errorsText.trimEnd().split('\n');
    assert.equal(lines[0], 'dataset\torigin\tlabel\tprediction\terror');
    assert.equal(lines[1], `broken\tbroken[1]\t\t\t${path.join(broken, 'images', 'missing.png')}: no such file`);
    assert.match(lines[2], new RegExp(`^broken\tbroken/images/cut.png\tCut\t\t${path.join(broken, 'images', 'cut.png').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not a decodable image \\(`));
    assert.equal(lines.length, 3);
  });

  it('prints one JSON object with --format json, errors included with --errors', async () => {
    const { status, stdout } = await safleval(['--format', 'json', '--errors', model, mixed, upper]);
    assert.equal(status, 0);
    const report = JSON.parse(stdout);
    assert.equal(report.model, model);
    assert.deepEqual(report.datasets, [
      { name: 'mixed', path: mixed, images: 3, correct: 2, accuracy: 0.666667, caseSensitive: { images: 3, correct: 1, accuracy: 0.333333 }, unreadable: 0 },
      { name: 'upper', path: upper, images: 2, correct: 1, accuracy: 0.5, caseSensitive: null, unreadable: 0 },
    ]);
    assert.deepEqual(report.average, { images: 5, correct: 3, accuracy: 0.6, caseSensitive: { images: 3, correct: 1, accuracy: 0.333333 } });
    assert.deepEqual(report.failed, []);
    assert.deepEqual(report.errors, [
      { dataset: 'mixed', origin: 'mixed/images/2.png', label: 'qqqq', prediction: readings[2] },
      { dataset: 'upper', origin: 'upper/images/1.png', label: 'NOPE', prediction: readings[1] },
    ]);
    assert.deepEqual(Object.keys(report.protocol), ['accuracy', 'caseSensitive', 'average']);
  });

  it('writes the errors to a file with --errors=FILE: TSV, or JSON with --format json', async () => {
    const dir = tempDir('errors');
    const tsv = path.join(dir, 'errors.tsv');
    const text = await safleval([model, mixed, `--errors=${tsv}`]);
    assert.equal(text.status, 0);
    assert.ok(!text.stdout.includes('prediction'));
    assert.equal(fs.readFileSync(tsv, 'utf8'), `dataset\torigin\tlabel\tprediction\terror\nmixed\tmixed/images/2.png\tqqqq\t${readings[2]}\t\n`);
    const json = path.join(dir, 'errors.json');
    const j = await safleval(['--format', 'json', model, mixed, `--errors=${json}`]);
    assert.equal(j.status, 0);
    assert.equal(JSON.parse(j.stdout).errors, undefined);
    assert.deepEqual(JSON.parse(fs.readFileSync(json, 'utf8')), [{ dataset: 'mixed', origin: 'mixed/images/2.png', label: 'qqqq', prediction: readings[2] }]);
  });

  it('reports a dataset that cannot be opened, measures the others, and exits 1', async () => {
    const missing = path.join(tempDir('gone'), 'SVT');
    const emptyDir = tempDir('emptyset');
    fs.writeFileSync(path.join(emptyDir, 'labels.tsv'), '\n');
    const { status, stdout, stderr } = await safleval([model, missing, upper, emptyDir]);
    assert.equal(status, 1);
    assert.equal(
      stderr,
      `safl eval: ${missing}: no such file or directory\n` +
        `safl eval: ${path.join(emptyDir, 'labels.tsv')}: the dataset is empty (no 'path<TAB>label' lines)\n`,
    );
    assert.equal(stdout, ['dataset  images  accuracy  case-sensitive', 'upper         2    50.00%               -', ''].join('\n'));
    const json = await safleval(['--format', 'json', model, missing]);
    assert.equal(json.status, 1);
    const report = JSON.parse(json.stdout);
    assert.deepEqual(report.datasets, []);
    assert.equal(report.average, null);
    assert.deepEqual(report.failed, [{ path: missing, error: `${missing}: no such file or directory` }]);
  });

  it('--limit measures the first N samples', async () => {
    const { stdout } = await safleval([model, mixed, '--limit', '1']);
    assert.equal(stdout, ['dataset  images  accuracy  case-sensitive', 'mixed         1   100.00%         100.00%', ''].join('\n'));
  });

  it('usage: help, missing arguments and bad options', async () => {
    const help = await safleval(['--help']);
    assert.equal(help.status, 0);
    assert.equal(help.stdout, EVAL_HELP);
    const none = await safleval([model]);
    assert.equal(none.status, 1);
    assert.equal(none.stderr, `safl eval: no datasets: give a model file and at least one dataset\n\n${EVAL_HELP}`);
    const format = await safleval(['--format', 'xml', model, mixed]);
    assert.equal(format.status, 1);
    assert.equal(format.stderr, "safl: Expected 'text' or 'json' for --format but received 'xml'\n");
    const batch = await safleval(['--batch-size', '0', model, mixed]);
    assert.equal(batch.stderr, 'safl: Expected an integer between 1 and 1024 for --batch-size but received 0\n');
    const precision = await safleval(['--precision', 'half', model, mixed]);
    assert.equal(precision.stderr, "safl: Expected 'float32' or 'bfloat16' for --precision but received 'half'\n");
    const views = await safleval(['--views', '9', model, mixed]);
    assert.equal(views.stderr, 'safl: Expected an integer between 1 and 8 for --views but received 9\n');
    const limit = await safleval(['--limit', 'all', model, mixed]);
    assert.equal(limit.stderr, "safl: Expected an integer between 1 and 9007199254740991 for --limit but received 'all'\n");
    const errorsFile = await safleval(['--errors=', model, mixed]);
    assert.equal(errorsFile.stderr, "safl: Expected a file name for --errors= but received ''\n");
  });
});
