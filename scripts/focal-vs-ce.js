#!/usr/bin/env node
// The focal-loss ablation (issue 5, the paper's central claim) at a scale that runs in under an
// hour on 2 cores: one synthetic training set made once, then the same config, data, steps,
// schedule and seeds trained twice per seed — focal loss (γ = 2, α = 1) and cross-entropy — and
// every model scored with `safl eval` on the evaluation sets. Prints per run the word accuracy of
// each set and the final training token accuracy (Note [token accuracy]), the mean per loss, and
// the paired focal − CE difference per seed with its mean and spread.
//
//   node scripts/focal-vs-ce.js [--out DIR] [--seeds 1,2] [--steps 4000] [--samples 60000]
//        [--config FILE|tiny|base] [--charset CHARS] [--batch-size 32] [--threads N] [--limit N]
//        [--format text|json] [eval dataset dir…]
//
// Note [a smaller model that reads sooner]: by default the runs use scripts/focal-vs-ce-config.json
// (the tiny config with half the localisation widths, one block per stage, d_model 128: about
// twice as fast per image) and the charset of the standard protocol (a-z, 0-9: the generator
// labels every word in lower case), to get as far as an hour allows towards the point where the
// models read whole words. Before it the decoder has learnt the language but not yet to look at
// the image, and every word accuracy is near zero whatever the loss; the training token accuracy
// (Note [token accuracy]) still compares them. Measured on 2 cores: 4000 steps of 32 (the
// defaults, about 40 minutes) stay before that point; --steps 5000 --batch-size 64 --threads 1 goes
// past it (34–47% on real-dev), 83 minutes for the four runs as two processes side by side, one
// per seed (README, "Focal loss or cross-entropy").
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const check = require('../dist/validate.js');
const { scriptArgs } = require('./script-args.js');

const USAGE = `usage: node scripts/focal-vs-ce.js [--out DIR] [--seeds 1,2] [--steps 4000] [--samples 60000]
         [--config FILE|tiny|base] [--charset CHARS] [--batch-size 32] [--threads N] [--limit N]
         [--format text|json] [eval dataset dir…]`;
// Options checked with the package's own validation (one message form), reported as usage errors.
const { values, positionals, option } = scriptArgs(USAGE, {
  allowPositionals: true,
  options: {
    out: { type: 'string', default: 'focal-vs-ce' },
    seeds: { type: 'string', default: '1,2' },
    steps: { type: 'string', default: '4000' },
    config: { type: 'string', default: path.join(__dirname, 'focal-vs-ce-config.json') },
    charset: { type: 'string', default: 'abcdefghijklmnopqrstuvwxyz0123456789' },
    samples: { type: 'string', default: '60000' },
    'batch-size': { type: 'string', default: '32' },
    threads: { type: 'string' },
    format: { type: 'string', default: 'text' },
    limit: { type: 'string' },
  },
});

const int = (text, name) => option(() => check.integerText(text, name, 1, 1e9));
const seeds = values.seeds.split(',').map((s) => int(s.trim(), '--seeds'));
const steps = int(values.steps, '--steps');
const samples = int(values.samples, '--samples');
const batchSize = int(values['batch-size'], '--batch-size');
const threads = values.threads === undefined ? [] : ['--threads', String(int(values.threads, '--threads'))];
const limit = values.limit === undefined ? [] : ['--limit', String(int(values.limit, '--limit'))];
const format = option(() => check.oneOf(values.format, '--format', ['text', 'json']));

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const out = path.resolve(values.out);
const realDev = path.join(__dirname, '..', '..', 'shared', 'data', 'real-dev');
const evalSets = positionals.length > 0 ? positionals : ['SVT', 'IC03'].map((name) => path.join(realDev, name)).filter((dir) => fs.existsSync(dir));

// Runs `safl …`, streaming its stderr (progress) through; returns stdout; throws on failure.
function safl(args) {
  const result = spawnSync(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 1 << 28 });
  if (result.status !== 0) throw new Error(`safl ${args.join(' ')} exited with status ${result.status}`);
  return result.stdout;
}

// Note [token accuracy]: the share of target tokens (characters and EOS) the model's argmax got
// right over the run's last logged steps (metrics.jsonl). It compares the losses before the
// models read whole words, when every word accuracy is near zero.
function lastTokenAccuracy(dir) {
  const lines = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
  const train = lines.filter((m) => m.type === 'train');
  return train.length > 0 ? train[train.length - 1].tokenAccuracy : NaN;
}

function log(message) {
  process.stderr.write(`focal-vs-ce: ${message}\n`);
}

