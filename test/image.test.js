// Image inputs as Recognizer sees them: preprocessing (DESIGN.md §1.1: orientation, alpha on
// white, RGB, 64×256, [-1, 1] CHW) and a clear error, naming the input, for every bad one.
'use strict';
const assert = require('node:assert/strict');
const path = require('node:path');
const sharp = require('sharp');
const { Recognizer } = require('../dist/index.js');
const image = require('../dist/image.js');
const { wordPixels, wordPng, writeFixtures } = require('./helpers/images.js');
const { assertSameResults, tempDir, microModelFile } = require('./helpers/model.js');

const decode = (input, label = 'input') => image.decodeImage(image.checkInput(input, label), 64, 256);

function meanAbsDiff(a, b) {
  assert.equal(a.length, b.length);
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
  return sum / a.length;
}

describe('image preprocessing', () => {
  it('decodes PNG and JPEG to 64×256 RGB bytes', async () => {
    const png = await decode(await wordPng(1));
    assert.equal(png.length, 64 * 256 * 3);
    const jpeg = await decode(await sharp(await wordPng(1)).jpeg({ quality: 95 }).toBuffer());
    assert.ok(meanAbsDiff(png, jpeg) < 3, 'a JPEG of the same picture decodes to nearly the same pixels');
  });

  it('scales to [-1, 1] in CHW order', () => {
    const pixels = Buffer.from([0, 255, 51, 255, 0, 102]); // two pixels, height 1, width 2
    const out = new Float32Array(1 + 6);
    image.toTensor(pixels, out, 1, 1, 2);
    assert.deepEqual([...out], [0, -1, 1, 1, -1, 51 / 127.5 - 1, 102 / 127.5 - 1].map(Math.fround));
  });

  it('reads raw pixels exactly as the same pixels in a PNG', async () => {
    const raw = wordPixels(160, 48, 4);
    const fromPng = await decode(await sharp(raw.data, { raw }).png().toBuffer());
    assert.deepEqual(await decode(raw), fromPng);
    assert.deepEqual(await decode({ ...raw, data: new Uint8ClampedArray(raw.data) }), fromPng);
  });

  it('flattens alpha on white and makes grey RGB', async () => {
    const every = async (raw, value) => assert.ok((await decode(raw)).every((v) => v === value), `${[...raw.data]} → ${value}`);
    await every({ data: new Uint8Array([0, 0, 0, 0]), width: 1, height: 1, channels: 4 }, 255); // transparent black
    await every({ data: new Uint8Array([0, 0]), width: 1, height: 1, channels: 2 }, 255);
    await every({ data: new Uint8Array([0, 255]), width: 1, height: 1, channels: 2 }, 0); // opaque black
    await every({ data: new Uint8Array(6 * 3).fill(90), width: 6, height: 3, channels: 1 }, 90); // grey → R = G = B
    const half = await decode({ data: new Uint8Array([0, 128]), width: 1, height: 1, channels: 2 });
    assert.ok(Math.abs(half[0] - 127) <= 1, `half-transparent black on white: ${half[0]}`);
  });

  it('honours the EXIF orientation', async () => {
    const raw = wordPixels(160, 48, 5);
    const upright = await decode(raw);
    // Stored turned a quarter anticlockwise, with orientation 6: "turn 90° clockwise to show".
    const stored = await sharp(raw.data, { raw }).rotate(270).jpeg({ quality: 100 }).toBuffer();
    const tagged = await sharp(stored).withMetadata({ orientation: 6 }).jpeg({ quality: 100 }).toBuffer();
    // Not pixel-exact: libvips resizes before it turns the image (Note [orientation and resizing]).
    const [tag, untagged] = [meanAbsDiff(await decode(tagged), upright), meanAbsDiff(await decode(stored), upright)];
    assert.ok(tag < 12 && untagged > 40, `mean differences from upright: tagged ${tag}, untagged ${untagged}`);
  });
});

