// Charsets: the characters a model reads, and the decoding of its class indices into text.
// A model's classes are its charset's characters (0 … n−1), then EOS, PAD and UNK (n, n+1, n+2);
// num_classes = n + 3 (native/model/config.h). A model file carries its charset in its metadata.
import { describe } from './validate.js';

/** The 94 printable ASCII characters without space, '!' (33) to '~' (126): the default charset. */
export const DEFAULT_CHARSET: readonly string[] = Object.freeze(
  Array.from({ length: 94 }, (_, i) => String.fromCharCode(33 + i)),
);

/** Classes after the charset's characters. */
export const SPECIAL_CLASSES = 3;

/** One recognised character and its probability. */
export interface RecognizedChar {
  /** The character (one Unicode code point). */
  char: string;
  /** The model's probability for it, in [0, 1]. */
  p: number;
}

/**
 * A charset given by a user: a string (each code point is one character) or an array of strings of
 * one code point each. Characters must be unique; any code point is allowed (the default charset
 * has no space, but a model may read one). Returns a fresh array.
 * @throws TypeError or RangeError in the form "Expected <what> for <option> but received <value>".
 */
export function validateCharset(value: unknown, option: string): string[] {
  const what = 'a string or an array of single characters';
  let chars: unknown[];
  if (typeof value === 'string') chars = [...value];
  else if (Array.isArray(value)) chars = value;
  else throw new TypeError(`Expected ${what} for ${option} but received ${describe(value)}`);
  if (chars.length === 0) throw new RangeError(`Expected a non-empty charset for ${option} but received ${describe(value)}`);
  const seen = new Set<string>();
  chars.forEach((c, i) => {
    if (typeof c !== 'string' || [...c].length !== 1) {
      throw new TypeError(`Expected a single character for ${option}[${i}] but received ${describe(c)}`);
    }
    if (seen.has(c)) throw new RangeError(`Expected unique characters for ${option} but received ${describe(c)} twice`);
    seen.add(c);
  });
  return chars as string[];
}

/**
 * Turns a decoded word (class indices and their probabilities, EOS excluded) into text.
 * A character class gives its character; EOS ends the word; PAD and UNK give nothing, so the word
 * never shows characters the model could not name, and `text` is always `chars` joined.
 */
export function decodeTokens(
  tokens: Int32Array,
  probs: Float32Array,
  charset: readonly string[],
): { text: string; chars: RecognizedChar[] } {
  const chars: RecognizedChar[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (token === charset.length) break; // EOS
    if (token >= 0 && token < charset.length) chars.push({ char: charset[token], p: probs[i] });
  }
  return { text: chars.map((c) => c.char).join(''), chars };
}