fs.mkdirSync(out, { recursive: true });
const trainSet = path.join(out, 'train.lmdb');
const heldOut = path.join(out, 'held-out.lmdb');
const started = Date.now();
if (!fs.existsSync(path.join(trainSet, 'data.mdb'))) {
  log(`making ${samples} training samples`);
  safl(['synth', '--count', String(samples), '--out', trainSet, '--seed', '1000', '--charset', values.charset]);
}
if (!fs.existsSync(path.join(heldOut, 'data.mdb'))) safl(['synth', '--count', '2000', '--out', heldOut, '--seed', '2000', '--charset', values.charset]);

const LOSSES = [
  { name: 'focal', args: ['--loss', 'focal', '--gamma', '2', '--alpha', '1'] },
  { name: 'ce', args: ['--loss', 'ce'] },
];
const runs = [];
for (const seed of seeds) {
  for (const loss of LOSSES) {
    const dir = path.join(out, `${loss.name}-seed${seed}`);
    const model = path.join(dir, 'model.safetensors');
    if (!fs.existsSync(model)) {
      log(`training ${loss.name}, seed ${seed}, ${steps} steps`);
      fs.rmSync(dir, { recursive: true, force: true });
      safl(['train', '--config', values.config, '--charset', values.charset, '--data', trainSet, ...loss.args, '--seed', String(seed), '--iterations', String(steps),
        '--batch-size', String(batchSize), '--lr', '0.001', '--schedule', 'cosine', '--warmup', String(Math.ceil(steps / 10)),
        '--checkpoint-dir', dir, '--checkpoint-every', String(steps), '--log-every', '100', ...threads]);
    }
    const report = JSON.parse(safl(['eval', '--format', 'json', ...threads, ...limit, model, ...evalSets, heldOut]));
    runs.push({ loss: loss.name, seed, datasets: report.datasets, average: report.average, tokenAccuracy: lastTokenAccuracy(dir) });
  }
}

// ---- the tables ----------------------------------------------------------------------------------
const setNames = runs[0].datasets.map((d) => d.name);
const columns = [...setNames, 'real average', 'train token accuracy'];
const realNames = setNames.filter((name) => name !== path.basename(heldOut));
function scores(run) {
  const byName = Object.fromEntries(run.datasets.map((d) => [d.name, d]));
  const real = realNames.map((name) => byName[name]);
  const images = real.reduce((n, d) => n + d.images, 0);
  const correct = real.reduce((n, d) => n + d.correct, 0);
  return [...setNames.map((name) => 100 * byName[name].accuracy), images > 0 ? (100 * correct) / images : NaN, 100 * run.tokenAccuracy];
}
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const spread = (xs) => (xs.length > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)) : NaN);
const table = runs.map((run) => ({ loss: run.loss, seed: run.seed, scores: scores(run) }));
const meanOf = (loss) => columns.map((_, i) => mean(table.filter((r) => r.loss === loss).map((r) => r.scores[i])));
const differences = seeds.map((seed) => {
  const focal = table.find((r) => r.loss === 'focal' && r.seed === seed).scores;
  const ce = table.find((r) => r.loss === 'ce' && r.seed === seed).scores;
  return focal.map((x, i) => x - ce[i]);
});
const summary = {
  setup: { config: values.config, charset: values.charset, steps, batchSize, samples, seeds, evalSets: [...evalSets, heldOut], minutes: Math.round((Date.now() - started) / 600) / 100 },
  columns,
  runs: table,
  meanFocal: meanOf('focal'),
  meanCe: meanOf('ce'),
  difference: { perSeed: differences, mean: columns.map((_, i) => mean(differences.map((d) => d[i]))), sd: columns.map((_, i) => spread(differences.map((d) => d[i]))) },
};

fs.writeFileSync(path.join(out, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
if (format === 'json') {
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
} else {
  const pct = (x) => (Number.isNaN(x) ? '-' : x.toFixed(1));
  const signed = (x) => (Number.isNaN(x) ? '-' : `${x >= 0 ? '+' : ''}${x.toFixed(1)}`);
  const lines = [
    `config ${path.basename(values.config)}, charset ${values.charset}, ${steps} steps of ${batchSize}, ${samples} synthetic samples, seeds ${seeds.join(', ')} (${summary.setup.minutes} min)`,
    '',
    `| loss | seed | ${columns.join(' | ')} |`,
    `|---|---|${columns.map(() => '---|').join('')}`,
    ...table.map((r) => `| ${r.loss} | ${r.seed} | ${r.scores.map(pct).join(' | ')} |`),
    `| focal | mean | ${summary.meanFocal.map(pct).join(' | ')} |`,
    `| ce | mean | ${summary.meanCe.map(pct).join(' | ')} |`,
    ...differences.map((d, i) => `| focal − ce | ${seeds[i]} | ${d.map(signed).join(' | ')} |`),
    `| focal − ce | mean ± sd | ${summary.difference.mean.map((m, i) => `${signed(m)} ± ${pct(summary.difference.sd[i])}`).join(' | ')} |`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}
