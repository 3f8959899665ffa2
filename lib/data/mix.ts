// Mixing and shuffling: MixedSampler decides, draw after draw, which source the next training
// sample comes from (at random, in proportion to the sources' ratios) and which of its samples
// (finite sources: every sample once per epoch, in a new random order each epoch; endless sources:
// in index order). MixedSource reads the samples. Everything follows from a seed and a few counters,
// so a run is reproducible and the sampler's state fits in a small JSON object saved with a
// checkpoint: restoring it continues the exact sequence.
//
// Note [counter-based randomness]: no generator state is carried from draw to draw. Draw t picks
// its source with a hash of (seed, t); the c-th sample taken from a finite source of size N is
// position c mod N of epoch ⌊c / N⌋'s permutation, a keyed bijection of [0, N) (below), so no
// permutation array is stored (MJSynth's would take 36 MB) and restoring a state is setting the
// counters back.
//
// Note [the permutation]: a four-round Feistel network on the smallest square power of two
// ≥ N (two halves of h bits), with round functions keyed by (seed, source, epoch), is a bijection
// of [0, 4^h); applying it again while the result is ≥ N ("cycle walking") restricts it to a
// bijection of [0, N). 4^h < 4N, so fewer than four applications are needed on average.
import type { DataSource, Sample } from './source.js';
import { describe } from '../validate.js';
import * as check from '../validate.js';

/** lowbias32 (Chris Wellons' integer hash): a well-mixed 32-bit word from a 32-bit word. */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** A 32-bit hash of several non-negative integers (each below 2^53). */
function hash(...values: number[]): number {
  let h = 0x9e3779b9;
  for (const v of values) {
    h = mix32(h ^ mix32(v >>> 0));
    h = mix32(h ^ mix32(Math.floor(v / 0x100000000) >>> 0));
  }
  return h;
}

const CHOICE = 1;
const PERMUTATION = 2;

/** Position `position` of a keyed permutation of [0, size). Note [the permutation]. */
function permute(position: number, size: number, key: number[]): number {
  let half = 1;
  while (4 ** half < size) half++;
  const span = 2 ** half;
  const mask = span - 1;
  let x = position;
  do {
    let left = Math.floor(x / span);
    let right = x % span;
    for (let round = 0; round < 4; round++) {
      const next = (left ^ (hash(...key, round, right) & mask)) >>> 0;
      left = right;
      right = next;
    }
    x = left * span + right;
  } while (x >= size);
  return x;
}

/** One source of a mix: its size (Infinity for an endless source) and its share. */
export interface MixPart {
  /** Samples in the source: a positive integer up to 2^52, or Infinity. */
  size: number;
  /** Its share of the draws: any positive number; shares are relative to their sum. */
  ratio: number;
}

/** One draw: which source, and which of its samples. */
export interface Draw {
  source: number;
  index: number;
}

/** A sampler's position, as JSON: saved with a checkpoint, given back to {@link MixedSampler.restore}. */
export interface SamplerState {
  version: 1;
  seed: number;
  /** Draws so far. */
  draws: number;
  /** Samples taken from each source so far. */
  taken: number[];
  /** The mix the state belongs to (size null for an endless source). */
  parts: Array<{ size: number | null; ratio: number }>;
}

/**
 * Decides the sequence of samples of a mix of sources: deterministic in the seed, proportions by
 * ratio (at random: each draw picks source k with probability ratio_k / Σ ratio), finite sources
 * shuffled without replacement per epoch, endless ones read in order 0, 1, 2, …
 * Note [counter-based randomness].
 * @example
 * ```ts
 * const sampler = new MixedSampler([{ size: 8_919_273, ratio: 0.5 }, { size: Infinity, ratio: 0.5 }], 42);
 * const batch = sampler.nextBatch(64); // [{ source: 1, index: 0 }, { source: 0, index: 5_302_118 }, …]
 * const saved = sampler.state();       // JSON; later: sampler.restore(saved)
 * ```
 */
export class MixedSampler {
  readonly parts: readonly Readonly<MixPart>[];
  #seed: number;
  #cumulative: number[];
  #draws = 0;
  #taken: number[];

  /** @throws TypeError / RangeError for a bad part or seed ("Expected <what> for <option> but received <value>"). */
  constructor(parts: readonly MixPart[], seed = 0) {
    if (!Array.isArray(parts) || parts.length === 0) throw new TypeError(`Expected a non-empty array of { size, ratio } for parts but received ${describe(parts)}`);
    this.parts = Object.freeze(
      parts.map((part, i) => {
        const { size, ratio } = check.options(part, `parts[${i}]`);
        if (size !== Infinity) check.integer(size, `parts[${i}].size`, 1, 2 ** 52);
        if (typeof ratio !== 'number' || !Number.isFinite(ratio) || ratio <= 0) {
          throw new RangeError(`Expected a positive number for parts[${i}].ratio but received ${describe(ratio)}`);
        }
        return Object.freeze({ size: size as number, ratio });
      }),
    );
    this.#seed = check.integer(seed, 'seed', 0, Number.MAX_SAFE_INTEGER);
    const total = this.parts.reduce((sum, p) => sum + p.ratio, 0);
    let running = 0;
    this.#cumulative = this.parts.map((p) => (running += p.ratio / total));
    this.#taken = this.parts.map(() => 0);
  }

