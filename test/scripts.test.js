// The repository's scripts and benchmarks (scripts/, bench/) as a developer runs them: each takes
// --help, and an option it does not know stops it with its usage and exit status 2 before it does
// anything (scripts/script-args.js). Several of them rewrite committed files or rebuild the addon,
// so ignoring a mistyped option would cost work. The native test binary likewise refuses an unknown
// option and a name filter that selects no test (a typo would otherwise "pass" with zero tests).
'use strict';
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const SCRIPTS = [
  'bench/dictionary.js',
  'bench/memory.js',
  'bench/model.js',
  'bench/synth.js',
  'bench/tesseract.js',
  'scripts/build-native.js',
  'scripts/focal-vs-ce.js',
  'scripts/make-examples.js',
  'scripts/native-tests.js',
  'scripts/ship-model.js',
];

function run(file, args) {
  return spawnSync(process.execPath, [file, ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });
}

function examplesState() {
  const dir = path.join(root, 'examples');
  return fs.readdirSync(dir).sort().map((f) => [f, fs.statSync(path.join(dir, f)).mtimeMs]);
}

describe('repository scripts', function () {
  this.timeout(120_000);

  for (const script of SCRIPTS) {
    it(`${script} refuses an unknown option with its usage, and prints it for --help`, () => {
      const before = examplesState();
      const refused = run(script, ['--no-such-option']);
      assert.equal(refused.status, 2, refused.stderr);
      assert.equal(refused.stdout, '');
      assert.match(refused.stderr, new RegExp(`^${script.replace('.', '\\.')}: Unknown option '--no-such-option'\\n(usage|  )`));
      assert.deepEqual(examplesState(), before);

      const help = run(script, ['--help']);
      assert.equal(help.status, 0, help.stderr);
      assert.match(help.stdout, /usage: /);
    });
  }

  it('scripts check option values with the package validation', () => {
    const cases = [
      ['bench/model.js', ['--configs', 'tiny,huge'], "Expected 'tiny' or 'base' for --configs but received 'huge'"],
      ['bench/model.js', ['--repeats', '0'], 'Expected an integer between 1 and 20 for --repeats but received 0'],
      ['bench/tesseract.js', ['--format', 'csv', 'x'], "Expected 'text' or 'json' for --format but received 'csv'"],
      ['bench/dictionary.js', ['--weights', '0,-1', 'x'], 'Expected a number between 0 and 100 for --weights but received -1'],
      ['bench/dictionary.js', ['--beam-widths', '1', 'x'], 'Expected an integer between 2 and 64 for --beam-widths but received 1'],
      ['scripts/native-tests.js', ['--bench', 'gemmm'], "--bench: expected one of"],
      ['scripts/ship-model.js', ['--run', 'x'], '--command is required'],
    ];
    for (const [script, args, message] of cases) {
      const result = run(script, args);
      assert.equal(result.status, 2, `${script} ${args.join(' ')}: ${result.stderr}`);
      assert.ok(result.stderr.startsWith(`${script}: ${message}`), result.stderr);
    }
  });

  it('the native test binary refuses an unknown option and a filter that selects no test', () => {
    const binary = path.join(root, 'build', 'safl_tests');
    const option = spawnSync(binary, ['--no-such-option'], { encoding: 'utf8' });
    assert.equal(option.status, 2, option.stdout);
    assert.match(option.stderr, /^safl_tests: unknown option --no-such-option\n/);
    const filter = spawnSync(binary, ['no test is called this'], { encoding: 'utf8' });
    assert.equal(filter.status, 2, filter.stdout);
    assert.match(filter.stderr, /^safl_tests: no test name contains 'no test is called this'/);
  });
});
