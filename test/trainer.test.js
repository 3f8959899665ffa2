// Trainer as a Node user calls it: a micro model learns a few generated words; a stopped run
// resumes exactly where it left off; schedules, label policies, skipped steps, checkpoints and the
// model file; bad inputs and their messages. The native NativeTrainer is checked directly where the
// Trainer cannot reach it (a checkpoint of another config, a non-finite batch).
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const safl = require('..');
const { Recognizer } = safl;
const { Trainer, learningRate, CHECKPOINT_FORMAT, MAX_CONSECUTIVE_SKIPS } = require('../dist/trainer.js');
const { loadCpuAddon } = require('../dist/native.js');
const { WORD_CHARSET, drawWord, wordSource } = require('./helpers/words.js');
const { MICRO_CONFIG, damagedCopies, microModelFile, readSafetensors, tempDir, withMetadata } = require('./helpers/model.js');

/** Every layer of the network, a few channels wide; 10 characters, words of up to 6. */
const TRAIN_MICRO = Object.freeze({
  in_h: 64, in_w: 256, loc_h: 32, loc_w: 64, rect_h: 32, rect_w: 100, fiducials: 20,
  loc_channels: [4, 4, 8, 8, 8, 8], loc_fc: 16,
  res_channels: [8, 8, 16, 16, 32], res_blocks: [1, 1, 1, 1, 1],
  d_model: 32, heads: 2, ffn: 64, enc_layers: 1, dec_layers: 1,
  max_len: 6, dropout: 0.1,
});
const WORDS = ['cat', 'dot', 'rose', 'lane', 'sand', 'cold', 'note', 'street'];

function micro(options = {}) {
  return Trainer.create({ config: TRAIN_MICRO, charset: WORD_CHARSET, seed: 1, batchSize: 8, iterations: 20, lr: 3e-3, warmup: 5, ...options });
}

