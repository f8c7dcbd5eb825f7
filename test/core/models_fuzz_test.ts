// Property-based tests of the on-disk decoders: journal segments
// (core/journal_model.ts), replica index buckets (core/index_model.ts) and
// the reintegration log (core/reint_log_model.ts). After a crash, a full
// disk or a stray edit these read whatever bytes are there; they must keep
// the intact part, cut a torn tail where the module says so, throw only
// ImzError IMZ_CORRUPT where it says so, and never hand back an ill-typed
// value that would crash a caller later.
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Codes, ImzError } from '../../protocol/errors.ts';
import type { JournalRecord } from '../../protocol/messages.ts';
import { type IndexEntry, decodeBucket, encodeBucket } from '../../core/index_model.ts';
import { MAX_RECORD, SEGMENT_HEADER_SIZE, decodeSegment, encodeJournalRecords, segmentHeader } from '../../core/journal_model.ts';
import { LOG_HEADER, type LogRecord, decodeLog, encodeLogRecord, encodeLogRecords, pendingOps } from '../../core/reint_log_model.ts';
import { crc32 } from '../../core/crc32.ts';
import { FuzzSuite } from '../fuzz_config.ts';
import { concat } from '../protocol/frame_fixtures.ts';

const suite = new FuzzSuite('on-disk models');
test.after(() => suite.report());

// ---------- helpers ----------


/** Runs fn; returns its value, or undefined after checking it threw ImzError IMZ_CORRUPT. */
function orCorrupt<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof ImzError)) throw new Error(`threw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message} instead of ImzError IMZ_CORRUPT`);
    assert.is(err.code, Codes.CORRUPT);
    assert.not.ok(err.message.includes('\n'), 'one-line message');
    return undefined;
  }
}

/** Plain data for deep comparison (bytes as arrays, -0 as 0). */
function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return Array.from(v);
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === 'number') return v === 0 ? 0 : v;
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

/** Byte or character edits; `dup` is left out where a duplicated whole record would be legitimately valid. */
type Edit = { k: 'flip'; at: number; bit: number } | { k: 'set'; at: number; v: number } | { k: 'insert'; at: number; v: number[] } | { k: 'delete'; at: number; n: number };
const editArb: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ k: fc.constant('set' as const), at: fc.nat(), v: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ k: fc.constant('insert' as const), at: fc.nat(), v: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 6 }) }),
  fc.record({ k: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 6 }) }),
);
const editsArb = fc.array(editArb, { minLength: 1, maxLength: 3 });

/** Applies edits to positions at or after `from` (a header left alone when asked). Returns the new array and the first edited index. */
function applyEdits<T>(items: T[], edits: Edit[], from: number, make: (v: number) => T, flip: (x: T, bit: number) => T): { out: T[]; first: number } {
  const out = [...items];
  let first = Infinity;
  for (const e of edits) {
    const span = out.length - from;
    if (span < 0) break;
    const at = from + (e.at % (span + 1));
    first = Math.min(first, at);
    if (e.k === 'flip' && at < out.length) out[at] = flip(out[at]!, e.bit);
    else if (e.k === 'set' && at < out.length) out[at] = make(e.v);
    else if (e.k === 'insert') out.splice(at, 0, ...e.v.map(make));
    else if (e.k === 'delete') out.splice(at, e.n);
  }
  return { out, first };
}

// ---------- journal segments ----------

const finite = fc.double({ noNaN: true, noDefaultInfinity: true });
const entryArb = fc.record({
  path: fc.string({ unit: 'binary', maxLength: 30 }),
  type: fc.constantFrom(0, 1, 2, 3),
  size: fc.oneof(fc.nat(), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  mtimeMs: finite,
  hash: fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ minLength: 32, maxLength: 32 })),
  target: fc.string({ unit: 'binary', maxLength: 20 }),
  version: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
});
const recordArb = fc.record({
  seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  change: fc.integer({ min: 1, max: 8 }),
  entry: entryArb,
  origin: fc.oneof(fc.constant(''), fc.uuid()),
  originSeq: fc.nat(),
  timeMs: finite,
}) as unknown as fc.Arbitrary<JournalRecord>;

