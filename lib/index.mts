// ES-module entry: re-exports the CommonJS build, so `import { info } from 'safl'` and
// `require('safl')` share one copy of the native state.
export * from './index.js';
