// `safl synth --count N --out <dir | file.lmdb>`: writes synthetic word images and their labels as
// a dataset, a folder (images/ + labels.tsv) or an LMDB database in the STR layout, made by worker
// threads and written in sample order; optionally a contact sheet of the first samples.
import { createWriteStream, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { LmdbWriter } from '../data/lmdb.js';
import { bundledFamilies } from '../synth/fonts.js';
import { generatorContext, resolveSynthOptions, type ResolvedSynthOptions } from '../synth/index.js';
import { SynthPool, type EncodedSample } from '../synth/pool.js';
import { sharp } from '../synth/render.js';
import * as check from '../validate.js';
import { describe } from '../validate.js';

export const SYNTH_HELP = `Usage: safl synth --count N --out <dir | file.lmdb> [options]

Makes N synthetic word images (samples 0 to N-1 of a seed) and writes them with their labels as
a dataset for 'safl train' and 'safl eval'. Words are English words (most often the common
ones), names of people and places, made-up words, numbers, random letters and codes (or the
words of --words, without the English names), in upper, title, lower or mixed case; fonts are
30 bundled families (sans, condensed, serif, slab, display, typewriter, script); each image gets
its own colours, background texture, outline or shadow, letter spacing, rotation, perspective,
curved baseline, crop margins with slivers of neighbouring letters, lighting, blur, noise and,
for about half of them, JPEG compression.

Output (--out):
  DIR             a folder dataset: DIR/images/000000000.jpg (JPEG when the sample was given
                  compression artefacts) or .png (otherwise), and DIR/labels.tsv with one line
                  "images/<file><TAB>label" per sample, in sample order
  NAME.lmdb       an LMDB dataset in the STR layout (num-samples, image-%09d, label-%09d): the
                  directory NAME.lmdb holding data.mdb
  The output must not exist yet, or be an empty directory.

Options:
  --count N         number of samples, 1-100000000 (required)
  --out PATH        where to write (required; see above)
  --seed S          seed, 0-9007199254740991 (default 0); sample i of a seed is the same image on
                    every run, with any number of workers
  --charset CHARS   the characters labels may hold (default: the 94 printable ASCII characters).
                    A character the charset lacks is written in its other case when the charset
                    has that (so a lower-case charset gives lower-case labels for words drawn in
                    any case); a word that still cannot be written is drawn again
  --max-length N    most characters in a label, 1-25 (default 25)
  --workers N       worker threads making images, 1-64 (default: the number of CPU cores)
  --system-fonts    also draw with the fonts installed on this machine (default: only the
                    bundled fonts, so that a seed gives the same images on every machine)
  --font PATH       draw with this font file (.ttf, .otf) or the fonts in this directory too;
                    may be given more than once
  --words FILE      draw words from this list instead of the English one: UTF-8, one word per
                    line (a word listed twice is drawn twice as often). Made-up words and random
                    letter strings then use its letters: give one for another alphabet, with
                    --charset and --font for its characters
  --preview         also write a contact sheet of the first samples (up to 48) with their
                    labels: DIR/preview.png, or NAME.lmdb.preview.png beside an LMDB dataset
  -h, --help        show this help

While it runs, a progress bar is drawn on stderr when stderr is a terminal; at the end one line
says how many samples were written and how fast.

Examples:
  safl synth --count 1000 --out synth-1k
  safl synth --count 1000000 --out train.lmdb --seed 7 --workers 2
  safl synth --count 20000 --out lower --charset abcdefghijklmnopqrstuvwxyz0123456789 --preview
`;

const MAX_COUNT = 100_000_000;
const PREVIEW_SAMPLES = 48;

/** A progress bar on stderr, drawn only when stderr is a terminal. */
function progressBar(total: number) {
  const enabled = process.stderr.isTTY === true;
  const started = Date.now();
  let lastDraw = 0;
  let shown = false;
  return {
    draw(done: number): void {
      if (!enabled || (done < total && Date.now() - lastDraw < 100)) return;
      lastDraw = Date.now();
      const width = 30;
      const filled = Math.round((width * done) / total);
      const rate = done / Math.max((Date.now() - started) / 1000, 1e-3);
      process.stderr.write(`\r\x1b[K[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${total} samples, ${rate.toFixed(1)}/s`);
      shown = true;
    },
    clear(): void {
      if (shown) process.stderr.write('\r\x1b[K');
      shown = false;
    },
  };
}

/** Where samples go: a folder dataset or an LMDB writer, fed in sample order. */
interface Sink {
  add(index: number, sample: EncodedSample): void;
  close(): Promise<void>;
  abort(): Promise<void>;
}

function folderSink(dir: string): Sink {
  mkdirSync(path.join(dir, 'images'), { recursive: true });
  const labels = createWriteStream(path.join(dir, 'labels.tsv'));
  const finished = new Promise<void>((resolve, reject) => {
    labels.on('finish', resolve);
    labels.on('error', reject);
  });
  return {
    add(index, sample) {
      const file = `images/${String(index).padStart(9, '0')}.${sample.extension}`;
      writeFileSync(path.join(dir, file), sample.image);
      labels.write(`${file}\t${sample.label}\n`);
    },
    async close() {
      labels.end();
      await finished;
    },
    async abort() {
      labels.end();
      await finished.catch(() => undefined);
    },
  };
}

function lmdbSink(dir: string): Sink {
  const writer = LmdbWriter.create(dir);
  return {
    add(_index, sample) {
      writer.add(sample.image, sample.label);
    },
    close: () => writer.close(),
    abort: () => writer.abort(),
  };
}

/** A contact sheet: each image scaled to 48 px high (at most 240 wide) above its label, 4 across. */
async function writePreview(file: string, samples: EncodedSample[]): Promise<void> {
  const s = sharp();
  const tileW = 250;
  const imageH = 48;
  const tileH = imageH + 22;
  const columns = 4;
  const label = bundledFamilies().flatMap((f) => f.faces).find((f) => f.family === 'Roboto' && f.style === 'Regular');
  const escape = (t: string) => t.replace(/[&<>]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[c] as string);
  const composites: Array<{ input: Buffer; left: number; top: number }> = [];
  for (const [k, sample] of samples.entries()) {
    const left = (k % columns) * tileW + 5;
    const top = Math.floor(k / columns) * tileH + 3;
    const image = await s(sample.image).resize({ height: imageH, width: tileW - 10, fit: 'inside' }).png().toBuffer();
    composites.push({ input: image, left, top });
    const text = await s({
      text: {
        text: `<span foreground="#202020">${escape(sample.label)}</span>`,
        font: label ? `${label.family}, ${label.style} 13px` : 'sans 13px',
        fontfile: label?.file,
        rgba: true,
        width: tileW - 10,
      },
    })
      .png()
      .toBuffer();
    composites.push({ input: text, left, top: top + imageH + 2 });
  }
  await s({ create: { width: columns * tileW, height: Math.ceil(samples.length / columns) * tileH, channels: 3, background: '#f4f4f4' } })
    .composite(composites)
    .png()
    .toFile(file);
}

/** Checks --out: a path that does not exist yet or is an empty directory; returns its kind. */
function checkOut(out: string | undefined): 'folder' | 'lmdb' {
  if (out === undefined || out === '') throw new TypeError(`Expected a directory or a .lmdb path for --out but received ${describe(out)}`);
  if (existsSync(out)) {
    if (!statSync(out).isDirectory()) throw new Error(`${out}: exists and is not a directory`);
    if (readdirSync(out).length > 0) throw new Error(`${out}: exists and is not empty`);
  }
  return /\.lmdb$/i.test(out) ? 'lmdb' : 'folder';
}

/** `safl synth`; returns the exit status. */
export async function synthCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      count: { type: 'string' },
      out: { type: 'string' },
      seed: { type: 'string' },
      charset: { type: 'string' },
      'max-length': { type: 'string' },
      workers: { type: 'string' },
      'system-fonts': { type: 'boolean' },
      font: { type: 'string', multiple: true },
      words: { type: 'string' },
      preview: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(SYNTH_HELP);
    return 0;
  }
  const count = values.count === undefined ? check.integer(undefined, '--count', 1, MAX_COUNT) : check.integerText(values.count, '--count', 1, MAX_COUNT);
  const kind = checkOut(values.out);
  const out = values.out as string;
  const seed = values.seed === undefined ? 0 : check.integerText(values.seed, '--seed', 0, Number.MAX_SAFE_INTEGER);
  const maxLength = values['max-length'] === undefined ? undefined : check.integerText(values['max-length'], '--max-length', 1, 25);
  const workers = values.workers === undefined ? Math.min(os.availableParallelism(), 64) : check.integerText(values.workers, '--workers', 1, 64);
  if (values.charset !== undefined && kind === 'folder' && /[\t\n\r]/.test(values.charset)) {
    throw new RangeError(
      `Expected a charset without tabs or line breaks (labels.tsv cannot hold them; write a .lmdb instead) for --charset but received ${describe(values.charset)}`,
    );
  }
  let options: ResolvedSynthOptions;
  try {
    options = resolveSynthOptions({
      seed,
      charset: values.charset,
      maxLength,
      systemFonts: values['system-fonts'] ?? false,
      fonts: values.font ?? [],
      words: values.words,
    });
  } catch (err) {
    // The API names options as the API spells them; say it the command line's way.
    const flags: Record<string, string> = { charset: 'charset', maxLength: 'max-length', fonts: 'font', words: 'words' };
    (err as Error).message = (err as Error).message.replace(/ for (charset|maxLength|fonts|words) /, (_m, name: string) => ` for --${flags[name]} `);
    throw err;
  }
  generatorContext(options); // a bad --font or --words fails here, before any worker starts

  const pool = new SynthPool(options, Math.min(workers, count));
  const sink = kind === 'lmdb' ? lmdbSink(out) : folderSink(out);
  const progress = progressBar(count);
  const preview: EncodedSample[] = [];
  const started = Date.now();
  try {
    // Samples are made out of order by the workers and written in order; at most a few per worker
    // wait at once.
    const done = new Map<number, EncodedSample>();
    const window = 8 * workers;
    let next = 0;
    let written = 0;
    await new Promise<void>((resolve, reject) => {
      let failed = false;
      const launch = () => {
        while (!failed && next < count && next - written < window) {
          const index = next++;
          pool.render(index, true).then(
            (sample) => {
              if (failed) return;
              done.set(index, sample);
              try {
                for (let s = done.get(written); s !== undefined; s = done.get(written)) {
                  done.delete(written);
                  sink.add(written, s);
                  if (written < PREVIEW_SAMPLES && values.preview) preview.push(s);
                  written++;
                }
              } catch (err) {
                failed = true;
                reject(err);
                return;
              }
              progress.draw(written);
              if (written === count) resolve();
              else launch();
            },
            (err: Error) => {
              failed = true;
              reject(new Error(`sample ${index}: ${err.message}`, { cause: err }));
            },
          );
        }
      };
      launch();
    });
    await sink.close();
  } catch (err) {
    progress.clear();
    await sink.abort();
    await pool.close();
    throw err;
  }
  await pool.close();
  progress.clear();
  const seconds = (Date.now() - started) / 1000;
  let previewFile: string | undefined;
  if (values.preview) {
    previewFile = kind === 'lmdb' ? `${out.replace(/[\\/]+$/, '')}.preview.png` : path.join(out, 'preview.png');
    await writePreview(previewFile, preview);
  }
  process.stdout.write(
    `wrote ${count} samples to ${out} (${kind === 'lmdb' ? 'LMDB' : 'folder'}) in ${seconds.toFixed(1)} s, ${(count / Math.max(seconds, 1e-3)).toFixed(1)} samples/s` +
      `${previewFile ? `; preview: ${previewFile}` : ''}\n`,
  );
  return 0;
}
