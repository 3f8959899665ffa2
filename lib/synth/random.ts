// The synthetic generator's random numbers: a small seeded PRNG (xoshiro128**) whose state is a
// hash of (seed, sample index, stream), so sample i is the same whatever order samples are made in
// and however many workers make them.
//
// Note [the noise table]: per-pixel noise needs a normal number for every pixel, and Box–Muller
// for each was the generator's largest single cost. Noise reads instead a fixed table of 2^17
// normal numbers (made once from a fixed seed) from a random start with a random odd stride, which
// visits every entry once before repeating.
//
// Note [independent streams]: each stage of a sample (font, word, geometry, colours, artefacts)
// draws from its own stream, fork(k) of the sample's generator. A stage that draws one number more
// or less after a change then leaves the other stages' choices as they were.

/** Mixes a 32-bit value (the murmur3 finaliser). */
function mix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A deterministic random number generator; every method advances it. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private readonly seed: number;
  private readonly index: number;
  private readonly stream: number;

  /**
   * @param seed - a non-negative safe integer.
   * @param index - a non-negative safe integer.
   * @param stream - which stream of this (seed, index), a 32-bit unsigned integer.
   */
  constructor(seed: number, index: number, stream = 0) {
    let h = mix32((seed >>> 0) ^ 0x9e3779b9);
    h = mix32(h ^ (Math.floor(seed / 0x100000000) >>> 0) ^ 0x165667b1);
    h = mix32(h ^ (index >>> 0) ^ 0x85ebca6b);
    h = mix32(h ^ (Math.floor(index / 0x100000000) >>> 0) ^ 0xc2b2ae35);
    h = mix32(h ^ stream ^ 0x27d4eb2f);
    // Four different words of state from one hash (splitmix-style increments); never all zero.
    this.s0 = mix32(h + 0x9e3779b9);
    this.s1 = mix32(h + 0x3c6ef372);
    this.s2 = mix32(h + 0xdaa66d2b);
    this.s3 = mix32(h + 0x78dde6e4) | 1;
    this.seed = seed;
    this.index = index;
    this.stream = stream;
  }

  /** A generator for sub-stream `k` of this one's (seed, index); see Note [independent streams]. */
  fork(k: number): Rng {
    return new Rng(this.seed, this.index, mix32(this.stream * 31 + k + 1));
  }

  /** A uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 0x100000000;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Log-uniform in [lo, hi) (lo > 0): as likely to halve as to double. */
  logUniform(lo: number, hi: number): number {
    return lo * Math.exp(Math.log(hi / lo) * this.next());
  }

  /** An integer in [lo, hi], both included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** A standard normal number (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }

  /** A normal number with this mean and standard deviation, clamped to [lo, hi]. */
  clampedNormal(mean: number, sd: number, lo: number, hi: number): number {
    return Math.min(hi, Math.max(lo, mean + sd * this.normal()));
  }

  /** One element, uniformly. */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }

  /** An index drawn with probability proportional to its weight. */
  weighted(weights: readonly number[]): number {
    let total = 0;
    for (const w of weights) total += w;
    let r = this.next() * total;
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i];
      if (r < 0) return i;
    }
    return weights.length - 1;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

let normals: Float32Array | undefined;

/** 2^17 standard normal numbers, the same in every process (Note [the noise table]). */
export function normalTable(): Float32Array {
  if (normals === undefined) {
    const rng = new Rng(0x5eed, 0);
    normals = new Float32Array(1 << 17);
    for (let i = 0; i < normals.length; i++) normals[i] = rng.normal();
  }
  return normals;
}
