// CRC-32 (IEEE), for checksumming journal and log records and the scan
// cache. node:zlib has it natively from Node 20.15 (and in Deno); the table
// below serves an older Node 20, with the same results.
import zlib from 'node:zlib';

const _native = typeof (zlib as { crc32?: unknown }).crc32 === 'function' ? (zlib as unknown as { crc32: (data: Uint8Array, value?: number) => number }).crc32 : undefined;

let _table: Uint32Array | undefined;

/** CRC-32 of bytes; value: the CRC of the bytes before them, to go on from (0 to start). */
export function crc32(bytes: Uint8Array, value = 0): number {
  // Nothing to add: zlib takes an empty buffer's null pointer for "start over" and answers 0.
  if (bytes.length === 0) return value >>> 0;
  if (_native) return _native(bytes, value);
  return crc32Js(bytes, value);
}

/** crc32 in JavaScript (what runs where node:zlib has none; tests compare the two). */
export function crc32Js(bytes: Uint8Array, value = 0): number {
  const t = (_table ??= _makeTable());
  let c = (value ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = t[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function _makeTable(): Uint32Array {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
}

// x^(2^k) mod the CRC-32 polynomial (reflected, x^0 = 0x80000000), k = 0..31: the steps of crc32Shift.
let _powers: Uint32Array | undefined;

/**
 * The CRC register after bytes, starting from 0 and without the final
 * inversion: linear in the bytes, so for two messages of the same length
 * crc32(a) ^ crc32(b) = crc32Raw(a ^ b). What crc32Patch adds up.
 */
export function crc32Raw(bytes: Uint8Array): number {
  // crc32 inverts the register before and after: starting it from all ones and inverting the answer undoes both.
  return (crc32(bytes, 0xffffffff) ^ 0xffffffff) >>> 0;
}

/** crc32Raw of bytes followed by n zero bytes, from crc32Raw of the bytes (a multiplication by x^(8n) modulo the polynomial, as zlib's crc32_combine). */
export function crc32Shift(raw: number, n: number): number {
  const p = (_powers ??= _makePowers());
  let x = 0x80000000; // x^0
  for (let k = 3; n > 0; n = Math.floor(n / 2), k++) if (n % 2 === 1) x = _mulModP(p[k & 31]!, x);
  return _mulModP(x, raw);
}

/**
 * The CRC-32 of a message of size bytes once the bytes at offset at are
 * replaced (before -> after, the same length), from its CRC-32 before:
 * only the changed bytes are read, not the message.
 */
export function crc32Patch(sum: number, size: number, at: number, before: Uint8Array, after: Uint8Array): number {
  let first = -1;
  let last = -1;
  for (let i = 0; i < before.length; i++) {
    if (before[i] !== after[i]) {
      if (first < 0) first = i;
      last = i;
    }
  }
  if (first < 0) return sum >>> 0;
  const delta = new Uint8Array(last - first + 1);
  for (let i = first; i <= last; i++) delta[i - first] = before[i]! ^ after[i]!;
  // Zeros before the change add nothing to the raw register; those after it are the shift.
  return (sum ^ crc32Shift(crc32Raw(delta), size - (at + last + 1))) >>> 0;
}

function _mulModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    if (m === 0) break;
    b = b & 1 ? (b >>> 1) ^ 0xedb88320 : b >>> 1;
  }
  return p >>> 0;
}

function _makePowers(): Uint32Array {
  const p = new Uint32Array(32);
  let x = 0x40000000; // x^1
  for (let k = 0; k < 32; k++) {
    p[k] = x;
    x = _mulModP(x, x);
  }
  return p;
}
