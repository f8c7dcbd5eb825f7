// Property-based tests of the protobuf decoders in protocol/messages.ts, the
// second layer a hostile peer (or a damaged journal) reaches. Random bytes
// and mutated valid messages must either decode to a complete, well-typed
// value or throw ImzError with IMZ_PROTOCOL (frames) / IMZ_CORRUPT (records,
// entries), never a TypeError or RangeError. Valid messages of every kind,
// generated from the schema itself so new kinds are covered as they appear,
// must round-trip.
import fc from 'fast-check';
import protobuf from 'protobufjs/light.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Codes, ImzError } from '../../protocol/errors.ts';
import { schema } from '../../protocol/imz_schema.ts';
import { type Entry, type JournalRecord, decodeEntry, decodeEnvelope, decodeRecord, encodeEntry, encodeEnvelope, encodeRecord } from '../../protocol/messages.ts';
import { FuzzSuite } from '../fuzz_config.ts';

const suite = new FuzzSuite('protocol messages');
test.after(() => suite.report());

const root = protobuf.Root.fromJSON(schema as unknown as protobuf.INamespace);
const EnvelopeT = root.lookupType('imz.Envelope');
const RecordT = root.lookupType('imz.Record');
const EntryT = root.lookupType('imz.Entry');

// ---------- arbitraries built from the schema ----------

const NUMERIC: Record<string, fc.Arbitrary<number>> = {
  double: fc.double(),
  float: fc.float(),
  uint32: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
  fixed32: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
  int32: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  sint32: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  sfixed32: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
};
const stringArb = fc.string({ unit: 'binary', maxLength: 24 });
const bytesArb = fc.uint8Array({ maxLength: 48 });

function enumArb(e: protobuf.Enum): fc.Arbitrary<number> {
  const known = Object.values(e.values);
  // Mostly known values; now and then a number the schema does not name (proto3 keeps those).
  return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...known) }, { weight: 1, arbitrary: NUMERIC.int32! });
}

function scalarArb(f: protobuf.Field): fc.Arbitrary<unknown> {
  if (f.resolvedType instanceof protobuf.Enum) return enumArb(f.resolvedType);
  if (f.resolvedType instanceof protobuf.Type) return messageArb(f.resolvedType);
  if (f.type === 'string') return stringArb;
  if (f.type === 'bytes') return bytesArb;
  if (f.type === 'bool') return fc.boolean();
  const n = NUMERIC[f.type];
  if (!n) throw new Error(`no arbitrary for field type ${f.type} (${f.fullName}): extend messages_fuzz_test.ts`);
  return n;
}

function fieldArb(f: protobuf.Field): fc.Arbitrary<unknown> {
  const one = scalarArb(f);
  return f.repeated ? fc.array(one, { maxLength: 3 }) : one;
}

const memo = new Map<string, fc.Arbitrary<Record<string, unknown>>>();

/** Complete values of a message type: every plain field set, at most one member of each oneof. */
function messageArb(t: protobuf.Type, only?: string): fc.Arbitrary<Record<string, unknown>> {
  const key = `${t.fullName}|${only ?? ''}`;
  const hit = memo.get(key);
  if (hit) return hit;
  const plain: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of t.fieldsArray) if (!f.partOf) plain[f.name] = fieldArb(f);
  let arb: fc.Arbitrary<Record<string, unknown>> = fc.record(plain);
  for (const o of t.oneofsArray) {
    const members = o.fieldsArray.filter((f) => only === undefined || f.name === only);
    if (members.length === 0) continue;
    const choice = fc.oneof(...members.map((f) => fieldArb(f).map((v) => [f.name, v] as const)));
    arb = fc.tuple(arb, only === undefined ? fc.option(choice) : choice).map(([obj, c]) => (c ? { ...obj, [c[0]]: c[1] } : obj));
  }
  memo.set(key, arb);
  return arb;
}

/** Envelopes carrying one body kind (the header fields arbitrary, the error sometimes set). */
function envelopeArb(body: string): fc.Arbitrary<Record<string, unknown>> {
  const errorT = EnvelopeT.fields.error!.resolvedType as protobuf.Type;
  return fc.tuple(messageArb(EnvelopeT, body), fc.option(messageArb(errorT))).map(([env, error]) => {
    const out = { ...env };
    if (error) out.error = error;
    else delete out.error;
    return out;
  });
}

// ---------- comparing and checking decoded values ----------

function numNorm(f: protobuf.Field, v: number): number {
  if (f.type === 'float') return Math.fround(v) || 0;
  return v === 0 ? 0 : v; // -0 travels as the default 0
}

/**
 * What a value of type t should decode to, as plain data (bytes as arrays),
 * following decodeEnvelope's documented normalisation: a result error with
 * an empty code means no error.
 */
