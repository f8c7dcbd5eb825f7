import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  Access, Change, EntryType, Op, PROTOCOL_VERSION,
  type Entry, type Envelope, type JournalRecord,
  decodeEntry, decodeEnvelope, decodeRecord, encodeEntry, encodeEnvelope, encodeRecord,
} from '../../protocol/messages.ts';
import { schema } from '../../protocol/imz_schema.ts';
import { Codes, ImzError } from '../../protocol/errors.ts';

// ---------- helpers ----------

const BIG = 2 ** 40 + 7; // above 2^32: would be truncated by any 32-bit field
const MAX_SAFE = Number.MAX_SAFE_INTEGER; // 2^53 - 1, the largest exact double integer
const ENTRY_KEYS = ['hash', 'mode', 'mtimeMs', 'path', 'size', 'target', 'type', 'version'];
const BODY_KEYS = [
  'hello', 'helloReply', 'stat', 'statReply', 'readdir', 'entries', 'read', 'readReply',
  'journal', 'journalReply', 'snapshot', 'snapshotReply', 'list',
] as const;

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seed + i * 131) & 0xff;
  return b;
}

/**
 * Reads from `actual` every field named in `shape`, recursively, turning
 * byte arrays into plain arrays: the result can be deep-compared with
 * norm(shape). Decoded protobuf messages are class instances whose default
 * values live on the prototype, so a direct deep-equal would not work.
 */
function pick(actual: unknown, shape: unknown): unknown {
  if (shape instanceof Uint8Array) {
    assert.instance(actual, Uint8Array, 'bytes decode as a Uint8Array');
    return { bytes: Array.from(actual as Uint8Array) };
  }
  if (Array.isArray(shape)) {
    assert.ok(Array.isArray(actual), 'repeated field decodes as an array');
    const a = actual as unknown[];
    assert.is(a.length, shape.length, 'repeated field length');
    return shape.map((s, i) => pick(a[i], s));
  }
  if (shape !== null && typeof shape === 'object') {
    assert.ok(actual !== null && typeof actual === 'object', 'sub-message present');
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(shape)) out[k] = pick((actual as Record<string, unknown>)[k], (shape as Record<string, unknown>)[k]);
    return out;
  }
  return actual;
}

function norm(v: unknown): unknown {
  if (v instanceof Uint8Array) return { bytes: Array.from(v) };
  if (Array.isArray(v)) return v.map(norm);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = norm(x);
    return out;
  }
  return v;
}

function roundTrip(env: Partial<Envelope>): Envelope {
  const enc = encodeEnvelope(env);
  assert.instance(enc, Uint8Array);
  return decodeEnvelope(enc);
}

/** Asserts the round trip keeps every given field and sets no other body. */
function checkRoundTrip(env: Partial<Envelope>): Envelope {
  const dec = roundTrip(env);
  assert.equal(pick(dec, env), norm(env));
  const present = BODY_KEYS.filter((k) => k in env);
  for (const k of BODY_KEYS) {
    if (!present.includes(k)) assert.ok(dec[k] == null, `no ${k} body in the decoded envelope`);
  }
  return dec;
}

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

const fileEntry: Entry = {
  path: 'dir/big file.bin', type: EntryType.FILE, size: BIG, mode: 0o755, mtimeMs: 1_732_000_000_123.5,
  hash: bytes(32, 1), target: '', version: MAX_SAFE,
};
const linkEntry: Entry = {
  path: 'dir/link', type: EntryType.SYMLINK, size: 0, mode: 0o777, mtimeMs: 1_700_000_000_000,
  hash: new Uint8Array(0), target: '../élan/ünïcode ☃', version: 2 ** 33,
};
const dirEntry: Entry = {
  path: 'dir', type: EntryType.DIR, size: 0, mode: 0o700, mtimeMs: 1, hash: new Uint8Array(0), target: '', version: 1,
};

function record(seq: number, change: number, entry: Entry): JournalRecord {
  return { seq, change: change as JournalRecord['change'], entry, origin: 'c0ffee00-replica', originSeq: seq - 1, timeMs: 1_732_000_000_000 + seq };
}

// ---------- every body kind ----------

test('hello round trip', () => {
  checkRoundTrip({ xid: 1, op: Op.HELLO, hello: { version: PROTOCOL_VERSION, maxFrame: 16 * 1024 * 1024, client: 'imz/0.1.0 node/20', replicaId: '6f1c2b9e-0d1a-4b7e-9a51-2f4c8e6d7b30' } });
});

