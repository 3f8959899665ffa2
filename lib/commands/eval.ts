// `safl eval <model> <dataset>…`: word accuracy of a model on labelled datasets, by the standard
// protocol (lib/data/metrics.ts), one row per dataset and their average weighted by images; as a
// table or one JSON object; optionally the list of misrecognised samples.
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { openSource } from '../data/index.js';
import { DatasetScore, accuracy, weightedAverage, type Score } from '../data/metrics.js';
import type { DataSource } from '../data/source.js';
import { Recognizer } from '../recognizer.js';
import * as check from '../validate.js';
import { READING_OPTIONS, readingOptions, readingOptionsHelp } from './reading-options.js';

export const EVAL_HELP = `Usage: safl eval [options] <model> <dataset>...

Measures a model's word accuracy on labelled datasets and prints one row per dataset and the
average over all their images.

Datasets:
  folder            a directory holding labels.tsv: "relative/path<TAB>label" per line, UTF-8
  LMDB              a directory holding data.mdb in the STR layout (num-samples, image-%09d,
                    label-%09d), as MJSynth, SynthText and the usual benchmarks ship; or the file

Options:
${readingOptionsHelp(20)}  --limit N         only the first N samples of each dataset
  --format F        text or json (default: text)
  --errors          list the misrecognised samples after the table (in the JSON object as
                    "errors" with --format json)
  --errors=FILE     write that list to FILE instead: TSV (dataset, origin, label, prediction,
                    error) with a header line, or a JSON array with --format json. Only the
                    --errors=FILE form takes a file: a word after --errors is a dataset
  -h, --help        show this help

Scores:
  accuracy          the standard protocol: prediction and label lowercased, everything but a-z
                    and 0-9 dropped, exact match
  case-sensitive    A-Z, a-z and 0-9 kept with their case, exact match; only for datasets whose
                    labels hold both upper- and lower-case letters ("-" otherwise: a set labelled
                    in one case says nothing about case)
  average           total correct over total images (each dataset weighted by its images); its
                    case-sensitive figure covers the datasets that have one

An image that cannot be read or decoded counts as wrong and is listed with --errors; the table
says how many there were. A dataset that cannot be opened is reported on stderr and left out of
the table while the others are measured; the exit status is then 1, otherwise 0.
`;

/** One misrecognised (or unreadable) sample. */
interface EvalError {
  dataset: string;
  origin: string;
  label: string;
  /** What the model read; null when the image could not be read. */
  prediction: string | null;
  /** Why the image could not be read. */
  error?: string;
}

interface DatasetResult {
  /** The name shown: the dataset's name, or what was typed when two names are the same. */
  name: string;
  path: string;
  score: DatasetScore;
  unreadable: number;
  errors: EvalError[];
}

/** A progress line on stderr when it is a terminal. */
function progressLine() {
  const enabled = process.stderr.isTTY === true;
  let last = 0;
  let shown = false;
  return {
    draw(name: string, done: number, total: number): void {
      if (!enabled || (done < total && Date.now() - last < 100)) return;
      last = Date.now();
      process.stderr.write(`\r\x1b[K${name}: ${done}/${total}`);
      shown = true;
    },
    clear(): void {
      if (shown) process.stderr.write('\r\x1b[K');
      shown = false;
    },
  };
}

/** Reads every sample (the first `limit`) through the recognizer, a few batches in flight at a time. */
async function evaluate(
  recognizer: Recognizer,
  source: DataSource,
  name: string,
  limit: number,
  onProgress: (done: number, total: number) => void,
): Promise<Omit<DatasetResult, 'name' | 'path'>> {
  const total = Math.min(source.size, limit);
  const score = new DatasetScore();
  const outcomes: Array<{ index: number; origin: string; label: string; prediction: string | null; error?: string }> = [];
  const window = 4 * recognizer.batchSize;
  let next = 0;
  let done = 0;
  await new Promise<void>((finished) => {
    const launch = () => {
      while (next < total && next - done < window) {
        const index = next++;
        let origin = `${name}[${index}]`;
        let label = '';
        source
          .get(index)
          .then((sample) => {
            origin = sample.origin;
            label = sample.label;
            return recognizer.recognize(sample.image);
          })
          .then(
            (result) => outcomes.push({ index, origin, label, prediction: result.text }),
            (err: Error) => {
              // Encoded images are called "input" by the recognizer: name the sample instead.
              const message = err.message.startsWith('input: ') ? `${origin}: ${err.message.slice(7)}` : err.message;
              outcomes.push({ index, origin, label, prediction: null, error: message });
            },
          )
          .then(() => {
            done++;
            onProgress(done, total);
            if (done === total) finished();
            else launch();
          });
      }
      if (total === 0) finished();
    };
    launch();
  });
  outcomes.sort((a, b) => a.index - b.index);
  const errors: EvalError[] = [];
  let unreadable = 0;
  for (const o of outcomes) {
    const { correct } = score.add(o.label, o.prediction);
    if (o.prediction === null) unreadable++;
    if (!correct) {
      const entry: EvalError = { dataset: name, origin: o.origin, label: o.label, prediction: o.prediction };
      if (o.error !== undefined) entry.error = o.error;
      errors.push(entry);
    }
  }
  return { score, unreadable, errors };
}

const percent = (score: Score | null) => (score === null ? '-' : `${(100 * accuracy(score)).toFixed(2)}%`);

function escapeField(text: string): string {
  return text.replace(/[\\\t\n\r]/g, (c) => ({ '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' })[c] as string);
}

