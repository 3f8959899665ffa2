// `safl recognize <files | dirs | globs…>`: reads the word in each image with a model (the
// installed default or --model) and prints the results in input order as text, TSV, JSON or
// JSON lines; a file that cannot be read is reported and the run goes on.
import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { glob, isDynamicPattern } from 'tinyglobby';
import { Recognizer, defaultModelPath, type RecognitionResult } from '../recognizer.js';
import * as check from '../validate.js';
import { READING_OPTIONS, readingOptions, readingOptionsHelp } from './reading-options.js';

const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.jpe', '.jfif', '.webp', '.gif', '.tif', '.tiff', '.avif'];

export const RECOGNIZE_HELP = `Usage: safl recognize [options] <file | directory | glob>...
       <list of paths> | safl recognize [options] [-]

Reads the word in each image (a cropped word, any format sharp reads) and prints it.

Inputs:
  file            an image file
  directory       every image in it and its subdirectories, in path order
                  (${IMAGE_EXTENSIONS.join(' ')})
  glob            a pattern such as 'crops/**/*.png' (quote it so the shell leaves it to safl):
                  * ? [abc] {a,b} and ** for any depth; matches files of any extension
  -               read paths from stdin, one per line; this is also what happens when no input
                  is given and stdin is not a terminal

Options:
  --model FILE        model file (.safetensors; default: the model installed with safl)
${readingOptionsHelp(22)}  --format F          text, tsv, json or jsonl (default: text)
  -h, --help          show this help

Output (stdout), one entry per image in the order of the inputs:
  text    the word; "file<TAB>word" when there is more than one input
  tsv     a header line "file<TAB>text<TAB>confidence", then one line per image
  json    one array of {"file", "text", "confidence", "chars": [{"char", "p"}]}
  jsonl   one such object per line
In text and tsv, a tab, newline, carriage return or backslash inside a field is written as
\\t, \\n, \\r or \\\\. Confidences and probabilities are in [0, 1], rounded to 6 decimals.

A file that cannot be read or decoded is reported on stderr as "safl: <file>: <reason>" and the
run goes on; the exit status is 1 if any input failed, 0 otherwise. When stderr is a terminal, a
progress bar is drawn there.

Examples:
  safl recognize word.png
  safl recognize --format jsonl --model model.safetensors crops/ > words.jsonl
  find crops -name '*.jpg' | safl recognize --format tsv --batch-size 64
`;

// ---- inputs -------------------------------------------------------------------------------------

/** One input to read, or an input argument that named nothing readable (reported as a failure). */
type Entry = { file: string } | { file: string; error: string };

function isImagePath(file: string): boolean {
  return IMAGE_EXTENSIONS.includes(path.extname(file).toLowerCase());
}

async function imagesIn(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && isImagePath(e.name))
    .map((e) => path.join(e.parentPath, e.name))
    .sort();
}

async function readStdinLines(): Promise<string[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .split('\n')
    .map((line) => line.replace(/\r$/, ''))
    .filter((line) => line !== '');
}

/** Expands the arguments: files as given, directories to their images, globs to their matches. */
async function expandInputs(args: string[]): Promise<Entry[]> {
  const entries: Entry[] = [];
  for (const arg of args) {
    if (arg === '-') {
      for (const file of await readStdinLines()) entries.push({ file });
      continue;
    }
    const stats = await stat(arg).catch(() => undefined);
    if (stats?.isDirectory()) {
      const images = await imagesIn(arg);
      if (images.length === 0) entries.push({ file: arg, error: `${arg}: no images in this directory` });
      for (const file of images) entries.push({ file });
    } else if (stats === undefined && isDynamicPattern(arg)) {
      const matches = (await glob(arg, { onlyFiles: true, expandDirectories: false })).sort();
      if (matches.length === 0) entries.push({ file: arg, error: `${arg}: no files match` });
      for (const file of matches) entries.push({ file });
    } else {
      entries.push({ file: arg }); // a file, or a missing one: reading it reports why
    }
  }
  return entries;
}

// ---- output -------------------------------------------------------------------------------------

type Format = 'text' | 'tsv' | 'json' | 'jsonl';

