// `safl train`: trains a model with lib/trainer.ts from the command line: the options, the data
// sources (folders, LMDB datasets, the synthetic generator), a progress bar on a terminal (plain
// lines otherwise), and Ctrl-C, which writes a checkpoint before exiting with status 130.
//
// Note [what --resume keeps]: a resumed run takes the model, charset and every training option
// from its checkpoint, so that it continues the same curve. Only what does not change the curve may
// be given again (iterations, where and how often to write, validation, device, threads, and the
// precision of the products, which only changes their rounding); --config,
// when given, must match the checkpoint's. The data specs are stored in the checkpoint (as notes)
// and reused when --data is not given.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { openSource, parseSourceSpec } from '../data/index.js';
import type { DataSource } from '../data/source.js';
import { DEVICES, PRECISIONS } from '../native.js';
import { Trainer, type StepReport, type TrainerCreateOptions, type ValidationReport } from '../trainer.js';
import * as check from '../validate.js';

export const TRAIN_HELP = `Usage: safl train [options] --data SOURCE[:RATIO] [--data …]
       safl train --resume CHECKPOINT [options]

Trains a SAFL model. Checkpoints (the whole training state), metrics.jsonl and, at the end, the
model (model.safetensors, readable by 'safl recognize --model') are written to --checkpoint-dir.

Data:
  --data SOURCE[:RATIO]   a training source; repeat to mix several. SOURCE is a dataset folder
                          (with labels.tsv: 'relative/path<TAB>label' lines), an LMDB dataset (a
                          folder with data.mdb, or the file), or 'synth' (the built-in synthetic
                          generator). RATIO is its relative share of the samples (default 1).
  --val SOURCE            a held-out source to validate on (word accuracy, standard protocol)
  --val-samples N         most samples per validation (default: all; 1000 for synth)
  --synth-words FILE      'synth' draws its words from this list (UTF-8, one word per line)
                          instead of English words: for another alphabet or your own vocabulary
  --synth-font PATH       'synth' also draws with this font file (.ttf, .otf) or the fonts in
                          this directory; may be given more than once
  --unknown-chars P       labels with characters outside the charset: skip (default) or unk
  --long-labels P         labels longer than the model's max_len: skip (default) or error

Model:
  --config C              tiny (default), base, or a JSON file holding a whole configuration
  --charset CHARS         the characters the model reads, as one string
                          (default: the 94 printable ASCII characters without space)
  --init MODEL            fine-tune a model file (the shipped one: models/default.safetensors in
                          the package): start from its weights, configuration and charset, with
                          a new optimizer and schedule; --config and --charset, if given, must
                          match it

Training:
  --iterations N          steps in all (default: 100000)
  --batch-size N          images per step, 2-4096 (default: 64)
  --lr X                  peak learning rate (default: 0.001)
  --schedule S            inverse-sqrt (default, the paper's), cosine or constant, each after a
                          linear warm-up
  --warmup N              warm-up steps (default: 10% of --iterations, at most 1000)
  --loss L                focal (default) or ce (cross-entropy)
  --gamma X               focal loss gamma, 0-100 (default: 2)
  --alpha X               focal loss alpha, > 0 (default: 1)
  --optimizer O           adam (default; beta1 0.9, beta2 0.98, eps 1e-9) or adamw
  --weight-decay X        0-1 (default: 0)
  --clip X                clip the global gradient norm to X; 0 turns it off (default: 5)
  --seed N                seed of the initialisation, the data order and dropout (default: 0)
  --precision P           float32 (default) or bfloat16: mixed precision, the matrix products'
                          operands rounded to bfloat16 on CPUs with AMX or AVX512-BF16
                          (elsewhere no change); weights, optimizer, batch norm and loss stay
                          float32. Faster steps, but so far less learnt per step (README,
                          Training)

Run:
  --checkpoint-dir DIR    where checkpoint.safetensors, model.safetensors and metrics.jsonl go
                          (default: checkpoints)
  --checkpoint-every N    steps between checkpoints (default: 1000); one is also written at the
                          end and on Ctrl-C
  --validate-every N      steps between validations (default: 1000)
  --log-every N           steps per metrics.jsonl line, and per printed line when stderr is not a
                          terminal (default: 10)
  --resume CHECKPOINT     continue the run of a checkpoint file (or a directory holding
                          checkpoint.safetensors) where it stopped, with its model, charset and
                          training options; --iterations, --checkpoint-dir, --checkpoint-every,
                          --validate-every, --val-samples, --log-every, --data, --val,
                          --synth-words, --synth-font, --precision, --device and --threads may
                          be given again; --config, if given, must match
  --device D              auto, cpu or cuda (default: auto)
  --threads N             size of the native thread pool, 1-1024 (default: hardware threads)
  -h, --help              show this help

Progress goes to stderr: a bar with loss, token accuracy, images/s and the time left on a
terminal, else one line every --log-every steps. A step whose loss is not finite is skipped with a
warning; five in a row stop the run. Ctrl-C stops after the current step and writes a checkpoint
(exit status 130); a second Ctrl-C quits at once.

Examples:
  safl train --data synth --iterations 50000 --checkpoint-dir runs/synth
  safl train --data data/mj:2 --data data/st:1 --val data/ic13 --config base --batch-size 128
  safl train --resume runs/synth --iterations 80000
  safl train --init model.safetensors --data data/signs --lr 0.0002 --schedule cosine --iterations 5000
`;