test('helloReply round trip, journal range above 2^32', () => {
  const dec = checkRoundTrip({
    xid: 1, op: Op.HELLO, reply: true, last: true,
    helloReply: { version: 1, maxFrame: 0xffffffff, serverId: '0e9b7c3a-5d2f-4f61-8a3b-1c2d3e4f5a6b', journalFirst: BIG, journalLast: MAX_SAFE, server: 'imz/0.1.0' },
  });
  assert.is(dec.helloReply!.journalLast, MAX_SAFE);
  assert.is(dec.helloReply!.maxFrame, 0xffffffff, 'uint32 max survives unsigned');
});

test('stat / statReply round trip, and statReply is filled to a complete Entry', () => {
  checkRoundTrip({ xid: 2, op: Op.STAT, stat: { path: 'dir/big file.bin' } });
  const dec = checkRoundTrip({ xid: 2, op: Op.STAT, reply: true, last: true, statReply: fileEntry });
  assert.is(dec.statReply!.size, BIG);
  assert.is(dec.statReply!.version, MAX_SAFE);
  // An entry whose fields are all defaults except the path still decodes complete.
  const sparse = roundTrip({ xid: 3, op: Op.STAT, reply: true, last: true, statReply: { path: 'gone' } as Entry });
  assert.equal(Object.keys(sparse.statReply!).sort(), ENTRY_KEYS);
  assert.equal(norm(sparse.statReply), norm({ path: 'gone', type: 0, size: 0, mode: 0, mtimeMs: 0, hash: new Uint8Array(0), target: '', version: 0 }));
  assert.instance(sparse.statReply!.hash, Uint8Array);
});

test('readdir / entries round trip with several entries and skipped paths', () => {
  checkRoundTrip({ xid: 4, op: Op.READDIR, readdir: { path: '' } });
  checkRoundTrip({ xid: 4, op: Op.READDIR, readdir: { path: 'dir' } });
  const dec = checkRoundTrip({
    xid: 4, op: Op.READDIR, reply: true, last: false,
    entries: { entries: [fileEntry, linkEntry, dirEntry], cursor: BIG, skipped: [{ path: 'dir/sock', reason: 'a socket cannot be replicated' }, { path: 'bad\uFFFDname', reason: 'the name is not UTF-8' }] },
  });
  for (const e of dec.entries!.entries) assert.equal(Object.keys(e).sort(), ENTRY_KEYS);
  assert.is(dec.entries!.cursor, BIG);
});

test('entries batch with no entries decodes to an empty array', () => {
  const dec = roundTrip({ xid: 4, op: Op.LIST, reply: true, last: true, entries: { entries: [], cursor: 9, skipped: [] } });
  assert.ok(dec.entries, 'an empty batch is still present');
  assert.equal(dec.entries!.entries, []);
  assert.is(dec.entries!.cursor, 9);
});

test('read / readReply round trip, offsets above 2^32, bytes as Uint8Array', () => {
  checkRoundTrip({ xid: 5, op: Op.READ, read: { path: 'dir/big file.bin', hash: bytes(32, 2), offset: 5 * 2 ** 32 + 1, length: 1 << 20 } });
  const data = bytes(1 << 20, 3);
  const dec = checkRoundTrip({ xid: 0xffffffff, op: Op.READ, reply: true, last: true, readReply: { data, offset: MAX_SAFE - 1 } });
  assert.is(dec.xid, 0xffffffff, 'the largest xid survives');
  assert.instance(dec.readReply!.data, Uint8Array);
  assert.is(dec.readReply!.data.length, data.length);
  assert.is(dec.readReply!.offset, MAX_SAFE - 1);
});

test('read reply with every byte value, including an all-zero and an empty payload', () => {
  const all = new Uint8Array(256).map((_, i) => i);
  checkRoundTrip({ xid: 6, op: Op.READ, reply: true, readReply: { data: all, offset: 0 } });
  checkRoundTrip({ xid: 6, op: Op.READ, reply: true, readReply: { data: new Uint8Array(100), offset: 1 } });
  const empty = roundTrip({ xid: 6, op: Op.READ, reply: true, last: true, readReply: { data: new Uint8Array(0), offset: 7 } });
  assert.instance(empty.readReply!.data, Uint8Array);
  assert.is(empty.readReply!.data.length, 0);
  const noHash = roundTrip({ xid: 6, op: Op.READ, read: { path: 'a', hash: new Uint8Array(0), offset: 0, length: 1 } });
  assert.instance(noHash.read!.hash, Uint8Array, 'an empty hash decodes as a Uint8Array');
});

