// Labels → class ids for training, with an explicit policy for what a model cannot learn as it is:
// characters outside its charset (skip the sample, or map them to UNK) and labels longer than its
// maximum length (skip the sample, or stop with an error). Counts what was skipped, for the
// trainer's log.
//
// Note [label normalisation]: a label is put in Unicode NFC first (a file may spell "é" as e and a
// combining accent; a charset holds the composed character). A character that is not in the charset
// but whose other case is (a label "Hello" for a lowercase charset) becomes that case: a charset
// without upper case means the model is not asked to tell case apart, as in the usual 36-character
// a–z0–9 setting. Only then does the unknown-character policy apply.
import { SPECIAL_CLASSES, validateCharset } from '../charset.js';
import * as check from '../validate.js';

/** What to do with a label holding a character outside the charset. */
export type UnknownCharPolicy = 'skip' | 'unk';
/** What to do with a label longer than the maximum length. */
export type TooLongPolicy = 'skip' | 'error';

/** Options of {@link LabelEncoder}. */
export interface LabelPolicyOptions {
  /** The model's characters (a string or an array of single characters): class i is charset[i]. */
  charset: string | readonly string[];
  /** Most characters in a label, 1…1000 (the model's max_len; default 25). */
  maxLength?: number;
  /** 'skip' (default): leave the sample out; 'unk': the character becomes the UNK class. */
  unknown?: UnknownCharPolicy;
  /** 'skip' (default): leave the sample out; 'error': throw, naming the sample. */
  tooLong?: TooLongPolicy;
}

/** Samples left out so far, by reason. */
export interface SkipCounts {
  /** Labels with a character outside the charset (policy 'skip'). */
  unknown: number;
  /** Labels longer than the maximum length (policy 'skip'). */
  tooLong: number;
}

/**
 * Turns labels into class ids under a policy. The ids are the characters' classes only: the
 * trainer adds EOS (class charset.length) and padding. UNK is class charset.length + 2.
 * @example
 * ```ts
 * const encoder = new LabelEncoder({ charset: [...'abc'], unknown: 'unk' });
 * encoder.encode('Cab!', 'x.png'); // Int32Array [2, 0, 1, 5]  ('C' → 'c', '!' → UNK)
 * ```
 */
export class LabelEncoder {
  readonly maxLength: number;
  readonly unknown: UnknownCharPolicy;
  readonly tooLong: TooLongPolicy;
  /** The class of characters outside the charset. */
  readonly unkClass: number;
  #classes = new Map<string, number>();
  #skipped: SkipCounts = { unknown: 0, tooLong: 0 };

  /** @throws TypeError / RangeError for a bad option ("Expected <what> for <option> but received <value>"). */
  constructor(options: LabelPolicyOptions) {
    const raw = check.options(options, 'options');
    const charset = validateCharset(raw.charset, 'charset');
    charset.forEach((c, i) => this.#classes.set(c, i));
    this.maxLength = raw.maxLength === undefined ? 25 : check.integer(raw.maxLength, 'maxLength', 1, 1000);
    this.unknown = raw.unknown === undefined ? 'skip' : check.oneOf(raw.unknown, 'unknown', ['skip', 'unk'] as const);
    this.tooLong = raw.tooLong === undefined ? 'skip' : check.oneOf(raw.tooLong, 'tooLong', ['skip', 'error'] as const);
    this.unkClass = charset.length + SPECIAL_CLASSES - 1;
  }

  /** Samples left out so far (a copy). */
  get skipped(): SkipCounts {
    return { ...this.#skipped };
  }

  /**
   * The class ids of `label`, or null when the policy leaves the sample out (and counts it).
   * Note [label normalisation].
   * @param origin - names the sample in errors (e.g. "MJ/image-000000007").
   * @throws Error "<origin>: the label has N characters, more than the maximum of M" under tooLong 'error'.
   */
  encode(label: string, origin: string): Int32Array | null {
    const chars = [...label.normalize('NFC')];
    if (chars.length > this.maxLength) {
      if (this.tooLong === 'error') {
        throw new Error(`${origin}: the label has ${chars.length} characters, more than the maximum of ${this.maxLength}`);
      }
      this.#skipped.tooLong++;
      return null;
    }
    const ids = new Int32Array(chars.length);
    for (let i = 0; i < chars.length; i++) {
      const c = chars[i];
      const id = this.#classes.get(c) ?? this.#classes.get(c.toLowerCase()) ?? this.#classes.get(c.toUpperCase());
      if (id !== undefined) {
        ids[i] = id;
      } else if (this.unknown === 'unk') {
        ids[i] = this.unkClass;
      } else {
        this.#skipped.unknown++;
        return null;
      }
    }
    return ids;
  }
}
