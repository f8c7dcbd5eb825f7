import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_MAX_FRAME, FrameDecoder, HEADER_SIZE, encodeFrame } from '../../protocol/frame_codec.ts';
import { Codes, ImzError } from '../../protocol/errors.ts';
import { concat, header } from './frame_fixtures.ts';

// ---------- helpers ----------

/** A body of n bytes whose content depends on a seed, so frames cannot be confused. */
function body(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b;
}



/** Plain arrays so assert.equal compares content, not Uint8Array identity or offsets. */
function arrays(frames: Uint8Array[]): number[][] {
  return frames.map((f) => Array.from(f));
}

/** Asserts fn throws an ImzError with the given code; returns it. */
function throwsCode(fn: () => unknown, code: string): ImzError {
  try {
    fn();
  } catch (err) {
    assert.instance(err, ImzError);
    assert.is((err as ImzError).code, code);
    return err as ImzError;
  }
  assert.unreachable(`expected an ImzError with code ${code}`);
  throw new Error('unreachable');
}

// Lengths chosen to cross the 4-byte header in every way: empty, shorter
// than a header, exactly a header, longer, and a few hundred bytes.
const LENGTHS = [0, 1, 3, 4, 5, 0, 17, 2, 300, 0];
const BODIES = LENGTHS.map((n, i) => body(n, i + 1));
const STREAM = concat(BODIES.map(encodeFrame));

// ---------- encodeFrame ----------

test('encodeFrame writes a 4-byte big-endian length then the body', () => {
  const b = body(0x010203, 9);
  const f = encodeFrame(b);
  assert.is(f.length, 4 + 0x010203);
  assert.equal(Array.from(f.subarray(0, 4)), [0x00, 0x01, 0x02, 0x03]);
  assert.ok(f.subarray(4).every((v, i) => v === b[i]));
  assert.equal(Array.from(encodeFrame(new Uint8Array(0))), [0, 0, 0, 0]);
});

test('encodeFrame copies a body that is a view into a larger buffer', () => {
  const big = body(100, 3);
  const view = big.subarray(10, 20);
  const f = encodeFrame(view);
  assert.equal(Array.from(f), [0, 0, 0, 10, ...Array.from(view)]);
});

// ---------- splitting and coalescing ----------

test('a multi-frame stream split at every single byte boundary decodes the same frames', () => {
  const want = arrays(BODIES);
  for (let i = 0; i <= STREAM.length; i++) {
    const d = new FrameDecoder();
    const got = [...d.push(STREAM.subarray(0, i)), ...d.push(STREAM.subarray(i))];
    assert.equal(arrays(got), want, `split at byte ${i}`);
    assert.is(d.buffered, 0, `nothing left over after split at ${i}`);
    assert.is(d.partial, false);
  }
});

test('a multi-frame stream split at every pair of byte boundaries decodes the same frames', () => {
  // Three pieces: covers a header cut in two places, and a body cut twice.
  const small = concat([body(0, 1), body(2, 2), body(5, 3), body(0, 4), body(9, 5)].map(encodeFrame));
  const want = arrays([body(0, 1), body(2, 2), body(5, 3), body(0, 4), body(9, 5)]);
  for (let i = 0; i <= small.length; i++) {
    for (let j = i; j <= small.length; j++) {
      const d = new FrameDecoder();
      const got = [...d.push(small.subarray(0, i)), ...d.push(small.subarray(i, j)), ...d.push(small.subarray(j))];
      assert.equal(arrays(got), want, `split at ${i} and ${j}`);
      assert.is(d.buffered, 0);
    }
  }
});

test('feeding one byte at a time yields each frame exactly at its last byte', () => {
  // Where each frame ends in the stream (index of its last byte).
  const ends: number[] = [];
  let off = 0;
  for (const b of BODIES) {
    off += HEADER_SIZE + b.length;
    ends.push(off - 1);
  }
  const d = new FrameDecoder();
  const got: Uint8Array[] = [];
  for (let i = 0; i < STREAM.length; i++) {
    const out = d.push(STREAM.subarray(i, i + 1));
    // A frame completes on byte i exactly when i is one of the ends; two
    // frames never complete on the same byte since each has a 4-byte header.
    const expected = ends.filter((e) => e === i).length;
    assert.is(out.length, expected, `frames completed by byte ${i}`);
    got.push(...out);
  }
  assert.equal(arrays(got), arrays(BODIES));
  assert.is(d.buffered, 0);
  assert.is(d.partial, false);
});

