// `safl train` as a user runs it: training on a folder dataset, Ctrl-C writing a checkpoint that a
// resumed run continues exactly, and the messages for bad flags. The command runs in a child
// process through lib/commands/train.ts's trainCommand, as lib/cli.ts calls it.
'use strict';
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const sharp = require('sharp');
const { Recognizer } = require('..');
const { TRAIN_HELP } = require('../dist/commands/train.js');
const { WORD_CHARSET, drawWord } = require('./helpers/words.js');
const { readSafetensors, tempDir } = require('./helpers/model.js');

const MICRO = {
  in_h: 64, in_w: 256, loc_h: 32, loc_w: 64, rect_h: 32, rect_w: 100, fiducials: 20,
  loc_channels: [4, 4, 8, 8, 8, 8], loc_fc: 16,
  res_channels: [8, 8, 16, 16, 32], res_blocks: [1, 1, 1, 1, 1],
  d_model: 32, heads: 2, ffn: 64, enc_layers: 1, dec_layers: 1,
  max_len: 6, dropout: 0.1,
};
const WORDS = ['cat', 'dot', 'rose', 'lane', 'sand', 'cold', 'note', 'street'];

// What lib/cli.ts does with the command: its exit status, or "safl: <message>" and status 1.
const RUNNER = `
const { trainCommand } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'commands', 'train.js'))});
trainCommand(process.argv.slice(1)).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write('safl: ' + err.message + '\\n'); process.exitCode = 1; },
);`;

/** Starts `safl train <args>`; resolves with { code, signal, stdout, stderr } when it exits. */
function start(args) {
  const child = spawn(process.execPath, ['-e', RUNNER, '--', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done, stderr: () => stderr };
}

const run = (args) => start(args).done;

function metrics(dir) {
  const file = path.join(dir, 'metrics.jsonl');
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l));
}

