// Word accuracy by the standard scene-text protocol (DESIGN.md §4): lowercase the prediction and
// the label, drop everything but a–z and 0–9, count exact matches. Case-sensitive accuracy keeps
// case (letters and digits only, exact match) and is reported only for datasets whose labels keep
// case. Averages over datasets are weighted by their number of images.

/** The standard protocol's form of a word: lowercase, only a–z and 0–9 kept. */
export function normalizeStandard(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]/g, '');
}

/** The case-sensitive form of a word: only A–Z, a–z and 0–9 kept, case as written. */
export function normalizeCaseSensitive(text: string): string {
  return text.replace(/[^A-Za-z0-9]/g, '');
}

/** Correct under the standard protocol ("Hello!" and "hello" match). */
export function matchesStandard(label: string, prediction: string): boolean {
  return normalizeStandard(label) === normalizeStandard(prediction);
}

/** Correct with case kept ("Hello!" and "Hello" match, "Hello" and "hello" do not). */
export function matchesCaseSensitive(label: string, prediction: string): boolean {
  return normalizeCaseSensitive(label) === normalizeCaseSensitive(prediction);
}

/** Correct answers out of a number of images. */
export interface Score {
  correct: number;
  images: number;
}

/** correct / images (0 for no images). */
export function accuracy(score: Score): number {
  return score.images === 0 ? 0 : score.correct / score.images;
}

/**
 * The average of several scores weighted by their images: total correct over total images.
 * Null when there is nothing to average.
 */
export function weightedAverage(scores: readonly Score[]): Score | null {
  if (scores.length === 0) return null;
  return {
    correct: scores.reduce((sum, s) => sum + s.correct, 0),
    images: scores.reduce((sum, s) => sum + s.images, 0),
  };
}

/**
 * Tallies one dataset: standard and case-sensitive matches, and whether its labels keep case.
 *
 * Note [which labels keep case]: a dataset's labels keep case when they hold at least one upper-case
 * and at least one lower-case letter, counted over all its labels. Sets released in upper case only
 * (SVT) or lower case only then get no case-sensitive figure: it would only measure how often the
 * model writes in the one case the annotators used.
 */
export class DatasetScore {
  /** Images counted so far. */
  images = 0;
  /** Correct under the standard protocol. */
  correct = 0;
  /** Correct with case kept. */
  correctCaseSensitive = 0;
  #hasUpper = false;
  #hasLower = false;

  /** Counts one image; an image that could not be read counts with prediction null (wrong). */
  add(label: string, prediction: string | null): { correct: boolean; correctCaseSensitive: boolean } {
    this.images++;
    if (!this.#hasUpper && label !== label.toLowerCase()) this.#hasUpper = true;
    if (!this.#hasLower && label !== label.toUpperCase()) this.#hasLower = true;
    const correct = prediction !== null && matchesStandard(label, prediction);
    const correctCaseSensitive = prediction !== null && matchesCaseSensitive(label, prediction);
    if (correct) this.correct++;
    if (correctCaseSensitive) this.correctCaseSensitive++;
    return { correct, correctCaseSensitive };
  }

  /** Whether the labels seen keep case. Note [which labels keep case]. */
  get keepsCase(): boolean {
    return this.#hasUpper && this.#hasLower;
  }

  /** The standard-protocol score. */
  get standard(): Score {
    return { correct: this.correct, images: this.images };
  }

  /** The case-sensitive score, or null when the labels do not keep case. */
  get caseSensitive(): Score | null {
    return this.keepsCase ? { correct: this.correctCaseSensitive, images: this.images } : null;
  }
}
