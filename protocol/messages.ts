import type { AccessCode, ChangeCode, EntryTypeCode, OpCode, OpKindCode, OpStatusCode } from './constants.ts';
import { imz } from './imz_codec.ts';
import { Codes, ImzError } from './errors.ts';
import { encodePutBlobs, isPutBlobs } from './blobs_codec.ts';

// The protocol's numbers live in constants.ts (no codec behind them: the scan
// of local changes uses EntryType without loading protobuf).
export {
  Access, type AccessCode, Change, type ChangeCode, EntryType, type EntryTypeCode, Op, type OpCode, OpKind, type OpKindCode, OpStatus, type OpStatusCode, PROTOCOL_VERSION,
} from './constants.ts';

/** One logged change of a replica (Coda's CML record). */
export interface Operation {
  seq: number;
  kind: OpKindCode;
  path: string;
  fromPath: string;
  base: number;
  fromBase: number;
  state: Entry;
  /** The mode of the base version as the client has it (0 or absent: unknown). */
  baseMode?: number;
}

/** The server's answer for one operation. */
export interface OpResult {
  seq: number;
  status: OpStatusCode;
  version: number;
  server: Entry | null;
  conflictClass: string;
  keptAs: string;
  displaced: string;
  error: WireError | null;
}

export interface Entry {
  path: string;
  type: EntryTypeCode;
  size: number;
  mode: number;
  mtimeMs: number;
  hash: Uint8Array;
  target: string;
  version: number;
}

export interface JournalRecord {
  seq: number;
  change: ChangeCode;
  entry: Entry;
  origin: string;
  originSeq: number;
  timeMs: number;
}

export interface WireError { code: string; message: string }

/** One decoded frame. Unset scalars read as protobuf defaults (0, '', false). */
export interface Envelope {
  xid: number;
  op: number;
  reply?: boolean;
  last?: boolean;
  error?: WireError | null;
  hello?: { version: number; maxFrame: number; client: string; replicaId: string; nonce?: Uint8Array };
  helloReply?: { version: number; maxFrame: number; serverId: string; journalFirst: number; journalLast: number; server: string; nonce?: Uint8Array; access?: AccessCode; upstream?: string; upstreamReachable?: boolean; originSeq?: number };
  auth?: { proof: Uint8Array };
  authReply?: { proof: Uint8Array; access: AccessCode; originSeq?: number };
  stat?: { path: string };
  statReply?: Entry;
  readdir?: { path: string };
  entries?: { entries: Entry[]; cursor: number; skipped: { path: string; reason: string }[] };
  read?: { path: string; hash: Uint8Array; offset: number; length: number };
  readReply?: { data: Uint8Array; offset: number };
  journal?: { since: number; limit: number };
  journalReply?: { records: JournalRecord[]; last: number; more: boolean };
  snapshot?: { paths: string[] };
  snapshotReply?: { tar: Uint8Array };
  list?: { prefix: string };
  putBlob?: BlobPiece;
  blobReply?: { present: boolean; have: number; held?: boolean[] };
  putBlobs?: { blobs: BlobPiece[] };
  blobsReply?: { replies: { present: boolean; have: number; held?: boolean[] }[] };
  reintegrate?: { replicaId: string; ops: Operation[]; policy: string };
  reintegrateReply?: { results: OpResult[] };
}

/** One piece of content for PUT_BLOB (PUT_BLOBS carries several whole ones). */
export interface BlobPiece {
  hash: Uint8Array;
  size: number;
  offset: number;
  data: Uint8Array;
  last: boolean;
  /** Unused in PUT_BLOBS (the message is shared with PUT_BLOB's queries). */
  query?: Uint8Array[];
  /** PUT_BLOBS: the mode and mtime the store the content is for gives its file, a hint (0 for none). */
  mode?: number;
  mtimeMs?: number;
}

/** Body fields that a caller may put in an outgoing envelope. */
export type Body = Omit<Partial<Envelope>, 'xid' | 'op' | 'reply' | 'last' | 'error'>;

// The generated static codec (scripts/gen-schema.mjs), seen through the little we use of it.
interface _Codec {
  encode(message: object): { finish(): Uint8Array };
  decode(bytes: Uint8Array): object;
}
const _codec = imz as unknown as { Envelope: _Codec; Record: _Codec; Entry: _Codec };
const EnvelopeType = _codec.Envelope;
const RecordType = _codec.Record;
const EntryMsg = _codec.Entry;

/** Encodes an envelope to protobuf bytes. */
export function encodeEnvelope(env: Partial<Envelope>): Uint8Array {
  // A push's uploads, most of the bytes it sends: encoded in one pass, the same bytes (see blobs_codec.ts).
  if (env.putBlobs && isPutBlobs(env)) return encodePutBlobs(env);
  return EnvelopeType.encode(env).finish();
}

/** Decodes protobuf bytes to an envelope; undecodable input is IMZ_PROTOCOL. */
export function decodeEnvelope(bytes: Uint8Array): Envelope {
  let msg: object;
  try {
    msg = EnvelopeType.decode(bytes);
  } catch (err) {
    throw new ImzError(Codes.PROTOCOL, `cannot decode frame: ${(err as Error).message}`);
  }
  const env = msg as unknown as Envelope;
  if (typeof env.xid !== 'number') (env as { xid: number }).xid = 0;
  if (typeof env.op !== 'number') (env as { op: number }).op = 0;
  return _fillEntries(env);
}