test('feeding a fresh one-byte Buffer at a time (non-zero byteOffsets) decodes the stream', () => {
  // Node hands sockets' data as Buffers that are views into shared slabs;
  // the decoder must honour byteOffset when reading the header.
  const d = new FrameDecoder();
  const got: Uint8Array[] = [];
  for (let i = 0; i < STREAM.length; i++) got.push(...d.push(Buffer.from([STREAM[i]!])));
  assert.equal(arrays(got), arrays(BODIES));
});

test('several frames coalesced in one chunk come out together and in order', () => {
  const d = new FrameDecoder();
  const got = d.push(STREAM);
  assert.is(got.length, BODIES.length);
  assert.equal(arrays(got), arrays(BODIES));
  assert.is(d.buffered, 0);
});

test('a chunk holding the end of one frame, whole frames, and the start of another', () => {
  const frames = [body(10, 1), body(3, 2), body(0, 3), body(7, 4), body(20, 5)];
  const s = concat(frames.map(encodeFrame));
  const cut1 = 4 + 5; // inside the first body
  const cut2 = s.length - 6; // inside the last body
  const d = new FrameDecoder();
  assert.equal(d.push(s.subarray(0, cut1)), []);
  assert.ok(d.partial);
  const mid = d.push(s.subarray(cut1, cut2));
  assert.equal(arrays(mid), arrays(frames.slice(0, 4)));
  assert.ok(d.partial, 'the last frame is started');
  const end = d.push(s.subarray(cut2));
  assert.equal(arrays(end), arrays(frames.slice(4)));
  assert.not.ok(d.partial);
});

test('frames inside a chunk that is a view at an odd offset of a bigger buffer', () => {
  const pad = 3;
  const backing = new Uint8Array(pad + STREAM.length + 5);
  backing.set(STREAM, pad);
  const view = backing.subarray(pad, pad + STREAM.length);
  const d = new FrameDecoder();
  assert.equal(arrays(d.push(view)), arrays(BODIES));
});

test('an empty chunk is harmless', () => {
  const d = new FrameDecoder();
  assert.equal(d.push(new Uint8Array(0)), []);
  assert.is(d.buffered, 0);
  assert.is(d.partial, false);
  d.push(STREAM.subarray(0, 2));
  assert.equal(d.push(new Uint8Array(0)), []);
  assert.is(d.buffered, 2);
});

// ---------- zero-length frames ----------

test('a zero-length frame decodes to one empty body', () => {
  const d = new FrameDecoder();
  const got = d.push(new Uint8Array([0, 0, 0, 0]));
  assert.is(got.length, 1);
  assert.is(got[0]!.length, 0);
  assert.is(d.partial, false);
});

test('consecutive zero-length frames are each returned', () => {
  const d = new FrameDecoder();
  const got = d.push(new Uint8Array(12));
  assert.is(got.length, 3);
  assert.ok(got.every((f) => f.length === 0));
});

// ---------- size limit ----------

test('a length over maxFrame throws IMZ_FRAME_TOO_LARGE as soon as the header is complete', () => {
  const d = new FrameDecoder(1024);
  const h = header(1025);
  // Three header bytes: not decided yet.
  assert.equal(d.push(h.subarray(0, 3)), []);
  // The fourth byte completes the header; no body byte has arrived.
  const err = throwsCode(() => d.push(h.subarray(3)), Codes.FRAME_TOO_LARGE);
  assert.match(err.message, /1025/);
  assert.match(err.message, /1024/);
});

test('a hostile 4 GiB length throws before any body is buffered (default maximum)', () => {
  const d = new FrameDecoder();
  assert.is(d.maxFrame, DEFAULT_MAX_FRAME);
  throwsCode(() => d.push(header(0xffffffff)), Codes.FRAME_TOO_LARGE);
  const d2 = new FrameDecoder();
  throwsCode(() => d2.push(header(DEFAULT_MAX_FRAME + 1)), Codes.FRAME_TOO_LARGE);
});

