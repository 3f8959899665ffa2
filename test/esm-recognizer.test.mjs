// ES-module users: `import { Recognizer } from 'safl'` is the CommonJS build's class and works.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Recognizer, DEFAULT_CHARSET, MODEL_FORMAT } from 'safl';

const require = createRequire(import.meta.url);
const { MICRO_CONFIG, assertSameResults } = require('./helpers/model.js');
const { wordPixels } = require('./helpers/images.js');

describe('ES module entry: Recognizer', () => {
  it('exports the same class and constants as the CommonJS entry', () => {
    assert.equal(Recognizer, require('safl').Recognizer);
    assert.equal(DEFAULT_CHARSET.length, 94);
    assert.equal(MODEL_FORMAT, 'safl-model/1');
  });

  it('makes a model and reads raw pixels', async () => {
    const recognizer = await Recognizer.create({ config: MICRO_CONFIG, seed: 7 });
    const input = wordPixels(100, 32, 9);
    const [a, b] = await Promise.all([recognizer.recognize(input), recognizer.recognize([input])]);
    assert.equal(typeof a.text, 'string');
    assertSameResults([a], b);
    await recognizer.close();
  });
});
