#!/usr/bin/env node
// Remakes examples/synth-*.png: a few word images from the synthetic generator (seed 7777, samples 0
// to 7) at their natural size, for the README, and prints a Markdown table of them with their labels.
//
//   npx tsc -p . && node scripts/make-examples.js
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const sharp = require('sharp');
const { renderSample } = require('../dist/synth/index.js');
const { scriptArgs } = require('./script-args.js');

scriptArgs('usage: npx tsc -p . && node scripts/make-examples.js   (no options: it rewrites examples/synth-*.png)');

const SEED = 7777; // not a seed the shipped model was trained on (scripts/train-default.sh)
const COUNT = 8;
const dir = path.join(__dirname, '..', 'examples');

(async () => {
  // Every image is made before any file is touched: a failed run leaves the old set as it was.
  const made = [];
  for (let i = 0; i < COUNT; i++) {
    const { image, label, font } = await renderSample(SEED, i);
    const input = Buffer.isBuffer(image) ? sharp(image) : sharp(image.data, { raw: image });
    made.push({ png: await input.png({ compressionLevel: 9 }).toBuffer(), label, font });
  }
  fs.mkdirSync(dir, { recursive: true });
  for (const old of fs.readdirSync(dir).filter((f) => /^synth-\d+\.png$/.test(f))) fs.rmSync(path.join(dir, old));
  console.log('| image | label | font |');
  console.log('|---|---|---|');
  made.forEach(({ png, label, font }, i) => {
    fs.writeFileSync(path.join(dir, `synth-${i}.png`), png);
    console.log(`| ![${label}](examples/synth-${i}.png) | \`${label.replace(/[|`]/g, '\\$&')}\` | ${font} |`);
  });
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
