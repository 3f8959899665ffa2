// ES-module users: `import { info } from 'safl'` works and shares the CommonJS build's state.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { info, setThreads } from 'safl';

const require = createRequire(import.meta.url);

describe('ES module entry', () => {
  it('exports the same functions as the CommonJS entry', () => {
    assert.equal(typeof info, 'function');
    assert.equal(setThreads, require('safl').setThreads);
    assert.ok(info().devices.includes('cpu'));
  });
});
