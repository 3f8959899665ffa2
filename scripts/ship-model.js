#!/usr/bin/env node
// Makes the model shipped in the package (models/default.safetensors) from a finished training
// run: loads its model.safetensors, stores it as float16 with the run's training summary plus how
// it was made (the command, the machine, the time), and checks the written file reads back with
// the same predictions on the example images.
//
//   node scripts/ship-model.js --run DIR --command "safl train …" [--out models/default.safetensors]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { scriptArgs } = require('./script-args.js');
const { Recognizer } = require('../dist/index.js');

const { values, fail } = scriptArgs('usage: node scripts/ship-model.js --run DIR --command "safl train …" [--out FILE]', {
  options: {
    run: { type: 'string' },
    command: { type: 'string' },
    out: { type: 'string', default: path.join(__dirname, '..', 'models', 'default.safetensors') },
  },
});
if (values.run === undefined) fail('--run is required: the training run directory');
if (values.command === undefined) fail('--command is required: the command that made the run');

async function main() {
  const source = path.join(values.run, 'model.safetensors');
  if (!fs.existsSync(source)) throw new Error(`--run: ${source} does not exist`);
  const trained = await Recognizer.load(source, { device: 'cpu' });
  const training = {
    ...trained.training,
    command: values.command,
    machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.platform()} ${os.arch()}`,
  };
  fs.mkdirSync(path.dirname(values.out), { recursive: true });
  await trained.save(values.out, { dtype: 'float16', training });

  const examples = path.join(__dirname, '..', 'examples');
  const images = fs.readdirSync(examples).filter((f) => f.endsWith('.png')).map((f) => path.join(examples, f));
  const shipped = await Recognizer.load(values.out, { device: 'cpu' });
  const before = await trained.recognize(images);
  const after = await shipped.recognize(images);
  const changed = before.filter((r, i) => r.text !== after[i].text).length;
  await Promise.all([trained.close(), shipped.close()]);
  const size = fs.statSync(values.out).size;
  console.log(`wrote ${values.out} (${(size / 2 ** 20).toFixed(2)} MiB, float16); ${changed} of ${images.length} example predictions changed from float32`);
  for (let i = 0; i < images.length; ++i) console.log(`  ${path.basename(images[i])}\t${after[i].text}\t${after[i].confidence.toFixed(3)}`);
}

main().catch((err) => {
  console.error(`ship-model: ${err.message}`);
  process.exit(1);
});
