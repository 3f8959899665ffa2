// A word prior for reading: a set of known words, and the choice among an image's candidate
// readings (beam search's finished hypotheses, one or more views) that favours them
// (Note [dictionary]).
import { englishWordLists } from './synth/words.js';

/**
 * Note [dictionary]: the decoder reads a word one character at a time and knows no words as such:
 * on a worn sign it may read INDlANA where every letter but one says INDIANA, and a dictionary
 * would have settled it. Beam search keeps such near misses among its finished readings (Note
 * [alternatives] in native/model/network_decode.cpp), and each view gives its own. With a
 * dictionary, the reading kept is the one with the highest ln(confidence) + weight · [a known
 * word]: a known word wins over an unknown reading up to e^weight times as confident, and among
 * known words (or among unknown ones) the more confident wins, as without a dictionary. Weight 0
 * is no dictionary at all. The reading's confidence stays the model's own.
 *
 * Words are compared by key: lower case, with only letters and digits kept (as `safl eval`
 * compares words), so DON'T, Don't and dont are one word, and a reading with a stray full stop
 * still counts as its word. The default weight was chosen on synthetic images (README,
 * "Dictionary"), never on the real test photographs.
 */
export const DEFAULT_DICTIONARY_WEIGHT = 2;

/** A word's key (Note [dictionary]); '' when it holds no letter or digit. */
export function wordKey(text: string): string {
  return text.normalize('NFC').toLowerCase().replace(/[^\p{L}\p{N}]/gu, '');
}

/** Known words, by key. */
export class WordSet {
  readonly #keys: Set<string>;
  constructor(words: Iterable<string>) {
    this.#keys = new Set();
    for (const word of words) {
      const key = wordKey(word);
      if (key !== '') this.#keys.add(key);
    }
  }
  get size(): number {
    return this.#keys.size;
  }
  has(text: string): boolean {
    const key = wordKey(text);
    return key !== '' && this.#keys.has(key);
  }
}

let english: WordSet | undefined;

/**
 * The built-in English dictionary: the words and names the synthetic generator draws (SCOWL's
 * English, American and British words up to size 50, and faker's English names of people and
 * places; lib/synth/words.ts), about 68,000 keys, built on first use.
 */
export function englishWords(): WordSet {
  if (english === undefined) {
    const { tiers, names } = englishWordLists();
    english = new WordSet([...tiers.flat(), ...names]);
  }
  return english;
}

/** A candidate reading: its text and the model's confidence in it. */
export interface Candidate {
  text: string;
  confidence: number;
}

/**
 * The index of the reading to keep among `candidates` (Note [dictionary]): the highest
 * ln(confidence) + weight for a known word; on a tie, the earlier candidate. Without words, the
 * most confident.
 */
export function chooseReading(candidates: readonly Candidate[], words: WordSet | undefined, weight: number): number {
  let best = 0;
  let bestScore = -Infinity;
  candidates.forEach((candidate, i) => {
    const score = Math.log(candidate.confidence) + (words?.has(candidate.text) ? weight : 0);
    if (i === 0 || score > bestScore) {
      best = i;
      bestScore = score;
    }
  });
  return best;
}
