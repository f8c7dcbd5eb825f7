import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { crc32, crc32Js, crc32Patch, crc32Raw, crc32Shift } from '../../core/crc32.ts';

test('crc32: the IEEE check value, native and in JavaScript', () => {
  const nine = new TextEncoder().encode('123456789');
  assert.is(crc32(nine), 0xcbf43926);
  assert.is(crc32Js(nine), 0xcbf43926);
  assert.is(crc32(new Uint8Array(0)), 0);
  assert.is(crc32Js(new Uint8Array(0)), 0);
});

test('crc32: the two agree, and going on from a prefix gives the CRC of the whole', () => {
  for (const n of [1, 3, 4, 7, 64, 1000, 70_000]) {
    const b = new Uint8Array(randomBytes(n));
    const whole = crc32(b);
    assert.is(crc32Js(b), whole, `JavaScript, ${n} bytes`);
    for (const cut of [0, 1, n >> 1, n - 1, n]) {
      assert.is(crc32(b.subarray(cut), crc32(b.subarray(0, cut))), whole, `native, ${n} bytes cut at ${cut}`);
      assert.is(crc32Js(b.subarray(cut), crc32Js(b.subarray(0, cut))), whole, `JavaScript, ${n} bytes cut at ${cut}`);
    }
  }
});

test('crc32: going on over nothing keeps the value (an empty buffer of its own too)', () => {
  const b = new Uint8Array(randomBytes(100));
  const v = crc32(b);
  assert.is(crc32(new Uint8Array(0), v), v);
  assert.is(crc32(new Uint8Array(new ArrayBuffer(0)), v), v);
  assert.is(crc32(b.subarray(5, 5), v), v);
  assert.is(crc32Js(new Uint8Array(0), v), v);
});

test('crc32: bytes in shared memory', () => {
  const b = new Uint8Array(new SharedArrayBuffer(4096));
  b.set(randomBytes(4096));
  assert.is(crc32(b), crc32Js(b));
});

test('crc32Shift: the raw register of bytes then n zeros, for n from 0 to past 2^20', () => {
  for (const n of [0, 1, 2, 3, 7, 8, 255, 256, 4097, 65_537, 1_048_583, 3_000_000]) {
    const b = new Uint8Array(randomBytes(1 + (n % 97)));
    const withZeros = new Uint8Array(b.length + n);
    withZeros.set(b);
    assert.is(crc32Shift(crc32Raw(b), n), crc32Raw(withZeros), `${n} zeros`);
  }
  assert.is(crc32Shift(0, 12345), 0, 'nothing shifted is nothing');
});

test('crc32Patch: the CRC-32 after bytes are replaced in place equals the CRC-32 of the new message (first, last, middle, equal bytes, one byte)', () => {
  for (let t = 0; t < 500; t++) {
    const n = 1 + ((t * 7919) % 20_000);
    const a = new Uint8Array(randomBytes(n));
    const at = t % 5 === 0 ? 0 : (t * 104_729) % n;
    const len = Math.min(n - at, t % 3 === 0 ? 1 : 1 + (t % 200));
    const before = a.slice(at, at + len);
    const after = t % 11 === 0 ? before.slice() : new Uint8Array(randomBytes(len));
    if (t % 13 === 0) after[0] = before[0]!; // a change that starts later than the range
    const b = a.slice();
    b.set(after, at);
    assert.is(crc32Patch(crc32(a), n, at, before, after), crc32(b), `message of ${n}, ${len} bytes at ${at}`);
  }
});

test.run();
