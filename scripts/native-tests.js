#!/usr/bin/env node
// Builds and runs the native test binary (npm test's first half), or a native benchmark:
//   node scripts/native-tests.js [--list] [filter…]   build/safl_tests [--list] [filter…]
//   node scripts/native-tests.js --bench gemm [options…]   build/safl_bench_gemm [options…]
//   node scripts/native-tests.js --build-only        just build the tests and benchmarks
// It reconfigures the build folder that npm install made (cmake-js) with SAFL_BUILD_TESTS=ON and
// builds it with plain CMake, so the addon's objects are reused. The binary itself needs no Node:
// `cmake -S . -B build-native && cmake --build build-native && build-native/safl_tests` does the same.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { scriptArgs } = require('./script-args.js');

const root = path.join(__dirname, '..');
const build = path.join(root, 'build');
const args = process.argv.slice(2);
const USAGE = `usage: node scripts/native-tests.js [--list] [filter…]
       node scripts/native-tests.js --bench NAME [benchmark options…]   (NAME: native/bench/bench_NAME.cpp)
       node scripts/native-tests.js --build-only`;

// Checked before the build, which takes minutes. A benchmark's own options follow its name and are
// its to check; otherwise only --list, --build-only and name filters.
const BENCHMARKS = fs.readdirSync(path.join(root, 'native', 'bench'))
  .map((file) => /^bench_(\w+)\.cpp$/.exec(file)?.[1])
  .filter((name) => name !== undefined)
  .sort();
const benchIndex = args.indexOf('--bench');
const { fail } = scriptArgs(USAGE, {
  args: benchIndex >= 0 ? args.slice(0, benchIndex) : args,
  allowPositionals: benchIndex < 0,
  options: benchIndex >= 0 ? {} : { list: { type: 'boolean' }, 'build-only': { type: 'boolean' } },
});
const benchName = benchIndex >= 0 ? args[benchIndex + 1] : undefined;
if (benchIndex >= 0 && !BENCHMARKS.includes(benchName)) {
  fail(`--bench: expected one of ${BENCHMARKS.join(', ')} but received ${benchName === undefined ? 'nothing' : `'${benchName}'`}`);
}

function run(command, commandArgs) {
  const result = spawnSync(command, commandArgs, { cwd: root, stdio: 'inherit' });
  if (result.error) throw result.error;
  if (result.status !== 0) process.exit(result.status ?? 1);
}

const cuda = process.env.SAFL_CUDA ? [`-DSAFL_CUDA=${process.env.SAFL_CUDA}`] : [];
run('cmake', ['-S', root, '-B', build, '-DSAFL_BUILD_TESTS=ON', ...cuda]);
run('cmake', ['--build', build, '--parallel', `${os.availableParallelism()}`]);
if (args.includes('--build-only')) process.exit(0);

if (benchIndex >= 0) {
  const binary = path.join(build, `safl_bench_${benchName}`);
  if (!fs.existsSync(binary)) fail(`--bench: ${binary} was not built (the CUDA benchmarks need nvcc)`);
  run(binary, args.slice(benchIndex + 2));
} else {
  run(path.join(build, 'safl_tests'), args);
}
