#!/usr/bin/env node
// The `safl` command line. Commands arrive with the features they run: `info` now;
// `recognize`, `train`, `eval` and `synth` with the model and training.
import { parseArgs } from 'node:util';
import { info, setThreads } from './index.js';
import * as check from './validate.js';

const HELP = `Usage: safl <command> [options]

Commands:
  info            show the version, devices, SIMD path and threads of the native core

Options:
  -h, --help      show help for safl or a command
  -v, --version   print the version
`;

const INFO_HELP = `Usage: safl info [--threads N] [--json]

Shows what this installation of safl runs on: the devices it can use (cpu, and cuda when its
addon loads and a GPU answers), the SIMD path of the CPU kernels, and the size of the thread pool.

Options:
  --threads N     size of the native thread pool (default: hardware threads)
  --json          print one JSON object
  -h, --help      show this help
`;

function infoCommand(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: { threads: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(INFO_HELP);
    return 0;
  }
  if (values.threads !== undefined) setThreads(check.integerText(values.threads, '--threads', 1, 1024));
  const i = info();
  if (values.json) {
    process.stdout.write(`${JSON.stringify(i)}\n`);
    return 0;
  }
  process.stdout.write(
    [
      `safl ${i.version}`,
      `devices: ${i.devices.join(', ')}${i.cudaUnavailableReason ? ` (cuda: ${i.cudaUnavailableReason})` : ''}`,
      `simd: ${i.simd} (supported: ${i.simdSupported})`,
      `threads: ${i.threads} of ${i.hardwareThreads} hardware threads`,
      '',
    ].join('\n'),
  );
  return 0;
}

function main(argv: string[]): number {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help') {
    process.stdout.write(HELP);
    return command === undefined ? 1 : 0;
  }
  if (command === '-v' || command === '--version') {
    process.stdout.write(`${info().version}\n`);
    return 0;
  }
  if (command === 'info') return infoCommand(rest);
  process.stderr.write(`safl: unknown command '${command}'\n\n${HELP}`);
  return 1;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`safl: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