function errorsTsv(errors: EvalError[]): string {
  const lines = ['dataset\torigin\tlabel\tprediction\terror'];
  for (const e of errors) {
    lines.push([e.dataset, e.origin, e.label, e.prediction ?? '', e.error ?? ''].map(escapeField).join('\t'));
  }
  return `${lines.join('\n')}\n`;
}

function table(results: DatasetResult[]): string {
  const rows: string[][] = [['dataset', 'images', 'accuracy', 'case-sensitive']];
  for (const r of results) rows.push([r.name, String(r.score.images), percent(r.score.standard), percent(r.score.caseSensitive)]);
  if (results.length > 1) {
    const standard = weightedAverage(results.map((r) => r.score.standard)) as Score;
    const caseSensitive = weightedAverage(results.map((r) => r.score.caseSensitive).filter((s): s is Score => s !== null));
    rows.push(['average', String(standard.images), percent(standard), percent(caseSensitive)]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const lines = rows.map((row) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  '));
  const notes: string[] = [];
  for (const r of results) {
    if (r.unreadable > 0) {
      notes.push(`${r.name}: ${r.unreadable} image${r.unreadable === 1 ? '' : 's'} could not be read, counted as wrong (listed with --errors)`);
    }
  }
  return `${[...lines, ...notes].join('\n')}\n`;
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

function scoreJson(score: Score | null) {
  return score === null ? null : { images: score.images, correct: score.correct, accuracy: round6(accuracy(score)) };
}

/** Splits `--errors` / `--errors=FILE` out of the arguments (parseArgs has no optional values). */
function takeErrorsFlag(argv: string[]): { args: string[]; errors: false | true | string } {
  let errors: false | true | string = false;
  const args: string[] = [];
  for (const [i, arg] of argv.entries()) {
    if (arg === '--') {
      args.push(...argv.slice(i));
      break;
    }
    if (arg === '--errors') errors = true;
    else if (arg.startsWith('--errors=')) {
      errors = arg.slice('--errors='.length);
      if (errors === '') throw new TypeError("Expected a file name for --errors= but received ''");
    } else args.push(arg);
  }
  return { args, errors };
}

/**
 * Runs `safl eval`; returns the exit status: 1 when a dataset could not be opened or read to the
 * end, 0 otherwise. Usage errors throw (the CLI prints "safl: <message>").
 */
export async function evalCommand(argv: string[]): Promise<number> {
  const { args, errors: errorsFlag } = takeErrorsFlag(argv);
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      ...READING_OPTIONS,
      limit: { type: 'string' },
      format: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(EVAL_HELP);
    return 0;
  }
  const reading = readingOptions(values);
  const limit = values.limit === undefined ? Infinity : check.integerText(values.limit, '--limit', 1, Number.MAX_SAFE_INTEGER);
  const format = values.format === undefined ? 'text' : check.oneOf(values.format, '--format', ['text', 'json']);
  if (positionals.length < 2) {
    process.stderr.write(`safl eval: ${positionals.length === 0 ? 'no model and no datasets' : 'no datasets'}: give a model file and at least one dataset\n\n${EVAL_HELP}`);
    return 1;
  }
  const [model, ...specs] = positionals;
  const recognizer = await Recognizer.load(model, reading);
  const results: DatasetResult[] = [];
  const failed: Array<{ path: string; error: string }> = [];
  const progress = progressLine();
  try {
    for (const spec of specs) {
      let source: DataSource | undefined;
      try {
        source = await openSource(spec);
        if (source.size === Infinity && limit === Infinity) throw new Error(`${spec}: an endless dataset needs --limit N`);
        const name = source.name;
        const result = await evaluate(recognizer, source, name, limit, (done, total) => progress.draw(name, done, total));
        progress.clear();
        results.push({ name, path: spec, ...result });
      } catch (err) {
        progress.clear();
        failed.push({ path: spec, error: (err as Error).message });
        process.stderr.write(`safl eval: ${(err as Error).message}\n`);
      } finally {
        await source?.close?.();
      }
    }
  } finally {
    await recognizer.close();
  }
  // Two datasets of one name (two "test" folders) are told apart by what was typed.
  for (const r of results) if (results.filter((o) => o.name === r.name).length > 1) r.name = r.path;
  for (const r of results) for (const e of r.errors) e.dataset = r.name;

  const allErrors = results.flatMap((r) => r.errors);
  if (format === 'json') {
    const standard = weightedAverage(results.map((r) => r.score.standard));
    const caseSensitive = weightedAverage(results.map((r) => r.score.caseSensitive).filter((s): s is Score => s !== null));
    const report: Record<string, unknown> = {
      model,
      protocol: {
        accuracy: 'lowercase, a-z and 0-9 only, exact match',
        caseSensitive: 'A-Z, a-z and 0-9 only, case kept, exact match; for datasets whose labels hold both cases',
        average: 'weighted by images',
      },
      datasets: results.map((r) => ({
        name: r.name,
        path: r.path,
        images: r.score.images,
        correct: r.score.correct,
        accuracy: round6(accuracy(r.score.standard)),
        caseSensitive: scoreJson(r.score.caseSensitive),
        unreadable: r.unreadable,
      })),
      average: standard === null ? null : { ...scoreJson(standard), caseSensitive: scoreJson(caseSensitive) },
      failed,
    };
    if (errorsFlag === true) report.errors = allErrors;
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    if (results.length > 0) process.stdout.write(table(results));
    if (errorsFlag === true) process.stdout.write(`\n${errorsTsv(allErrors)}`);
  }
  if (typeof errorsFlag === 'string') {
    await writeFile(errorsFlag, format === 'json' ? `${JSON.stringify(allErrors, null, 2)}\n` : errorsTsv(allErrors));
  }
  return failed.length > 0 ? 1 : 0;
}
