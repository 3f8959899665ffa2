// The public API and CLI as a user calls them (CommonJS), with its validation messages.
'use strict';
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const path = require('node:path');
const safl = require('..');

const cli = path.join(__dirname, '..', 'dist', 'cli.js');

describe('public API', () => {
  it('info() describes devices, SIMD path and threads', () => {
    const info = safl.info();
    assert.equal(info.version, require('../package.json').version);
    assert.ok(info.devices.includes('cpu'));
    assert.equal(info.devices.includes('cuda'), info.cudaUnavailableReason === '');
    assert.ok(['generic', 'avx2', 'avx512'].includes(info.simd));
    assert.equal(typeof info.bfloat16Matmul, 'boolean');
    assert.ok(info.bfloat16Matmul ? ['amx', 'avx512-bf16'].includes(info.bfloat16Unit) : info.bfloat16Unit === null);
    assert.ok(info.threads >= 1 && info.hardwareThreads >= 1);
  });

  it('setThreads validates before crossing into C++', () => {
    assert.throws(() => safl.setThreads(0), {
      name: 'RangeError',
      message: 'Expected an integer between 1 and 1024 for threads but received 0',
    });
    assert.throws(() => safl.setThreads('4'), {
      name: 'TypeError',
      message: "Expected an integer between 1 and 1024 for threads but received '4'",
    });
    const before = safl.info().threads;
    safl.setThreads(1);
    assert.equal(safl.info().threads, 1);
    safl.setThreads(before);
  });
});

describe('safl CLI', () => {
  it('info --json prints the same as info()', () => {
    const out = JSON.parse(execFileSync(process.execPath, [cli, 'info', '--json'], { encoding: 'utf8' }));
    assert.deepEqual(out.devices, safl.info().devices);
    assert.equal(out.version, safl.info().version);
    assert.equal(out.bfloat16Matmul, safl.info().bfloat16Matmul);
    const text = execFileSync(process.execPath, [cli, 'info'], { encoding: 'utf8' });
    const unit = { amx: 'yes, on the AMX tile unit', 'avx512-bf16': 'yes, with the AVX512-BF16 instructions' };
    assert.ok(text.split('\n').includes(
      `bfloat16 products (--precision bfloat16): ${unit[safl.info().bfloat16Unit] ?? 'no, they stay float32 on this CPU'}`));
  });

  it('--help lists the commands; an unknown command fails with a message', () => {
    const help = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
    assert.equal(help.status, 0);
    assert.match(help.stdout, /Commands:\n\s+info/);
    const infoHelp = spawnSync(process.execPath, [cli, 'info', '--help'], { encoding: 'utf8' });
    assert.equal(infoHelp.status, 0);
    assert.match(infoHelp.stdout, /Usage: safl info/);
    const bad = spawnSync(process.execPath, [cli, 'frobnicate'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /safl: unknown command 'frobnicate'/);
  });

  it('reports a bad option value with the validation message', () => {
    const bad = spawnSync(process.execPath, [cli, 'info', '--threads', 'many'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.equal(bad.stderr, "safl: Expected an integer between 1 and 1024 for --threads but received 'many'\n");
  });
});
