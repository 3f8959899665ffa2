#!/usr/bin/env node
// prebuildify spawns "node-gyp rebuild …" to produce build/Release/<name>.node; this stand-in
// (passed as --node-gyp) ignores node-gyp's arguments and runs the cmake-js build instead, so the
// prebuilt binaries are the same cmake build users get from source.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const result = spawnSync(process.execPath, [path.join(__dirname, 'build-native.js'), '--CDSAFL_CUDA=OFF'], {
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
