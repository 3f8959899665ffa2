#!/usr/bin/env node
// The `safl` command line: `info` describes the native core here; `recognize`, `eval`, `synth`
// and `train` live in lib/commands/, one file each.
import { parseArgs } from 'node:util';
import { evalCommand } from './commands/eval.js';
import { recognizeCommand } from './commands/recognize.js';
import { synthCommand } from './commands/synth.js';
import { trainCommand } from './commands/train.js';
import { info, setThreads } from './index.js';
import * as check from './validate.js';

const HELP = `Usage: safl <command> [options]

Commands:
  info            show the version, devices, SIMD path and threads of the native core
  recognize       read the text in word images (files, directories, globs or a list on stdin)
  eval            measure a model's word accuracy on labelled datasets
  synth           render synthetic word images into a folder or an LMDB dataset
  train           train a recogniser (tiny, base or your own config) on folders, LMDB or synth

Options:
  -h, --help      show help for safl or a command
  -v, --version   print the version

Run 'safl <command> --help' for a command's options.
`;

const INFO_HELP = `Usage: safl info [--threads N] [--json]

Shows what this installation of safl runs on: the devices it can use (cpu, and cuda when its
addon loads and a GPU answers), the SIMD path of the CPU kernels, whether --precision bfloat16
multiplies in bfloat16 here (and on what), and the size of the thread pool.

Options:
  --threads N     size of the native thread pool (default: hardware threads)
  --json          print one JSON object
  -h, --help      show this help
`;

// `safl info`'s line on bfloat16 products, by info().bfloat16Unit.
const BFLOAT16_UNITS = {
  amx: 'yes, on the AMX tile unit',
  'avx512-bf16': 'yes, with the AVX512-BF16 instructions',
  none: 'no, they stay float32 on this CPU',
} as const;

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
      `bfloat16 products (--precision bfloat16): ${BFLOAT16_UNITS[i.bfloat16Unit ?? 'none']}`,
      `threads: ${i.threads} of ${i.hardwareThreads} hardware threads`,
      '',
    ].join('\n'),
  );
  return 0;
}

async function main(argv: string[]): Promise<number> {
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
  if (command === 'recognize') return recognizeCommand(rest);
  if (command === 'eval') return evalCommand(rest);
  if (command === 'synth') return synthCommand(rest);
  if (command === 'train') return trainCommand(rest);
  process.stderr.write(`safl: unknown command '${command}'\n\n${HELP}`);
  return 1;
}

// A reader that stops early (`safl recognize … | head`) closes the pipe: stop quietly.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(process.exitCode ?? 0);
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`safl: ${err.message}\n`);
    process.exitCode = 1;
  },
);
