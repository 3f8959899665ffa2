#!/usr/bin/env node
// Whole-network CPU benchmark, safl side by side with the PyTorch peer (../shared/peers/torch_safl.py)
// in one run: images/s and peak RSS per config, batch size and mode, and the ratio safl / peer.
// Each measurement is its own process (so peak RSS is per measurement), and safl and the peer
// alternate for every row so machine noise hits both alike. With --repeats N every measurement is
// made N times, alternating, and the table shows the medians (and the range of the N ratios).
//
//   node bench/model.js [--configs tiny,base] [--batches 1,64] [--modes greedy,forward] [--threads 2]
//                       [--precisions float32,bfloat16] [--repeats 1] [--peer ../shared/peers/torch_safl.py]
//                       [--python /usr/bin/python3]
//
// Modes: greedy (decoding), forward (teacher-forced inference forward), train (forward + backward
// + Adam). Precisions: of safl's matrix products (common/matmul_precision.h; default float32
// only); the table shows the one the products really used (bfloat16 needs AMX or AVX512-BF16). The peer always
// runs float32. Needs the native benchmark (node scripts/native-tests.js --build-only) and, for the peer,
// Debian's python3-torch with OpenBLAS (libopenblas0-pthread).
//
// Note [the peer's BLAS]: Debian's python3-torch takes its BLAS from whatever provides libblas.so.3.
// Installed alone it pulls in the reference BLAS (libblas3), plain loops that made the peer 4–5 times
// slower here (tiny batch-8 teacher-forced forward: 7.0 against 31.3 images/s with OpenBLAS), which
// would inflate every ratio (OpenBLAS's own libraries are mapped either way, through LAPACK). The
// wrapper reports the libblas.so file the peer's process mapped, and one that is not OpenBLAS's
// stops the benchmark.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const check = require('../dist/validate.js');
const { scriptArgs } = require('../scripts/script-args.js');

const root = path.join(__dirname, '..');
const USAGE = `usage: node bench/model.js [--configs tiny,base] [--batches 1,64] [--modes greedy,forward,train] [--threads 2]
                         [--precisions float32,bfloat16] [--repeats 1] [--peer FILE] [--python /usr/bin/python3]`;
const { values, fail, option } = scriptArgs(USAGE, {
  options: {
    configs: { type: 'string', default: 'tiny,base' },
    batches: { type: 'string', default: '1,64' },
    modes: { type: 'string', default: 'greedy,forward' },
    threads: { type: 'string', default: '2' },
    precisions: { type: 'string', default: 'float32' },
    repeats: { type: 'string', default: '1' },
    peer: { type: 'string', default: path.join(root, '..', 'shared', 'peers', 'torch_safl.py') },
    python: { type: 'string', default: '/usr/bin/python3' },
  },
});

// Comma-separated lists, each item checked with the package's validation.
const list = (text, name, read) => text.split(',').map((item) => option(() => read(item.trim(), name)));
const configs = list(values.configs, '--configs', (v, name) => check.oneOf(v, name, ['tiny', 'base']));
const batches = list(values.batches, '--batches', (v, name) => check.integerText(v, name, 1, 1024));
const modes = list(values.modes, '--modes', (v, name) => check.oneOf(v, name, ['greedy', 'forward', 'train']));
const precisions = list(values.precisions, '--precisions', (v, name) => check.oneOf(v, name, ['float32', 'bfloat16']));
const threads = String(option(() => check.integerText(values.threads, '--threads', 1, 1024)));
const repeats = option(() => check.integerText(values.repeats, '--repeats', 1, 20));

const ours = path.join(root, 'build', 'safl_bench_model');
if (!fs.existsSync(ours)) fail(`${ours} not found; build it with: node scripts/native-tests.js --build-only`);
if (!fs.existsSync(values.peer)) fail(`--peer: ${values.peer} was not found`);

// Fewer repetitions where one is long; enough that each measurement takes a few seconds.
function steps(config, batch, mode) {
  if (batch === 1) return mode === 'train' ? 10 : 20;
  return config === 'base' ? 2 : 4;
}

