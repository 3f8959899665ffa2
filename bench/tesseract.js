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
const check = require('../dist/validate.js');
const { scriptArgs } = require('../scripts/script-args.js');
const { DatasetScore, accuracy, weightedAverage } = require('../dist/data/metrics.js');

const { values, positionals, fail, option } = scriptArgs(
  'usage: node bench/tesseract.js [--jobs 2] [--format text|json] <dataset dir with labels.tsv>...',
  { allowPositionals: true, options: { jobs: { type: 'string', default: '2' }, format: { type: 'string', default: 'text' } } },
);
const jobs = option(() => check.integerText(values.jobs, '--jobs', 1, 256));
const format = option(() => check.oneOf(values.format, '--format', ['text', 'json']));
if (positionals.length === 0) fail('name at least one dataset directory');

// Tesseract's reading of one image, or null when it failed on that image (counted as wrong and
// reported). A tesseract that cannot be started at all stops the run: every image scored as
// unread would print a silently wrong table.
function tesseract(image) {
  return new Promise((resolve, reject) => {
    // One thread per tesseract process: --jobs processes run side by side instead.
    execFile('tesseract', [image, 'stdout', '--psm', '8'], { env: { ...process.env, OMP_THREAD_LIMIT: '1' } },
      (err, stdout, stderr) => {
        if (err && err.code === 'ENOENT') reject(new Error('tesseract was not found on PATH; install it with: apt-get install tesseract-ocr'));
        else if (err) {
          console.error(`bench/tesseract.js: tesseract failed on ${image} (counted as wrong): ${stderr.trim() || err.message}`);
          resolve(null);
        } else resolve(stdout.trim());
      });
  });
}

async function scoreDataset(dir) {
  const labels = path.join(dir, 'labels.tsv');
  if (!fs.existsSync(labels)) fail(`${dir}: no labels.tsv in it (a dataset directory holds labels.tsv and its images)`);
  const lines = fs.readFileSync(labels, 'utf8').split('\n').filter((l) => l.trim() !== '');
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
  await Promise.all(Array.from({ length: jobs }, worker));
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
  if (format === 'json') {
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
})().catch((err) => {
  console.error(`bench/tesseract.js: ${err.message}`);
  process.exit(1);
});
