// Property-based tests of FrameDecoder: the first thing that touches bytes
// from a hostile peer. Arbitrary frame streams cut at arbitrary points must
// decode to the same frames, and arbitrary garbage must either yield frames
// no longer than the maximum or throw IMZ_FRAME_TOO_LARGE exactly where a
// reference model says, never anything else, never buffering a hostile body.
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Codes, ImzError } from '../../protocol/errors.ts';
import { DEFAULT_MAX_FRAME, FrameDecoder, HEADER_SIZE, encodeFrame } from '../../protocol/frame_codec.ts';
import { FuzzSuite } from '../fuzz_config.ts';
import { concat, header } from './frame_fixtures.ts';

const suite = new FuzzSuite('frame decoder');
test.after(() => suite.report());

// ---------- helpers ----------



/** Cuts bytes at the given positions (taken modulo length+1, sorted; repeats give empty pieces). */
function cut(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const at = cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let prev = 0;
  for (const c of at) {
    pieces.push(bytes.subarray(prev, c));
    prev = c;
  }
  pieces.push(bytes.subarray(prev));
  return pieces;
}

const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);

/** What a correct decoder does with a whole stream: where headers and frames end, or where it must fail. */
type ModelEvent = { kind: 'header'; at: number } | { kind: 'frame'; at: number; body: Uint8Array } | { kind: 'error'; at: number };

function model(bytes: Uint8Array, maxFrame: number): ModelEvent[] {
  const ev: ModelEvent[] = [];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  while (pos + HEADER_SIZE <= bytes.length) {
    const len = dv.getUint32(pos, false);
    pos += HEADER_SIZE;
    if (len > maxFrame) {
      ev.push({ kind: 'error', at: pos });
      return ev;
    }
    ev.push({ kind: 'header', at: pos });
    if (pos + len > bytes.length) return ev;
    pos += len;
    ev.push({ kind: 'frame', at: pos, body: bytes.subarray(pos - len, pos) });
  }
  return ev;
}

/** Feeds pieces to a decoder and compares every step with the model; returns how it ended. */
function feedAndCompare(pieces: Uint8Array[], maxFrame: number): 'ok' | 'too-large' {
  const all = concat(pieces);
  const events = model(all, maxFrame);
  const d = new FrameDecoder(maxFrame);
  let end = 0;
  let returned = 0; // frames returned so far
  for (const piece of pieces) {
    const start = end;
    end += piece.length;
    const due = events.filter((e) => e.at > start && e.at <= end);
    const error = due.find((e) => e.kind === 'error');
    let got: Uint8Array[];
    try {
      got = d.push(piece);
    } catch (err) {
      if (!(err instanceof ImzError)) throw new Error(`decoder threw a non-ImzError: ${String(err)}`);
      assert.is(err.code, Codes.FRAME_TOO_LARGE, 'the only error is IMZ_FRAME_TOO_LARGE');
      assert.ok(error, `threw at bytes ${start}..${end} where the model reads no oversized header`);
      // The oversized body was never buffered beyond what this one piece carried.
      assert.ok(d.buffered <= end - error.at, `buffered ${d.buffered} bytes after an oversized header`);
      return 'too-large';
    }
    assert.not.ok(error, `no error for an oversized header ending at byte ${error?.at}`);
    const frames = due.filter((e) => e.kind === 'frame') as { body: Uint8Array }[];
    assert.is(got.length, frames.length, `frames completed by bytes ${start}..${end}`);
    got.forEach((f, i) => {
      assert.ok(f.length <= maxFrame, `frame of ${f.length} bytes over the ${maxFrame}-byte maximum`);
      assert.ok(same(f, frames[i]!.body), `frame ${returned + i} differs from the model`);
    });
    returned += got.length;
    // Nothing is held but the unconsumed tail: no hidden growth.
    const seen = events.filter((e) => e.at <= end);
    const consumed = seen.length > 0 ? seen[seen.length - 1]!.at : 0;
    assert.is(d.buffered, end - consumed, 'buffered bytes');
    // Mid-frame when bytes wait, or when a header was read and its frame is not complete.
    assert.is(d.partial, end > consumed || seen[seen.length - 1]?.kind === 'header', 'partial');
  }
  return 'ok';
}