// Decoded sub-messages omit default-valued fields; callers want complete
// entries, so fill them once here rather than at every use.
function _fillEntries(env: Envelope): Envelope {
  if (env.statReply) env.statReply = fillEntry(env.statReply);
  if (env.entries) env.entries.entries = (env.entries.entries ?? []).map(fillEntry);
  if (env.reintegrate) {
    env.reintegrate.ops = (env.reintegrate.ops ?? []).map((o) => ({
      seq: Number(o.seq ?? 0), kind: (o.kind ?? 0) as OpKindCode, path: o.path ?? '', fromPath: o.fromPath ?? '', base: Number(o.base ?? 0),
      fromBase: Number(o.fromBase ?? 0), state: fillEntry(o.state), baseMode: Number(o.baseMode ?? 0),
    }));
  }
  if (env.reintegrateReply) {
    env.reintegrateReply.results = (env.reintegrateReply.results ?? []).map((r) => ({
      seq: Number(r.seq ?? 0), status: (r.status ?? 0) as OpStatusCode, version: Number(r.version ?? 0), server: r.server ? fillEntry(r.server) : null,
      conflictClass: r.conflictClass ?? '', keptAs: r.keptAs ?? '', displaced: r.displaced ?? '', error: r.error && r.error.code ? r.error : null,
    }));
  }
  if (env.putBlob) {
    const b = env.putBlob;
    env.putBlob = { hash: bytesOf(b.hash), size: Number(b.size ?? 0), offset: Number(b.offset ?? 0), data: bytesOf(b.data), last: b.last === true, query: (b.query ?? []).map(bytesOf), mode: Number(b.mode ?? 0), mtimeMs: Number(b.mtimeMs ?? 0) };
  }
  if (env.putBlobs) {
    env.putBlobs.blobs = (env.putBlobs.blobs ?? []).map((b) => ({
      hash: bytesOf(b.hash), size: Number(b.size ?? 0), offset: Number(b.offset ?? 0), data: bytesOf(b.data), last: b.last === true, query: (b.query ?? []).map(bytesOf),
      mode: Number(b.mode ?? 0), mtimeMs: Number(b.mtimeMs ?? 0),
    }));
  }
  if (env.blobsReply) {
    env.blobsReply.replies = (env.blobsReply.replies ?? []).map((r) => ({ present: r.present === true, have: Number(r.have ?? 0), held: r.held ?? [] }));
  }
  if (env.journalReply) {
    env.journalReply.records = (env.journalReply.records ?? []).map(fillRecord);
  }
  if (env.read) env.read.hash = bytesOf(env.read.hash);
  if (env.readReply) env.readReply.data = bytesOf(env.readReply.data);
  if (env.snapshotReply) env.snapshotReply.tar = bytesOf(env.snapshotReply.tar);
  if (env.hello) env.hello.nonce = bytesOf(env.hello.nonce);
  if (env.helloReply) {
    env.helloReply.nonce = bytesOf(env.helloReply.nonce);
    env.helloReply.access = (env.helloReply.access ?? 0) as AccessCode;
  }
  if (env.auth) env.auth.proof = bytesOf(env.auth.proof);
  if (env.authReply) {
    env.authReply.proof = bytesOf(env.authReply.proof);
    env.authReply.access = (env.authReply.access ?? 0) as AccessCode;
  }
  return env;
}

const EMPTY = new Uint8Array(0);

// protobufjs reads an absent (empty) bytes field as a plain empty Array, not
// a Uint8Array; callers are promised a Uint8Array.
function bytesOf(b: Uint8Array | ArrayLike<number> | null | undefined): Uint8Array {
  if (b instanceof Uint8Array) return b;
  return b && b.length > 0 ? Uint8Array.from(b) : EMPTY;
}

/** Returns an Entry with every field present (protobuf omits defaults). */
export function fillEntry(e: Partial<Entry> | null | undefined): Entry {
  return {
    path: e?.path ?? '', type: (e?.type ?? 0) as EntryTypeCode, size: Number(e?.size ?? 0), mode: e?.mode ?? 0,
    mtimeMs: Number(e?.mtimeMs ?? 0), hash: bytesOf(e?.hash), target: e?.target ?? '', version: Number(e?.version ?? 0),
  };
}

/** Returns a JournalRecord with every field present. */
export function fillRecord(r: Partial<JournalRecord>): JournalRecord {
  return {
    seq: Number(r.seq ?? 0), change: (r.change ?? 0) as ChangeCode, entry: fillEntry(r.entry), origin: r.origin ?? '',
    originSeq: Number(r.originSeq ?? 0), timeMs: Number(r.timeMs ?? 0),
  };
}

/** Encodes a journal record (the on-disk journal uses the wire format). */
export function encodeRecord(r: JournalRecord): Uint8Array {
  return RecordType.encode(r).finish();
}

/** Decodes a journal record; bad bytes are IMZ_CORRUPT. */
export function decodeRecord(bytes: Uint8Array): JournalRecord {
  try {
    return fillRecord(RecordType.decode(bytes) as unknown as JournalRecord);
  } catch (err) {
    throw new ImzError(Codes.CORRUPT, `cannot decode journal record: ${(err as Error).message}`);
  }
}

/** Encodes a table entry (the server's version table checkpoint uses it). */
export function encodeEntry(e: Entry): Uint8Array {
  return EntryMsg.encode(e).finish();
}

/** Decodes an entry. */
export function decodeEntry(bytes: Uint8Array): Entry {
  try {
    return fillEntry(EntryMsg.decode(bytes) as unknown as Entry);
  } catch (err) {
    throw new ImzError(Codes.CORRUPT, `cannot decode entry: ${(err as Error).message}`);
  }
}
