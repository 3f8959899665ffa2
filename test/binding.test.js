// The native binding as the TypeScript layer calls it: it loads, reports its backends and SIMD
// path, runs work off the event loop, and turns C++ errors into JS errors of the right class with
// the message the core wrote.
'use strict';
const assert = require('node:assert/strict');
const native = require('../dist/native.js');

function gemmReference(a, b, m, n, k) {
  const c = new Float32Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += a[i * k + p] * b[p * n + j];
      c[i * n + j] = acc;
    }
  return c;
}

function random(n, seed) {
  const out = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    out[i] = s / 1073741824 - 1;
  }
  return out;
}

describe('native binding', () => {
  const addon = native.loadCpuAddon();

  it('loads and reports its backends, SIMD path and threads', () => {
    const info = addon.info();
    assert.deepEqual(info.backends, ['cpu']);
    assert.equal(info.cuda.built, false);
    assert.equal(info.cuda.available, false);
    assert.ok(['generic', 'avx2', 'avx512'].includes(info.simd));
    assert.ok(['generic', 'avx2', 'avx512'].includes(info.simdSupported));
    assert.equal(typeof info.bfloat16Matmul, 'boolean');
    assert.ok(Number.isInteger(info.threads) && info.threads >= 1);
    assert.ok(Number.isInteger(info.hardwareThreads) && info.hardwareThreads >= 1);
  });

  it('resizes the thread pool', () => {
    const before = addon.info().threads;
    addon.setThreads(3);
    assert.equal(addon.info().threads, 3);
    addon.setThreads(before);
    assert.equal(addon.info().threads, before);
  });

  it('computes a GEMM off the event loop, matching a JS reference, on every SIMD path', async () => {
    const supported = addon.info().simdSupported;
    const levels = ['generic', 'avx2', 'avx512'].slice(0, ['generic', 'avx2', 'avx512'].indexOf(supported) + 1);
    const [m, n, k] = [37, 29, 41];
    const a = random(m * k, 1);
    const b = random(k * n, 2);
    const expected = gemmReference(a, b, m, n, k);
    for (const level of levels) {
      addon.setSimd(level);
      const c = await addon.gemm(a, b, m, n, k, false, false);
      assert.equal(c.length, m * n);
      for (let i = 0; i < c.length; i++) assert.ok(Math.abs(c[i] - expected[i]) < 1e-4, `${level} [${i}]`);
    }
    addon.setSimd(supported);
  });

  it('keeps the event loop free while the core works', async () => {
    const size = 1024;
    const a = random(size * size, 3);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const pending = [addon.gemm(a, a, size, size, size, false, false), addon.gemm(a, a, size, size, size, false, true)];
    await new Promise((resolve) => setImmediate(resolve));
    const ticksBeforeDone = ticks;
    await Promise.all(pending);
    clearInterval(timer);
    // The timer ran while both products were in flight (they run on the pool, not this thread).
    assert.ok(ticks > ticksBeforeDone, `timer ticks: ${ticksBeforeDone} → ${ticks}`);
  });

  it('gives correct results to many concurrent calls', async () => {
    const jobs = Array.from({ length: 16 }, (_, i) => {
      const [m, n, k] = [5 + i, 7 + (i % 5), 3 + 2 * i];
      const a = random(m * k, 10 + i);
      const b = random(k * n, 40 + i);
      return { expected: gemmReference(a, b, m, n, k), promise: addon.gemm(a, b, m, n, k, false, false) };
    });
    for (const { expected, promise } of jobs) {
      const c = await promise;
      for (let i = 0; i < c.length; i++) assert.ok(Math.abs(c[i] - expected[i]) < 1e-4);
    }
  });

  describe('errors', () => {
    it('throws TypeError for arguments of the wrong type', () => {
      assert.throws(() => addon.setThreads('2'), {
        name: 'TypeError',
        message: "Expected an integer between 1 and 1024 for threads but received '2'",
      });
      assert.throws(() => addon.setThreads(1.5), {
        name: 'TypeError',
        message: 'Expected an integer between 1 and 1024 for threads but received 1.5',
      });
      assert.throws(() => addon.gemm([1, 2], new Float32Array(2), 1, 1, 2, false, false), {
        name: 'TypeError',
        message: 'Expected a Float32Array for a but received an array',
      });
      assert.throws(() => addon.gemm(new Float32Array(2), new Float32Array(2), 1, 1, 2, 'no', false), {
        name: 'TypeError',
        message: "Expected a boolean for transA but received 'no'",
      });
    });

    it('throws RangeError for values out of range', () => {
      assert.throws(() => addon.setThreads(0), {
        name: 'RangeError',
        message: 'Expected an integer between 1 and 1024 for threads but received 0',
      });
      assert.throws(() => addon.setSimd('sse'), {
        name: 'RangeError',
        message: "Expected 'generic', 'avx2' or 'avx512' for simd but received 'sse'",
      });
      assert.throws(() => addon.gemm(new Float32Array(5), new Float32Array(2), 2, 1, 3, false, false), {
        name: 'RangeError',
        message: 'Expected a Float32Array of length 6 for a but received Float32Array of length 5',
      });
    });
  });
});
