#!/usr/bin/env node
// Throughput of the synthetic generator next to the training step it has to feed, in one run:
// images/s made in this thread and by 1 and 2 worker threads; the tiny config's training rate
// (build/safl_bench_model --mode train --config tiny --batch 64); and both at once — training while
// this thread makes samples as fast as it can, and while it makes them only as fast as training
// alone consumes them (as on-the-fly generation does) — to show what generation costs training on
// a machine whose cores both train. Ratios above 1 mean the generator keeps up.
//
//   node bench/synth.js [--samples 600] [--threads 2] [--steps 6] [--seed 1]
//
// Needs `npx tsc -p .` and the native benchmark (node scripts/build-native.js --tests).
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const check = require('../dist/validate.js');
const { scriptArgs } = require('../scripts/script-args.js');

const root = path.join(__dirname, '..');
const { values, fail, option } = scriptArgs('usage: node bench/synth.js [--samples 600] [--threads 2] [--steps 6] [--seed 1]', {
  options: {
    samples: { type: 'string', default: '600' },
    threads: { type: 'string', default: '2' },
    steps: { type: 'string', default: '6' },
    seed: { type: 'string', default: '1' },
  },
});
const samples = option(() => check.integerText(values.samples, '--samples', 1, 1e6));
const seed = option(() => check.integerText(values.seed, '--seed', 0, 2 ** 31 - 1));
const threads = String(option(() => check.integerText(values.threads, '--threads', 1, 1024)));
const steps = String(option(() => check.integerText(values.steps, '--steps', 1, 1e4)));
const benchModel = path.join(root, 'build', 'safl_bench_model');
if (!fs.existsSync(benchModel)) fail(`${benchModel} not found; build it with: node scripts/native-tests.js --build-only`);
const { createSynthSource } = require(path.join(root, 'dist', 'synth', 'index.js'));
const { SynthPool } = require(path.join(root, 'dist', 'synth', 'pool.js'));

/** Makes samples first…first+count−1 with `inFlight` requests at once; images/s and CPU ms per sample of this process. */
async function measure(make, first, count, inFlight) {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let next = first;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < first + count) await make(next++);
    }),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return { imgPerS: count / seconds, cpuMsPerImage: (cpu.user + cpu.system) / 1000 / count };
}

/** Runs the training benchmark; resolves to its images/s. `whileRunning` runs until it exits. */
function train(whileRunning) {
  return new Promise((resolve, reject) => {
    const args = ['--config', 'tiny', '--batch', '64', '--mode', 'train', '--threads', threads, '--steps', steps];
    const child = spawn(benchModel, args);
    let stdout = '';
    let stderr = '';
    let running = true;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => {
      running = false;
      if (status !== 0) return reject(new Error(`safl_bench_model failed:\n${stderr}`));
      resolve(JSON.parse(stdout.trim().split('\n').pop()).img_per_s);
    });
    if (whileRunning) whileRunning(() => running);
  });
}

(async () => {
  const source = createSynthSource({ seed });
  await source.sample(0); // fonts, word list, first render: not part of the rate
  const rows = [];

  const inThread = await measure((i) => source.sample(i), 1, samples, 8);
  rows.push(['generator, this thread (8 in flight)', inThread.imgPerS, `${inThread.cpuMsPerImage.toFixed(2)} ms CPU/image`]);
  for (const workers of [1, 2]) {
    const pool = new SynthPool(source.options, workers);
    await Promise.all(Array.from({ length: workers }, (_, k) => pool.render(k, false))); // start-up
    const r = await measure((i) => pool.render(i, false), 1, samples, 8 * workers);
    await pool.close();
    rows.push([`generator, ${workers} worker thread${workers > 1 ? 's' : ''}`, r.imgPerS, '']);
  }
  const trainAlone = await train();
  rows.push([`training, tiny, batch 64, ${threads} threads`, trainAlone, '']);

  // Both at once: this thread generates flat out while the training benchmark runs.
  let made = 0;
  let genSeconds = 0;
  const trainShared = await train((running) => {
    const t0 = process.hrtime.bigint();
    let next = 1;
    const loop = async () => {
      while (running()) {
        await source.sample(next++);
        made++;
      }
      genSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    };
    for (let k = 0; k < 8; k++) loop();
  });
  await new Promise((resolve) => setTimeout(resolve, 50));
  const genShared = made / Math.max(genSeconds, 1e-3);
  rows.push(['training while generating flat out', trainShared, '']);
  rows.push(['generating flat out while training', genShared, '']);

  // As in training: samples made only as fast as training alone consumes them.
  let paced = 0;
  const trainPaced = await train((running) => {
    const t0 = process.hrtime.bigint();
    let next = 1;
    const loop = async () => {
      while (running()) {
        const due = (trainAlone * Number(process.hrtime.bigint() - t0)) / 1e9;
        if (paced >= due) {
          await new Promise((resolve) => setTimeout(resolve, 5));
          continue;
        }
        paced++;
        await source.sample(next++);
      }
    };
    for (let k = 0; k < 4; k++) loop();
  });
  rows.push([`training while generating at its rate (${trainAlone.toFixed(0)}/s)`, trainPaced, '']);

  console.log(`synthetic generator vs tiny training, ${threads} training threads, ${samples} samples per generator row\n`);
  console.log('| what | images/s | |');
  console.log('|---|---|---|');
  for (const [what, rate, note] of rows) console.log(`| ${what} | ${rate.toFixed(1)} | ${note} |`);
  console.log('');
  console.log(`generator (this thread) / training:        ${(inThread.imgPerS / trainAlone).toFixed(2)}×`);
  console.log(`generator (1 worker) / training:           ${(rows[1][1] / trainAlone).toFixed(2)}×`);
  console.log(`generator (2 workers) / training:          ${(rows[2][1] / trainAlone).toFixed(2)}×`);
  console.log(`both at once: generating / training:       ${(genShared / trainShared).toFixed(2)}×`);
  console.log(`training slowed by generating flat out:    ${(100 * (1 - trainShared / trainAlone)).toFixed(0)}%`);
  console.log(`training slowed by generating at its rate: ${(100 * (1 - trainPaced / trainAlone)).toFixed(0)}%`);
  console.log(`generator CPU per training image:          ${((inThread.cpuMsPerImage * trainAlone) / 10).toFixed(1)}% of one core at the training rate`);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