function segmentOf(records: JournalRecord[]): { bytes: Uint8Array; ends: number[] } {
  const parts = records.map((r) => encodeJournalRecords([r]));
  const ends: number[] = [];
  let off = SEGMENT_HEADER_SIZE;
  for (const p of parts) ends.push((off += p.length));
  return { bytes: concat([segmentHeader(), ...parts]), ends };
}

/** Checks a decoded segment against the records it was made of: a prefix, ending at a record boundary. */
function assertPrefix(dec: { records: JournalRecord[]; validEnd: number; torn: boolean }, records: JournalRecord[], ends: number[], length: number): void {
  assert.ok(dec.records.length <= records.length, 'more records than were written');
  dec.records.forEach((r, i) => assert.equal(plain(r), plain(records[i]), `record ${i}`));
  assert.is(dec.validEnd, dec.records.length === 0 ? SEGMENT_HEADER_SIZE : ends[dec.records.length - 1]!);
  assert.is(dec.torn, dec.validEnd < length);
  assert.ok(dec.validEnd <= length);
}

test('journal segments round-trip, and any truncation keeps exactly the whole records before the cut', () => {
  suite.check(fc.tuple(fc.array(recordArb, { maxLength: 8 }), fc.nat()), ([records, k]) => {
    const { bytes, ends } = segmentOf(records);
    const full = decodeSegment(bytes);
    assertPrefix(full, records, ends, bytes.length);
    assert.is(full.records.length, records.length);
    assert.is(full.torn, false);
    const cutAt = k % (bytes.length + 1);
    const dec = orCorrupt(() => decodeSegment(bytes.subarray(0, cutAt)));
    if (cutAt < SEGMENT_HEADER_SIZE) {
      assert.is(dec, undefined, 'a segment shorter than its header is IMZ_CORRUPT');
      return;
    }
    assertPrefix(dec!, records, ends, cutAt);
    assert.is(dec!.records.length, ends.filter((e) => e <= cutAt).length);
  }, 1.5);
});

test('damaged journal bytes keep an intact prefix of records (a damaged header is IMZ_CORRUPT)', () => {
  suite.check(fc.tuple(fc.array(recordArb, { minLength: 1, maxLength: 6 }), editsArb, fc.boolean()), ([records, edits, header]) => {
    const { bytes, ends } = segmentOf(records);
    const { out, first } = applyEdits(Array.from(bytes), edits, header ? 0 : SEGMENT_HEADER_SIZE, (v) => v, (x, bit) => x ^ (1 << bit));
    const damaged = Uint8Array.from(out);
    const dec = orCorrupt(() => decodeSegment(damaged));
    if (!dec) {
      assert.ok(first < SEGMENT_HEADER_SIZE, 'IMZ_CORRUPT for damage after the header');
      return;
    }
    // Records wholly before the first edit survive.
    assert.ok(dec.records.length >= ends.filter((e) => e <= first).length, 'an intact record before the damage was cut');
    assertPrefix(dec, records, ends, damaged.length);
  }, 1.5);
});

test('arbitrary bytes after a valid header, and records with valid checksums over garbage, never throw', () => {
  const garbageRecord = fc.oneof(
    fc.uint8Array({ maxLength: 40 }),
    // A correct frame (length and CRC) around arbitrary protobuf bytes: the payload decoder is reached.
    fc.uint8Array({ maxLength: 60 }).map((p) => {
      const h = new Uint8Array(8);
      new DataView(h.buffer).setUint32(0, p.length, false);
      new DataView(h.buffer).setUint32(4, crc32(p), false);
      return concat([h, p]);
    }),
    // A length over the limit: must stop, not allocate.
    fc.integer({ min: MAX_RECORD + 1, max: 2 ** 32 - 1 }).map((n) => {
      const h = new Uint8Array(8);
      new DataView(h.buffer).setUint32(0, n, false);
      return h;
    }),
  );
  suite.check(fc.tuple(fc.array(garbageRecord, { maxLength: 6 }), fc.boolean()), ([parts, withHeader]) => {
    const bytes = concat(withHeader ? [segmentHeader(), ...parts] : parts);
    const dec = orCorrupt(() => decodeSegment(bytes));
    if (!dec) return;
    assert.ok(dec.validEnd >= SEGMENT_HEADER_SIZE && dec.validEnd <= bytes.length);
    assert.is(dec.torn, dec.validEnd < bytes.length);
    for (const r of dec.records) {
      assert.type(r.seq, 'number');
      assert.type(r.change, 'number');
      assert.type(r.entry.path, 'string');
      assert.instance(r.entry.hash, Uint8Array);
      assert.type(r.origin, 'string');
    }
  }, 2);
});