function runJson(command, args) {
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed:\n${result.stderr}`);
  const line = result.stdout.trim().split('\n').pop();
  return JSON.parse(line);
}

// The peer's own main() in a wrapper that adds its peak RSS (ru_maxrss, KiB on Linux).
const PEER_WRAPPER = `
import json, resource, runpy, sys, io, contextlib
peer = sys.argv[1]; sys.argv = [peer] + sys.argv[2:]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    runpy.run_path(peer, run_name="__main__")
res = json.loads(out.getvalue().strip().splitlines()[-1])
res["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
res["blas"] = sorted({l.split()[-1] for l in open("/proc/self/maps") if l.rsplit("/", 1)[-1].startswith("libblas.so")})
print(json.dumps(res))
`;

// The peer measures greedy and teacher-forced decoding in one process ('infer'), training in another.
function peerRun(config, batch, peerMode, threads) {
  const stepsFor = peerMode === 'train' ? steps(config, batch, 'train') : steps(config, batch, 'greedy');
  const res = runJson(values.python, ['-c', PEER_WRAPPER, values.peer, '--config', config, '--batch', `${batch}`,
    '--threads', threads, '--steps', `${stepsFor}`, '--mode', peerMode]);
  // Note [the peer's BLAS]
  if (res.blas.length === 0 || !res.blas.every((lib) => lib.includes('openblas'))) {
    console.error(`bench/model.js: the peer's PyTorch runs on ${res.blas.join(', ') || 'no libblas.so'}, not OpenBLAS's, ` +
      'which makes it several times slower than the peer should be; install it (apt-get install libopenblas0-pthread)');
    process.exit(1);
  }
  peerBlas = res.blas.join(', ');
  return res;
}

const PEER_KEYS = { greedy: 'infer_greedy_img_per_s', forward: 'infer_teacher_forced_img_per_s', train: 'train_img_per_s' };

function safl(config, batch, mode, threads, precision) {
  const res = runJson(ours, ['--config', config, '--batch', `${batch}`, '--mode', mode, '--threads', threads,
    '--steps', `${steps(config, batch, mode)}`, '--precision', precision]);
  return { imgPerS: res.img_per_s, rss: res.peak_rss_mib, simd: res.simd, precision: res.precision };
}

function median(xs) {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const rows = [];
let torchVersion = '';
let peerBlas = '';
let simd = '';
for (const config of configs) {
  for (const batch of batches) {
    // The peer measures greedy and forward in one 'infer' process: its runs for this (config, batch)
    // are kept per peer mode and shared by the rows; run i of a row alternates with the peer's run i.
    const peerRuns = new Map(); // 'infer' | 'train' → the peer's JSON of each repeat
    for (const mode of modes) {
      if (mode === 'train' && batch < 2) {
        process.stderr.write(`${config} b${batch} train: skipped (training needs a batch of at least 2 for batch norm)\n`);
        continue;
      }
      const peerMode = mode === 'train' ? 'train' : 'infer';
      if (!peerRuns.has(peerMode)) peerRuns.set(peerMode, []);
      const peerList = peerRuns.get(peerMode);
      for (const precision of precisions) {
        const ours = [];
        const theirs = [];
        for (let i = 0; i < repeats; i++) {
          const s = safl(config, batch, mode, threads, precision);
          if (peerList.length <= i) peerList.push(peerRun(config, batch, peerMode, threads));
          const res = peerList[i];
          torchVersion = res.torch;
          simd = s.simd;
          ours.push(s);
          theirs.push({ imgPerS: res[PEER_KEYS[mode]], rss: res.peak_rss_mib });
          process.stderr.write(`${config} b${batch} ${mode} ${s.precision}: safl ${s.imgPerS} img/s, peer ${theirs[i].imgPerS} img/s\n`);
        }
        const summary = (runs) => ({ imgPerS: median(runs.map((r) => r.imgPerS)), rss: median(runs.map((r) => r.rss)) });
        const ratios = ours.map((s, i) => s.imgPerS / theirs[i].imgPerS);
        rows.push({ config, batch, mode, safl: { ...summary(ours), precision: ours[0].precision }, peer: summary(theirs),
          ratioRange: [Math.min(...ratios), Math.max(...ratios)], saflRuns: ours.map((s) => s.imgPerS),
          peerForwardRuns: peerMode === 'infer' ? peerList.slice(0, repeats).map((res) => res[PEER_KEYS.forward]) : [] });
      }
    }
  }
}

// Ratios against the peer's greedy and teacher-forced numbers of the same run.
const ofRepeats = repeats > 1 ? `, medians of ${repeats} alternating runs` : '';
console.log(`safl vs PyTorch ${torchVersion} peer (${peerBlas}), ${threads} threads, safl SIMD ${simd}${ofRepeats}\n`);
const rangeHead = repeats > 1 ? ' range of the ratios |' : '';
console.log(`| config | batch | mode | safl products | safl img/s | peer img/s | safl / peer |${rangeHead} safl peak RSS MiB | peer peak RSS MiB |`);
console.log(`|---|---|---|---|---|---|---|${repeats > 1 ? '---|' : ''}---|---|`);
for (const r of rows) {
  const range = repeats > 1 ? ` ${r.ratioRange[0].toFixed(2)}–${r.ratioRange[1].toFixed(2)}× |` : '';
  console.log(`| ${r.config} | ${r.batch} | ${r.mode} | ${r.safl.precision} | ${r.safl.imgPerS.toFixed(1)} | ${r.peer.imgPerS.toFixed(1)} | ` +
    `${(r.safl.imgPerS / r.peer.imgPerS).toFixed(2)}× |${range} ${r.safl.rss.toFixed(0)} | ${r.peer.rss.toFixed(0)} |`);
}
const greedyVsForward = rows.filter((r) => r.mode === 'greedy').map((r) => {
  const fwd = rows.find((q) => q.config === r.config && q.batch === r.batch && q.mode === 'forward');
  if (!fwd) return null;
  // Run i of the greedy row against the peer's forward of its run i (one peer process measures both).
  const ratios = r.saflRuns.map((imgPerS, i) => imgPerS / r.peerForwardRuns[i]);
  const range = repeats > 1 ? ` ${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}× |` : '';
  return `| ${r.config} | ${r.batch} | ${r.safl.precision} | ${(r.safl.imgPerS / fwd.peer.imgPerS).toFixed(2)}× |${range}`;
}).filter(Boolean);
if (greedyVsForward.length) {
  console.log('\nsafl greedy vs the peer\'s teacher-forced forward (same run):\n');
  console.log(`| config | batch | safl products | safl greedy / peer teacher-forced |${repeats > 1 ? ' range of the ratios |' : ''}`);
  console.log(`|---|---|---|---|${repeats > 1 ? '---|' : ''}`);
  for (const line of greedyVsForward) console.log(line);
}
