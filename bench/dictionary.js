#!/usr/bin/env node
// How much the English dictionary helps, and at what weight (Note [dictionary] in
// lib/dictionary.ts): `safl eval` with --dictionary english at each weight and beam width, on the
// datasets given, as one table of accuracies. The default weight was chosen with it on synthetic
// images (README, "Dictionary"); weight 0 is the same reading without a dictionary.
//
//   node bench/dictionary.js [--model FILE] [--beam-widths 3,5] [--weights 0,0.5,1,1.5,2,3,4,6,10]
//                            [--views N] <dataset>...
'use strict';
const { execFileSync } = require('node:child_process');
const path = require('node:path');
const check = require('../dist/validate.js');
const { scriptArgs } = require('../scripts/script-args.js');

const { values, positionals, fail, option } = scriptArgs(
  'usage: node bench/dictionary.js [--model FILE] [--beam-widths 3,5] [--weights 0,0.5,1,…] [--views N] <dataset>...',
  {
    allowPositionals: true,
    options: {
      model: { type: 'string', default: path.join(__dirname, '..', 'models', 'default.safetensors') },
      'beam-widths': { type: 'string', default: '3,5' },
      weights: { type: 'string', default: '0,0.5,1,1.5,2,3,4,6,10' },
      views: { type: 'string', default: '1' },
    },
  },
);
const list = (text, parse) => text.split(',').map((item) => parse(item.trim()));
const beamWidths = option(() => list(values['beam-widths'], (w) => check.integerText(w, '--beam-widths', 2, 64)));
const weights = option(() => list(values.weights, (w) => check.numberText(w, '--weights', 0, 100)));
const views = option(() => check.integerText(values.views, '--views', 1, 8));
if (positionals.length === 0) fail('name at least one dataset');

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const percent = (accuracy) => `${(100 * accuracy).toFixed(2)}%`;
const header = ['beam', 'weight', ...positionals.map((d) => path.basename(d)), 'average'];
console.log(`model ${values.model}, ${views} view${views > 1 ? 's' : ''}`);
console.log(header.join('\t'));
for (const beamWidth of beamWidths) {
  for (const weight of weights) {
    const args = ['eval', '--format', 'json', '--beam-width', String(beamWidth), '--views', String(views)];
    args.push('--dictionary', 'english', '--dictionary-weight', String(weight), values.model, ...positionals);
    const result = JSON.parse(execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8', maxBuffer: 1 << 28 }));
    const cells = result.datasets.map((d) => `${percent(d.accuracy)} (${d.correct})`);
    console.log([beamWidth, weight, ...cells, percent(result.average.accuracy)].join('\t'));
  }
}
