#!/usr/bin/env node
// Tesseract on the same word crops, scored the same way as `safl eval`: runs Debian's
// tesseract-ocr (apt-get install tesseract-ocr) with --psm 8 (treat the image as a single word)
// over each dataset's labels.tsv and prints the standard-protocol accuracy (lowercase, a–z0–9,
// exact match), case-sensitive where the labels keep case, and the weighted average.
//
//   node bench/tesseract.js [--jobs 2] [--format text|json] <dataset dir with labels.tsv>...
'use strict';
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { DatasetScore, accuracy, weightedAverage } = require('../dist/data/metrics.js');

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { jobs: { type: 'string', default: '2' }, format: { type: 'string', default: 'text' } },
});
if (positionals.length === 0) {
  console.error('usage: node bench/tesseract.js [--jobs 2] [--format text|json] <dataset dir>...');
  process.exit(1);
}

function tesseract(image) {
  return new Promise((resolve) => {
    // One thread per tesseract process: --jobs processes run side by side instead.
    execFile('tesseract', [image, 'stdout', '--psm', '8'], { env: { ...process.env, OMP_THREAD_LIMIT: '1' } },
      (err, stdout) => resolve(err ? '' : stdout.trim()));
  });
}

async function scoreDataset(dir) {
  const lines = fs.readFileSync(path.join(dir, 'labels.tsv'), 'utf8').split('\n').filter((l) => l.trim() !== '');
  const samples = lines.map((line) => {
    const tab = line.indexOf('\t');
    return { file: path.join(dir, line.slice(0, tab)), label: line.slice(tab + 1) };
  });
  const score = new DatasetScore();
  let next = 0;
  async function worker() {
    while (next < samples.length) {
      const sample = samples[next++];
      score.add(sample.label, await tesseract(sample.file));
    }
  }
  await Promise.all(Array.from({ length: Number(values.jobs) }, worker));
  return { name: path.basename(path.resolve(dir)), score };
}

(async () => {
  const results = [];
  for (const dir of positionals) results.push(await scoreDataset(dir));
  const pct = (s) => `${(100 * accuracy(s)).toFixed(1)}%`;
  const rows = results.map(({ name, score }) => ({
    dataset: name,
    images: score.images,
    accuracy: accuracy(score.standard),
    caseSensitive: score.keepsCase ? accuracy(score.caseSensitive) : null,
  }));
  const total = weightedAverage(results.map((r) => r.score.standard));
  if (values.format === 'json') {
    console.log(JSON.stringify({ engine: 'tesseract --psm 8', datasets: rows, average: total && accuracy(total) }));
    return;
  }
  console.log('tesseract --psm 8, standard protocol (lowercase, a-z0-9, exact match)\n');
  console.log('| dataset | images | accuracy | case-sensitive |');
  console.log('|---|---|---|---|');
  for (const [i, r] of rows.entries()) {
    const cs = results[i].score.keepsCase ? pct(results[i].score.caseSensitive) : '—';
    console.log(`| ${r.dataset} | ${r.images} | ${pct(results[i].score.standard)} | ${cs} |`);
  }
  if (total) console.log(`| weighted average | ${total.images} | ${pct(total)} | |`);
})();
