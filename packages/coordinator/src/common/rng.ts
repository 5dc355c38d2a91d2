/**
 * A small seeded PRNG (xoshiro128**, seeded through splitmix32) so that trial sampling and bracket
 * draws are a pure function of the study seed: the same seed gives the same trials and brackets on
 * every machine and after every coordinator restart. `Math.random` is never used for decisions.
 *
 * `stream` separates independent uses of one seed ("search", "brackets"), so adding a parameter to the
 * search space does not shift the bracket draws and vice versa.
 */
export interface Rng {
  /** Uniform float in [0, 1) with 53 random bits. */
  next(): number;
  /** Uniform 32-bit unsigned integer. */
  nextUint32(): number;
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function splitmix32(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x9e3779b9) | 0;
    let t = a ^ (a >>> 16);
    t = Math.imul(t, 0x21f0aaad);
    t ^= t >>> 15;
    t = Math.imul(t, 0x735a2d97);
    t ^= t >>> 15;
    return t >>> 0;
  };
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k));

/** `seed` is any safe integer (negative ones included); all 53 bits matter. */
export function createRng(seed: number, stream = ""): Rng {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 0x1_0000_0000) >>> 0;
  // Feed low word, high word and stream through one splitmix sequence: distinct inputs give
  // distinct states with overwhelming probability.
  const mix = splitmix32(lo ^ fnv1a(stream));
  const m1 = mix();
  const mix2 = splitmix32(m1 ^ hi);
  let s0 = mix2();
  let s1 = mix2();
  let s2 = mix2();
  let s3 = mix2();
  if ((s0 | s1 | s2 | s3) === 0) s0 = 1;

  const nextUint32 = (): number => {
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return result;
  };
  return {
    nextUint32,
    next: () => ((nextUint32() >>> 5) * 67108864 + (nextUint32() >>> 6)) / 9007199254740992,
  };
}
