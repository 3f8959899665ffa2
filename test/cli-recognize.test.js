// `safl recognize` as a user runs it: files, directories, globs and stdin lists; each output
// format; bad files reported one by one while the run goes on; option errors; help texts.
'use strict';
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { Recognizer } = require('..');
const { writeFixtures } = require('./helpers/images.js');
const { assertSameResults, microModelFile, packageWithoutModel, tempDir } = require('./helpers/model.js');

const cli = path.join(__dirname, '..', 'dist', 'cli.js');

/**
 * Runs the CLI (asynchronously, so several can run at once); resolves to { status, stdout, stderr }.
 * `script`: another copy's dist/cli.js.
 */
function run(args, { input, cwd, script = cli } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { cwd });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

/** Runs `safl recognize` with these arguments. */
const recognize = (args, options) => run(['recognize', ...args], options);

describe('safl recognize', () => {
  let model;
  let dir;
  let files;
  let expected; // file → result from the API
  before(async () => {
    model = await microModelFile();
    dir = tempDir('cli');
    files = await writeFixtures(dir);
    const recognizer = await Recognizer.load(model);
    expected = {};
    for (const f of [files.good, files.goodJpeg, files.deep]) expected[f] = await recognizer.recognize(f);
    await recognizer.close();
  });

  it('reads a directory: results for the good files, an error for each bad one, exit 1', async () => {
    const { status, stdout, stderr } = await recognize(['--model', model, '--format', 'jsonl', dir, files.text]);
    assert.equal(status, 1);
    const records = stdout.trim().split('\n').map((line) => JSON.parse(line));
    // Directory order is path order: good.jpg, good.png, sub/deep.png (bad files in between fail).
    assert.deepEqual(records.map((r) => r.file), [files.goodJpeg, files.good, files.deep]);
    for (const r of records) {
      assert.deepEqual(Object.keys(r), ['file', 'text', 'confidence', 'chars']);
      assertSameResults({ text: r.text, confidence: r.confidence, chars: r.chars }, expected[r.file]);
    }
    const lines = stderr.split('\n');
    assert.equal(lines.length, 5);
    assert.equal(lines[0], `safl: ${files.empty}: the file is empty`);
    assert.equal(lines[1], `safl: ${files.huge}: image is larger than 100 megapixels (20000×6000)`);
    // The reason in brackets is libvips's, and its wording changes with what else decodes at the same
    // time (premature end of JPEG, failOn warning, unknown format): check ours around it.
    const truncatedPrefix = `safl: ${files.truncated}: not a decodable image (`;
    const truncatedReason = lines[2].slice(truncatedPrefix.length, -1);
    assert.ok(lines[2].startsWith(truncatedPrefix) && lines[2].endsWith(')') && truncatedReason.length > 0, lines[2]);
    assert.equal(lines[3], `safl: ${files.text}: not a decodable image (Input buffer contains unsupported image format)`);
    assert.equal(lines[4], '');
  });

  it('exits 0 when every file is read; text format prints just the word for one input', async () => {
    const one = await recognize(['--model', model, files.good]);
    assert.equal(one.status, 0);
    assert.equal(one.stderr, '');
    assert.equal(one.stdout, `${expected[files.good].text}\n`);
    const fast = await recognize(['--model', model, '--precision', 'bfloat16', files.good]);
    assert.equal(fast.status, 0);
    assert.match(fast.stdout, /^.*\n$/);
    const two = await recognize(['--model', model, '--format', 'text', files.good, files.deep]);
    assert.equal(two.status, 0);
    assert.equal(two.stdout, `${files.good}\t${expected[files.good].text}\n${files.deep}\t${expected[files.deep].text}\n`);
  });

  it('--format json and tsv', async () => {
    const json = await recognize(['--model', model, '--format', 'json', files.good, files.goodJpeg, files.empty]);
    assert.equal(json.status, 1);
    const array = JSON.parse(json.stdout);
    assert.deepEqual(array.map((r) => r.file), [files.good, files.goodJpeg]);
    assertSameResults({ text: array[1].text, confidence: array[1].confidence, chars: array[1].chars }, expected[files.goodJpeg]);
    assert.equal(json.stderr, `safl: ${files.empty}: the file is empty\n`);

    const tsv = await recognize(['--model', model, '--format', 'tsv', files.good, files.deep]);
    assert.equal(tsv.status, 0);
    const [header, ...rows] = tsv.stdout.trim().split('\n').map((line) => line.split('\t'));
    assert.deepEqual(header, ['file', 'text', 'confidence']);
    assert.deepEqual(rows.map((r) => r.slice(0, 2)), [[files.good, expected[files.good].text], [files.deep, expected[files.deep].text]]);
    assert.ok(Math.abs(Number(rows[0][2]) - expected[files.good].confidence) <= 1e-6);
  });

  it('an empty json run is still an array', async () => {
    const { status, stdout } = await recognize(['--model', model, '--format', 'json', files.empty]);
    assert.equal(status, 1);
    assert.deepEqual(JSON.parse(stdout), []);
  });

  it('reads a list of paths on stdin, and globs', async () => {
    const listed = await recognize(['--model', model, '--format', 'tsv'], { input: `${files.good}\n\n${files.deep}\r\nmissing.png\n`, cwd: dir });
    assert.equal(listed.status, 1);
    assert.deepEqual(listed.stdout.trim().split('\n').slice(1).map((l) => l.split('\t')[0]), [files.good, files.deep]);
    assert.equal(listed.stderr, 'safl: missing.png: no such file\n');

    const dash = await recognize(['--model', model, '-'], { input: files.good });
    assert.equal(dash.stdout, `${expected[files.good].text}\n`);
    const none = await recognize(['--model', model], { input: '\n' });
    assert.equal(none.status, 1);
    assert.equal(none.stderr, 'safl: no inputs: stdin listed no paths\n');

    const globbed = await recognize(['--model', model, '--format', 'jsonl', '**/*.png', 'nothing-*.gif'], { cwd: dir });
    assert.equal(globbed.status, 1);
    assert.deepEqual(globbed.stdout.trim().split('\n').map((l) => JSON.parse(l).file), ['good.png', 'sub/deep.png']);
    assert.equal(
      globbed.stderr,
      'safl: empty.png: the file is empty\nsafl: huge.png: image is larger than 100 megapixels (20000×6000)\nsafl: nothing-*.gif: no files match\n',
    );
  });

  it('reports bad options and a bad model with the validation messages', async () => {
    const cases = [
      [['--format', 'xml'], "safl: Expected 'text', 'tsv', 'json' or 'jsonl' for --format but received 'xml'\n"],
      [['--device', 'tpu'], "safl: Expected 'auto', 'cpu' or 'cuda' for --device but received 'tpu'\n"],
      [['--batch-size', '0'], 'safl: Expected an integer between 1 and 1024 for --batch-size but received 0\n'],
      [['--beam-width', 'wide'], "safl: Expected an integer between 1 and 64 for --beam-width but received 'wide'\n"],
      [['--views', '0'], 'safl: Expected an integer between 1 and 8 for --views but received 0\n'],
      [['--threads=-1'], 'safl: Expected an integer between 1 and 1024 for --threads but received -1\n'],
      [['--precision', 'half'], "safl: Expected 'float32' or 'bfloat16' for --precision but received 'half'\n"],
      [['--beam-width', '3', '--dictionary', path.join(dir, 'nope.txt')], `safl: ${path.join(dir, 'nope.txt')}: cannot read the word list (ENOENT: no such file or directory, open '${path.join(dir, 'nope.txt')}')\n`],
      [['--beam-width', '3', '--dictionary', 'english', '--dictionary-weight', 'high'], "safl: Expected a number between 0 and 100 for --dictionary-weight but received 'high'\n"],
      [['--beam-width', '3', '--dictionary', 'english', '--dictionary-weight=-1'], 'safl: Expected a number between 0 and 100 for --dictionary-weight but received -1\n'],
      [['--beam-width', '3', '--dictionary-weight', '1'], 'safl: Expected --dictionary with --dictionary-weight but received no --dictionary\n'],
      [['--dictionary', 'english'], 'safl: Expected --beam-width or --views over 1 with --dictionary (it chooses among their readings) but received neither\n'],
    ];
    const results = await Promise.all(cases.map(([args]) => recognize(['--model', model, ...args, files.good])));
    results.forEach(({ status, stdout, stderr }, i) => {
      assert.equal(status, 1);
      assert.equal(stdout, '');
      assert.equal(stderr, cases[i][1]);
    });
    const badModel = await recognize(['--model', files.text, files.good]);
    assert.equal(badModel.status, 1);
    assert.match(badModel.stderr, new RegExp(`^safl: ${files.text.replace(/[.]/g, '\\.')}: not a safl model file \\(`));
    const noModel = await recognize(['--model', path.join(dir, 'nope.safetensors'), files.good]);
    assert.equal(noModel.stderr, `safl: ${path.join(dir, 'nope.safetensors')}: no such file\n`);
  });

  it('says when no default model is installed', async () => {
    const copy = packageWithoutModel();
    const { status, stderr } = await recognize([files.good], { script: path.join(copy, 'dist', 'cli.js') });
    assert.equal(status, 1);
    const expected = path.join(copy, 'models', 'default.safetensors');
    assert.equal(stderr, `safl: no default model is installed (expected ${expected}); pass one with --model FILE\n`);
  });

  it('draws no progress bar when stderr is not a terminal', async () => {
    const { stderr } = await recognize(['--model', model, files.good, files.deep]);
    assert.equal(stderr, '');
  });

  it('the bin is executable, so that npx safl runs in a clone', () => {
    assert.equal(require('node:fs').statSync(cli).mode & 0o111, 0o111);
  });

  it('--help is complete, and safl --help lists recognize', async () => {
    const help = await run(['recognize', '--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /^Usage: safl recognize \[options\] <file \| directory \| glob>\.\.\./);
    for (const option of ['--model', '--device', '--batch-size', '--threads', '--beam-width', '--views', '--precision', '--dictionary', '--dictionary-weight', '--format', '--help']) {
      assert.ok(help.stdout.includes(option), option);
    }
    for (const word of ['text', 'tsv', 'json', 'jsonl', 'stdin', 'exit status', 'progress bar']) assert.ok(help.stdout.includes(word), word);
    const top = await run(['--help']);
    assert.match(top.stdout, /Commands:\n\s+info .*\n\s+recognize /);
  });
});
