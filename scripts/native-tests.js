#!/usr/bin/env node
// Builds and runs the native test binary (npm test's first half), or a native benchmark:
//   node scripts/native-tests.js [filter…]       build/safl_tests [filter…]
//   node scripts/native-tests.js --bench gemm    build/safl_bench_gemm
// The binary itself needs no Node: `cmake -S . -B build-native && cmake --build build-native &&
// build-native/safl_tests` does the same.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.join(__dirname, '..');
const args = process.argv.slice(2);

function run(command, commandArgs) {
  const result = spawnSync(command, commandArgs, { cwd: root, stdio: 'inherit' });
  if (result.error) throw result.error;
  if (result.status !== 0) process.exit(result.status ?? 1);
}

run(process.execPath, [path.join(__dirname, 'build-native.js'), '--tests']);
const benchIndex = args.indexOf('--bench');
if (benchIndex >= 0) {
  const name = args[benchIndex + 1];
  run(path.join(root, 'build', `safl_bench_${name}`), args.filter((_, i) => i !== benchIndex && i !== benchIndex + 1));
} else {
  run(path.join(root, 'build', 'safl_tests'), args);
}