function escapeField(text: string): string {
  return text.replace(/[\\\t\n\r]/g, (c) => ({ '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' })[c] as string);
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

function jsonRecord(file: string, r: RecognitionResult): string {
  return JSON.stringify({
    file,
    text: r.text,
    confidence: round6(r.confidence),
    chars: r.chars.map((c) => ({ char: c.char, p: round6(c.p) })),
  });
}

/** Writes results to stdout in the chosen format; begin() and end() frame the whole output. */
function outputFor(format: Format, manyInputs: boolean) {
  let count = 0;
  return {
    begin(): string {
      return format === 'tsv' ? 'file\ttext\tconfidence\n' : format === 'json' ? '[' : '';
    },
    record(file: string, r: RecognitionResult): string {
      count++;
      switch (format) {
        case 'text':
          return manyInputs ? `${escapeField(file)}\t${escapeField(r.text)}\n` : `${escapeField(r.text)}\n`;
        case 'tsv':
          return `${escapeField(file)}\t${escapeField(r.text)}\t${round6(r.confidence)}\n`;
        case 'json':
          return `${count > 1 ? ',' : ''}\n${jsonRecord(file, r)}`;
        case 'jsonl':
          return `${jsonRecord(file, r)}\n`;
      }
    },
    end(): string {
      return format === 'json' ? (count > 0 ? '\n]\n' : ']\n') : '';
    },
  };
}

/**
 * A progress bar on stderr, drawn only when stderr is a terminal. Lines written to the same terminal
 * (errors; results when stdout is a terminal too) clear it first; it comes back at the next draw.
 */
function progressBar(total: number) {
  const enabled = process.stderr.isTTY === true;
  const started = Date.now();
  let lastDraw = 0;
  let lastDone = -1;
  let shown = false;
  return {
    clear(stream: NodeJS.WriteStream): void {
      if (shown && (stream === process.stderr || stream.isTTY === true)) {
        process.stderr.write('\r\x1b[K');
        shown = false;
      }
    },
    draw(done: number, failed: number): void {
      if (!enabled || (shown && done === lastDone) || (done < total && Date.now() - lastDraw < 100)) return;
      lastDraw = Date.now();
      lastDone = done;
      const width = 30;
      const filled = total > 0 ? Math.round((width * done) / total) : width;
      const rate = done / Math.max((Date.now() - started) / 1000, 1e-3);
      process.stderr.write(
        `\r\x1b[K[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${total} images, ` +
          `${rate.toFixed(1)}/s${failed > 0 ? `, ${failed} failed` : ''}`,
      );
      shown = true;
    },
  };
}

// ---- the command --------------------------------------------------------------------------------

export async function recognizeCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      model: { type: 'string' },
      ...READING_OPTIONS,
      format: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(RECOGNIZE_HELP);
    return 0;
  }
  const reading = readingOptions(values);
  const format = values.format === undefined ? 'text' : check.oneOf(values.format, '--format', ['text', 'tsv', 'json', 'jsonl']);
  if (values.model === undefined && !existsSync(defaultModelPath())) {
    throw new Error(`no default model is installed (expected ${defaultModelPath()}); pass one with --model FILE`);
  }

  const args = positionals.length === 0 && !process.stdin.isTTY ? ['-'] : positionals;
  if (args.length === 0) {
    process.stderr.write(`safl recognize: no inputs: give files, directories or globs, or a list on stdin\n\n${RECOGNIZE_HELP}`);
    return 1;
  }
  const entries = await expandInputs(args);
  if (entries.length === 0) throw new Error('no inputs: stdin listed no paths');
  const recognizer = await Recognizer.load(values.model, reading);

  const output = outputFor(format, entries.length > 1);
  const progress = progressBar(entries.length);
  const outcomes: Array<{ result: RecognitionResult } | { error: string } | undefined> = new Array(entries.length);
  let failures = 0;
  let flushed = 0;
  process.stdout.write(output.begin());
  // Results are printed in input order: each outcome waits until those before it are out.
  const flush = () => {
    while (flushed < entries.length && outcomes[flushed] !== undefined) {
      const outcome = outcomes[flushed] as { result: RecognitionResult } | { error: string };
      if ('error' in outcome) {
        failures++;
        progress.clear(process.stderr);
        process.stderr.write(`safl: ${outcome.error}\n`);
      } else {
        progress.clear(process.stdout);
        process.stdout.write(output.record(entries[flushed].file, outcome.result));
      }
      outcomes[flushed] = undefined;
      flushed++;
    }
    progress.draw(flushed, failures);
  };
  // At most a few batches of inputs are in the recognizer at once, so a long list does not turn
  // into that many pending promises.
  const window = 4 * recognizer.batchSize;
  let next = 0;
  await new Promise<void>((finished) => {
    const launch = () => {
      while (next < entries.length && next - flushed < window) {
        const index = next++;
        const entry = entries[index];
        const work = 'error' in entry ? Promise.reject(new Error(entry.error)) : recognizer.recognize(entry.file);
        work
          .then(
            (result) => {
              outcomes[index] = { result };
            },
            (err: Error) => {
              outcomes[index] = { error: err.message };
            },
          )
          .then(() => {
            flush();
            launch();
          });
      }
      if (flushed === entries.length) finished();
    };
    launch();
  });
  progress.clear(process.stderr);
  process.stdout.write(output.end());
  await recognizer.close();
  return failures > 0 ? 1 : 0;
}