function mean(values) {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** A data source over a fixed list of samples. */
function listSource(samples, name = 'list') {
  return { name, size: samples.length, get: async (i) => ({ ...samples[i], origin: `${name}#${i}` }) };
}

describe('Trainer', () => {
  describe('learning', () => {
    it('learns a few generated words: the loss falls far below its start and word accuracy climbs far above chance', async function () {
      this.timeout(120000);
      const dir = tempDir('learn');
      const trainer = await micro({ batchSize: 16, iterations: 200, warmup: 20, checkpointDir: dir, checkpointEvery: 100, logEvery: 50 });
      const losses = [];
      const result = await trainer.train({ sources: [wordSource(WORDS, 64)], onStep: (s) => losses.push(s.loss) });
      assert.equal(result.steps, 200);
      assert.equal(result.stopped, false);
      const start = mean(losses.slice(0, 5));
      const end = mean(losses.slice(-20));
      assert.ok(end < start / 10, `loss ${start} → ${end}`);
      // Chance: 8 words, so 1/8 even for a model that learnt the word shapes but not which is which.
      const evaluation = await trainer.evaluate(wordSource(WORDS, 64));
      assert.ok(evaluation.accuracy >= 0.75, `word accuracy ${evaluation.accuracy}`);
      assert.equal(evaluation.samples, 64);
      await trainer.close();

      // The model file: a Recognizer reads it and the words, and it records the training.
      const recognizer = await Recognizer.load(result.model);
      assert.deepEqual([...recognizer.charset], [...WORD_CHARSET]);
      const { training } = recognizer;
      assert.equal(training.loss, 'focal');
      assert.equal(training.gamma, 2);
      assert.equal(training.alpha, 1);
      assert.equal(training.steps, 200);
      assert.equal(training.batchSize, 16);
      assert.deepEqual(training.lr, { peak: 3e-3, schedule: 'inverse-sqrt', warmup: 20 });
      assert.deepEqual(training.sources, [{ name: 'words', size: 64, ratio: 1 }]);
      assert.ok(training.metrics.loss < start / 10 && training.metrics.tokenAccuracy > 0.9, JSON.stringify(training.metrics));
      const texts = (await recognizer.recognize(WORDS.map((w) => drawWord(w, 2)))).map((r) => r.text);
      assert.ok(texts.filter((t, i) => t === WORDS[i]).length >= 6, `read ${texts.join(' ')}`);
      await recognizer.close();

      const lines = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.deepEqual(lines.map((l) => l.step), [50, 100, 150, 200]);
      for (const line of lines) {
        assert.equal(line.type, 'train');
        for (const key of ['loss', 'tokenAccuracy', 'lr', 'gradNorm', 'imagesPerSecond', 'skipped', 'seconds']) {
          assert.equal(typeof line[key], 'number', key);
        }
      }
      assert.ok(lines[3].tokenAccuracy > 0.9, `token accuracy ${lines[3].tokenAccuracy}`);
    });
  });

  describe('resuming', () => {
    // Two sources (a finite one, shuffled per epoch, and an endless one) mixed 2:1; checkpoints
    // every 15 steps; a validation source.
    const sources = () => [
      { source: wordSource(WORDS, 20), ratio: 2 },
      { source: wordSource(WORDS.slice(2), Infinity, 'endless'), ratio: 1 },
    ];
    const options = (dir) => ({ seed: 3, iterations: 40, checkpointDir: dir, checkpointEvery: 15, validateEvery: 20, logEvery: 5 });

    it('a stopped run resumed from its checkpoint repeats the uninterrupted run exactly', async function () {
      this.timeout(120000);
      const whole = tempDir('whole');
      const parts = tempDir('parts');
      const validation = wordSource(WORDS, 8, 'val');

      const a = await micro(options(whole));
      const expected = [];
      await a.train({ sources: sources(), validation, onStep: (s) => expected.push(s.loss) });
      await a.close();

      const b = await micro(options(parts));
      const actual = [];
      const first = await b.train({
        sources: sources(),
        validation,
        onStep: (s) => {
          actual.push(s.loss);
          if (s.step === 22) b.stop();
        },
      });
      assert.deepEqual({ steps: first.steps, stopped: first.stopped }, { steps: 22, stopped: true });
      await b.close();

      const c = await Trainer.resume(parts);
      assert.equal(c.step, 22);
      assert.equal(c.options.seed, 3);
      assert.equal(c.options.checkpointDir, parts);
      const second = await c.train({ sources: sources(), validation, onStep: (s) => actual.push(s.loss) });
      assert.equal(second.steps, 40);
      await c.close();

      // Bit for bit: the same float32 state, data order and dropout seeds (Note [exact resume]).
      assert.equal(actual.length, 40);
      actual.forEach((loss, i) => assert.ok(loss === expected[i], `step ${i + 1}: ${loss} vs ${expected[i]}`));
      const tensors = (file) => readSafetensors(fs.readFileSync(file)).data;
      assert.ok(tensors(path.join(parts, 'checkpoint.safetensors')).equals(tensors(path.join(whole, 'checkpoint.safetensors'))));
      assert.ok(tensors(path.join(parts, 'model.safetensors')).equals(tensors(path.join(whole, 'model.safetensors'))));

      // metrics.jsonl: the same steps, losses and validations, once each.
      const metrics = (dir) =>
        fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const trainSteps = (dir) => metrics(dir).filter((m) => m.type === 'train').map((m) => m.step);
      assert.deepEqual(trainSteps(whole), [5, 10, 15, 20, 25, 30, 35, 40]);
      assert.deepEqual(trainSteps(parts), [5, 10, 15, 20, 22, 25, 30, 35, 40]);
      const validations = (dir) => metrics(dir).filter((m) => m.type === 'validation').map((m) => [m.step, m.accuracy]);
      assert.deepEqual(validations(parts), validations(whole));
    });

    it('a checkpoint holds the whole state: tensors, optimizer moments, step and sampler', async () => {
      const dir = tempDir('state');
      const trainer = await micro({ iterations: 4, checkpointDir: dir });
      await trainer.train({ sources: [wordSource(WORDS, 16)] });
      await trainer.close();
      const { header } = readSafetensors(fs.readFileSync(path.join(dir, 'checkpoint.safetensors')));
      const meta = header.__metadata__;
      assert.equal(meta.format, CHECKPOINT_FORMAT);
      assert.equal(meta.optimizer_step, '4');
      const state = JSON.parse(meta.state);
      assert.equal(state.step, 4);
      assert.deepEqual(state.sampler.taken, [32]);
      assert.equal(state.run.batchSize, 8);
      const params = Object.entries(header).filter(([k]) => k !== '__metadata__' && !k.startsWith('optimizer.') && !k.endsWith('running_mean') && !k.endsWith('running_var'));
      const P = params.reduce((sum, [, t]) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
      assert.deepEqual(header['optimizer.m'].shape, [P]);
      assert.deepEqual(header['optimizer.v'].shape, [P]);
      assert.equal(header['optimizer.m'].dtype, 'F32');
      // The model file holds no optimizer state.
      const model = readSafetensors(fs.readFileSync(path.join(dir, 'model.safetensors'))).header;
      assert.equal(model['optimizer.m'], undefined);
      assert.equal(model.__metadata__.format, 'safl-model/1');
    });

    it('resume may change iterations and where to write, and trims metrics past the checkpoint', async () => {
      const dir = tempDir('extend');
      const trainer = await micro({ iterations: 4, checkpointDir: dir, logEvery: 1 });
      await trainer.train({ sources: [wordSource(WORDS, 16)] });
      await trainer.close();
      // A run that died after its checkpoint left metrics of steps the resumed run will redo.
      fs.appendFileSync(path.join(dir, 'metrics.jsonl'), `${JSON.stringify({ type: 'train', step: 5, loss: 1 })}\n`);
      const resumed = await Trainer.resume(path.join(dir, 'checkpoint.safetensors'), { iterations: 6 });
      assert.equal(resumed.options.iterations, 6);
      const result = await resumed.train({ sources: [wordSource(WORDS, 16)] });
      assert.equal(result.steps, 6);
      await resumed.close();
      const steps = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
      assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
    });
  });

  describe('options', () => {
    it('learningRate: linear warm-up, then inverse square root, cosine to zero, or constant', () => {
      assert.equal(learningRate('inverse-sqrt', 1, 100, 1000, 50), 0.5);
      assert.equal(learningRate('inverse-sqrt', 1, 100, 1000, 100), 1);
      assert.equal(learningRate('inverse-sqrt', 1, 100, 1000, 400), 0.5);
      assert.equal(learningRate('inverse-sqrt', 2, 0, 1000, 4), 1);
      assert.equal(learningRate('cosine', 1, 100, 1100, 100), 1);
      assert.ok(Math.abs(learningRate('cosine', 1, 100, 1100, 600) - 0.5) < 1e-12);
      assert.ok(Math.abs(learningRate('cosine', 1, 100, 1100, 1100)) < 1e-12);
      assert.equal(learningRate('constant', 0.1, 10, 1000, 5), 0.05);
      assert.equal(learningRate('constant', 0.1, 10, 1000, 500), 0.1);
    });

    it('resolves defaults: Adam 0.9/0.98/1e-9, focal loss γ 2 α 1, clipping at 5, warm-up 10% up to 1000', async () => {
      const trainer = await micro({ iterations: 50000, warmup: undefined, lr: undefined, batchSize: undefined });
      const o = trainer.options;
      assert.deepEqual(
        [o.batchSize, o.lr, o.schedule, o.warmup, o.loss, o.gamma, o.alpha, o.optimizer, o.beta1, o.beta2, o.eps, o.weightDecay, o.clip, o.precision],
        [64, 1e-3, 'inverse-sqrt', 1000, 'focal', 2, 1, 'adam', 0.9, 0.98, 1e-9, 0, 5, 'float32'],
      );
      await trainer.close();
      const short = await micro({ iterations: 300, warmup: undefined });
      assert.equal(short.options.warmup, 30);
      await short.close();
    });

    it('cross-entropy, AdamW and the cosine schedule train and are recorded in the model file', async () => {
      const dir = tempDir('ce');
      const trainer = await micro({ iterations: 6, loss: 'cross-entropy', optimizer: 'adamw', weightDecay: 0.01, schedule: 'cosine', checkpointDir: dir });
      const lrs = [];
      const result = await trainer.train({ sources: [wordSource(WORDS, 16)], onStep: (s) => lrs.push(s.lr) });
      assert.ok(Number.isFinite(result.loss));
      assert.ok(Math.abs(lrs[5]) < 1e-12, `the cosine schedule ends at 0, got ${lrs[5]}`);
      await trainer.close();
      const recognizer = await Recognizer.load(result.model);
      assert.equal(recognizer.training.loss, 'cross-entropy');
      assert.equal(recognizer.training.gamma, undefined);
      assert.deepEqual(recognizer.training.optimizer, { name: 'adamw', beta1: 0.9, beta2: 0.98, eps: 1e-9, weightDecay: 0.01, clip: 5 });
      await recognizer.close();
    });

    it("precision 'bfloat16' trains close to float32, is recorded, and may change on resume", async () => {
      const runs = {};
      for (const precision of ['float32', 'bfloat16']) {
        const dir = tempDir(`precision-${precision}`);
        const trainer = await micro({ iterations: 4, precision, checkpointDir: dir });
        assert.equal(trainer.options.precision, precision);
        const losses = [];
        const result = await trainer.train({ sources: [wordSource(WORDS, 16)], onStep: (s) => losses.push(s.loss) });
        await trainer.close();
        runs[precision] = { dir, losses, model: result.model };
      }
      // The same data and seed: where the CPU multiplies no bfloat16 nothing changes; where it does,
      // the rounding of the products' operands moves the losses a little.
      const [exact, fast] = [runs.float32.losses, runs.bfloat16.losses];
      if (!safl.info().bfloat16Matmul) assert.deepEqual(fast, exact);
      fast.forEach((loss, i) => assert.ok(Math.abs(loss - exact[i]) < 0.02 * exact[i], `step ${i + 1}: ${loss} vs ${exact[i]}`));
      const recognizer = await Recognizer.load(runs.bfloat16.model);
      assert.equal(recognizer.training.precision, 'bfloat16');
      await recognizer.close();
      const resumed = await Trainer.resume(runs.bfloat16.dir, { iterations: 6, precision: 'float32' });
      assert.equal(resumed.options.precision, 'float32');
      await resumed.train({ sources: [wordSource(WORDS, 16)] });
      assert.equal(resumed.trainingSummary().precision, 'float32');
      await resumed.close();
    });

    it('skips samples whose labels it cannot learn, counts them, or maps unknown characters to UNK', async () => {
      const samples = [
        { image: drawWord('cat'), label: 'cat' },
        { image: drawWord('dot'), label: 'dog' }, // 'g' is not in the charset
        { image: drawWord('street'), label: 'streets' }, // 7 characters > max_len 6
        { image: drawWord('rose'), label: 'ROSE' }, // another case of charset characters: taken
      ];
      const warnings = [];
      const trainer = await micro({ iterations: 2, batchSize: 4 });
      await trainer.train({ sources: [listSource(samples)], onWarning: (m) => warnings.push(m) });
      const counts = trainer.trainingSummary().skipped;
      assert.ok(counts.unknownChars > 0 && counts.longLabels > 0, JSON.stringify(counts));
      assert.equal(counts.badImages, 0);
      assert.ok(warnings.some((w) => w === "list#1: the label 'dog' has characters outside the charset; the sample is skipped"), warnings.join('\n'));
      assert.ok(warnings.some((w) => w === "list#2: the label 'streets' is longer than max_len 6; the sample is skipped"), warnings.join('\n'));
      await trainer.close();

      const unk = await micro({ iterations: 2, batchSize: 4, unknownChars: 'unk' });
      const unkWarnings = [];
      await unk.train({ sources: [listSource(samples)], onWarning: (m) => unkWarnings.push(m) });
      assert.equal(unk.trainingSummary().skipped.unknownChars, 0);
      await unk.close();

      const strict = await micro({ iterations: 2, batchSize: 4, longLabels: 'error' });
      await assert.rejects(strict.train({ sources: [listSource(samples)], onWarning: () => {} }), {
        message: 'list#2: the label has 7 characters, more than the maximum of 6',
      });
      await strict.close();
    });

    it('skips an image that cannot be decoded, with a warning naming it', async () => {
      const samples = [
        { image: drawWord('cat'), label: 'cat' },
        { image: Buffer.from('not an image'), label: 'dot' },
      ];
      const warnings = [];
      const trainer = await micro({ iterations: 1, batchSize: 2 });
      await trainer.train({ sources: [listSource(samples)], onWarning: (m) => warnings.push(m) });
      assert.ok(trainer.trainingSummary().skipped.badImages >= 1);
      assert.match(warnings[0], /^list#1: not a decodable image \(.*\); the sample is skipped$/);
      await trainer.close();
    });
  });

  describe('evaluate', () => {
    it('reads a source in inference mode: unreadable images count as wrong; case-sensitive accuracy only where labels keep case', async () => {
      const trainer = await micro();
      const samples = [
        { image: drawWord('cat'), label: 'Cat' },
        { image: drawWord('dot'), label: 'dot' },
        { image: Buffer.from('not an image'), label: 'rose' },
      ];
      const report = await trainer.evaluate(listSource(samples, 'mixed'));
      assert.deepEqual(Object.keys(report).sort(), ['accuracy', 'caseSensitiveAccuracy', 'samples', 'seconds', 'source', 'step', 'unreadable']);
      assert.deepEqual([report.source, report.step, report.samples, report.unreadable], ['mixed', 0, 3, 1]);
      assert.equal(typeof report.caseSensitiveAccuracy, 'number');
      const lower = await trainer.evaluate(listSource(samples.slice(1), 'lower'), { samples: 1 });
      assert.deepEqual([lower.samples, lower.unreadable, lower.caseSensitiveAccuracy], [1, 0, null]);
      await assert.rejects(trainer.evaluate(listSource([], 'none')), { message: "validation source 'none' is empty" });
      await trainer.close();
    });
  });

  describe('non-finite steps', () => {
    it('the native step skips a batch whose loss is not finite and leaves the whole state unchanged', async () => {
      const { NativeTrainer } = loadCpuAddon();
      const config = JSON.stringify({ ...TRAIN_MICRO, num_classes: WORD_CHARSET.length + 3 });
      const native = await NativeTrainer.create(config, 1);
      const B = 2;
      const images = new Float32Array(B * 3 * 64 * 256).fill(0.5);
      const targets = new Int32Array(B * 7).fill(WORD_CHARSET.length + 1);
      targets[0] = 0;
      targets[1] = WORD_CHARSET.length;
      targets[7] = WORD_CHARSET.length;
      const options = { gamma: 2, alpha: 1, dropoutSeed: 1, lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-9, weightDecay: 0, decoupled: false, maxNorm: 5, precision: 'float32' };
      const ok = await native.step(images, targets, B, options);
      assert.equal(ok.skipped, false);
      assert.equal(ok.tokens, 3);
      assert.equal(native.optimizerStep(), 1);
      const before = await native.save('float32', {}, true);
      // ReLU turns NaN activations into 0, so the loss stays finite; the gradients do not.
      images.fill(NaN);
      const bad = await native.step(images, targets, B, options);
      assert.equal(bad.skipped, true);
      assert.ok(Number.isNaN(bad.gradNorm), `gradient norm ${bad.gradNorm}`);
      assert.equal(native.optimizerStep(), 1);
      assert.ok((await native.save('float32', {}, true)).equals(before), 'parameters, statistics and moments unchanged');
      native.close();
    });

    it(`warns about a skipped step and stops after ${MAX_CONSECUTIVE_SKIPS} in a row`, async () => {
      // The addon's trainer, wrapped so that its steps report a non-finite loss from step 3 on.
      const addon = loadCpuAddon();
      const original = addon.NativeTrainer;
      addon.NativeTrainer = {
        async create(...args) {
          const native = await original.create(...args);
          let calls = 0;
          const wrapper = {};
          for (const name of ['config', 'optimizerStep', 'recognize', 'save', 'load', 'close']) wrapper[name] = (...a) => native[name](...a);
          wrapper.step = async (...a) => (++calls >= 3 ? { loss: NaN, correct: 0, tokens: 1, gradNorm: NaN, skipped: true } : native.step(...a));
          return wrapper;
        },
      };
      let trainer;
      try {
        trainer = await micro({ iterations: 20 });
      } finally {
        addon.NativeTrainer = original;
      }
      const warnings = [];
      await assert.rejects(trainer.train({ sources: [wordSource(WORDS, 16)], onWarning: (m) => warnings.push(m) }), {
        message: 'training stopped: the loss or gradient was not finite in 5 steps in a row (steps 3–7); try a lower lr or a longer warmup',
      });
      assert.deepEqual(warnings, [3, 4, 5, 6, 7].map((s) => `step ${s}: the loss is NaN; the step is skipped`));
      assert.equal(trainer.step, 7);
      await trainer.close();
    });
  });

  describe('fine-tuning a model file (init)', () => {
    /** The float32 model of a micro run trained for `steps` steps, and the first loss of that run. */
    async function trainedModel(steps) {
      const dir = tempDir('base-run');
      const trainer = await micro({ batchSize: 16, iterations: steps, warmup: 10, checkpointDir: dir });
      const losses = [];
      await trainer.train({ sources: [wordSource(WORDS, 64)], onStep: (s) => losses.push(s.loss) });
      await trainer.close();
      return { file: path.join(dir, 'model.safetensors'), firstLoss: losses[0] };
    }

    it('starts from the file\'s weights, configuration and charset with a new optimizer, and records where it started', async function () {
      this.timeout(120000);
      const base = await trainedModel(60);
      const dir = tempDir('fine-tune');
      const options = { init: base.file, seed: 5, batchSize: 16, iterations: 4, lr: 1e-4, warmup: 2, checkpointDir: dir };
      const tuned = await Trainer.create(options);
      assert.deepEqual(tuned.config, { ...TRAIN_MICRO, num_classes: WORD_CHARSET.length + 3 });
      assert.deepEqual([...tuned.charset], [...WORD_CHARSET]);
      assert.equal(tuned.step, 0);
      // Before any step its model is the file's, tensor for tensor and bit for bit.
      const copy = path.join(tempDir('copy'), 'model.safetensors');
      await tuned.saveModel(copy);
      const [original, saved] = [base.file, copy].map((f) => readSafetensors(fs.readFileSync(f)));
      for (const [name, info] of Object.entries(original.header)) {
        if (name === '__metadata__') continue;
        const bytes = (part) => part.data.subarray(part.header[name].data_offsets[0], part.header[name].data_offsets[1]);
        assert.deepEqual(saved.header[name].shape, info.shape, name);
        assert.ok(bytes(saved).equals(bytes(original)), `${name} differs from the file's`);
      }
      // It goes on from there: its first loss is far below a new model's on the same words.
      const losses = [];
      const result = await tuned.train({ sources: [wordSource(WORDS, 64)], onStep: (s) => losses.push(s.loss) });
      await tuned.close();
      assert.equal(result.steps, 4);
      assert.ok(losses[0] < base.firstLoss / 2, `first loss ${losses[0]}, a new model's ${base.firstLoss}`);
      // The step counts and the schedule are the new run's; the model file says what it was tuned from.
      const recognizer = await Recognizer.load(result.model);
      const baseSummary = (await Recognizer.load(base.file)).training;
      assert.equal(recognizer.training.steps, 4);
      assert.deepEqual(recognizer.training.lr, { peak: 1e-4, schedule: 'inverse-sqrt', warmup: 2 });
      assert.deepEqual(recognizer.training.init, { model: base.file, training: baseSummary });
      await recognizer.close();
      // A resumed fine-tuning run keeps that record.
      const resumed = await Trainer.resume(dir, { iterations: 5 });
      assert.deepEqual(resumed.trainingSummary().init, { model: base.file, training: baseSummary });
      await resumed.close();
    });

    it('refuses a bad init, and a config or charset that disagrees with the file', async function () {
      this.timeout(60000);
      const modelFile = await microModelFile(); // the default charset, d_model 16
      await assert.rejects(micro({ init: 5 }), { name: 'TypeError', message: 'Expected a file path for init but received 5' });
      await assert.rejects(micro({ init: '/nonexistent/model.safetensors' }), { message: '/nonexistent/model.safetensors: no such file' });
      const dir = tempDir('init-checkpoint');
      const trainer = await micro({ iterations: 1, checkpointDir: dir });
      await trainer.train({ sources: [wordSource(WORDS, 8)] });
      await trainer.close();
      const checkpoint = path.join(dir, 'checkpoint.safetensors');
      await assert.rejects(Trainer.create({ init: checkpoint }), {
        message: `${checkpoint}: unsupported model format 'safl-checkpoint/1' (this version of safl reads 'safl-model/1')`,
      });
      await assert.rejects(Trainer.create({ init: modelFile, charset: WORD_CHARSET }), {
        message: new RegExp(`^${modelFile.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: the model reads another charset \\(94 characters: .*\\) than the charset option \\(${WORD_CHARSET.length}: `),
      });
      await assert.rejects(Trainer.create({ init: modelFile, config: 'tiny' }), {
        message: new RegExp(`: the model is of another configuration \\(loc_channels is \\[4,4,4,4,4,4\\] in the model but \\[16,32,64,128,128,128\\] in this run; `),
      });
      // A file whose own config is invalid: the native check's message, naming the file.
      const badConfig = path.join(dir, 'bad-config.safetensors');
      fs.writeFileSync(badConfig, withMetadata(fs.readFileSync(modelFile), (m) => (m.config = JSON.stringify({ ...MICRO_CONFIG, max_len: 0 }))));
      await assert.rejects(Trainer.create({ init: badConfig }), {
        message: `${badConfig}: config: expected max_len between 1 and 1024 but received 0`,
      });
      // Its own config and charset, given again, are accepted.
      const recognizer = await Recognizer.load(modelFile);
      const same = await Trainer.create({ init: modelFile, config: { ...recognizer.config }, charset: recognizer.charset.join('') });
      assert.deepEqual(same.config, recognizer.config);
      await Promise.all([same.close(), recognizer.close()]);
    });
  });

  describe('bad inputs', () => {
    it('refuses bad options with exact messages', async () => {
      const cases = [
        [{ batchSize: 1 }, RangeError, 'Expected an integer between 2 and 4096 for batchSize but received 1'],
        [{ batchSize: 2.5 }, TypeError, 'Expected an integer between 2 and 4096 for batchSize but received 2.5'],
        [{ lr: 0 }, RangeError, 'Expected a number > 0 and <= 10 for lr but received 0'],
        [{ lr: '1e-3' }, TypeError, "Expected a number > 0 and <= 10 for lr but received '1e-3'"],
        [{ schedule: 'linear' }, RangeError, "Expected 'inverse-sqrt', 'cosine' or 'constant' for schedule but received 'linear'"],
        [{ loss: 'ctc' }, RangeError, "Expected 'focal' or 'cross-entropy' for loss but received 'ctc'"],
        [{ gamma: -1 }, RangeError, 'Expected a number between 0 and 100 for gamma but received -1'],
        [{ alpha: 0 }, RangeError, 'Expected a number > 0 and <= 100 for alpha but received 0'],
        [{ optimizer: 'sgd' }, RangeError, "Expected 'adam' or 'adamw' for optimizer but received 'sgd'"],
        [{ beta2: 1 }, RangeError, 'Expected a number between 0 and 0.999999 for beta2 but received 1'],
        [{ clip: -1 }, RangeError, 'Expected a number between 0 and 1000000 for clip but received -1'],
        [{ iterations: 0 }, RangeError, 'Expected an integer between 1 and 1000000000 for iterations but received 0'],
        [{ warmup: -1 }, RangeError, 'Expected an integer between 0 and 1000000000 for warmup but received -1'],
        [{ unknownChars: 'drop' }, RangeError, "Expected 'skip' or 'unk' for unknownChars but received 'drop'"],
        [{ longLabels: 'cut' }, RangeError, "Expected 'skip' or 'error' for longLabels but received 'cut'"],
        [{ checkpointDir: '' }, TypeError, "Expected a directory path for checkpointDir but received ''"],
        [{ seed: -1 }, RangeError, 'Expected an integer between 0 and 9007199254740991 for seed but received -1'],
        [{ config: 'huge' }, RangeError, "Expected 'tiny' or 'base' for config but received 'huge'"],
        [{ device: 'tpu' }, RangeError, "Expected 'auto', 'cpu' or 'cuda' for device but received 'tpu'"],
        [{ precision: 'float16' }, RangeError, "Expected 'float32' or 'bfloat16' for precision but received 'float16'"],
      ];
      for (const [options, type, message] of cases) {
        await assert.rejects(micro(options), (err) => {
          assert.ok(err instanceof type, `${JSON.stringify(options)}: ${err}`);
          assert.equal(err.message, message);
          return true;
        });
      }
      await assert.rejects(micro({ learningRate: 1e-3 }), {
        name: 'TypeError',
        message: /^Expected one of batchSize, iterations, .* for the options of Trainer.create but received 'learningRate'$/,
      });
    });

    it('refuses bad data: an empty source, a non-source, no sources', async () => {
      const trainer = await micro();
      await assert.rejects(trainer.train({ sources: [listSource([], 'nothing')] }), { message: "data source 'nothing' is empty" });
      await assert.rejects(trainer.train({ sources: [wordSource(WORDS)], validation: listSource([], 'none') }), {
        message: "validation source 'none' is empty",
      });
      await assert.rejects(trainer.train({ sources: [] }), { name: 'TypeError', message: 'Expected a non-empty array of data sources for sources but received []' });
      await assert.rejects(trainer.train({ sources: ['data/'] }), {
        name: 'TypeError',
        message: "Expected a data source { name, size, get(index) } for sources[0] but received 'data/'",
      });
      await assert.rejects(trainer.train({ sources: [{ source: wordSource(WORDS), ratio: 0 }] }), {
        name: 'RangeError',
        message: 'Expected a number > 0 and <= 1000000000 for sources[0].ratio but received 0',
      });
      assert.equal(trainer.step, 0);
      await trainer.close();
      await assert.rejects(trainer.train({ sources: [wordSource(WORDS)] }), { message: 'the trainer is closed' });
    });

    it('refuses a missing checkpoint, a model file, and a checkpoint of another config or other data', async () => {
      await assert.rejects(Trainer.resume('/nonexistent/checkpoint.safetensors'), { message: '/nonexistent/checkpoint.safetensors: no such file' });
      const modelFile = await microModelFile();
      await assert.rejects(Trainer.resume(modelFile), {
        message: `${modelFile}: not a safl checkpoint (its format is 'safl-model/1', not 'safl-checkpoint/1')`,
      });

      const dir = tempDir('other');
      const trainer = await micro({ iterations: 2, checkpointDir: dir });
      await trainer.train({ sources: [wordSource(WORDS, 16)] });
      await trainer.close();
      const file = path.join(dir, 'checkpoint.safetensors');
      await assert.rejects(Trainer.resume(file, { config: { ...TRAIN_MICRO, d_model: 64, heads: 4 } }), {
        message: `${file}: the checkpoint is of another configuration (d_model is 32 in the checkpoint but 64 in this run; heads is 2 in the checkpoint but 4 in this run)`,
      });
      await assert.rejects(Trainer.resume(file, { lr: 0.1 }), {
        name: 'TypeError',
        message: /^Expected one of iterations, .* for the options of Trainer.resume but received 'lr'$/,
      });
      const resumed = await Trainer.resume(file, { config: TRAIN_MICRO });
      await assert.rejects(resumed.train({ sources: [wordSource(WORDS, 8)] }), {
        message: 'the run was trained on other data sources: words (16, ratio 1); train() was given words (8, ratio 1)',
      });
      await resumed.close();

      // The native loader checks the configuration too, naming every difference.
      const { NativeTrainer } = loadCpuAddon();
      const other = await NativeTrainer.create(JSON.stringify({ ...TRAIN_MICRO, num_classes: 13, ffn: 32, max_len: 8 }), 0);
      await assert.rejects(other.load(fs.readFileSync(file), file, true), {
        message: `${file}: the checkpoint is of another configuration (ffn is 64 in the checkpoint but 32 in this trainer; max_len is 6 in the checkpoint but 8 in this trainer)`,
      });
      await assert.rejects(other.load(fs.readFileSync(modelFile), 'model', true), { message: /^model: the checkpoint is of another configuration/ });
      await assert.rejects(other.load(fs.readFileSync(modelFile), 'model', false), { message: /^model: the model is of another configuration \(.* in the model but .* in this trainer/ });
      assert.throws(() => other.load(fs.readFileSync(file), file), { name: 'TypeError', message: 'Expected a boolean for withOptimizer but received undefined' });
      other.close();
    });

    it('a damaged checkpoint either resumes and trains, or is refused with a message naming it', async () => {
      const dir = tempDir('damaged');
      const trainer = await micro({ iterations: 2, checkpointDir: dir });
      await trainer.train({ sources: [wordSource(WORDS, 16)] });
      await trainer.close();
      const bytes = fs.readFileSync(path.join(dir, 'checkpoint.safetensors'));
      // 120 damaged copies (helpers/model.js damagedCopies).
      const outcomes = { resumed: 0, refused: 0 };
      let i = 0;
      for (const damaged of damagedCopies(bytes, 120, 99)) {
        i++;
        const file = path.join(fs.mkdtempSync(path.join(dir, 'case-')), 'checkpoint.safetensors');
        fs.writeFileSync(file, damaged);
        let resumed;
        try {
          resumed = await Trainer.resume(file, { iterations: 3 });
        } catch (err) {
          assert.ok(err.message.startsWith(`${file}: `), `case ${i}: ${err.message}`);
          outcomes.refused++;
          continue;
        }
        // The weights' bytes may be damaged into large or non-finite values: a step may be skipped, never crash.
        const result = await resumed.train({ sources: [wordSource(WORDS, 16)], warn: () => {} });
        assert.equal(result.steps, 3);
        await resumed.close();
        outcomes.resumed++;
      }
      assert.ok(outcomes.resumed > 0 && outcomes.refused > 60, JSON.stringify(outcomes));
    });
  });
});
