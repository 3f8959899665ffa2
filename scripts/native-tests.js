#!/usr/bin/env node
// Builds and runs the native test binary (npm test's first half), or a native benchmark:
//   node scripts/native-tests.js [filter…]       build/safl_tests [filter…]
//   node scripts/native-tests.js --bench gemm    build/safl_bench_gemm
//   node scripts/native-tests.js --build-only    just build the tests and benchmarks
// It reconfigures the build folder that npm install made (cmake-js) with SAFL_BUILD_TESTS=ON and
// builds it with plain CMake, so the addon's objects are reused. The binary itself needs no Node:
// `cmake -S . -B build-native && cmake --build build-native && build-native/safl_tests` does the same.
'use strict';
const { spawnSync } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const build = path.join(root, 'build');
const args = process.argv.slice(2);

function run(command, commandArgs) {
  const result = spawnSync(command, commandArgs, { cwd: root, stdio: 'inherit' });
  if (result.error) throw result.error;
  if (result.status !== 0) process.exit(result.status ?? 1);
}

const cuda = process.env.SAFL_CUDA ? [`-DSAFL_CUDA=${process.env.SAFL_CUDA}`] : [];
run('cmake', ['-S', root, '-B', build, '-DSAFL_BUILD_TESTS=ON', ...cuda]);
run('cmake', ['--build', build, '--parallel', `${os.availableParallelism()}`]);
if (args.includes('--build-only')) process.exit(0);

const benchIndex = args.indexOf('--bench');
if (benchIndex >= 0) {
  const name = args[benchIndex + 1];
  run(path.join(build, `safl_bench_${name}`), args.filter((_, i) => i !== benchIndex && i !== benchIndex + 1));
} else {
  run(path.join(build, 'safl_tests'), args);
}
