// Recognizer as a Node user calls it: loading and making models, options and their messages,
// results and their shape, batching under concurrent calls, a free event loop, and close().
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const safl = require('..');
const { Recognizer } = safl;
const { wordPixels, wordPng, wordJpeg } = require('./helpers/images.js');
const {
  MICRO_CONFIG, assertSameResults, microModelFile, packageWithoutModel, readSafetensors, tempDir,
} = require('./helpers/model.js');

function assertResultShape(result, maxLen) {
  assert.deepEqual(Object.keys(result).sort(), ['chars', 'confidence', 'text']);
  assert.equal(typeof result.text, 'string');
  assert.equal(result.text, result.chars.map((c) => c.char).join(''));
  assert.ok(result.chars.length <= maxLen);
  assert.ok(result.confidence >= 0 && result.confidence <= 1, `confidence ${result.confidence}`);
  for (const c of result.chars) {
    assert.deepEqual(Object.keys(c).sort(), ['char', 'p']);
    assert.equal([...c.char].length, 1);
    assert.ok(c.p >= 0 && c.p <= 1, `p ${c.p}`);
  }
}

describe('Recognizer', () => {
  let modelFile;
  let recognizer;
  let inputs; // 8 distinct images: PNG buffers, JPEG buffers, raw pixels
  before(async () => {
    modelFile = await microModelFile();
    recognizer = await Recognizer.load(modelFile, { batchSize: 16 });
    inputs = [];
    for (let seed = 1; seed <= 3; seed++) inputs.push(await wordPng(seed), await wordJpeg(seed + 10));
    inputs.push(wordPixels(120, 40, 21), wordPixels(200, 30, 22));
  });
  after(() => recognizer.close());

  describe('loading and making models', () => {
    it('loads a model file: config, charset and training summary', () => {
      assert.deepEqual({ ...recognizer.config }, MICRO_CONFIG);
      assert.deepEqual([...recognizer.charset], [...safl.DEFAULT_CHARSET]);
      assert.equal(recognizer.charset.length, 94);
      assert.equal(recognizer.charset[0], '!');
      assert.equal(recognizer.charset[93], '~');
      assert.deepEqual({ ...recognizer.training }, {});
      assert.equal(recognizer.device, 'cpu'); // 'auto' (lib/native.ts: Note [auto stays on the CPU])
      assert.equal(recognizer.batchSize, 16);
      assert.equal(recognizer.beamWidth, 1);
      assert.equal(recognizer.views, 1);
    });

    it('loads from a Buffer and gives the same results as from the path', async () => {
      const fromBuffer = await Recognizer.load(fs.readFileSync(modelFile));
      assertSameResults(await fromBuffer.recognize(inputs), await recognizer.recognize(inputs));
      await fromBuffer.close();
    });

    it('a made model gives the same results after save and load', async () => {
      const made = await Recognizer.create({ config: MICRO_CONFIG, seed: 7 });
      assertSameResults(await made.recognize(inputs), await recognizer.recognize(inputs));
      await made.close();
    });

    it('saves float16 files, half the size, with results close to float32', async () => {
      const file = path.join(tempDir('f16'), 'micro16.safetensors');
      await recognizer.save(file, { dtype: 'float16', training: { steps: 0, note: 'test' } });
      const half = await Recognizer.load(file);
      assert.deepEqual({ ...half.training }, { steps: 0, note: 'test' });
      const { header, data } = readSafetensors(fs.readFileSync(file));
      assert.equal(header['classifier.weight'].dtype, 'F16');
      assert.equal(2 * data.length, readSafetensors(fs.readFileSync(modelFile)).data.length);
      const [a, b] = [await half.recognize(inputs[0]), await recognizer.recognize(inputs[0])];
      assert.ok(Math.abs(a.confidence - b.confidence) < 0.05);
      await half.close();
    });

    it('makes tiny and custom-charset models', async () => {
      const digits = await Recognizer.create({ config: { ...MICRO_CONFIG, num_classes: undefined }, charset: '0123456789', seed: 3 });
      assert.equal(digits.config.num_classes, 13);
      assert.deepEqual([...digits.charset], [...'0123456789']);
      const result = await digits.recognize(inputs[0]);
      assertResultShape(result, 25);
      assert.match(result.text, /^[0-9]*$/);
      await digits.close();
      await assert.rejects(Recognizer.create({ config: 'tiny', charset: 'ab', beamWidth: 6 }), {
        name: 'RangeError',
        message: 'Expected an integer between 1 and 5 for beamWidth but received 6',
      });
      const tiny = await Recognizer.create({ config: 'tiny', charset: ['a', 'b', 'é'] });
      assert.equal(tiny.config.d_model, 256);
      assert.equal(tiny.config.num_classes, 6);
      await tiny.close();
    });

    it('says where the default model is missing', async () => {
      const copy = require(packageWithoutModel());
      const expected = copy.defaultModelPath();
      assert.notEqual(expected, safl.defaultModelPath());
      assert.equal(fs.existsSync(expected), false);
      await assert.rejects(copy.Recognizer.load(), {
        name: 'Error',
        message: `no default model is installed (expected ${expected}); pass a model file to Recognizer.load()`,
      });
    });
  });

  describe('options', () => {
    it('an unknown device', async () => {
      await assert.rejects(Recognizer.load(modelFile, { device: 'tpu' }), {
        name: 'RangeError',
        message: "Expected 'auto', 'cpu' or 'cuda' for device but received 'tpu'",
      });
      await assert.rejects(Recognizer.create({ device: 0 }), {
        name: 'TypeError',
        message: "Expected 'auto', 'cpu' or 'cuda' for device but received 0",
      });
    });

    it("device 'cuda' says why it cannot run", async function () {
      const reason = safl.info().cudaUnavailableReason;
      if (reason === '') this.skip(); // a GPU answers: test/device.test.js runs on it
      await assert.rejects(Recognizer.load(modelFile, { device: 'cuda' }), {
        name: 'Error',
        message: `device 'cuda' is not available: ${reason}`,
      });
    });

    it('batchSize, beamWidth, threads, model and options', async () => {
      const cases = [
        [[modelFile, { batchSize: 0 }], 'RangeError', 'Expected an integer between 1 and 1024 for batchSize but received 0'],
        [[modelFile, { batchSize: 2.5 }], 'TypeError', 'Expected an integer between 1 and 1024 for batchSize but received 2.5'],
        [[modelFile, { beamWidth: 65 }], 'RangeError', 'Expected an integer between 1 and 64 for beamWidth but received 65'],
        [[modelFile, { views: 9 }], 'RangeError', 'Expected an integer between 1 and 8 for views but received 9'],
        [[modelFile, { views: 1.5 }], 'TypeError', 'Expected an integer between 1 and 8 for views but received 1.5'],
        [[modelFile, { threads: '2' }], 'TypeError', "Expected an integer between 1 and 1024 for threads but received '2'"],
        [[modelFile, { precision: 'float16' }], 'RangeError', "Expected 'float32' or 'bfloat16' for precision but received 'float16'"],
        [[modelFile, { precision: 16 }], 'TypeError', "Expected 'float32' or 'bfloat16' for precision but received 16"],
        [[modelFile, { beamWidth: 3, dictionary: 'french' }], 'TypeError', "Expected 'english' or a non-empty array of words for dictionary but received 'french'"],
        [[modelFile, { beamWidth: 3, dictionary: ['ok', 7] }], 'TypeError', 'Expected a string for dictionary[1] but received 7'],
        [[modelFile, { beamWidth: 3, dictionary: ['', '--'] }], 'RangeError', "Expected 'english' or a non-empty array of words (each with a letter or digit) for dictionary but received [ '', '--' ]"],
        [[modelFile, { beamWidth: 3, dictionary: 'english', dictionaryWeight: NaN }], 'TypeError', 'Expected a number between 0 and 100 for dictionaryWeight but received NaN'],
        [[modelFile, { beamWidth: 3, dictionary: 'english', dictionaryWeight: 101 }], 'RangeError', 'Expected a number between 0 and 100 for dictionaryWeight but received 101'],
        [[modelFile, { beamWidth: 3, dictionaryWeight: 1 }], 'TypeError', 'Expected a dictionary with dictionaryWeight but received dictionary undefined'],
        [[modelFile, { dictionary: 'english' }], 'RangeError', 'Expected beamWidth or views over 1 with a dictionary (it chooses among their readings) but received beamWidth 1 and views 1'],
        [[42], 'TypeError', 'Expected a path or a Buffer for model but received 42'],
        [[modelFile, 'cpu'], 'TypeError', "Expected an object for options but received 'cpu'"],
      ];
      for (const [args, name, message] of cases) await assert.rejects(Recognizer.load(...args), { name, message });
    });

    it('create: config, charset, seed', async () => {
      const cases = [
        [{ config: 'huge' }, 'RangeError', "Expected 'tiny' or 'base' for config but received 'huge'"],
        [{ config: { ...MICRO_CONFIG, num_classes: 50 } }, 'RangeError', "Expected 97 (the charset's 94 characters + 3) for config.num_classes but received 50"],
        [{ charset: 'abca' }, 'RangeError', "Expected unique characters for charset but received 'a' twice"],
        [{ charset: ['a', 'bc'] }, 'TypeError', "Expected a single character for charset[1] but received 'bc'"],
        [{ charset: '' }, 'RangeError', "Expected a non-empty charset for charset but received ''"],
        [{ seed: -1 }, 'RangeError', 'Expected an integer between 0 and 9007199254740991 for seed but received -1'],
        [{ config: { ...MICRO_CONFIG, heads: 3 } }, 'RangeError', 'config: expected d_model divisible by heads but received d_model 16 and heads 3'],
      ];
      for (const [options, name, message] of cases) await assert.rejects(Recognizer.create(options), { name, message });
      const { d_model: _, ...incomplete } = MICRO_CONFIG;
      await assert.rejects(Recognizer.create({ config: incomplete }), { name: 'Error', message: 'config: missing "d_model"' });
    });

    it('save: path and dtype', async () => {
      await assert.rejects(recognizer.save(''), { name: 'TypeError', message: "Expected a path for file but received ''" });
      await assert.rejects(recognizer.save('x.safetensors', { dtype: 'bfloat16' }), {
        name: 'RangeError',
        message: "Expected 'float32' or 'float16' for dtype but received 'bfloat16'",
      });
    });
  });

  describe('recognize', () => {
    it('returns { text, confidence, chars } with text made of chars', async () => {
      for (const input of inputs) assertResultShape(await recognizer.recognize(input), MICRO_CONFIG.max_len);
    });

    it('returns an array in input order for an array', async () => {
      const results = await recognizer.recognize([inputs[0], inputs[1], inputs[0], inputs[6]]);
      assert.equal(results.length, 4);
      assertSameResults(results[2], results[0]);
      assertSameResults(results[0], await recognizer.recognize(inputs[0]));
      assertSameResults(results[3], await recognizer.recognize(inputs[6]));
      assert.deepEqual(await recognizer.recognize([]), []);
    });

    it('64 concurrent calls resolve to the results of one batched call', async () => {
      const many = Array.from({ length: 64 }, (_, i) => inputs[i % inputs.length]);
      const batched = await recognizer.recognize(many);
      const concurrent = await Promise.all(many.map((input) => recognizer.recognize(input)));
      assertSameResults(concurrent, batched);
    });

    it("precision 'bfloat16' gives results of the same shape, and float32's where the CPU multiplies no bfloat16", async () => {
      assert.equal(recognizer.precision, 'float32');
      const fast = await Recognizer.load(modelFile, { precision: 'bfloat16' });
      assert.equal(fast.precision, 'bfloat16');
      const results = await fast.recognize(inputs);
      await fast.close();
      for (const result of results) assertResultShape(result, MICRO_CONFIG.max_len);
      if (!safl.info().bfloat16Matmul) assertSameResults(results, await recognizer.recognize(inputs));
    });

    it('beam search gives results of the same shape', async () => {
      const beam = await Recognizer.load(modelFile, { beamWidth: 3 });
      for (const result of await beam.recognize(inputs.slice(0, 3))) assertResultShape(result, MICRO_CONFIG.max_len);
      await beam.close();
    });

    it('with views, keeps the most confident of the views\' readings (the first on a tie)', async () => {
      // Note [views] in lib/image.ts. Each view, decoded, read on its own as raw pixels of the
      // network's input size (which the resize leaves as they are).
      const { decodeViews, checkInput } = require('../dist/image.js');
      const { in_h: height, in_w: width } = MICRO_CONFIG;
      const viewed = await Recognizer.load(modelFile, { views: 5, batchSize: 3 });
      assert.equal(viewed.views, 5);
      const results = await viewed.recognize(inputs);
      await viewed.close();
      let fromLaterViews = 0;
      for (const [i, input] of inputs.entries()) {
        const views = await decodeViews(checkInput(input, 'input'), height, width, 5);
        const readings = await recognizer.recognize(views.map((data) => ({ data, width, height, channels: 3 })));
        const best = readings.reduce((a, b) => (b.confidence > a.confidence ? b : a));
        assertSameResults(results[i], best);
        if (best !== readings[0]) fromLaterViews++;
        assert.ok(results[i].confidence >= (await recognizer.recognize(input)).confidence - 1e-5);
      }
      assert.ok(fromLaterViews > 0, 'some image is read best in a view with margins');
    });

    it('keeps the event loop free while the network runs', async () => {
      const many = Array.from({ length: 256 }, (_, i) => inputs[i % inputs.length]);
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const started = Date.now();
      await recognizer.recognize(many);
      const elapsed = Date.now() - started;
      clearInterval(timer);
      assert.ok(ticks >= Math.min(5, elapsed / 20), `${ticks} timer ticks in ${elapsed} ms`);
    });
  });

  describe('close', () => {
    it('finishes the work asked for, then refuses more', async () => {
      const r = await Recognizer.load(modelFile);
      const pending = r.recognize(inputs.slice(0, 4));
      const closing = r.close();
      assert.equal(r.close(), closing);
      assert.equal((await pending).length, 4);
      await closing;
      await assert.rejects(r.recognize(inputs[0]), { name: 'Error', message: 'the recognizer is closed' });
      await assert.rejects(r.save(path.join(tempDir('closed'), 'm.safetensors')), { name: 'Error', message: 'the recognizer is closed' });
    });
  });

  describe('the native binding', () => {
    const { NativeModel } = require('../dist/native.js').loadCpuAddon();
    const imageSize = 3 * MICRO_CONFIG.in_h * MICRO_CONFIG.in_w;

    it('is made only by its factories, and checks its arguments', async () => {
      assert.throws(() => new NativeModel(), {
        name: 'TypeError',
        message: 'NativeModel is made by NativeModel.create() or NativeModel.fromBuffer()',
      });
      const model = await NativeModel.create(JSON.stringify(MICRO_CONFIG), 1);
      assert.throws(() => model.recognize(new Float32Array(5), 1, 1, 'float32'), {
        name: 'RangeError',
        message: `Expected a Float32Array of length ${imageSize} for images but received Float32Array of length 5`,
      });
      assert.throws(() => model.recognize(new Float32Array(imageSize), 1, 1, 'half'), {
        name: 'RangeError',
        message: "Expected 'float32' or 'bfloat16' for precision but received 'half'",
      });
      assert.throws(() => model.save('float64', {}), {
        name: 'RangeError',
        message: "Expected 'float32' or 'float16' for dtype but received 'float64'",
      });
      assert.throws(() => model.save('float32', { format: 1 }), {
        name: 'TypeError',
        message: 'Expected a string for metadata.format but received 1',
      });
      await assert.rejects(NativeModel.fromBuffer(new Uint8Array(4), 'four bytes'), {
        name: 'Error',
        message: 'four bytes: not a safetensors file: 4 bytes, but the file must start with an 8-byte header size',
      });
      model.close();
    });

    it('keeps its memory flat over many calls', async () => {
      // A leak of anything batch-sized (the images, activations, the arena) would add megabytes
      // per call; 400 calls after a warm-up must not grow the process by more than a few.
      const model = await NativeModel.create(JSON.stringify(MICRO_CONFIG), 1);
      const batch = 8;
      const images = new Float32Array(batch * imageSize).map((_, i) => Math.sin(i));
      for (let i = 0; i < 50; i++) await model.recognize(images, batch, 1, 'float32');
      const before = process.memoryUsage().rss;
      for (let i = 0; i < 400; i++) await model.recognize(images, batch, 1, 'float32');
      const grownMiB = (process.memoryUsage().rss - before) / 2 ** 20;
      model.close();
      assert.ok(grownMiB < 8, `RSS grew by ${grownMiB.toFixed(1)} MiB over 400 calls`);
    });

    it('close() during a call lets the call finish, then frees the network', async () => {
      const model = await NativeModel.create(JSON.stringify(MICRO_CONFIG), 1);
      const running = model.recognize(new Float32Array(4 * imageSize), 4, 1, 'float32');
      model.close();
      assert.equal((await running).length, 4);
      assert.throws(() => model.recognize(new Float32Array(imageSize), 1, 1, 'float32'), { name: 'Error', message: 'the recognizer is closed' });
      assert.throws(() => model.save('float32', {}), { name: 'Error', message: 'the recognizer is closed' });
      assert.equal(typeof model.config(), 'string');
    });
  });
});