function expected(t: protobuf.Type, v: Record<string, unknown> | null | undefined): unknown {
  if (v === null || v === undefined) return null;
  const out: Record<string, unknown> = {};
  for (const f of t.fieldsArray) {
    if (f.partOf && !(f.name in v)) continue;
    out[f.name] = expectedField(t, f, v[f.name]);
  }
  return out;
}

function expectedField(t: protobuf.Type, f: protobuf.Field, x: unknown): unknown {
  if (f.repeated) return ((x as unknown[]) ?? []).map((e) => expectedOne(t, f, e));
  return expectedOne(t, f, x);
}

function expectedOne(t: protobuf.Type, f: protobuf.Field, x: unknown): unknown {
  if (f.resolvedType instanceof protobuf.Type) {
    if (t.name === 'OpResult' && f.name === 'error' && !(x as { code?: string } | null)?.code) return null;
    return expected(f.resolvedType, x as Record<string, unknown>);
  }
  if (f.type === 'bytes') return Array.from((x as Uint8Array) ?? []);
  if (typeof x === 'number') return numNorm(f, x);
  return x;
}

/** The decoded value as plain data, reading only the schema's fields present in `like`. */
function actual(t: protobuf.Type, v: unknown, like: Record<string, unknown> | null): unknown {
  if (like === null) return v === null || v === undefined ? null : 'present';
  if (v === null || typeof v !== 'object') return `not a message: ${String(v)}`;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(like)) {
    const f = t.fields[k]!;
    const x = (v as Record<string, unknown>)[k];
    if (f.repeated) {
      out[k] = Array.isArray(x) ? x.map((e, i) => actualOne(f, e, (like[k] as unknown[])[i])) : `not an array: ${String(x)}`;
    } else out[k] = actualOne(f, x, like[k]);
  }
  return out;
}

function actualOne(f: protobuf.Field, x: unknown, like: unknown): unknown {
  if (f.resolvedType instanceof protobuf.Type) return actual(f.resolvedType, x, like as Record<string, unknown> | null);
  if (f.type === 'bytes') return x instanceof Uint8Array || Array.isArray(x) ? Array.from(x as ArrayLike<number>) : `not bytes: ${String(x)}`;
  return x;
}

/** Checks a decoded message is complete and well typed: what callers rely on after decodeEnvelope/decodeRecord/decodeEntry. */
function wellTyped(t: protobuf.Type, v: unknown, where: string, strictBytes: boolean): void {
  assert.ok(v !== null && typeof v === 'object', `${where} is a message`);
  for (const f of t.fieldsArray) {
    const x = (v as Record<string, unknown>)[f.name];
    const here = `${where}.${f.name}`;
    if (f.repeated) {
      assert.ok(Array.isArray(x), `${here} is an array`);
      for (const [i, e] of (x as unknown[]).entries()) oneTyped(f, e, `${here}[${i}]`, strictBytes, true);
    } else oneTyped(f, x, here, strictBytes, false);
  }
}

function oneTyped(f: protobuf.Field, x: unknown, here: string, strictBytes: boolean, inArray: boolean): void {
  if (f.resolvedType instanceof protobuf.Type) {
    if (!inArray && (x === null || x === undefined)) return; // an absent sub-message
    wellTyped(f.resolvedType, x, here, strictBytes);
  } else if (f.resolvedType instanceof protobuf.Enum) assert.type(x, 'number', here);
  else if (f.type === 'string') assert.type(x, 'string', here);
  else if (f.type === 'bool') assert.type(x, 'boolean', here);
  else if (f.type === 'bytes') {
    if (strictBytes) assert.instance(x, Uint8Array, `${here} is a Uint8Array`);
  } else assert.type(x, 'number', here);
}

/** Calls decode; returns its value, or undefined after checking it threw an ImzError with code. */
function decodeOrCode<T>(decode: () => T, code: string): T | undefined {
  try {
    return decode();
  } catch (err) {
    if (!(err instanceof ImzError)) throw new Error(`decoder threw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message} instead of an ImzError`);
    assert.is(err.code, code);
    return undefined;
  }
}

/** Byte-level mutations: flip, set, insert, delete, truncate, duplicate a slice. */
const mutationArb = fc.array(
  fc.oneof(
    fc.record({ k: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ k: fc.constant('set' as const), at: fc.nat(), v: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ k: fc.constant('insert' as const), at: fc.nat(), v: fc.uint8Array({ minLength: 1, maxLength: 6 }) }),
    fc.record({ k: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 6 }) }),
    fc.record({ k: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({ k: fc.constant('dup' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 12 }) }),
  ),
  { minLength: 1, maxLength: 4 },
);

type Mutation = typeof mutationArb extends fc.Arbitrary<(infer M)[]> ? M : never;