describe('views (Note [views] in lib/image.ts)', () => {
  const views = (input, n) => image.decodeViews(image.checkInput(input, 'input'), 64, 256, n);

  it('view 0 is the one-view decode; each view is the image with its margins of edge pixels, resized', async () => {
    const raw = wordPixels(50, 20, 6);
    const all = await views(raw, image.MAX_VIEWS);
    assert.equal(all.length, 8);
    assert.deepEqual(all[0], await decode(raw));
    assert.deepEqual(await views(raw, 1), [await decode(raw)]);
    for (const [k, [fx, fy]] of image.VIEW_MARGINS.entries()) {
      // The framed image made by hand: every pixel takes the nearest pixel of the image.
      const x = Math.round(fx * raw.width);
      const y = Math.round(fy * raw.height);
      const [w, h] = [raw.width + 2 * x, raw.height + 2 * y];
      const framed = Buffer.alloc(w * h * 3);
      for (let row = 0; row < h; row++) {
        for (let col = 0; col < w; col++) {
          const from = Math.min(raw.height - 1, Math.max(0, row - y)) * raw.width + Math.min(raw.width - 1, Math.max(0, col - x));
          raw.data.copy(framed, 3 * (row * w + col), 3 * from, 3 * from + 3);
        }
      }
      assert.deepEqual(all[k], await decode({ data: framed, width: w, height: h, channels: 3 }), `view ${k}`);
    }
    assert.ok(!all[1].equals(all[0]) && !all[4].equals(all[5]));
  });

  it('fail as the one-view decode does', async () => {
    await assert.rejects(views(Buffer.from('not an image'), 3), { message: /^input: not a decodable image \(/ });
  });
});

describe('bad inputs', () => {
  let recognizer;
  let files;
  before(async () => {
    recognizer = await Recognizer.load(await microModelFile());
    files = await writeFixtures(tempDir('images'));
  });
  after(() => recognizer.close());

  it('a missing file', async () => {
    const missing = path.join(path.dirname(files.good), 'missing.png');
    await assert.rejects(recognizer.recognize(missing), { name: 'Error', message: `${missing}: no such file` });
  });

  it('a directory', async () => {
    const dir = path.dirname(files.deep);
    await assert.rejects(recognizer.recognize(dir), { message: `${dir}: is a directory` });
  });

  it('a 0-byte file', async () => {
    await assert.rejects(recognizer.recognize(files.empty), { message: `${files.empty}: the file is empty` });
  });

  it('a truncated JPEG', async () => {
    // The reason in brackets is libvips's; its wording depends on what else libvips decodes meanwhile.
    await assert.rejects(recognizer.recognize(files.truncated), (err) => {
      const prefix = `${files.truncated}: not a decodable image (`;
      assert.ok(err.message.startsWith(prefix) && err.message.endsWith(')'), err.message);
      assert.ok(err.message.length > prefix.length + 1, err.message);
      return true;
    });
  });

  it('a file that is not an image', async () => {
    await assert.rejects(recognizer.recognize(files.text), {
      message: `${files.text}: not a decodable image (Input buffer contains unsupported image format)`,
    });
  });

  it('an image over 100 megapixels', async () => {
    await assert.rejects(recognizer.recognize(files.huge), {
      message: `${files.huge}: image is larger than 100 megapixels (20000×6000)`,
    });
    await assert.rejects(recognizer.recognize({ data: new Uint8Array(3), width: 20000, height: 6000, channels: 1 }), {
      message: 'input: image is larger than 100 megapixels (20000×6000)',
    });
  });

  it('a corrupt or empty Buffer', async () => {
    await assert.rejects(recognizer.recognize(Buffer.from('these bytes are no image')), {
      message: 'input: not a decodable image (Input buffer contains unsupported image format)',
    });
    await assert.rejects(recognizer.recognize(Buffer.alloc(0)), {
      name: 'RangeError',
      message: 'Expected a non-empty Buffer for input but received Buffer of length 0',
    });
  });

  it('raw pixels whose length does not match their size', async () => {
    await assert.rejects(recognizer.recognize({ data: new Uint8Array(149), width: 10, height: 5, channels: 3 }), {
      name: 'RangeError',
      message: 'Expected data of length 10·5·3 = 150 for input.data but received Uint8Array of length 149',
    });
    await assert.rejects(recognizer.recognize({ data: new Uint8Array(4), width: 2, height: 2, channels: 5 }), {
      name: 'RangeError',
      message: 'Expected an integer between 1 and 4 for input.channels but received 5',
    });
    await assert.rejects(recognizer.recognize({ data: [1, 2, 3], width: 1, height: 1, channels: 3 }), {
      name: 'TypeError',
      message: 'Expected a Buffer, Uint8Array or Uint8ClampedArray for input.data but received [ 1, 2, 3 ]',
    });
    await assert.rejects(recognizer.recognize({ data: new Uint8Array(3), width: 1.5, height: 2, channels: 1 }), {
      name: 'TypeError',
      message: 'Expected an integer between 1 and 100000000 for input.width but received 1.5',
    });
  });

  it('an input of the wrong type', async () => {
    await assert.rejects(recognizer.recognize(42), {
      name: 'TypeError',
      message: 'Expected a path, a Buffer or raw pixels { data, width, height, channels } for input but received 42',
    });
    await assert.rejects(recognizer.recognize(''), { name: 'TypeError', message: "Expected a non-empty path for input but received ''" });
  });

  it('an array names the input at fault, and checks types before reading anything', async () => {
    await assert.rejects(recognizer.recognize([files.good, { data: new Uint8Array(1), width: 1, height: 1, channels: 2 }]), {
      name: 'RangeError',
      message: 'Expected data of length 1·1·2 = 2 for input[1].data but received Uint8Array of length 1',
    });
    await assert.rejects(recognizer.recognize([files.good, Buffer.from('nope'), files.goodJpeg]), {
      message: 'input[1]: not a decodable image (Input buffer contains unsupported image format)',
      index: 1,
    });
    await assert.rejects(recognizer.recognize([files.good, files.empty]), {
      message: `${files.empty}: the file is empty`,
      index: 1,
    });
  });

  it('a bad input fails only itself, even in the same batch', async () => {
    const calls = [files.good, files.truncated, files.goodJpeg, files.empty, files.deep].map((f) => recognizer.recognize(f));
    const settled = await Promise.allSettled(calls);
    assert.deepEqual(settled.map((s) => s.status), ['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled']);
    assertSameResults(settled[0].value, await recognizer.recognize(files.good));
  });
});
