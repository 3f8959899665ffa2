#!/usr/bin/env node
// Does memory stay flat while a long-running process recognises image after image? Runs rounds of
// recognition and prints the process's RSS after each (after a full garbage collection), then the
// growth from the end of the first quarter of the rounds (warm-up: arena, caches, pools) to the
// last round, per 1000 images.
//
//   node --expose-gc bench/memory.js [--mode pipeline|native] [--rounds 40] [--model FILE]
//                                    [--threads N] [--batch-size 32] <image files or dirs>...
//
// pipeline: each round submits every image as its own concurrent recognize() call (Buffers of the
//   encoded files, as a service receives them), so decoding with sharp, batching and the native
//   network all run.
// native: the addon's model alone, recognising one fixed batch of random pixels per call (as many
//   calls per round as the pipeline makes batches): the native core without sharp or the JS layer.
// Run it with LD_PRELOAD=<libjemalloc.so.2> to see how much of the pipeline's growth is the
// allocator's rather than memory held by the program.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { Recognizer } = require('../dist/index.js');
const { loadCpuAddon, packageRoot } = require('../dist/native.js');
const check = require('../dist/validate.js');
const { scriptArgs } = require('../scripts/script-args.js');

const USAGE = `usage: node --expose-gc bench/memory.js [--mode pipeline|native] [--rounds 40] [--model FILE]
                                         [--threads N] [--batch-size 32] <image files or dirs>...`;
// Options checked with the package's own validation (one message form), reported as usage errors.
const { values, positionals, fail, option } = scriptArgs(USAGE, {
  allowPositionals: true,
  options: {
    mode: { type: 'string', default: 'pipeline' },
    rounds: { type: 'string', default: '40' },
    model: { type: 'string' },
    threads: { type: 'string' },
    'batch-size': { type: 'string', default: '32' },
  },
});

const mode = option(() => check.oneOf(values.mode, '--mode', ['pipeline', 'native']));
const rounds = option(() => check.integerText(values.rounds, '--rounds', 1, 1e6));
const batchSize = option(() => check.integerText(values['batch-size'], '--batch-size', 1, 1024));
const threads = values.threads === undefined ? undefined : option(() => check.integerText(values.threads, '--threads', 1, 1024));
if (typeof global.gc !== 'function') fail('run it with node --expose-gc, so that each reading follows a full collection');
if (positionals.length === 0) fail('name image files or directories to recognise');

const IMAGE = /\.(png|jpe?g|webp|tiff?|gif|avif)$/i;
function imageFiles(entry) {
  if (!fs.existsSync(entry)) fail(`${entry}: no such file or directory`);
  if (!fs.statSync(entry).isDirectory()) return [entry];
  return fs.readdirSync(entry, { recursive: true }).map((f) => path.join(entry, f)).filter((f) => IMAGE.test(f)).sort();
}
const files = positionals.flatMap(imageFiles);
if (files.length === 0) fail(`no images in ${positionals.join(', ')}`);

function rssMiB() {
  global.gc();
  return process.memoryUsage().rss / 2 ** 20;
}

async function pipelineRounds(report) {
  const recognizer = await Recognizer.load(values.model, { threads, batchSize, device: 'cpu' });
  const buffers = files.map((f) => fs.readFileSync(f));
  for (let round = 1; round <= rounds; round++) {
    await Promise.all(buffers.map((b) => recognizer.recognize(b)));
    report(round);
  }
  await recognizer.close();
}

async function nativeRounds(report) {
  const addon = loadCpuAddon();
  if (threads !== undefined) addon.setThreads(threads);
  const modelFile = values.model ?? path.join(packageRoot, 'models', 'default.safetensors');
  const model = await addon.NativeModel.fromBuffer(fs.readFileSync(modelFile), modelFile);
  const { in_h: height, in_w: width } = JSON.parse(model.config());
  const images = new Float32Array(batchSize * 3 * height * width);
  for (let i = 0; i < images.length; i++) images[i] = Math.random() * 2 - 1;
  const calls = Math.ceil(files.length / batchSize);
  for (let round = 1; round <= rounds; round++) {
    for (let c = 0; c < calls; c++) await model.recognize(images, batchSize, 1, 'float32');
    report(round);
  }
  model.close();
}

async function main() {
  const imagesPerRound = mode === 'pipeline' ? files.length : Math.ceil(files.length / batchSize) * batchSize;
  const warmup = Math.max(1, Math.floor(rounds / 4));
  const readings = [];
  console.log(`mode ${mode}, ${imagesPerRound} images per round, ${rounds} rounds, batch size ${batchSize}`);
  console.log('round  RSS MiB');
  const report = (round) => {
    const rss = rssMiB();
    readings.push(rss);
    console.log(`${String(round).padStart(5)}  ${rss.toFixed(1).padStart(7)}`);
  };
  await (mode === 'pipeline' ? pipelineRounds(report) : nativeRounds(report));
  const after = readings.slice(warmup - 1);
  const growth = readings[rounds - 1] - readings[warmup - 1];
  const images = (rounds - warmup) * imagesPerRound;
  console.log(
    `RSS after round ${warmup}: ${readings[warmup - 1].toFixed(1)} MiB; after round ${rounds}: ` +
      `${readings[rounds - 1].toFixed(1)} MiB; highest since round ${warmup}: ${Math.max(...after).toFixed(1)} MiB; ` +
      `growth ${growth.toFixed(1)} MiB over ${images} images (${((1000 * growth) / Math.max(1, images)).toFixed(3)} MiB per 1000)`,
  );
}

main().catch((err) => fail(err.message));
