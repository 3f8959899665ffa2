// Where the network runs, as a Node user chooses it: device 'auto' | 'cpu' | 'cuda' for the
// Recognizer and the Trainer. Without a usable GPU (no CUDA addon, no driver, no GPU), 'cuda' is an
// Error that says why. 'auto' runs on the CPU until the CUDA backend has passed its GPU tests
// (lib/native.ts: Note [auto stays on the CPU]). With a GPU, 'cuda' runs on it,
// and a model trained there reads the words it learnt as it does on the CPU. (Recognizer.load with
// 'cuda' and unknown devices for Recognizer and Trainer.create are in recognizer.test.js and
// trainer.test.js.)
'use strict';
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const safl = require('..');
const { Recognizer } = safl;
const { Trainer } = require('../dist/trainer.js');
const { wordPng } = require('./helpers/images.js');
const { assertSameResults, microModelFile, tempDir } = require('./helpers/model.js');
const { WORD_CHARSET, drawWord, wordSource } = require('./helpers/words.js');

const reason = safl.info().cudaUnavailableReason;
const gpu = reason === '';
const unavailable = `device 'cuda' is not available: ${reason}`;

/** Every layer of the network, a few channels wide; no dropout, so CPU and GPU runs see the same network. */
const TRAIN_MICRO = Object.freeze({
  in_h: 64, in_w: 256, loc_h: 32, loc_w: 64, rect_h: 32, rect_w: 100, fiducials: 20,
  loc_channels: [4, 4, 8, 8, 8, 8], loc_fc: 16,
  res_channels: [8, 8, 16, 16, 32], res_blocks: [1, 1, 1, 1, 1],
  d_model: 32, heads: 2, ffn: 64, enc_layers: 1, dec_layers: 1,
  max_len: 6, dropout: 0,
});
const WORDS = ['cat', 'dot', 'rose', 'lane', 'sand', 'cold', 'note', 'street'];

function micro(options = {}) {
  return Trainer.create({ config: TRAIN_MICRO, charset: WORD_CHARSET, seed: 1, batchSize: 8, lr: 3e-3, warmup: 5, ...options });
}

