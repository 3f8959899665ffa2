// Command-line handling shared by the repository's scripts and benchmarks (not part of the package):
// node:util's parseArgs in strict mode, plus the script's usage text. `-h`/`--help` prints the usage
// and exits 0. An unknown option, an option without its value, an argument the script does not take,
// or a value its checks refuse prints "<script>: <what was wrong>" and the usage, and exits 2: no
// stack trace, and no run that goes ahead ignoring part of what it was asked (a remade example set
// or a rebuilt addon nobody asked for).
'use strict';
const path = require('node:path');
const { parseArgs } = require('node:util');

const root = path.join(__dirname, '..');

/**
 * Parses process.argv for the calling script. `usage` is its usage text; `options` and
 * `allowPositionals` are parseArgs's. Returns { values, positionals, fail, option }: fail(message)
 * reports a usage error; option(read) returns read() or reports the error it throws (the package's
 * validation messages: "--rounds: expected an integer from 1 to 1000000 but received 'x'").
 */
function scriptArgs(usage, { options = {}, allowPositionals = false, args = process.argv.slice(2) } = {}) {
  const script = path.relative(root, require.main ? require.main.filename : process.argv[1]);
  const fail = (message) => {
    console.error(`${script}: ${message}\n${usage}`);
    process.exit(2);
  };
  const beforeSeparator = args.includes('--') ? args.slice(0, args.indexOf('--')) : args;
  if (beforeSeparator.includes('-h') || beforeSeparator.includes('--help')) {
    console.log(usage);
    process.exit(0);
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals, strict: true });
  } catch (err) {
    fail(err.message.split('. To specify a positional argument')[0]); // parseArgs's hint about '--' is noise here
  }
  const option = (read) => {
    try {
      return read();
    } catch (err) {
      return fail(err.message);
    }
  };
  return { values: parsed.values, positionals: parsed.positionals, fail, option };
}

module.exports = { scriptArgs };