describe('safl train', () => {
  let data;
  let configFile;
  before(async () => {
    data = tempDir('words');
    const lines = [];
    for (let i = 0; i < 32; i++) {
      const raw = drawWord(WORDS[i % WORDS.length], Math.floor(i / WORDS.length));
      const file = `img${String(i).padStart(2, '0')}.png`;
      await sharp(raw.data, { raw }).png().toFile(path.join(data, file));
      lines.push(`${file}\t${WORDS[i % WORDS.length]}`);
    }
    fs.writeFileSync(path.join(data, 'labels.tsv'), `${lines.join('\n')}\n`);
    configFile = path.join(tempDir('config'), 'micro.json');
    fs.writeFileSync(configFile, JSON.stringify(MICRO));
  });

  const common = () => ['--config', configFile, '--charset', WORD_CHARSET, '--data', data, '--batch-size', '8', '--lr', '0.003', '--warmup', '10', '--threads', '2'];

  it('--help prints the whole help', async () => {
    const { code, stdout } = await run(['--help']);
    assert.equal(code, 0);
    assert.equal(stdout, TRAIN_HELP);
    for (const flag of ['--config', '--data', '--val', '--synth-words', '--synth-font', '--iterations', '--batch-size', '--lr', '--schedule', '--warmup', '--loss', '--gamma', '--alpha',
      '--seed', '--device', '--threads', '--precision', '--checkpoint-dir', '--checkpoint-every', '--validate-every', '--resume', '--init', '--long-labels', '--unknown-chars']) {
      assert.ok(stdout.includes(flag), flag);
    }
  });

  it('trains on a folder dataset, validates, and writes checkpoint, metrics and model', async function () {
    this.timeout(60000);
    const dir = tempDir('cli-run');
    const { code, stderr } = await run([...common(), '--val', data, '--iterations', '40', '--checkpoint-dir', dir,
      '--validate-every', '20', '--log-every', '20', '--loss', 'ce', '--schedule', 'cosine']);
    assert.equal(code, 0, stderr);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['checkpoint.safetensors', 'metrics.jsonl', 'model.safetensors']);
    const lines = stderr.trim().split('\n');
    assert.match(lines[0], /^safl train: 40 steps of 8 images, cross-entropy, adam lr 0\.003 cosine \(warm-up 10\), data .*; writing to /);
    assert.match(lines[1], /^step 20\/40 {2}loss \d+\.\d{4} {2}acc \d+\.\d% {2}lr \d\.\d\de-\d {2}\d+\.\d img\/s {2}ETA \d+m\d\ds$/);
    assert.match(lines[2], /^validation at step 20 on words-\w+: accuracy \d+\.\d%, 32 images, \d+\.\d s$/);
    assert.match(lines[lines.length - 1], /^safl train: done at step 40: loss \d+\.\d{4}, token accuracy \d+\.\d%; wrote .*checkpoint\.safetensors and .*model\.safetensors$/);
    assert.deepEqual(metrics(dir).map((m) => [m.type, m.step]), [['train', 20], ['validation', 20], ['train', 40], ['validation', 40]]);
    const recognizer = await Recognizer.load(path.join(dir, 'model.safetensors'));
    assert.equal(recognizer.training.loss, 'cross-entropy');
    assert.deepEqual(recognizer.training.notes, { data: [{ spec: data, ratio: 1 }], val: data });
    await recognizer.close();
  });

  it('Ctrl-C writes a checkpoint and exits 130; --resume continues the same curve', async function () {
    this.timeout(120000);
    const args = [...common(), '--iterations', '100', '--log-every', '1', '--checkpoint-every', '1000', '--seed', '5'];
    const whole = tempDir('cli-whole');
    const uninterrupted = await run([...args, '--checkpoint-dir', whole]);
    assert.equal(uninterrupted.code, 0, uninterrupted.stderr);

    const parts = tempDir('cli-parts');
    const first = start([...args, '--checkpoint-dir', parts]);
    while (metrics(parts).length < 10) await new Promise((r) => setTimeout(r, 20));
    first.child.kill('SIGINT');
    const stopped = await first.done;
    assert.equal(stopped.code, 130, stopped.stderr);
    assert.match(stopped.stderr, /safl train: stopping after this step and writing a checkpoint \(Ctrl-C again to quit at once\)/);
    const state = JSON.parse(readSafetensors(fs.readFileSync(path.join(parts, 'checkpoint.safetensors'))).header.__metadata__.state);
    const stoppedAt = state.step;
    assert.ok(stoppedAt >= 10 && stoppedAt < 100, `stopped at ${stoppedAt}`);
    assert.match(stopped.stderr, new RegExp(`safl train: stopped at step ${stoppedAt}: `));
    assert.equal(metrics(parts).at(-1).step, stoppedAt);

    // The data specs come from the checkpoint.
    const resumed = await run(['--resume', parts, '--threads', '2']);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, new RegExp(`^safl train: resuming at step ${stoppedAt}, 100 steps of 8 images`));
    const losses = (dir) => metrics(dir).filter((m) => m.type === 'train').map((m) => [m.step, m.loss]);
    assert.deepEqual(losses(parts), losses(whole));
    assert.equal(losses(whole).length, 100);
  });

  it("--synth-words: 'synth' draws the run's words, recorded for a resumed run", async function () {
    this.timeout(60000);
    const dir = tempDir('cli-synth');
    const words = path.join(tempDir('synth-words'), 'words.txt');
    fs.writeFileSync(words, 'cat\ndot\nrose\nlane\n');
    const { code, stderr } = await run(['--config', configFile, '--charset', WORD_CHARSET, '--data', 'synth', '--synth-words', words,
      '--batch-size', '4', '--iterations', '2', '--threads', '2', '--checkpoint-dir', dir]);
    assert.equal(code, 0, stderr);
    const recognizer = await Recognizer.load(path.join(dir, 'model.safetensors'));
    assert.deepEqual(recognizer.training.notes, { data: [{ spec: 'synth', ratio: 1 }], val: null, synth: { words } });
    await recognizer.close();
    // The checkpoint remembers the list: a resumed run reads it again, and fails naming it when it is gone.
    fs.rmSync(words);
    const resumed = await run(['--resume', dir, '--iterations', '3', '--threads', '2']);
    assert.equal(resumed.code, 1);
    assert.equal(resumed.stderr.trim().split('\n').at(-1),
      `safl: ${words}: cannot read the word list (ENOENT: no such file or directory, open '${words}')`);
  });

  it('--init fine-tunes a model file: its config and charset, a new optimizer and schedule', async function () {
    this.timeout(60000);
    const first = tempDir('cli-first');
    const trained = await run([...common(), '--iterations', '2', '--checkpoint-dir', first]);
    assert.equal(trained.code, 0, trained.stderr);
    const model = path.join(first, 'model.safetensors');
    const dir = tempDir('cli-tuned');
    const { code, stderr } = await run(['--init', model, '--data', data, '--batch-size', '8', '--iterations', '3', '--lr', '0.0001',
      '--threads', '2', '--checkpoint-dir', dir]);
    assert.equal(code, 0, stderr);
    assert.match(stderr.split('\n')[0], new RegExp(`^safl train: fine-tuning ${model.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, 3 steps of 8 images, focal .* adam lr 0\\.0001 `));
    const recognizer = await Recognizer.load(path.join(dir, 'model.safetensors'));
    assert.deepEqual([...recognizer.charset], [...WORD_CHARSET]);
    assert.equal(recognizer.config.d_model, MICRO.d_model);
    assert.equal(recognizer.training.steps, 3);
    assert.equal(recognizer.training.init.model, model);
    assert.equal(recognizer.training.init.training.steps, 2);
    await recognizer.close();
  });

  describe('bad flags', () => {
    let checkpointDir;
    before(async function () {
      this.timeout(60000);
      checkpointDir = tempDir('cli-small');
      const { code, stderr } = await run([...common(), '--iterations', '2', '--checkpoint-dir', checkpointDir]);
      assert.equal(code, 0, stderr);
    });

    const cases = [
      [['--batch-size', '1'], 'safl: Expected an integer between 2 and 4096 for --batch-size but received 1'],
      [['--lr', '0'], 'safl: Expected a number > 0 and <= 10 for --lr but received 0'],
      [['--lr', 'fast'], "safl: Expected a number for --lr but received 'fast'"],
      [['--loss', 'mse'], "safl: Expected 'focal' or 'ce' for --loss but received 'mse'"],
      [['--schedule', 'step'], "safl: Expected 'inverse-sqrt', 'cosine' or 'constant' for --schedule but received 'step'"],
      [['--gamma=-2'], 'safl: Expected a number between 0 and 100 for --gamma but received -2'],
      [['--iterations', '0'], 'safl: Expected an integer between 1 and 1000000000 for --iterations but received 0'],
      [['--device', 'tpu'], "safl: Expected 'auto', 'cpu' or 'cuda' for --device but received 'tpu'"],
      [['--precision', 'half'], "safl: Expected 'float32' or 'bfloat16' for --precision but received 'half'"],
      [['--config', 'huge.json'], 'safl: --config: expected tiny, base or a JSON file, but huge.json: no such file'],
      [['--data', '/nonexistent/set'], 'safl: /nonexistent/set: no such file or directory'],
      [['--synth-words', ''], "safl: Expected a file path for --synth-words but received ''"],
      [['--synth-font', '/no/such.ttf'], "safl: --synth-words and --synth-font shape the 'synth' source, but neither --data nor --val is synth"],
      [['--data', 'synth', '--synth-font', '/no/such.ttf'], 'safl: /no/such.ttf: no such file or directory'],
      [['--init', '/no/model.safetensors'], 'safl: /no/model.safetensors: no such file'],
      [['--init', ''], "safl: Expected a file path for --init but received ''"],
    ];
    for (const [flags, message] of cases) {
      it(`${flags.join(' ')}`, async () => {
        const dir = tempDir('cli-bad');
        const { code, stderr } = await run([...common(), '--iterations', '2', '--checkpoint-dir', dir, ...flags]);
        assert.equal(code, 1);
        assert.equal(stderr.trim().split('\n').at(-1), message);
      });
    }

    it('no --data', async () => {
      const { code, stderr } = await run(['--iterations', '2']);
      assert.equal(code, 1);
      assert.ok(stderr.startsWith('safl train: no training data: give --data SOURCE (a dataset folder, an LMDB dataset or synth)\n'), stderr);
    });

    it('--resume with a missing checkpoint, a changed option, or another config', async () => {
      const missing = await run(['--resume', '/nonexistent/run']);
      assert.equal(missing.stderr.trim(), 'safl: /nonexistent/run: no such file');
      const init = await run(['--resume', checkpointDir, '--init', path.join(checkpointDir, 'model.safetensors')]);
      assert.equal(init.stderr.trim(), 'safl: --init starts a new run from a model file; it cannot be given with --resume');
      const changed = await run(['--resume', checkpointDir, '--lr', '0.1']);
      assert.equal(changed.code, 1);
      assert.equal(changed.stderr.trim(), "safl: --lr cannot be changed when resuming: a resumed run keeps its checkpoint's options (see safl train --help)");
      const other = await run(['--resume', checkpointDir, '--config', 'tiny']);
      assert.equal(other.code, 1);
      const file = path.join(checkpointDir, 'checkpoint.safetensors');
      assert.match(other.stderr.trim(), new RegExp(`^safl: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: the checkpoint is of another configuration \\(loc_channels is \\[4,4,8,8,8,8\\] in the checkpoint but \\[16,32,64,128,128,128\\] in this run; .*\\)$`));
    });
  });
});