test('journal / journalReply round trip with records (seq above 2^32, filled entries)', () => {
  checkRoundTrip({ xid: 7, op: Op.JOURNAL, journal: { since: BIG, limit: 1000 } });
  const records = [
    record(BIG, Change.CREATE, fileEntry),
    record(BIG + 1, Change.SYMLINK, linkEntry),
    record(MAX_SAFE, Change.MKDIR, dirEntry),
  ];
  const dec = checkRoundTrip({ xid: 7, op: Op.JOURNAL, reply: true, last: true, journalReply: { records, last: MAX_SAFE, more: true } });
  assert.equal(dec.journalReply!.records.map((r) => r.seq), [BIG, BIG + 1, MAX_SAFE]);
  assert.is(dec.journalReply!.more, true);
  // A removal record carries an entry that is all defaults but its path.
  const rm = roundTrip({ xid: 8, op: Op.JOURNAL, reply: true, journalReply: { records: [{ seq: 3, change: Change.REMOVE, entry: { path: 'x' } } as JournalRecord], last: 3, more: false } });
  const r = rm.journalReply!.records[0]!;
  assert.equal(Object.keys(r).sort(), ['change', 'entry', 'origin', 'originSeq', 'seq', 'timeMs']);
  assert.equal(Object.keys(r.entry).sort(), ENTRY_KEYS);
  assert.is(r.entry.type, EntryType.NONE);
  assert.is(r.origin, '');
  assert.is(rm.journalReply!.more, false);
});

test('snapshot / snapshotReply round trip', () => {
  checkRoundTrip({ xid: 9, op: Op.SNAPSHOT, snapshot: { paths: ['a', 'dir/b c', 'ü/☃'] } });
  const empty = roundTrip({ xid: 9, op: Op.SNAPSHOT, snapshot: { paths: [] } });
  assert.equal(Array.from(empty.snapshot?.paths ?? []), [], 'empty path list means the whole tree');
  checkRoundTrip({ xid: 9, op: Op.SNAPSHOT, reply: true, last: false, snapshotReply: { tar: bytes(70_000, 5) } });
  const endOfTar = roundTrip({ xid: 9, op: Op.SNAPSHOT, reply: true, last: true, snapshotReply: { tar: new Uint8Array(0) } });
  assert.instance(endOfTar.snapshotReply!.tar, Uint8Array, 'an empty tar piece decodes as a Uint8Array');
  assert.is(endOfTar.snapshotReply!.tar.length, 0);
});

test('list round trip (its reply is an entries batch)', () => {
  checkRoundTrip({ xid: 10, op: Op.LIST, list: { prefix: 'dir/' } });
  checkRoundTrip({ xid: 10, op: Op.LIST, reply: true, last: true, entries: { entries: [dirEntry], cursor: MAX_SAFE, skipped: [] } });
});

test('error reply and server-initiated ERROR frame round trip', () => {
  const dec = checkRoundTrip({ xid: 11, op: Op.STAT, reply: true, last: true, error: { code: Codes.NOT_FOUND, message: 'cannot stat dir/x: no such path' } });
  assert.is(dec.error!.code, 'IMZ_NOT_FOUND');
  const fatal = checkRoundTrip({ xid: 0, op: Op.ERROR, last: true, error: { code: Codes.FRAME_TOO_LARGE, message: 'cannot read frame: too big' } });
  assert.is(fatal.xid, 0);
  assert.is(fatal.op, Op.ERROR);
});

test('an envelope with no body (PING) and an empty buffer decode with defaults', () => {
  const ping = roundTrip({ xid: 12, op: Op.PING });
  assert.is(ping.xid, 12);
  assert.is(ping.op, Op.PING);
  assert.not.ok(ping.reply);
  assert.not.ok(ping.last);
  assert.ok(ping.error == null);
  const empty = decodeEnvelope(new Uint8Array(0));
  assert.is(empty.xid, 0);
  assert.is(empty.op, 0);
});

test('reply and last flags survive', () => {
  for (const reply of [false, true]) {
    for (const last of [false, true]) {
      const dec = roundTrip({ xid: 13, op: Op.READDIR, reply, last });
      assert.is(Boolean(dec.reply), reply);
      assert.is(Boolean(dec.last), last);
    }
  }
});

// ---------- undecodable input ----------

test('undecodable envelopes throw IMZ_PROTOCOL', () => {
  const bad: [string, number[]][] = [
    ['invalid wire type', [0xff]],
    ['truncated varint', [0x08, 0xff]],
    ['length past the end', [0x52, 0x05, 0x01]],
    ['end-group without start', [0x0c]],
    ['field number 0', [0x07]],
    ['text', Array.from(new TextEncoder().encode('GET / HTTP/1.1'))],
  ];
  for (const [what, b] of bad) {
    const err = throwsCode(() => decodeEnvelope(new Uint8Array(b)), Codes.PROTOCOL);
    assert.match(err.message, /^cannot decode frame: /, what);
  }
});

test('a truncated real envelope throws IMZ_PROTOCOL', () => {
  const enc = encodeEnvelope({ xid: 5, op: Op.READ, reply: true, readReply: { data: bytes(100, 1), offset: 3 } });
  throwsCode(() => decodeEnvelope(enc.subarray(0, enc.length - 20)), Codes.PROTOCOL);
});

