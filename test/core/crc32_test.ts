import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { crc32, crc32Js } from '../../core/crc32.ts';

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

test.run();