// ---------- replica index buckets ----------

const indexBaseArb = fc.record({
  type: fc.constantFrom(0, 1, 2, 3) as fc.Arbitrary<IndexEntry['type']>,
  version: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  hash: fc.oneof(fc.constant(''), fc.stringMatching(/^[0-9a-f]{64}$/)),
  size: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  mtimeMs: finite,
  ctimeMs: finite,
  ino: fc.nat(),
  target: fc.string({ unit: 'binary', maxLength: 20 }),
});
// On-demand replicas also record whether the content is here, or when it was fetched.
const indexEntryArb: fc.Arbitrary<IndexEntry> = fc.tuple(indexBaseArb, fc.oneof(
  fc.constant({}),
  fc.constant({ remote: true }),
  fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }).map((fetchedMs) => ({ fetchedMs })),
)).map(([e, extra]) => ({ ...e, ...extra }) as IndexEntry);
const bucketArb = fc.array(fc.tuple(fc.string({ unit: 'binary', maxLength: 30 }), indexEntryArb), { maxLength: 8 }).map((kv) => new Map(kv));

function plainMap(m: Map<string, IndexEntry>): unknown {
  return [...m].map(([k, v]) => [k, plain(v)]);
}

/** What callers of decodeBucket rely on: string paths, and fields of the right types. */
function assertWellTypedBucket(m: Map<string, IndexEntry>): void {
  assert.instance(m, Map);
  for (const [p, e] of m) {
    assert.type(p, 'string');
    assert.ok(e !== null && typeof e === 'object', 'entry is an object');
    assert.ok([0, 1, 2, 3].includes(e.type), `entry type ${String(e.type)}`);
    for (const k of ['version', 'size', 'mode', 'mtimeMs', 'ctimeMs', 'ino'] as const) assert.type(e[k], 'number', k);
    assert.type(e.hash, 'string', 'hash');
    assert.type(e.target, 'string', 'target');
    assert.ok(e.remote === undefined || e.remote === true, 'remote');
    assert.ok(e.fetchedMs === undefined || typeof e.fetchedMs === 'number', 'fetchedMs');
  }
}

test('index buckets round-trip; truncated ones are IMZ_CORRUPT or whole', () => {
  suite.check(fc.tuple(bucketArb, fc.nat()), ([m, k]) => {
    const text = encodeBucket(m);
    assert.equal(plainMap(decodeBucket(text, 'b')), plainMap(m));
    const cutAt = k % (text.length + 1);
    const dec = orCorrupt(() => decodeBucket(text.slice(0, cutAt), 'b'));
    if (dec) assert.equal(plainMap(dec), plainMap(m), `a bucket cut at ${cutAt} of ${text.length} decoded to something else`);
  });
});

test('damaged index buckets are IMZ_CORRUPT or decode to well-typed entries', () => {
  suite.check(fc.tuple(bucketArb, editsArb), ([m, edits]) => {
    const text = encodeBucket(m);
    const { out } = applyEdits([...text], edits, 0, (v) => String.fromCharCode(v), (x, bit) => String.fromCharCode(x.charCodeAt(0) ^ (1 << bit)));
    const dec = orCorrupt(() => decodeBucket(out.join(''), 'b'));
    if (dec) assertWellTypedBucket(dec);
  });
});