// ---------- arbitraries ----------

const bodyArb = fc.uint8Array({ maxLength: 600 });
const cutsArb = fc.array(fc.nat(), { maxLength: 12 });

/** Garbage that sometimes looks like frames: raw bytes, or a small header followed by bytes of any length. */
const tokenArb = fc.oneof(
  fc.uint8Array({ maxLength: 40 }),
  fc.tuple(fc.integer({ min: 0, max: 96 }), fc.uint8Array({ maxLength: 120 })).map(([n, b]) => concat([header(n), b])),
  fc.tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.uint8Array({ maxLength: 20 })).map(([n, b]) => concat([header(n), b])),
);
const maxFrameArb = fc.oneof(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.constant(DEFAULT_MAX_FRAME));

// ---------- properties ----------

test('arbitrary frame sequences split at arbitrary points decode to the same frames', () => {
  suite.check(fc.record({ bodies: fc.array(bodyArb, { maxLength: 12 }), cuts: cutsArb, tight: fc.boolean() }), ({ bodies, cuts, tight }) => {
    // tight: the maximum is exactly the longest body (the boundary must be accepted).
    const maxFrame = tight ? bodies.reduce((m, b) => Math.max(m, b.length), 0) : DEFAULT_MAX_FRAME;
    const pieces = cut(concat(bodies.map(encodeFrame)), cuts);
    const d = new FrameDecoder(maxFrame);
    const got = pieces.flatMap((p) => d.push(p));
    assert.is(got.length, bodies.length);
    got.forEach((f, i) => assert.ok(same(f, bodies[i]!), `frame ${i}`));
    assert.is(d.buffered, 0);
    assert.is(d.partial, false);
    assert.is(feedAndCompare(pieces, maxFrame), 'ok');
  }, 2);
});

test('arbitrary garbage yields frames within the maximum or throws IMZ_FRAME_TOO_LARGE where the model says', () => {
  suite.check(fc.record({ tokens: fc.array(tokenArb, { maxLength: 12 }), cuts: cutsArb, maxFrame: maxFrameArb }), ({ tokens, cuts, maxFrame }) => {
    feedAndCompare(cut(concat(tokens), cuts), maxFrame);
  }, 3);
});

test('an oversized length prefix throws as soon as its fourth byte arrives, after the intact frames before it', () => {
  const arb = fc.record({
    before: fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 4 }),
    maxFrame: fc.integer({ min: 64, max: 2 ** 31 }),
    over: fc.integer({ min: 1, max: 2 ** 32 - 1 }),
    bytewise: fc.boolean(),
    tail: fc.uint8Array({ maxLength: 64 }),
  });
  suite.check(arb, ({ before, maxFrame, over, bytewise, tail }) => {
    const len = Math.min(2 ** 32 - 1, maxFrame + over);
    const d = new FrameDecoder(maxFrame);
    const got = before.flatMap((b) => d.push(encodeFrame(b)));
    assert.is(got.length, before.length);
    const h = header(len);
    try {
      if (bytewise) {
        for (let i = 0; i < HEADER_SIZE - 1; i++) assert.is(d.push(h.subarray(i, i + 1)).length, 0);
        d.push(concat([h.subarray(HEADER_SIZE - 1), tail]));
      } else d.push(concat([h, tail]));
      assert.unreachable(`a ${len}-byte length over a ${maxFrame}-byte maximum was accepted`);
    } catch (err) {
      assert.instance(err, ImzError);
      assert.is((err as ImzError).code, Codes.FRAME_TOO_LARGE);
    }
    // At most the tail that came with the header is held: the declared body never is.
    assert.ok(d.buffered <= tail.length);
  }, 1);
});

test.run();