// ---------- journal records and entries ----------

test('Record encode/decode round trip', () => {
  for (const r of [record(1, Change.CREATE, fileEntry), record(BIG, Change.SYMLINK, linkEntry), record(MAX_SAFE, Change.RMDIR, dirEntry)]) {
    const dec = decodeRecord(encodeRecord(r));
    assert.equal(norm(dec), norm(r));
    assert.instance(dec.entry.hash, Uint8Array);
  }
  // A record with only a sequence number decodes complete.
  const bare = decodeRecord(encodeRecord({ seq: 42 } as JournalRecord));
  assert.equal(norm(bare), norm({ seq: 42, change: 0, entry: { path: '', type: 0, size: 0, mode: 0, mtimeMs: 0, hash: new Uint8Array(0), target: '', version: 0 }, origin: '', originSeq: 0, timeMs: 0 }));
});

test('Entry encode/decode round trip', () => {
  for (const e of [fileEntry, linkEntry, dirEntry]) assert.equal(norm(decodeEntry(encodeEntry(e))), norm(e));
});

test('corrupt records throw IMZ_CORRUPT', () => {
  const enc = encodeRecord(record(BIG, Change.MODIFY, fileEntry));
  throwsCode(() => decodeRecord(enc.subarray(0, enc.length - 1)), Codes.CORRUPT); // torn tail: time_ms cut short
  throwsCode(() => decodeRecord(enc.subarray(0, 20)), Codes.CORRUPT); // cut inside the entry
  throwsCode(() => decodeRecord(new Uint8Array([0xff, 0xff])), Codes.CORRUPT);
  throwsCode(() => decodeRecord(new Uint8Array([0x1a, 0x7f, 0x0a])), Codes.CORRUPT); // entry length past the end
  const err = throwsCode(() => decodeEntry(new Uint8Array([0x0a, 0x09, 0x61])), Codes.CORRUPT);
  assert.match(err.message, /^cannot decode entry: /);
});

// ---------- schema in sync ----------

test('protocol/imz_schema.ts is in sync with protocol/imz.proto (run npm run proto)', () => {
  const protoPath = fileURLToPath(new URL('../../protocol/imz.proto', import.meta.url));
  const root = protobuf.loadSync(protoPath);
  // Through JSON, exactly as scripts/gen-schema.mjs writes it (drops undefined members).
  const fromProto = JSON.parse(JSON.stringify(root.toJSON()));
  assert.equal(JSON.parse(JSON.stringify(schema)), fromProto);
  assert.ok(fromProto.nested.imz.nested.Envelope, 'the .proto defines imz.Envelope');
});

test('protocol/imz_codec.ts (the static codec) is what scripts/gen-schema.mjs makes of protocol/imz.proto', () => {
  const script = fileURLToPath(new URL('../../scripts/gen-schema.mjs', import.meta.url));
  const r = spawnSync(process.execPath, [script, '--check'], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
});

test('the Op, EntryType and Change constants mirror the schema enums', () => {
  const nested = (schema as unknown as { nested: { imz: { nested: Record<string, { values?: Record<string, number> }> } } }).nested.imz.nested;
  const withoutZero = (values: Record<string, number>): Record<string, number> =>
    Object.fromEntries(Object.entries(values).filter(([, v]) => v !== 0));
  assert.equal({ ...Op }, withoutZero(nested.Op!.values!));
  assert.equal({ ...EntryType }, nested.EntryType!.values);
  assert.equal({ ...Change }, withoutZero(nested.Change!.values!));
  assert.equal({ ...Access }, { NONE: 0, READ_ONLY: nested.Access!.values!.READ_ONLY, READ_WRITE: nested.Access!.values!.READ_WRITE });
  assert.is(nested.Access!.values!.ACCESS_NONE, 0);
});

test('hello nonces and auth proofs round trip as bytes', () => {
  const nonce = bytes(32, 9);
  checkRoundTrip({ xid: 1, op: Op.HELLO, hello: { version: 1, maxFrame: 65536, client: 'c', replicaId: '', nonce } });
  const r = roundTrip({ xid: 1, op: Op.HELLO, reply: true, last: true, helloReply: { version: 1, maxFrame: 65536, serverId: 'x', journalFirst: 0, journalLast: 0, server: 's', nonce, access: Access.NONE } });
  assert.equal([...r.helloReply!.nonce!], [...nonce]);
  assert.is(r.helloReply!.access, Access.NONE);
  checkRoundTrip({ xid: 2, op: Op.AUTH, auth: { proof: bytes(32, 3) } });
  checkRoundTrip({ xid: 2, op: Op.AUTH, reply: true, last: true, authReply: { proof: bytes(32, 4), access: Access.READ_ONLY } });
});

test.run();