test('an oversize frame after good ones in the same chunk throws', () => {
  const d = new FrameDecoder(64);
  const s = concat([encodeFrame(body(10, 1)), encodeFrame(body(64, 2)), header(65), body(65, 3)]);
  throwsCode(() => d.push(s), Codes.FRAME_TOO_LARGE);
});

test('a frame of exactly maxFrame bytes is accepted', () => {
  const d = new FrameDecoder(1024);
  const b = body(1024, 7);
  const got = d.push(encodeFrame(b));
  assert.equal(arrays(got), [Array.from(b)]);
});

test('a frame of exactly the default 16 MiB maximum is accepted, fed in pieces', () => {
  const d = new FrameDecoder();
  const b = new Uint8Array(DEFAULT_MAX_FRAME);
  b[0] = 1;
  b[b.length - 1] = 2;
  assert.equal(d.push(header(DEFAULT_MAX_FRAME)), []);
  const step = 1 << 20;
  let got: Uint8Array[] = [];
  for (let off = 0; off < b.length; off += step) got = got.concat(d.push(b.subarray(off, off + step)));
  assert.is(got.length, 1);
  assert.is(got[0]!.length, DEFAULT_MAX_FRAME);
  assert.is(got[0]![0], 1);
  assert.is(got[0]![DEFAULT_MAX_FRAME - 1], 2);
  assert.is(d.buffered, 0);
});

test('lowering maxFrame (negotiation) applies to the next header', () => {
  const d = new FrameDecoder();
  assert.is(d.push(encodeFrame(body(100, 1))).length, 1);
  d.maxFrame = 50;
  assert.is(d.push(encodeFrame(body(50, 2))).length, 1);
  throwsCode(() => d.push(encodeFrame(body(51, 3))), Codes.FRAME_TOO_LARGE);
});

// ---------- partial / buffered ----------

test('partial is true from the first byte of a frame until its last', () => {
  const d = new FrameDecoder();
  const f = encodeFrame(body(10, 1));
  assert.is(d.partial, false);
  for (let i = 0; i < f.length - 1; i++) {
    d.push(f.subarray(i, i + 1));
    // Including the moment the header is complete and no body byte has
    // arrived yet: a peer that stalls there must still count as mid-frame.
    assert.is(d.partial, true, `after byte ${i}`);
  }
  assert.is(d.push(f.subarray(f.length - 1)).length, 1);
  assert.is(d.partial, false);
});

// ---------- garbage ----------

test('an HTTP request instead of frames is rejected as too large', () => {
  const d = new FrameDecoder();
  const http = new TextEncoder().encode('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  throwsCode(() => d.push(http), Codes.FRAME_TOO_LARGE);
});

test('random garbage either yields bounded frames or throws IMZ_FRAME_TOO_LARGE, never anything else', () => {
  // Deterministic xorshift PRNG so a failure is reproducible.
  let s = 0x9e3779b9;
  const rnd = (): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x100000000;
  };
  let threw = 0;
  let framed = 0;
  for (let run = 0; run < 500; run++) {
    const max = 1 + Math.floor(rnd() * 300);
    const d = new FrameDecoder(max);
    const n = Math.floor(rnd() * 600);
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      // Mostly small numbers so that some lengths fall under the maximum.
      bytes[i] = rnd() < 0.7 ? Math.floor(rnd() * 4) : Math.floor(rnd() * 256);
    }
    let consumed = 0;
    try {
      let off = 0;
      while (off < n) {
        const k = 1 + Math.floor(rnd() * 40);
        for (const f of d.push(bytes.subarray(off, off + k))) {
          assert.ok(f.length <= max, 'frame within the maximum');
          consumed += HEADER_SIZE + f.length;
          framed++;
        }
        off += k;
      }
      // Every byte fed is accounted for: in returned frames, or still
      // buffered (plus a consumed header while a body is awaited).
      assert.ok(consumed + d.buffered <= n && n - consumed - d.buffered <= HEADER_SIZE, `bytes accounted for in run ${run}`);
    } catch (err) {
      if (!(err instanceof ImzError)) throw err;
      assert.is(err.code, Codes.FRAME_TOO_LARGE);
      threw++;
    }
  }
  // The generator must exercise both outcomes or the test proves little.
  assert.ok(threw > 0, 'some garbage was rejected');
  assert.ok(framed > 0, 'some garbage happened to frame');
});

test.run();
