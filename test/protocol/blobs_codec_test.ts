// The one-pass PUT_BLOBS encoder (protocol/blobs_codec.ts) must write the
// very bytes the generated encoder writes, for any request a client can
// make: contents empty or past the one- and two-byte length prefixes, sizes
// and offsets of any double (0 and -0 left out), queries, the staging hint
// (mode, mtime), any request id.
// Anything else in the envelope goes to the generated encoder.
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodePutBlobs, isPutBlobs } from '../../protocol/blobs_codec.ts';
import { imz } from '../../protocol/imz_codec.ts';
import { Op, decodeEnvelope, encodeEnvelope } from '../../protocol/messages.ts';
import { FuzzSuite } from '../fuzz_config.ts';

const suite = new FuzzSuite('PUT_BLOBS encoder');
test.after(() => suite.report());

const generated = (env: object): Uint8Array => (imz as unknown as { Envelope: { encode(m: object): { finish(): Uint8Array } } }).Envelope.encode(env).finish();
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

const bytesArb = fc.oneof(
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 200 }) },
  { weight: 1, arbitrary: fc.integer({ min: 16_000, max: 20_000 }).map((n) => new Uint8Array(n).map((_, i) => (i * 7) & 255)) },
  { weight: 1, arbitrary: fc.constantFrom(0, 127, 128, 16_383, 16_384).map((n) => new Uint8Array(n).fill(9)) },
);
const blobArb = fc.record({
  hash: fc.oneof(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.constant(new Uint8Array(0))),
  size: fc.oneof(fc.constantFrom(0, -0, 1, 2 ** 40, 0.5), fc.double()),
  offset: fc.oneof(fc.constantFrom(0, -0, 1_048_576), fc.double()),
  data: bytesArb,
  last: fc.boolean(),
  query: fc.option(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 4 }), { nil: undefined }),
  mode: fc.oneof(fc.constantFrom(0, 0o644, 0o755, 0o7777, 127, 128), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
  mtimeMs: fc.oneof(fc.constantFrom(0, -0, 1.7e12 + 0.123, -1), fc.double()),
}, { requiredKeys: ['hash', 'size', 'offset', 'data', 'last'] });
const envArb = fc.record({
  xid: fc.oneof(fc.constantFrom(0, 1, 127, 128, 2 ** 32 - 1), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
  op: fc.constantFrom(Op.PUT_BLOBS, 0, 1, 200),
  reply: fc.boolean(),
  last: fc.boolean(),
  putBlobs: fc.record({ blobs: fc.array(blobArb, { maxLength: 6 }) }),
}, { requiredKeys: ['putBlobs'] });

test('the same bytes as the generated encoder, and they decode to the same request', () => {
  suite.check(envArb, (env) => {
    assert.ok(isPutBlobs(env));
    const mine = encodePutBlobs(env);
    assert.is(hex(mine), hex(generated(env)));
    assert.is(hex(encodeEnvelope(env)), hex(mine));
    const back = decodeEnvelope(mine);
    assert.is(back.putBlobs?.blobs?.length ?? 0, env.putBlobs.blobs.length);
    env.putBlobs.blobs.forEach((b, i) => {
      const d = back.putBlobs!.blobs[i]!;
      assert.is(hex(d.data ?? new Uint8Array(0)), hex(b.data));
      assert.is(hex(d.hash ?? new Uint8Array(0)), hex(b.hash));
      assert.is(d.mode ?? 0, b.mode ?? 0);
      assert.ok(Object.is(d.mtimeMs, b.mtimeMs ?? 0), `mtimeMs ${b.mtimeMs} came back ${d.mtimeMs}`);
    });
  }, 2);
});

test('a megabyte request of small contents: the same bytes, with three-byte lengths', () => {
  const blobs = Array.from({ length: 120 }, (_, i) => ({ hash: new Uint8Array(32).fill(i), size: 8000 + i, offset: 0, data: new Uint8Array(8000 + i).fill(i & 255), last: true }));
  const env = { xid: 4242, op: Op.PUT_BLOBS, putBlobs: { blobs } };
  assert.is(hex(encodeEnvelope(env)), hex(generated(env)));
  assert.ok(encodeEnvelope(env).length > 960_000);
});

test('an error, another body, a negative or fractional id: left to the generated encoder', () => {
  const blobs = [{ hash: new Uint8Array(32), size: 1, offset: 0, data: new Uint8Array([1]), last: true }];
  assert.not.ok(isPutBlobs({ xid: 1, op: Op.PUT_BLOBS, error: { code: 'IMZ_IO', message: 'm' }, putBlobs: { blobs } }));
  assert.not.ok(isPutBlobs({ xid: 1, putBlobs: { blobs }, stat: { path: 'x' } }));
  assert.not.ok(isPutBlobs({ xid: -1, putBlobs: { blobs } }));
  assert.not.ok(isPutBlobs({ xid: 1.5, putBlobs: { blobs } }));
  assert.not.ok(isPutBlobs({ xid: 1, op: -3, putBlobs: { blobs } }));
  assert.not.ok(isPutBlobs({ xid: 1 }));
  const withError = { xid: 1, op: Op.PUT_BLOBS, error: { code: 'IMZ_IO', message: 'm' }, putBlobs: { blobs } };
  assert.is(hex(encodeEnvelope(withError)), hex(generated(withError)));
});

test.run();