describe('device', () => {
  let modelFile;
  let checkpoint; // a checkpoint of one CPU step
  let inputs;
  before(async () => {
    modelFile = await microModelFile();
    const trainer = await micro({ device: 'cpu', iterations: 1, checkpointDir: tempDir('device') });
    checkpoint = (await trainer.train({ sources: [wordSource(WORDS)] })).checkpoint;
    await trainer.close();
    inputs = [await wordPng(1), await wordPng(2), await wordPng(3)];
  });

  it('an unknown device is refused, naming the option and the value', async () => {
    await assert.rejects(Recognizer.load(modelFile, { device: 'CUDA' }), {
      name: 'RangeError',
      message: "Expected 'auto', 'cpu' or 'cuda' for device but received 'CUDA'",
    });
    await assert.rejects(Trainer.resume(checkpoint, { device: 'gpu' }), {
      name: 'RangeError',
      message: "Expected 'auto', 'cpu' or 'cuda' for device but received 'gpu'",
    });
  });

  it("a beam wider than 1 runs on the CPU: 'auto' picks it", async () => {
    const recognizer = await Recognizer.load(modelFile, { beamWidth: 2 });
    assert.equal(recognizer.device, 'cpu');
    assert.equal((await recognizer.recognize(inputs)).length, inputs.length);
    await recognizer.close();
  });

  it('SAFL_CUDA_ADDON names the CUDA addon to load; a missing one is the reason for no CUDA', () => {
    const missing = path.join(tempDir('addon'), 'safl_cuda.node');
    const script = `require(${JSON.stringify(path.join(__dirname, '..'))}).Recognizer.create({ device: 'cuda' })
      .then(() => console.log('loaded'), (err) => console.log(err.message))`;
    const child = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, SAFL_CUDA_ADDON: missing }, encoding: 'utf8' });
    assert.equal(child.stdout, `device 'cuda' is not available: SAFL_CUDA_ADDON names ${missing}, which does not exist\n`);
  });

  describe('without a usable GPU', () => {
    before(function () {
      if (gpu) this.skip();
    });

    it("'cuda' is an Error that says why, for the Recognizer and the Trainer", async () => {
      assert.notEqual(reason, '');
      await assert.rejects(Recognizer.create({ device: 'cuda' }), { name: 'Error', message: unavailable });
      await assert.rejects(micro({ device: 'cuda' }), { name: 'Error', message: unavailable });
      await assert.rejects(Trainer.resume(checkpoint, { device: 'cuda' }), { name: 'Error', message: unavailable });
    });

    it("'auto' (the default) runs on the CPU and recognises as 'cpu' does", async () => {
      const onCpu = await Recognizer.load(modelFile, { device: 'cpu' });
      for (const options of [{ device: 'auto' }, {}]) {
        const recognizer = await Recognizer.load(modelFile, options);
        assert.equal(recognizer.device, 'cpu');
        assertSameResults(await recognizer.recognize(inputs), await onCpu.recognize(inputs));
        await recognizer.close();
      }
      await onCpu.close();
      const made = await Recognizer.create({ device: 'auto' });
      assert.equal(made.device, 'cpu');
      await made.close();
    });

    it("'auto' trains on the CPU", async () => {
      const trainer = await micro({ device: 'auto', iterations: 1 });
      assert.equal(trainer.device, 'cpu');
      assert.equal((await trainer.train({ sources: [wordSource(WORDS)] })).steps, 1);
      await trainer.close();
      const resumed = await Trainer.resume(checkpoint, { iterations: 2 });
      assert.equal(resumed.device, 'cpu');
      await resumed.close();
    });
  });

  describe('with a GPU', () => {
    before(function () {
      if (!gpu) this.skip();
    });

    it("'cuda' runs on the GPU and recognises; 'auto' stays on the CPU", async () => {
      for (const options of [{ device: 'cuda' }, { device: 'auto' }, {}]) {
        const recognizer = await Recognizer.load(modelFile, options);
        assert.equal(recognizer.device, options.device === 'cuda' ? 'cuda' : 'cpu');
        const results = await recognizer.recognize(inputs);
        assert.equal(results.length, inputs.length);
        for (const r of results) assert.ok(r.confidence >= 0 && r.confidence <= 1, `confidence ${r.confidence}`);
        await recognizer.close();
      }
    });

    it("'cuda' refuses a beam wider than 1 when the model is loaded", async () => {
      await assert.rejects(Recognizer.load(modelFile, { device: 'cuda', beamWidth: 3 }), {
        name: 'Error',
        message: "device 'cuda' decodes greedily only: beamWidth 3 needs device 'cpu' (or 'auto', which picks it)",
      });
    });

    it("'cuda' refuses precision 'bfloat16' when the model is loaded", async () => {
      await assert.rejects(Recognizer.load(modelFile, { device: 'cuda', precision: 'bfloat16' }), {
        name: 'Error',
        message: "device 'cuda' multiplies in float32 only: precision 'bfloat16' needs device 'cpu'",
      });
    });

    it('the first steps on the GPU have the losses of the same steps on the CPU', async () => {
      const losses = { cpu: [], cuda: [] };
      for (const device of ['cpu', 'cuda']) {
        const trainer = await micro({ device, iterations: 3 });
        assert.equal(trainer.device, device);
        await trainer.train({ sources: [wordSource(WORDS)], onStep: (s) => losses[device].push(s.loss) });
        await trainer.close();
      }
      // TF32 tensor cores round products to 10 mantissa bits: a relative 1e-3 per GEMM.
      losses.cpu.forEach((loss, i) => {
        const tolerance = i === 0 ? 1e-2 : 5e-2;
        assert.ok(Math.abs(losses.cuda[i] - loss) <= tolerance * loss, `step ${i + 1}: cuda ${losses.cuda[i]} vs cpu ${loss}`);
      });
    });

    it('a model trained on the GPU reads its words on the GPU and the CPU alike; its checkpoint resumes', async function () {
      this.timeout(180000);
      const dir = tempDir('gpu-learn');
      const trainer = await micro({ device: 'cuda', batchSize: 16, iterations: 200, warmup: 20, checkpointDir: dir, checkpointEvery: 100 });
      const result = await trainer.train({ sources: [wordSource(WORDS, 64)] });
      assert.equal(result.steps, 200);
      await trainer.close();

      const images = WORDS.map((w) => drawWord(w, 2));
      const texts = {};
      for (const device of ['cuda', 'cpu']) {
        const recognizer = await Recognizer.load(result.model, { device });
        texts[device] = (await recognizer.recognize(images)).map((r) => r.text);
        await recognizer.close();
      }
      assert.ok(texts.cuda.filter((t, i) => t === WORDS[i]).length >= 6, `read ${texts.cuda.join(' ')}`);
      assert.ok(texts.cuda.filter((t, i) => t === texts.cpu[i]).length >= 7, `cuda ${texts.cuda.join(' ')}, cpu ${texts.cpu.join(' ')}`);

      const resumed = await Trainer.resume(result.checkpoint, { device: 'cuda', iterations: 202 });
      assert.equal(resumed.device, 'cuda');
      assert.equal((await resumed.train({ sources: [wordSource(WORDS, 64)] })).steps, 202);
      await resumed.close();
    });
  });
});