/** Flags that a resumed run takes from its checkpoint (Note [what --resume keeps]). */
const FIXED_ON_RESUME = [
  'charset', 'batch-size', 'lr', 'schedule', 'warmup', 'loss', 'gamma', 'alpha', 'optimizer', 'weight-decay', 'clip',
  'seed', 'unknown-chars', 'long-labels',
] as const;

interface DataSpec {
  spec: string;
  ratio: number;
}

/** What 'synth' draws besides its defaults (--synth-words, --synth-font), kept in the run's notes. */
interface SynthSpec {
  words?: string;
  fonts?: string[];
}

/**
 * Opens a data spec; the synthetic generator draws words of the model's charset and length, with
 * the run's word list and fonts.
 */
function openData(spec: string, trainer: Trainer, seed: number, synth: SynthSpec): Promise<DataSource> {
  return openSource(spec, { synth: { ...synth, seed, charset: [...trainer.charset], maxLength: Math.min(trainer.config.max_len, 25) } });
}

/** --synth-words and --synth-font as given, or undefined when neither is. */
function synthFlags(words: string | undefined, fonts: string[] | undefined): SynthSpec | undefined {
  if (words === undefined && fonts === undefined) return undefined;
  return { ...(words === undefined ? {} : { words: check.filePath(words, '--synth-words') }), ...(fonts === undefined ? {} : { fonts }) };
}

