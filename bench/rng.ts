// Deterministic randomness for the benchmark: a seeded PRNG (xoshiro128**) for
// layouts and choices, and AES-128-CTR keystreams for file content (fast,
// incompressible, unique per file, identical on every run for the same seed).
// Nothing here uses Math.random.
import { createCipheriv, createHash, type Cipher } from 'node:crypto';

const rotl = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;

/** xoshiro128** seeded from the SHA-256 of a string. */
export class Rng {
  private s: Uint32Array;

  constructor(seed: string) {
    const h = createHash('sha256').update(seed).digest();
    this.s = new Uint32Array([h.readUInt32LE(0), h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt32LE(12)]);
    if ((this.s[0]! | this.s[1]! | this.s[2]! | this.s[3]!) === 0) this.s[0] = 1;
  }

  /** Uniform unsigned 32-bit integer. */
  next(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2] ^= s[0]!;
    s[3] ^= s[1]!;
    s[1] ^= s[2]!;
    s[0] ^= s[3]!;
    s[2] ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Integer in [0, n). */
  below(n: number): number {
    return Math.floor((this.next() / 4294967296) * n);
  }

  /** Integer in [lo, hi] (inclusive). */
  range(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }
}

const ZERO = Buffer.alloc(1 << 20);

/** A 128-bit key derived from a seed string. */
export function contentKey(seed: string): Buffer {
  return createHash('sha256').update(`content:${seed}`).digest().subarray(0, 16);
}

/**
 * Keystream for one file: (tag, index) select a disjoint counter range, so
 * every file of every generation round gets its own bytes.
 */
export function contentCipher(key: Buffer, tag: number, index: number): Cipher {
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(tag >>> 0, 0);
  iv.writeUInt32BE(index >>> 0, 4);
  return createCipheriv('aes-128-ctr', key, iv);
}

/** The deterministic content of a small file (size ≤ 1 MiB per update call, any size overall). */
export function contentBytes(key: Buffer, tag: number, index: number, size: number): Buffer {
  const c = contentCipher(key, tag, index);
  if (size <= ZERO.length) return c.update(ZERO.subarray(0, size));
  const parts: Buffer[] = [];
  for (let left = size; left > 0; left -= ZERO.length) parts.push(c.update(ZERO.subarray(0, Math.min(left, ZERO.length))));
  return Buffer.concat(parts);
}

/** Stream `size` bytes of keystream in 1 MiB chunks (for the big file). */
export function* contentChunks(key: Buffer, tag: number, index: number, size: number): Generator<Buffer> {
  const c = contentCipher(key, tag, index);
  for (let left = size; left > 0; left -= ZERO.length) yield c.update(ZERO.subarray(0, Math.min(left, ZERO.length)));
}