  /** Draws so far. */
  get draws(): number {
    return this.#draws;
  }

  /** The next sample to read. */
  next(): Draw {
    const u = hash(this.#seed, CHOICE, this.#draws) / 2 ** 32;
    let source = this.#cumulative.findIndex((c) => u < c);
    if (source < 0) source = this.parts.length - 1; // rounding in the last cumulative share
    this.#draws++;
    const taken = this.#taken[source]++;
    const { size } = this.parts[source];
    if (size === Infinity) return { source, index: taken };
    const epoch = Math.floor(taken / size);
    return { source, index: permute(taken % size, size, [this.#seed, PERMUTATION, source, epoch]) };
  }

  /** The next `count` samples (1…1,000,000). */
  nextBatch(count: number): Draw[] {
    check.integer(count, 'count', 1, 1_000_000);
    return Array.from({ length: count }, () => this.next());
  }

  /** The sampler's position, as a JSON-serialisable object. */
  state(): SamplerState {
    return {
      version: 1,
      seed: this.#seed,
      draws: this.#draws,
      taken: [...this.#taken],
      parts: this.parts.map((p) => ({ size: p.size === Infinity ? null : p.size, ratio: p.ratio })),
    };
  }

  /**
   * Continues from a saved position (seed included).
   * @throws TypeError for something that is not a sampler state; Error when the state belongs to
   *   another mix (other sources, sizes or ratios).
   */
  restore(state: SamplerState): void {
    const s = check.options(state, 'state');
    const taken = s.taken;
    if (
      s.version !== 1 ||
      !Number.isSafeInteger(s.seed) ||
      !Number.isSafeInteger(s.draws) ||
      !Array.isArray(taken) ||
      !taken.every((t) => Number.isSafeInteger(t) && (t as number) >= 0) ||
      !Array.isArray(s.parts)
    ) {
      throw new TypeError(`Expected a sampler state { version: 1, seed, draws, taken, parts } for state but received ${describe(state)}`);
    }
    const mine = JSON.stringify(this.state().parts);
    const theirs = JSON.stringify(s.parts);
    if (mine !== theirs || taken.length !== this.parts.length) {
      throw new Error(`the sampler state is for another mix of sources: saved ${theirs}, now ${mine}`);
    }
    this.#seed = s.seed as number;
    this.#draws = s.draws as number;
    this.#taken = [...(taken as number[])];
  }
}

/** A sample of a mix, with where it was drawn from. */
export interface MixedSample extends Sample {
  /** The position of its source in the mix. */
  source: number;
  /** Its index in that source. */
  index: number;
}

/**
 * Several data sources read as one stream of samples, in proportion to their ratios (see
 * {@link MixedSampler}).
 * @example
 * ```ts
 * const mix = new MixedSource([{ source: mj, ratio: 0.5 }, { source: st, ratio: 0.5 }], { seed: 1 });
 * const batch = await mix.nextBatch(64);
 * checkpoint.sampler = mix.state();
 * ```
 */
export class MixedSource {
  readonly sources: readonly DataSource[];
  readonly sampler: MixedSampler;

  /**
   * @param parts - the sources and their ratios (default 1 each).
   * @param options - seed, an integer 0…2^53−1 (default 0).
   */
  constructor(parts: ReadonlyArray<{ source: DataSource; ratio?: number }>, options?: { seed?: number }) {
    if (!Array.isArray(parts) || parts.length === 0) throw new TypeError(`Expected a non-empty array of { source, ratio } for parts but received ${describe(parts)}`);
    const { seed } = check.options(options, 'options');
    this.sources = Object.freeze(parts.map((p) => p.source));
    this.sampler = new MixedSampler(
      parts.map((p) => ({ size: p.source.size, ratio: p.ratio ?? 1 })),
      seed === undefined ? 0 : (seed as number),
    );
  }

  /** The sources' names joined with '+'. */
  get name(): string {
    return this.sources.map((s) => s.name).join('+');
  }

  /**
   * The next `count` samples, read in parallel, in draw order.
   * @throws the first error of a source (a missing image, an unreadable record), naming the sample.
   */
  async nextBatch(count: number): Promise<MixedSample[]> {
    const draws = this.sampler.nextBatch(count);
    return Promise.all(draws.map(async (d) => ({ ...(await this.sources[d.source].get(d.index)), source: d.source, index: d.index })));
  }

  /** See {@link MixedSampler.state}. */
  state(): SamplerState {
    return this.sampler.state();
  }

  /** See {@link MixedSampler.restore}. */
  restore(state: SamplerState): void {
    this.sampler.restore(state);
  }

  /** Closes every source. */
  async close(): Promise<void> {
    await Promise.all(this.sources.map((s) => s.close?.()));
  }
}