test('a valid bucket header over arbitrary JSON is IMZ_CORRUPT or well-typed entries', () => {
  const rowsArb = fc.oneof(fc.jsonValue(), fc.array(fc.oneof(fc.jsonValue(), fc.array(fc.jsonValue(), { minLength: 10, maxLength: 11 })), { maxLength: 5 }));
  suite.check(fc.tuple(rowsArb, fc.option(fc.nat(6))), ([rows, count]) => {
    const n = count ?? (Array.isArray(rows) ? rows.length : 1);
    const dec = orCorrupt(() => decodeBucket(`imz-index 1 ${n}\n${JSON.stringify(rows)}\n`, 'b'));
    if (dec) assertWellTypedBucket(dec);
  });
  suite.check(fc.string({ unit: 'binary', maxLength: 80 }), (text) => {
    const dec = orCorrupt(() => decodeBucket(text, 'b'));
    if (dec) assertWellTypedBucket(dec);
  });
});

// ---------- reintegration log ----------

const loggedOpArb = fc.record({
  seq: fc.integer({ min: 1, max: 2 ** 40 }),
  kind: fc.integer({ min: 1, max: 7 }),
  path: fc.string({ unit: 'binary', maxLength: 20 }),
  fromPath: fc.string({ unit: 'binary', maxLength: 10 }),
  base: fc.nat(),
  fromBase: fc.nat(),
  state: fc.record({ type: fc.constantFrom(0, 1, 2, 3), size: fc.nat(), mode: fc.integer({ min: 0, max: 0o7777 }), mtimeMs: finite, hash: fc.oneof(fc.constant(''), fc.stringMatching(/^[0-9a-f]{64}$/)), target: fc.string({ unit: 'binary', maxLength: 10 }) }),
});
const logRecordArb: fc.Arbitrary<LogRecord> = fc.oneof(
  { weight: 4, arbitrary: loggedOpArb.map((op) => ({ t: 'op' as const, op })) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('sent' as const, 'done' as const, 'drop' as const), fc.nat()).map(([t, upto]) => ({ t, upto })) },
);

function logOf(records: LogRecord[]): { text: string; ends: number[] } {
  let text = `${LOG_HEADER}\n`;
  const ends: number[] = [];
  for (const r of records) {
    text += encodeLogRecord(r);
    ends.push(Buffer.byteLength(text));
  }
  return { text, ends };
}

/** Checks a decoded log against the records it was made of: a prefix, ending at a line boundary. */
function assertLogPrefix(dec: ReturnType<typeof decodeLog>, records: LogRecord[], ends: number[], text: string): void {
  assert.ok(dec.records.length <= records.length);
  dec.records.forEach((r, i) => assert.equal(plain(r), plain(records[i]), `log record ${i}`));
  const headerBytes = Buffer.byteLength(`${LOG_HEADER}\n`);
  if (dec.validBytes > 0) assert.is(dec.validBytes, dec.records.length === 0 ? headerBytes : ends[dec.records.length - 1]!);
  else assert.is(dec.records.length, 0);
  assert.is(dec.torn, Buffer.byteLength(text) > dec.validBytes);
  // The intact part, cut where the caller would truncate the file, reads back the same and untorn.
  const again = decodeLog(Buffer.from(text).subarray(0, dec.validBytes).toString('utf8'));
  assert.equal(plain(again.records), plain(dec.records));
  assert.is(again.torn, false);
  pendingOps(dec.records);
}

test('reintegration logs round-trip, and any truncation keeps exactly the whole lines before the cut', () => {
  suite.check(fc.tuple(fc.array(logRecordArb, { maxLength: 8 }), fc.nat()), ([records, k]) => {
    const { text, ends } = logOf(records);
    const full = decodeLog(text);
    assert.is(full.records.length, records.length);
    assert.is(full.torn, false);
    assertLogPrefix(full, records, ends, text);
    // Cut at a byte (a multi-byte character may be split, as a crash would).
    const bytes = Buffer.from(text);
    const cutAt = k % (bytes.length + 1);
    const cutText = bytes.subarray(0, cutAt).toString('utf8');
    const dec = decodeLog(cutText);
    assertLogPrefix(dec, records, ends, cutText);
    if (cutAt >= Buffer.byteLength(`${LOG_HEADER}\n`)) assert.is(dec.records.length, ends.filter((e) => e <= cutAt).length);
  }, 1.5);
});