async function readConfig(value: string): Promise<TrainerCreateOptions['config']> {
  if (value === 'tiny' || value === 'base') return value;
  let text: string;
  try {
    text = await readFile(value, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`--config: expected tiny, base or a JSON file, but ${value}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (err) {
    throw new Error(`${value}: not JSON (${(err as Error).message})`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new Error(`${value}: expected a JSON object holding a configuration`);
  return config as TrainerCreateOptions['config'];
}

function number(text: string, option: string): number {
  const x = text.trim() === '' ? NaN : Number(text);
  if (Number.isNaN(x)) throw new TypeError(`Expected a number for ${option} but received '${text}'`);
  return x;
}

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(s % 60).padStart(2, '0')}s`;
}

function percent(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

/**
 * Progress on stderr: a bar redrawn at most ten times a second on a terminal, else a plain line
 * every `every` steps. Loss and accuracy are averaged over the last `every` steps, and the time left
 * follows their pace (so a pause, or a busier machine, is forgotten after `every` steps).
 */
function progressReporter(every: number, startStep: number) {
  const tty = process.stderr.isTTY === true;
  const started = Date.now();
  let lastDraw = 0;
  let shown = false;
  const recent: Array<{ loss: number; accuracy: number }> = [];
  const times: number[] = []; // when each of the last every + 1 steps ended
  const clear = () => {
    if (shown) process.stderr.write('\r\x1b[K');
    shown = false;
  };
  return {
    clear,
    step(r: StepReport): void {
      if (!r.skipped) recent.push({ loss: r.loss, accuracy: r.tokenAccuracy });
      if (recent.length > every) recent.shift();
      const loss = recent.reduce((a, b) => a + b.loss, 0) / Math.max(recent.length, 1);
      const accuracy = recent.reduce((a, b) => a + b.accuracy, 0) / Math.max(recent.length, 1);
      times.push(Date.now());
      if (times.length > every + 1) times.shift();
      const perStep =
        times.length > 1
          ? (times[times.length - 1] - times[0]) / 1000 / (times.length - 1)
          : (Date.now() - started) / 1000 / Math.max(r.step - startStep, 1);
      const eta = duration(perStep * (r.iterations - r.step));
      const stats = `loss ${loss.toFixed(4)}  acc ${percent(accuracy)}  lr ${r.lr.toExponential(2)}  ${r.imagesPerSecond.toFixed(1)} img/s  ETA ${eta}`;
      if (tty) {
        if (r.step < r.iterations && Date.now() - lastDraw < 100) return;
        lastDraw = Date.now();
        const width = 24;
        const filled = Math.round((width * r.step) / r.iterations);
        process.stderr.write(`\r\x1b[K[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${r.step}/${r.iterations}  ${stats}`);
        shown = true;
      } else if (r.step % every === 0 || r.step === r.iterations) {
        process.stderr.write(`step ${r.step}/${r.iterations}  ${stats}\n`);
      }
    },
    line(text: string): void {
      clear();
      process.stderr.write(`${text}\n`);
    },
  };
}

function validationLine(v: ValidationReport): string {
  return (
    `validation at step ${v.step} on ${v.source}: accuracy ${percent(v.accuracy)}` +
    `${v.caseSensitiveAccuracy === null ? '' : ` (case-sensitive ${percent(v.caseSensitiveAccuracy)})`}, ${v.samples} images` +
    `${v.unreadable > 0 ? `, ${v.unreadable} unreadable` : ''}, ${v.seconds.toFixed(1)} s`
  );
}

/** The Trainer's option names, as this command's flags. */
const FLAGS: Record<string, string> = {
  batchSize: '--batch-size', iterations: '--iterations', lr: '--lr', schedule: '--schedule', warmup: '--warmup',
  loss: '--loss', gamma: '--gamma', alpha: '--alpha', optimizer: '--optimizer', weightDecay: '--weight-decay',
  clip: '--clip', unknownChars: '--unknown-chars', longLabels: '--long-labels', checkpointDir: '--checkpoint-dir',
  checkpointEvery: '--checkpoint-every', validateEvery: '--validate-every', validateSamples: '--val-samples',
  logEvery: '--log-every', charset: '--charset', seed: '--seed', device: '--device', threads: '--threads',
  precision: '--precision', init: '--init',
};

/** Option errors of the Trainer ("… for lr but …") rewritten with the flag ("… for --lr but …"). */
async function withFlagNames<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (err) {
    if (err instanceof TypeError || err instanceof RangeError) {
      err.message = err.message.replace(/ for ([A-Za-z]+)(\[\d+\])? but received /, (whole, name: string, index = '') =>
        FLAGS[name] === undefined ? whole : ` for ${FLAGS[name]}${index} but received `);
    }
    throw err;
  }
}

/** `safl train`: returns the exit status (0 done, 130 stopped by Ctrl-C). */
export async function trainCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      data: { type: 'string', multiple: true },
      val: { type: 'string' },
      'val-samples': { type: 'string' },
      'synth-words': { type: 'string' },
      'synth-font': { type: 'string', multiple: true },
      'unknown-chars': { type: 'string' },
      'long-labels': { type: 'string' },
      config: { type: 'string' },
      charset: { type: 'string' },
      iterations: { type: 'string' },
      'batch-size': { type: 'string' },
      lr: { type: 'string' },
      schedule: { type: 'string' },
      warmup: { type: 'string' },
      loss: { type: 'string' },
      gamma: { type: 'string' },
      alpha: { type: 'string' },
      optimizer: { type: 'string' },
      'weight-decay': { type: 'string' },
      clip: { type: 'string' },
      seed: { type: 'string' },
      'checkpoint-dir': { type: 'string' },
      'checkpoint-every': { type: 'string' },
      'validate-every': { type: 'string' },
      'log-every': { type: 'string' },
      resume: { type: 'string' },
      init: { type: 'string' },
      precision: { type: 'string' },
      device: { type: 'string' },
      threads: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(TRAIN_HELP);
    return 0;
  }
  const int = (name: keyof typeof values, min: number, max: number) => {
    const text = values[name] as string | undefined;
    return text === undefined ? undefined : check.integerText(text, `--${name}`, min, max);
  };
  const num = (name: keyof typeof values) => {
    const text = values[name] as string | undefined;
    return text === undefined ? undefined : number(text, `--${name}`);
  };
  const run = {
    iterations: int('iterations', 1, 1e9),
    checkpointDir: values['checkpoint-dir'],
    checkpointEvery: int('checkpoint-every', 1, 1e9),
    validateEvery: int('validate-every', 1, 1e9),
    validateSamples: int('val-samples', 1, 1e9),
    logEvery: int('log-every', 1, 1e9),
    precision: values.precision === undefined ? undefined : check.oneOf(values.precision, '--precision', PRECISIONS),
    device: values.device === undefined ? undefined : check.oneOf(values.device, '--device', DEVICES),
    threads: int('threads', 1, 1024),
  };
  const config = values.config === undefined ? undefined : await readConfig(values.config);
  const dataSpecs: DataSpec[] = (values.data ?? []).map((d) => parseSourceSpec(d, '--data'));
  const synthGiven = synthFlags(values['synth-words'], values['synth-font']);

  let trainer: Trainer;
  if (values.resume !== undefined) {
    if (values.init !== undefined) throw new Error('--init starts a new run from a model file; it cannot be given with --resume');
    const fixed = FIXED_ON_RESUME.find((name) => values[name] !== undefined);
    if (fixed !== undefined) {
      throw new Error(`--${fixed} cannot be changed when resuming: a resumed run keeps its checkpoint's options (see safl train --help)`);
    }
    trainer = await withFlagNames(Trainer.resume(values.resume, { ...run, config }));
  } else {
    if (dataSpecs.length === 0) {
      process.stderr.write(`safl train: no training data: give --data SOURCE (a dataset folder, an LMDB dataset or synth)\n\n${TRAIN_HELP}`);
      return 1;
    }
    trainer = await withFlagNames(Trainer.create({
      ...run,
      checkpointDir: run.checkpointDir ?? 'checkpoints',
      config,
      charset: values.charset,
      init: values.init,
      batchSize: int('batch-size', 2, 4096),
      lr: num('lr'),
      schedule: values.schedule === undefined ? undefined : check.oneOf(values.schedule, '--schedule', ['inverse-sqrt', 'cosine', 'constant'] as const),
      warmup: int('warmup', 0, 1e9),
      loss: values.loss === undefined ? undefined : ({ focal: 'focal', ce: 'cross-entropy' } as const)[check.oneOf(values.loss, '--loss', ['focal', 'ce'] as const)],
      gamma: num('gamma'),
      alpha: num('alpha'),
      optimizer: values.optimizer === undefined ? undefined : check.oneOf(values.optimizer, '--optimizer', ['adam', 'adamw'] as const),
      weightDecay: num('weight-decay'),
      clip: num('clip'),
      seed: int('seed', 0, Number.MAX_SAFE_INTEGER),
      unknownChars: values['unknown-chars'] === undefined ? undefined : check.oneOf(values['unknown-chars'], '--unknown-chars', ['skip', 'unk'] as const),
      longLabels: values['long-labels'] === undefined ? undefined : check.oneOf(values['long-labels'], '--long-labels', ['skip', 'error'] as const),
      notes: { data: dataSpecs, val: values.val ?? null, ...(synthGiven === undefined ? {} : { synth: synthGiven }) },
    }));
  }

  const notes = trainer.options.notes as { data?: DataSpec[]; val?: string | null; synth?: SynthSpec };
  const specs = dataSpecs.length > 0 ? dataSpecs : (notes.data ?? []);
  if (specs.length === 0) throw new Error(`${values.resume}: the checkpoint names no data sources: give --data`);
  const valSpec = values.val ?? notes.val ?? undefined;
  const synth = synthGiven ?? notes.synth ?? {};
  if (synthGiven !== undefined && !specs.some((d) => d.spec === 'synth') && valSpec !== 'synth') {
    throw new Error("--synth-words and --synth-font shape the 'synth' source, but neither --data nor --val is synth");
  }
  const sources: Array<{ source: DataSource; ratio: number }> = [];
  let validation: DataSource | undefined;
  const progress = progressReporter(trainer.options.logEvery, trainer.step);
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts > 1) {
      process.stderr.write('\nsafl train: interrupted again: quitting without a checkpoint\n');
      process.exit(130);
    }
    progress.line('safl train: stopping after this step and writing a checkpoint (Ctrl-C again to quit at once)');
    trainer.stop();
  };
  process.on('SIGINT', onSigint);
  try {
    for (const { spec, ratio } of specs) sources.push({ source: await openData(spec, trainer, trainer.options.seed, synth), ratio });
    // A synthetic validation set must not repeat the training samples: another seed.
    if (valSpec !== undefined) validation = await openData(valSpec, trainer, trainer.options.seed + 1, synth);
    const o = trainer.options;
    progress.line(
      `safl train: ${trainer.step > 0 ? `resuming at step ${trainer.step}, ` : ''}${o.init === null ? '' : `fine-tuning ${o.init.model}, `}${o.iterations} steps of ${o.batchSize} images, ` +
        `${o.loss}${o.loss === 'focal' ? ` (gamma ${o.gamma}, alpha ${o.alpha})` : ''}, ${o.optimizer} lr ${o.lr} ${o.schedule} ` +
        `(warm-up ${o.warmup}), data ${sources.map((s) => `${s.source.name}${sources.length > 1 ? `:${s.ratio}` : ''}`).join(' + ')}` +
        `${validation ? `, validation ${validation.name}` : ''}${o.precision === 'bfloat16' ? ', bfloat16 products' : ''}; writing to ${o.checkpointDir}`,
    );
    const result = await trainer.train({
      sources,
      validation,
      onStep: (r) => progress.step(r),
      onValidation: (v) => progress.line(validationLine(v)),
      onWarning: (message) => progress.line(`safl: warning: ${message}`),
    });
    progress.clear();
    process.stderr.write(
      `safl train: ${result.stopped ? 'stopped' : 'done'} at step ${result.steps}: loss ${result.loss.toFixed(4)}, ` +
        `token accuracy ${percent(result.tokenAccuracy)}; wrote ${result.checkpoint} and ${result.model}\n`,
    );
    return result.stopped && interrupts > 0 ? 130 : 0;
  } finally {
    process.off('SIGINT', onSigint);
    progress.clear();
    await Promise.all([...sources.map((s) => s.source.close?.()), validation?.close?.()]);
    await trainer.close();
  }
}