function mutate(bytes: Uint8Array, muts: Mutation[]): Uint8Array {
  let b = Array.from(bytes);
  for (const m of muts) {
    const at = m.at % (b.length + 1);
    if (m.k === 'flip' && b.length > 0) b[at % b.length]! ^= 1 << m.bit;
    else if (m.k === 'set' && b.length > 0) b[at % b.length] = m.v;
    else if (m.k === 'insert') b.splice(at, 0, ...m.v);
    else if (m.k === 'delete') b.splice(at, m.n);
    else if (m.k === 'truncate') b = b.slice(0, at);
    else if (m.k === 'dup') b.splice(at, 0, ...b.slice(at, at + m.n));
  }
  return Uint8Array.from(b);
}

const BODY_KINDS = EnvelopeT.oneofs.body!.fieldsArray.map((f) => f.name);
const anyEnvelopeArb = fc.oneof(...BODY_KINDS.map(envelopeArb));

// ---------- round trips ----------

test('every envelope body kind round-trips (arbitrary valid values of each message kind)', () => {
  assert.ok(BODY_KINDS.length >= 17, `the schema lists ${BODY_KINDS.length} body kinds`);
  for (const kind of BODY_KINDS) {
    suite.check(envelopeArb(kind), (env) => {
      const dec = decodeEnvelope(encodeEnvelope(env as never));
      assert.equal(actual(EnvelopeT, dec, expected(EnvelopeT, env) as Record<string, unknown>), expected(EnvelopeT, env), kind);
      assert.ok((dec as unknown as Record<string, unknown>)[kind], `${kind} body present after decoding`);
      wellTyped(EnvelopeT, dec, 'envelope', true);
    }, 0.25);
  }
});

test('journal records and entries round-trip', () => {
  suite.check(messageArb(RecordT), (r) => {
    const dec = decodeRecord(encodeRecord(r as unknown as JournalRecord));
    assert.equal(actual(RecordT, dec, expected(RecordT, r) as Record<string, unknown>), expected(RecordT, r));
    wellTyped(RecordT, dec, 'record', true);
  }, 0.5);
  suite.check(messageArb(EntryT), (e) => {
    const dec = decodeEntry(encodeEntry(e as unknown as Entry));
    assert.equal(actual(EntryT, dec, expected(EntryT, e) as Record<string, unknown>), expected(EntryT, e));
    wellTyped(EntryT, dec, 'entry', true);
  }, 0.5);
});

// ---------- hostile bytes ----------

test('random bytes decode to a complete envelope or throw IMZ_PROTOCOL, nothing else', () => {
  suite.check(fc.uint8Array({ maxLength: 200 }), (bytes) => {
    const env = decodeOrCode(() => decodeEnvelope(bytes), Codes.PROTOCOL);
    if (env) wellTyped(EnvelopeT, env, 'envelope', true);
  }, 2);
});

test('mutated valid envelopes (flips, inserts, deletes, truncation, wrong wire types) decode or throw IMZ_PROTOCOL', () => {
  suite.check(fc.tuple(anyEnvelopeArb, mutationArb), ([env, muts]) => {
    const bytes = mutate(encodeEnvelope(env as never), muts);
    const dec = decodeOrCode(() => decodeEnvelope(bytes), Codes.PROTOCOL);
    if (dec) wellTyped(EnvelopeT, dec, 'envelope', true);
  }, 2);
});

test('a valid envelope with a field re-tagged to every wire type decodes or throws IMZ_PROTOCOL', () => {
  // Rewrites the first key byte of the body (field 10+) to each of the 8 wire types.
  suite.check(fc.tuple(anyEnvelopeArb, fc.integer({ min: 0, max: 7 }), fc.nat()), ([env, wt, pick]) => {
    const bytes = encodeEnvelope(env as never);
    const keys: number[] = [];
    for (let i = 0; i < bytes.length; i++) if (bytes[i]! >= 8 && (bytes[i]! & 0x80) === 0) keys.push(i);
    if (keys.length === 0) return;
    const b = Uint8Array.from(bytes);
    const at = keys[pick % keys.length]!;
    b[at] = (b[at]! & ~7) | wt;
    const dec = decodeOrCode(() => decodeEnvelope(b), Codes.PROTOCOL);
    if (dec) wellTyped(EnvelopeT, dec, 'envelope', true);
  });
});

test('random and mutated journal records and entries decode or throw IMZ_CORRUPT', () => {
  suite.check(fc.uint8Array({ maxLength: 160 }), (bytes) => {
    const r = decodeOrCode(() => decodeRecord(bytes), Codes.CORRUPT);
    if (r) wellTyped(RecordT, r, 'record', true);
    const e = decodeOrCode(() => decodeEntry(bytes), Codes.CORRUPT);
    if (e) wellTyped(EntryT, e, 'entry', true);
  });
  suite.check(fc.tuple(messageArb(RecordT), mutationArb), ([r, muts]) => {
    const bytes = mutate(encodeRecord(r as unknown as JournalRecord), muts);
    const dec = decodeOrCode(() => decodeRecord(bytes), Codes.CORRUPT);
    if (dec) wellTyped(RecordT, dec, 'record', true);
  });
});

test.run();
