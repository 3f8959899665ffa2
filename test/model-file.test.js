// Model files: what save() writes (safetensors with safl's metadata, readable by any reader,
// written atomically) and a clear error, naming the file, for every broken one.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Recognizer, MODEL_FORMAT, DEFAULT_CHARSET } = require('..');
const { wordPng } = require('./helpers/images.js');
const { MICRO_CONFIG, damagedCopies, microModelFile, readSafetensors, tempDir, withMetadata, writeSafetensors } = require('./helpers/model.js');

describe('model files', () => {
  let modelFile;
  let bytes;
  let dir;
  before(async () => {
    modelFile = await microModelFile();
    bytes = fs.readFileSync(modelFile);
    dir = tempDir('model-files');
  });

  const write = (name, content) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, content);
    return file;
  };

  describe('what save() writes', () => {
    it('safetensors with format, config, charset and training in its metadata', () => {
      const { header } = readSafetensors(bytes);
      const meta = header.__metadata__;
      assert.deepEqual(Object.keys(meta).sort(), ['charset', 'config', 'format', 'training']);
      assert.equal(meta.format, MODEL_FORMAT);
      assert.equal(MODEL_FORMAT, 'safl-model/1');
      assert.deepEqual(JSON.parse(meta.config), MICRO_CONFIG);
      assert.deepEqual(JSON.parse(meta.charset), [...DEFAULT_CHARSET]);
      assert.deepEqual(JSON.parse(meta.training), {});
      assert.equal(header['classifier.weight'].dtype, 'F32');
      assert.deepEqual(header['classifier.weight'].shape, [97, 16]);
    });

    it('writes atomically: no temporary file is left, and a failed write names the file', async () => {
      const r = await Recognizer.load(modelFile);
      const target = path.join(dir, 'atomic', 'm.safetensors');
      fs.mkdirSync(path.dirname(target));
      await r.save(target);
      await r.save(target); // over an existing file
      assert.deepEqual(fs.readdirSync(path.dirname(target)), ['m.safetensors']);
      assert.deepEqual(fs.readFileSync(target), bytes);
      const nowhere = path.join(dir, 'no-such-dir', 'm.safetensors');
      await assert.rejects(r.save(nowhere), (err) => {
        assert.match(err.message, new RegExp(`^${nowhere.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: could not write \\(ENOENT: `));
        return true;
      });
      await r.close();
    });
  });

  describe('broken files', () => {
    it('a missing file and a 0-byte file', async () => {
      const missing = path.join(dir, 'missing.safetensors');
      await assert.rejects(Recognizer.load(missing), { name: 'Error', message: `${missing}: no such file` });
      const empty = write('empty.safetensors', Buffer.alloc(0));
      await assert.rejects(Recognizer.load(empty), { message: `${empty}: the file is empty` });
    });

    it('a wrong header', async () => {
      const png = write('image.safetensors', await wordPng(1));
      const claimed = fs.readFileSync(png).readBigUInt64LE(0);
      await assert.rejects(Recognizer.load(png), {
        message: `${png}: not a safl model file (its header size reads ${claimed} but the file has ${fs.statSync(png).size} bytes: a wrong header or a truncated file)`,
      });
      const short = write('short.safetensors', Buffer.from([1, 2, 3]));
      await assert.rejects(Recognizer.load(short), {
        message: `${short}: not a safl model file (3 bytes, but a safetensors file starts with an 8-byte header size)`,
      });
      const size = Buffer.alloc(8);
      size.writeBigUInt64LE(4n);
      const notJson = write('not-json.safetensors', Buffer.concat([size, Buffer.from('{{{{')]));
      await assert.rejects(Recognizer.load(notJson), (err) => {
        assert.match(err.message, new RegExp(`^${notJson.replace(/[.]/g, '\\.')}: not a safl model file \\(its header is not JSON: `));
        return true;
      });
      const { header, data } = readSafetensors(bytes);
      delete header.__metadata__;
      const plain = write('plain.safetensors', writeSafetensors(header, data));
      await assert.rejects(Recognizer.load(plain), { message: `${plain}: not a safl model file (its metadata names no format)` });
    });

    it('an unknown format version', async () => {
      const future = write('future.safetensors', withMetadata(bytes, (m) => (m.format = 'safl-model/2')));
      await assert.rejects(Recognizer.load(future), {
        name: 'Error',
        message: `${future}: unsupported model format 'safl-model/2' (this version of safl reads 'safl-model/1')`,
      });
    });

    it('a truncated file', async () => {
      const { header, data } = readSafetensors(bytes);
      const cut = bytes.length - 1000;
      const truncated = write('truncated.safetensors', bytes.subarray(0, cut));
      const dataSize = data.length - 1000;
      const [name, entry] = Object.entries(header).find(([n, e]) => n !== '__metadata__' && e.data_offsets[1] > dataSize);
      await assert.rejects(Recognizer.load(truncated), {
        name: 'Error',
        message: `${truncated}: tensor '${name}': data_offsets [${entry.data_offsets.join(', ')}] fall outside the data section of ${dataSize} bytes (truncated file?)`,
      });
      const inHeader = write('truncated-header.safetensors', bytes.subarray(0, 100));
      await assert.rejects(Recognizer.load(inHeader), {
        message: `${inHeader}: not a safl model file (its header size reads ${bytes.readBigUInt64LE(0)} but the file has 100 bytes: a wrong header or a truncated file)`,
      });
    });

    it('a tensor of the wrong shape', async () => {
      // The metadata says ffn 32; the tensors were made with ffn 16.
      const wide = write('wrong-shape.safetensors', withMetadata(bytes, (m) => (m.config = JSON.stringify({ ...MICRO_CONFIG, ffn: 32 }))));
      await assert.rejects(Recognizer.load(wide), {
        name: 'Error',
        message: `${wide}: tensor 'encoder.layer0.ffn.fc1.weight': expected shape [32, 16] but received [16, 16]`,
      });
    });

    it('a tensor the model does not have', async () => {
      const { header, data } = readSafetensors(bytes);
      const end = data.length;
      header['decoder.extra.weight'] = { dtype: 'F32', shape: [2], data_offsets: [end, end + 8] };
      const extra = write('extra.safetensors', writeSafetensors(header, Buffer.concat([data, Buffer.alloc(8)])));
      await assert.rejects(Recognizer.load(extra), {
        name: 'Error',
        message: `${extra}: unexpected tensor 'decoder.extra.weight' (not part of this model's layout)`,
      });
    });

    it('a NaN weight', async () => {
      const { header, data } = readSafetensors(bytes);
      const poisoned = Buffer.from(data);
      const [begin] = header['classifier.bias'].data_offsets;
      poisoned.writeFloatLE(NaN, begin + 4 * 5);
      const nan = write('nan.safetensors', writeSafetensors(header, poisoned));
      await assert.rejects(Recognizer.load(nan), {
        name: 'Error',
        message: `${nan}: tensor 'classifier.bias' holds a non-finite value (nan) at index 5`,
      });
    });

    it('metadata that does not fit together', async () => {
      const cases = [
        [(m) => (m.charset = JSON.stringify(['a', 'b'])), 'the charset has 2 characters, so config.num_classes must be 5 but it is 97'],
        [(m) => (m.charset = '["a", "bb"]'), "Expected a single character for charset[1] but received 'bb'"],
        [(m) => delete m.training, '"training" is missing'],
        [(m) => (m.config = '[1, 2]'), '"config" is not a JSON object'],
      ];
      for (const [i, [edit, why]] of cases.entries()) {
        const file = write(`meta-${i}.safetensors`, withMetadata(bytes, edit));
        await assert.rejects(Recognizer.load(file), { name: 'Error', message: `${file}: invalid model metadata: ${why}` });
      }
    });

    it('a bad config in the metadata names the field', async () => {
      const file = write('bad-config.safetensors', withMetadata(bytes, (m) => (m.config = JSON.stringify({ ...MICRO_CONFIG, max_len: 0 }))));
      await assert.rejects(Recognizer.load(file), { message: `${file}: config: expected max_len between 1 and 1024 but received 0` });
    });

    it('a model given as a Buffer is called "model buffer"', async () => {
      await assert.rejects(Recognizer.load(withMetadata(bytes, (m) => (m.format = 'x'))), {
        message: "model buffer: unsupported model format 'x' (this version of safl reads 'safl-model/1')",
      });
    });

    it('random damage: every damaged file either loads and reads, or is refused with a message', async () => {
      // 300 damaged copies (helpers/model.js damagedCopies). None may crash the process, hang,
      // or load into a recognizer that then fails or answers outside [0, 1].
      const png = await wordPng('damage');
      const outcomes = { loaded: 0, refused: 0 };
      let i = 0;
      for (const damaged of damagedCopies(bytes, 300, 12345)) {
        i++;
        let recognizer;
        try {
          recognizer = await Recognizer.load(damaged);
        } catch (err) {
          assert.ok(err instanceof Error);
          assert.match(err.message, /^model buffer: \S/, `case ${i}`);
          outcomes.refused++;
          continue;
        }
        const result = await recognizer.recognize(png);
        assert.equal(typeof result.text, 'string');
        assert.ok(result.confidence >= 0 && result.confidence <= 1, `case ${i}: confidence ${result.confidence}`);
        await recognizer.close();
        outcomes.loaded++;
      }
      // Damage to the tensor data alone mostly leaves a loadable (if worse) model; the rest is refused.
      assert.ok(outcomes.loaded > 0 && outcomes.refused > 150, JSON.stringify(outcomes));
    });
  });
});
