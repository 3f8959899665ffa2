#!/usr/bin/env node
// Builds the native addons with cmake-js (offline: node-api-headers supplies the headers).
//   node scripts/build-native.js            build/Release/safl.node (+ safl_cuda.node when nvcc is found)
//   node scripts/build-native.js --if-needed  skip when a prebuilt or built addon already loads (npm install)
// Extra --CD<VAR>=<value> arguments are passed to CMake (e.g. --CDSAFL_CUDA=OFF); the SAFL_CUDA
// environment variable (AUTO, ON, OFF) does the same for the CUDA backend, e.g. during npm install.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { scriptArgs } = require('./script-args.js');

const root = path.join(__dirname, '..');
const args = process.argv.slice(2);
const cmakeDefinitions = args.filter((a) => a.startsWith('--CD'));
const { values } = scriptArgs('usage: node scripts/build-native.js [--if-needed] [--CD<VAR>=<value>…]', {
  args: args.filter((a) => !a.startsWith('--CD')),
  options: { 'if-needed': { type: 'boolean' } },
});

if (values['if-needed']) {
  try {
    require('node-gyp-build')(root);
    process.exit(0);
  } catch {
    // no prebuilt binary for this platform: build from source below
  }
}

const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const cmakeArgs = [
  cmakeJs,
  'compile',
  '--directory', root,
  '--CDSAFL_BUILD_TESTS=OFF',
  ...(process.env.SAFL_CUDA ? [`--CDSAFL_CUDA=${process.env.SAFL_CUDA}`] : []),
  ...cmakeDefinitions,
];
const parallel = `${require('node:os').availableParallelism()}`;
const result = spawnSync(process.execPath, cmakeArgs, {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: process.env.CMAKE_BUILD_PARALLEL_LEVEL || parallel },
});
if (result.error) throw result.error;
process.exit(result.status ?? 1);
