// The options `safl recognize` and `safl eval` share: how a model reads (device, batch size,
// threads, beam width, views, precision, dictionary). Declared once for parseArgs, described once for both
// helps, and turned into Recognizer.load's options with the API's messages.
import { DEFAULT_DICTIONARY_WEIGHT } from '../dictionary.js';
import { MAX_VIEWS } from '../image.js';
import { DEVICES, PRECISIONS } from '../native.js';
import type { RecognizerOptions } from '../recognizer.js';
import { readWords } from '../synth/words.js';
import * as check from '../validate.js';

/** The shared options in parseArgs's form; every value arrives as the text the user typed. */
export const READING_OPTIONS = {
  device: { type: 'string' },
  'batch-size': { type: 'string' },
  threads: { type: 'string' },
  'beam-width': { type: 'string' },
  views: { type: 'string' },
  precision: { type: 'string' },
  dictionary: { type: 'string' },
  'dictionary-weight': { type: 'string' },
} as const;

/** Each option as the help lists it: the option with its argument, then its description's lines. */
const DESCRIPTIONS: Array<[string, string[]]> = [
  ['--device D', ['auto, cpu or cuda (default: auto)']],
  ['--batch-size N', ['most images per network call, 1-1024 (default: 32)']],
  ['--threads N', ['size of the native thread pool, 1-1024 (default: hardware threads)']],
  ['--beam-width N', ['beam search width, 1-64; 1 is greedy decoding (default: 1)']],
  [
    '--views N',
    [`read each image in N framings, 1-${MAX_VIEWS}, and keep the most confident`, 'reading (README, "Views"); N times the work (default: 1)'],
  ],
  [
    '--precision P',
    [
      'float32 or bfloat16: the precision of the matrix products; bfloat16 is',
      'faster on CPUs with AMX or AVX512-BF16, the same as float32 elsewhere',
      '(default: float32)',
    ],
  ],
  [
    '--dictionary D',
    [
      'english (built in) or a file of words, one per line: among the beam\'s',
      'and the views\' readings, prefer known words (README, "Dictionary");',
      'needs --beam-width or --views over 1',
    ],
  ],
  ['--dictionary-weight W', [`how much a known word counts, 0-100 (default: ${DEFAULT_DICTIONARY_WEIGHT})`]],
];

/**
 * The help's lines for the shared options, their descriptions starting at `column` (on the line
 * below an option too long to leave two spaces before it).
 */
export function readingOptionsHelp(column: number): string {
  return DESCRIPTIONS.map(([option, lines]) => {
    const head = `  ${option}`;
    const own = head.length + 2 > column ? `${head}\n` : '';
    return own + lines.map((line, i) => `${(i === 0 && own === '' ? head : '').padEnd(column)}${line}\n`).join('');
  }).join('');
}

/** The values parseArgs found for READING_OPTIONS. */
export type ReadingValues = { [K in keyof typeof READING_OPTIONS]?: string };

/**
 * Recognizer.load's options from the typed text, checked with the command line's names (a bad
 * value throws the API's message form); an option not given is left out, for Recognizer.load's
 * default.
 */
export function readingOptions(values: ReadingValues): RecognizerOptions {
  const integer = (text: string | undefined, option: string, max: number) =>
    text === undefined ? undefined : check.integerText(text, option, 1, max);
  const oneOf = <T extends string>(text: string | undefined, option: string, allowed: readonly T[]) =>
    text === undefined ? undefined : check.oneOf(text, option, allowed);
  const options: RecognizerOptions = {
    device: oneOf(values.device, '--device', DEVICES),
    batchSize: integer(values['batch-size'], '--batch-size', 1024),
    threads: integer(values.threads, '--threads', 1024),
    beamWidth: integer(values['beam-width'], '--beam-width', 64),
    views: integer(values.views, '--views', MAX_VIEWS),
    precision: oneOf(values.precision, '--precision', PRECISIONS),
    dictionary: values.dictionary === undefined || values.dictionary === 'english' ? values.dictionary : readWords(values.dictionary),
    dictionaryWeight: values['dictionary-weight'] === undefined ? undefined : check.numberText(values['dictionary-weight'], '--dictionary-weight', 0, 100),
  };
  if (options.dictionary === undefined && options.dictionaryWeight !== undefined) {
    throw new TypeError(`Expected --dictionary with --dictionary-weight but received no --dictionary`);
  }
  if (options.dictionary !== undefined && (options.beamWidth ?? 1) === 1 && (options.views ?? 1) === 1) {
    throw new RangeError('Expected --beam-width or --views over 1 with --dictionary (it chooses among their readings) but received neither');
  }
  return options;
}
