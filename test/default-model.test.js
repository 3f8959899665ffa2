// The model shipped in the package (models/default.safetensors, made by scripts/train-default.sh):
// what the file holds, that Recognizer.load() and `safl recognize` use it when no model is given,
// and that it reads the example word images the project rendered (examples/, from a generator
// seed it was not trained on; scripts/make-examples.js).
'use strict';
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { Recognizer, defaultModelPath, info } = require('..');

const root = path.join(__dirname, '..');
// examples/synth-<i>.png and their labels (scripts/make-examples.js prints this list).
const EXAMPLES = ['CYCLE', 'Off', 'Sessimb', 'Smokeless', 'came', 'ECOLOGICALLY', 'CONSORTED', 'g3kt5'];
// The shipped model reads all 8 (Sessimb, a made-up word, at a word confidence of 0.18); one of
// margin for the SIMD paths of other CPUs, whose sums round differently.
const MIN_EXAMPLES_READ = 7;
// The standard protocol (DESIGN.md §4): lower case, a-z and 0-9 only.
const normalise = (text) => text.toLowerCase().replace(/[^a-z0-9]/g, '');

describe('the default model', () => {
  const file = defaultModelPath();

  it('ships as float16 safetensors under 15 MB with how it was trained', async () => {
    assert.equal(file, path.join(root, 'models', 'default.safetensors'));
    const size = fs.statSync(file).size;
    assert.ok(size < 15 * 2 ** 20, `${size} bytes`);
    const bytes = fs.readFileSync(file);
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8'));
    const dtypes = new Set(Object.entries(header).filter(([name]) => name !== '__metadata__').map(([, t]) => t.dtype));
    assert.deepEqual([...dtypes], ['F16']);
    const model = await Recognizer.load(file, { device: 'cpu' });
    await model.close();
    assert.equal(model.charset.length, 94);
    const { training } = model;
    assert.match(String(training.command), /^safl train --config tiny --data synth /);
    assert.equal(training.steps, training.iterations);
    assert.equal(training.loss, 'focal');
    assert.ok(training.seconds > 0);
  });

  it('is what Recognizer.load() uses without a model, and reads the example images', async () => {
    const recognizer = await Recognizer.load(undefined, { device: 'cpu' });
    const images = EXAMPLES.map((_, i) => path.join(root, 'examples', `synth-${i}.png`));
    const results = await recognizer.recognize(images);
    await recognizer.close();
    const correct = results.filter((r, i) => normalise(r.text) === normalise(EXAMPLES[i])).length;
    assert.ok(correct >= MIN_EXAMPLES_READ, `read ${correct} of 8: ${results.map((r) => r.text).join(', ')}`);
  });

  it("reads them the same with precision 'bfloat16' where float32 is confident, confidences within 0.02", async () => {
    const images = EXAMPLES.map((_, i) => path.join(root, 'examples', `synth-${i}.png`));
    const exact = await Recognizer.load(undefined, { device: 'cpu' });
    const fast = await Recognizer.load(undefined, { device: 'cpu', precision: 'bfloat16' });
    assert.equal(fast.precision, 'bfloat16');
    const [float32, bfloat16] = [await exact.recognize(images), await fast.recognize(images)];
    await Promise.all([exact.close(), fast.close()]);
    // Where the CPU multiplies no bfloat16 (neither AMX nor AVX512-BF16), the products stay float32
    // and nothing changes at all.
    if (!info().bfloat16Matmul) assert.deepEqual(bfloat16, float32);
    // A reading float32 is unsure of (word confidence under 0.5: Sessimb at 0.18, ECOLOGICALLY at
    // 0.47, CONSORTED at 0.45) may change a character under bfloat16 rounding; the confident ones
    // (0.54 to 0.90) must not change.
    const confident = float32.map((r, i) => i).filter((i) => float32[i].confidence >= 0.5);
    assert.ok(confident.length >= 4, `only ${confident.length} confident readings`);
    for (const i of confident) {
      assert.equal(bfloat16[i].text, float32[i].text, EXAMPLES[i]);
      assert.ok(Math.abs(bfloat16[i].confidence - float32[i].confidence) < 0.02, `${EXAMPLES[i]}: ${bfloat16[i].confidence} vs ${float32[i].confidence}`);
    }
  });

  it('with a dictionary, keeps the known word among the beam\'s readings (Note [dictionary])', async () => {
    // Each example's beam-search readings, straight from the addon: the best and its alternatives.
    const { loadCpuAddon } = require('../dist/native.js');
    const { checkInput, decodeViews, toTensor } = require('../dist/image.js');
    const { decodeTokens } = require('../dist/charset.js');
    const images = EXAMPLES.map((_, i) => path.join(root, 'examples', `synth-${i}.png`));
    const beam = await Recognizer.load(undefined, { device: 'cpu', beamWidth: 5 });
    const { in_h: height, in_w: width } = beam.config;
    const tensor = new Float32Array(images.length * 3 * height * width);
    for (const [i, image] of images.entries()) {
      const [pixels] = await decodeViews(checkInput(image, 'input'), height, width, 1);
      toTensor(pixels, tensor, i * 3 * height * width, height, width);
    }
    const native = await loadCpuAddon().NativeModel.fromBuffer(fs.readFileSync(file), file);
    const words = await native.recognize(tensor, images.length, 5, 'float32');
    native.close();
    const text = (reading) => decodeTokens(reading.tokens, reading.probs, beam.charset).text;
    const plain = await beam.recognize(images);
    await beam.close();
    words.forEach((word, i) => assert.equal(text(word), plain[i].text));

    // Weight 0 is no dictionary; a word in no reading changes nothing; a dictionary of one
    // alternative, weighted enough, picks it.
    const withDictionary = async (dictionary, dictionaryWeight) => {
      const recognizer = await Recognizer.load(undefined, { device: 'cpu', beamWidth: 5, dictionary, dictionaryWeight });
      const results = await recognizer.recognize(images);
      await recognizer.close();
      return results;
    };
    assert.deepEqual(await withDictionary('english', 0), plain);
    assert.deepEqual(await withDictionary(['xyzzy'], 100), plain);
    const i = words.findIndex((word) => word.alternatives.length > 0);
    assert.ok(i >= 0, 'no example has an alternative reading');
    const alternative = words[i].alternatives.at(-1);
    assert.ok(alternative.confidence <= words[i].confidence);
    const chosen = (await withDictionary([text(alternative)], 100))[i];
    assert.equal(chosen.text, text(alternative));
    assert.ok(Math.abs(chosen.confidence - alternative.confidence) < 1e-6); // the model's own confidence
  });

  it('is what `safl recognize` uses without --model', () => {
    const image = path.join(root, 'examples', 'synth-0.png');
    const stdout = execFileSync(process.execPath, [path.join(root, 'dist', 'cli.js'), 'recognize', '--device', 'cpu', image], { encoding: 'utf8' });
    assert.match(stdout, /\S/);
  });
});