test('a batch of log records encodes to the bytes of its lines one by one (with and without the header)', () => {
  suite.check(fc.tuple(fc.array(logRecordArb, { maxLength: 8 }), fc.boolean()), ([records, withHeader]) => {
    const lines = (withHeader ? `${LOG_HEADER}\n` : '') + records.map(encodeLogRecord).join('');
    assert.equal(encodeLogRecords(records, withHeader), Buffer.from(lines, 'utf8'));
  });
});

test('damaged reintegration logs keep an intact prefix of records and never throw', () => {
  suite.check(fc.tuple(fc.array(logRecordArb, { minLength: 1, maxLength: 6 }), editsArb), ([records, edits]) => {
    const { text, ends } = logOf(records);
    const { out } = applyEdits([...text], edits, 0, (v) => String.fromCharCode(v), (x, bit) => String.fromCharCode(x.charCodeAt(0) ^ (1 << bit)));
    const damaged = out.join('');
    const dec = decodeLog(damaged);
    assert.ok(dec.records.length <= records.length);
    dec.records.forEach((r, i) => assert.equal(plain(r), plain(records[i]), `log record ${i}`));
    assert.ok(dec.validBytes <= Buffer.byteLength(damaged));
    assert.ok(ends.length >= 0);
    pendingOps(dec.records);
  }, 1.5);
});

test('log lines with a valid checksum over JSON of the wrong shape are cut as damage, not returned', () => {
  const lineOf = (json: string) => `${crc32(new TextEncoder().encode(json)).toString(16).padStart(8, '0')} ${json}\n`;
  const oddArb = fc.oneof(
    fc.jsonValue(),
    fc.record({ t: fc.constantFrom('op', 'sent', 'done', 'drop', 'x'), upto: fc.jsonValue(), op: fc.jsonValue() }, { requiredKeys: ['t'] }),
    loggedOpArb.chain((op) => fc.tuple(fc.constantFrom(...Object.keys(op), 'state', 'state.hash', 'state.type', 'state.target'), fc.jsonValue()).map(([k, v]) => {
      const copy = JSON.parse(JSON.stringify(op));
      if (k.startsWith('state.')) copy.state[k.slice(6)] = v;
      else copy[k] = v;
      return { t: 'op', op: copy };
    })),
  );
  suite.check(fc.tuple(fc.array(logRecordArb, { maxLength: 3 }), oddArb, fc.array(logRecordArb, { maxLength: 2 })), ([before, odd, after]) => {
    const { text, ends } = logOf(before);
    const oddLine = lineOf(JSON.stringify(odd) ?? 'null');
    const tail = after.map(encodeLogRecord).join('');
    const dec = decodeLog(text + oddLine + tail);
    // Whatever is returned is well shaped: pendingOps (what push runs) must not throw on it.
    pendingOps(dec.records);
    for (const r of dec.records) {
      assert.ok(['op', 'sent', 'done', 'drop'].includes(r.t));
      if (r.t === 'op') {
        assert.type(r.op.seq, 'number');
        assert.type(r.op.kind, 'number');
        assert.type(r.op.path, 'string');
        assert.type(r.op.fromPath, 'string');
        assert.type(r.op.state.type, 'number');
        assert.type(r.op.state.hash, 'string');
        assert.type(r.op.state.target, 'string');
      } else assert.type(r.upto, 'number');
    }
    assert.ok(dec.records.length >= before.length, 'the intact lines before the odd one are kept');
    before.forEach((r, i) => assert.equal(plain(dec.records[i]), plain(r)));
    assert.ok(ends.length === before.length);
  }, 1.5);
});

test.run();
