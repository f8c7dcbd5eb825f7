// A scriptable fake imz server that lies, for the hostile-peer tests of the
// CLIENT (Invariant 3, Confinement: a hostile server cannot make a client
// write or delete outside its replica). It speaks the real protocol through
// the project's own protocol layer (Session, frame codec, messages), so the
// client under test meets well-formed frames carrying hostile content, and
// each test can replace any operation's handler, or write raw bytes on the
// socket, to go below the session layer (garbage, oversized length prefixes,
// stalls mid-frame, replies to unknown xids...).
//
// Defaults answer like core/server.ts: HELLO with an identity and journal
// range, LIST in entry batches with a cursor, JOURNAL and SUBSCRIBE records
// after `since`, SNAPSHOT as ustar frames, READ byte ranges, STAT, PING,
// PUT_BLOB (everything already held) and REINTEGRATE (everything applied).
// Nothing is validated: whatever the script holds goes on the wire.
import { createHash } from 'node:crypto';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { Codes, ImzError } from '../protocol/errors.ts';
import { DEFAULT_MAX_FRAME, encodeFrame } from '../protocol/frame_codec.ts';
import { Access, Change, type ChangeCode, type Entry, EntryType, type Envelope, type JournalRecord, Op, OpStatus, PROTOCOL_VERSION, encodeEnvelope } from '../protocol/messages.ts';
import { type ReplyChannel, Session } from '../protocol/session.ts';

/** One accepted connection, as handlers see it. */
export interface Conn {
  /** 1 for the first connection of this server, 2 for the next... */
  readonly n: number;
  readonly socket: Socket;
  readonly session: Session;
  readonly server: HostileServer;
  /** Resolves when the connection is gone (a stalling handler awaits it). */
  readonly closed: Promise<void>;
  /** Writes bytes straight to the socket, under the session layer. */
  raw(bytes: Uint8Array): void;
  /** One encoded frame (4-byte length + Envelope), for raw writes. */
  frame(env: Partial<Envelope>): Uint8Array;
}

/** Answers one request; must end the reply, or await conn.closed to stall. */
export type Handler = (req: Envelope, reply: ReplyChannel, conn: Conn) => Promise<void>;

/** What the fake server says. Mutable between client runs (tests change it). */
export interface Script {
  serverId?: string;
  journalFirst?: number;
  /** Default: the highest record seq (or the LIST cursor). */
  journalLast?: number;
  maxFrame?: number;
  /** The namespace LIST sends, in this order, unchecked. */
  entries?: Entry[];
  /** Entries per LIST frame (default 1000). */
  listBatch?: number;
  /** LIST cursor (default: journalLast). */
  cursor?: number;
  skipped?: { path: string; reason: string }[];
  /** Journal records, sent by JOURNAL and SUBSCRIBE when seq > since (unless journalIgnoresSince). */
  records?: JournalRecord[];
  journalIgnoresSince?: boolean;
  /** File contents by path, for SNAPSHOT and READ. */
  contents?: Map<string, Uint8Array>;
  /** Builds the tar stream SNAPSHOT sends for the requested paths (default: honest ustar). */
  tar?: (paths: string[], conn: Conn) => Uint8Array;
  /** Tar bytes per SNAPSHOT frame (default 64 KiB). */
  tarFrame?: number;
  /** STAT answers NOT_FOUND once it has answered this many times (default: never), to cut a client's retries short. */
  statGoneAfter?: number;
  /** Per-op handlers replacing the defaults (Op.HELLO, Op.LIST, ...). */
  on?: Partial<Record<number, Handler>>;
  /** Takes over a connection before any Session reads it; return true to keep it raw. */
  onConnection?: (socket: Socket, n: number) => boolean | void;
}

const _running = new Set<HostileServer>();

/** A fake server on 127.0.0.1, port 0. */
export class HostileServer {
  readonly script: Script;
  /** Every request received, in order (op and the decoded envelope). */
  readonly requests: { conn: number; op: number; req: Envelope }[] = [];
  port = 0;
  private _net: Server | undefined;
  private _sockets = new Set<Socket>();
  private _conns = 0;

  private constructor(script: Script) {
    this.script = script;
  }

  /** Starts a server answering with script; registered for closeAllHostile(). */
  static async start(script: Script = {}): Promise<HostileServer> {
    const s = new HostileServer(script);
    _running.add(s);
    s._net = createServer((socket) => s._accept(socket));
    await new Promise<void>((res, rej) => {
      s._net!.once('error', rej);
      s._net!.listen(0, '127.0.0.1', () => res());
    });
    s.port = (s._net.address() as AddressInfo).port;
    return s;
  }

  /** "127.0.0.1:PORT", as the CLI takes it. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Connections accepted so far. */
  get connections(): number {
    return this._conns;
  }

  /** The ops received, in order. */
  ops(): number[] {
    return this.requests.map((r) => r.op);
  }

  /** Stops listening and destroys every connection. */
  async close(): Promise<void> {
    _running.delete(this);
    for (const s of this._sockets) s.destroy();
    await new Promise<void>((r) => (this._net ? this._net.close(() => r()) : r()));
  }

  private _accept(socket: Socket): void {
    const n = ++this._conns;
    this._sockets.add(socket);
    socket.on('error', () => {});
    const closed = new Promise<void>((r) => socket.once('close', () => { this._sockets.delete(socket); r(); }));
    if (this.script.onConnection?.(socket, n) === true) return;
    const session = new Session(socket, { maxFrame: 64 * 1024 * 1024 });
    session.on('close', () => socket.destroy());
    const conn: Conn = {
      n, socket, session, server: this, closed,
      raw: (bytes) => { if (!socket.destroyed) socket.write(bytes); },
      frame: (env) => encodeFrame(encodeEnvelope(env)),
    };
    session.handle(async (req, reply) => {
      this.requests.push({ conn: n, op: req.op, req });
      const h = this.script.on?.[req.op] ?? _defaults[req.op];
      if (!h) throw new ImzError(Codes.UNSUPPORTED, `cannot serve request: operation ${req.op} is not supported by this server`);
      await h(req, reply, conn);
    });
  }
}

/** Closes every fake server still running (for test.after). */
export async function closeAllHostile(): Promise<void> {
  await Promise.all([..._running].map((s) => s.close()));
}

// ---------- what the script describes ----------

/** A fixed mtime, so entries are reproducible. */
export const MTIME = 1_700_000_000_000;

const _enc = new TextEncoder();

/** Bytes of a string (or the bytes themselves). */
export function bytes(b: string | Uint8Array): Uint8Array {
  return typeof b === 'string' ? _enc.encode(b) : b;
}

/** SHA-256 of content. */
export function sha256(b: string | Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes(b)).digest());
}

/**
 * A namespace under construction: entries in the order added (the wire
 * order), contents by path. Every field can be forged through `o`.
 */
export class FakeTree {
  readonly entries: Entry[] = [];
  readonly contents = new Map<string, Uint8Array>();
  private _version = 1;

  /** A regular file (hash and size computed from content unless forged). */
  file(path: string, content: string | Uint8Array, o: Partial<Entry> = {}): Entry {
    const b = bytes(content);
    this.contents.set(path, b);
    return this._add({ path, type: EntryType.FILE, size: b.length, mode: 0o644, mtimeMs: MTIME, hash: sha256(b), target: '', version: this._version++, ...o });
  }

  dir(path: string, o: Partial<Entry> = {}): Entry {
    return this._add({ path, type: EntryType.DIR, size: 0, mode: 0o755, mtimeMs: MTIME, hash: new Uint8Array(0), target: '', version: this._version++, ...o });
  }

  link(path: string, target: string, o: Partial<Entry> = {}): Entry {
    return this._add({ path, type: EntryType.SYMLINK, size: 0, mode: 0o777, mtimeMs: MTIME, hash: new Uint8Array(0), target, version: this._version++, ...o });
  }

  /** A removal (type NONE), for journal records. */
  gone(path: string, o: Partial<Entry> = {}): Entry {
    return this._add({ path, type: EntryType.NONE, size: 0, mode: 0, mtimeMs: 0, hash: new Uint8Array(0), target: '', version: this._version++, ...o });
  }

  private _add(e: Entry): Entry {
    this.entries.push(e);
    return e;
  }
}

/** A journal record for an entry (the change is derived from its type unless given). */
export function rec(seq: number, entry: Entry, change?: ChangeCode): JournalRecord {
  const c = change ?? (entry.type === EntryType.NONE ? Change.REMOVE : entry.type === EntryType.DIR ? Change.MKDIR : entry.type === EntryType.SYMLINK ? Change.SYMLINK : Change.CREATE);
  return { seq, change: c, entry: { ...entry, version: entry.version || seq }, origin: '', originSeq: 0, timeMs: MTIME };
}

/** Records seq first, first+1, ... for entries, each with version = its seq. */
export function records(first: number, entries: Entry[]): JournalRecord[] {
  return entries.map((e, i) => rec(first + i, { ...e, version: first + i }));
}

// ---------- tar, written by hand so that every header field can lie ----------

/** One ustar member; every field can be forged. */
export interface TarMember {
  name: string;
  data?: string | Uint8Array;
  /** Declared size (default: the data length). */
  size?: number;
  /** Raw 12-byte size field (overrides size), e.g. base-256 bytes. */
  sizeField?: Uint8Array;
  /** '0' file, '1' hard link, '2' symlink, '5' dir, 'x' pax... */
  type?: string;
  linkname?: string;
  mode?: number;
  /** Break the header checksum. */
  badChecksum?: boolean;
  /** A pax header carrying this path goes first. */
  paxPath?: string;
}

function _field(h: Uint8Array, off: number, len: number, s: string): void {
  const b = _enc.encode(s);
  h.set(b.subarray(0, len), off);
}

function _octal(n: number, len: number): string {
  return n.toString(8).padStart(len - 1, '0') + '\0';
}

/** The bytes of one member: header, data, padding (and a pax header first when asked). */
export function tarMember(m: TarMember): Uint8Array {
  const parts: Uint8Array[] = [];
  if (m.paxPath !== undefined) {
    const rec = (key: string, value: string) => {
      const body = ` ${key}=${value}\n`;
      let len = body.length + 1;
      while (String(len).length + body.length !== len) len = String(len).length + body.length;
      return `${len}${body}`;
    };
    parts.push(tarMember({ name: 'PaxHeader', type: 'x', data: rec('path', m.paxPath) }));
  }
  const data = bytes(m.data ?? '');
  const h = new Uint8Array(512);
  _field(h, 0, 100, m.name);
  _field(h, 100, 8, _octal(m.mode ?? 0o644, 8));
  _field(h, 108, 8, _octal(0, 8));
  _field(h, 116, 8, _octal(0, 8));
  if (m.sizeField) h.set(m.sizeField.subarray(0, 12), 124);
  else _field(h, 124, 12, _octal(m.size ?? data.length, 12));
  _field(h, 136, 12, _octal(Math.floor(MTIME / 1000), 12));
  _field(h, 156, 1, m.type ?? '0');
  _field(h, 157, 100, m.linkname ?? '');
  _field(h, 257, 6, 'ustar\0');
  _field(h, 263, 2, '00');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  if (m.badChecksum) sum += 1;
  _field(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  parts.push(h, data);
  const pad = (512 - (data.length % 512)) % 512;
  if (pad) parts.push(new Uint8Array(pad));
  return Buffer.concat(parts);
}

/** The end-of-archive marker (two zero blocks). */
export function tarEnd(): Uint8Array {
  return new Uint8Array(1024);
}

/** An honest tar of the requested paths that have contents. */
export function honestTar(paths: string[], contents: Map<string, Uint8Array>): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const p of paths) {
    const c = contents.get(p);
    if (c) parts.push(tarMember({ name: p, data: c }));
  }
  parts.push(tarEnd());
  return Buffer.concat(parts);
}

// ---------- default handlers ----------

function _journalLast(s: Script): number {
  if (s.journalLast !== undefined) return s.journalLast;
  let last = s.cursor ?? 0;
  for (const r of s.records ?? []) if (r.seq > last) last = r.seq;
  return last;
}

function _since(s: Script, since: number): JournalRecord[] {
  const all = s.records ?? [];
  return s.journalIgnoresSince ? all : all.filter((r) => r.seq > since);
}

/** The state of a path the script knows last (records win over entries). */
export function lookup(s: Script, path: string): Entry | undefined {
  const recs = s.records ?? [];
  for (let i = recs.length - 1; i >= 0; i--) if (recs[i]!.entry.path === path) return recs[i]!.entry;
  return (s.entries ?? []).find((e) => e.path === path);
}

/** Sends a whole tar in SNAPSHOT frames of the script's size. */
export async function sendTar(reply: ReplyChannel, tar: Uint8Array, frame = 64 * 1024): Promise<void> {
  for (let off = 0; off < tar.length; off += frame) {
    const end = Math.min(tar.length, off + frame);
    await reply.send({ snapshotReply: { tar: tar.subarray(off, end) } }, end >= tar.length);
  }
  if (tar.length === 0) await reply.send({ snapshotReply: { tar: new Uint8Array(0) } }, true);
}

const _defaults: Record<number, Handler> = {
  [Op.HELLO]: async (_req, reply, conn) => {
    const s = conn.server.script;
    await reply.send({
      helloReply: {
        version: PROTOCOL_VERSION, maxFrame: s.maxFrame ?? DEFAULT_MAX_FRAME, serverId: s.serverId ?? 'hostile-server-0001', journalFirst: s.journalFirst ?? 0,
        journalLast: _journalLast(s), server: 'hostile/0', access: Access.READ_WRITE,
      },
    }, true);
  },
  [Op.PING]: async (_req, reply) => reply.send({}, true),
  [Op.LIST]: async (_req, reply, conn) => {
    const s = conn.server.script;
    const entries = s.entries ?? [];
    const batch = s.listBatch ?? 1000;
    const cursor = s.cursor ?? _journalLast(s);
    if (entries.length === 0) return reply.send({ entries: { entries: [], cursor, skipped: s.skipped ?? [] } }, true);
    for (let i = 0; i < entries.length; i += batch) {
      await reply.send({ entries: { entries: entries.slice(i, i + batch), cursor, skipped: i === 0 ? s.skipped ?? [] : [] } }, i + batch >= entries.length);
    }
  },
  [Op.JOURNAL]: async (req, reply, conn) => {
    const s = conn.server.script;
    const recs = _since(s, Number(req.journal?.since) || 0);
    await reply.send({ journalReply: { records: recs, last: _journalLast(s), more: false } }, true);
  },
  [Op.SUBSCRIBE]: async (req, reply, conn) => {
    const s = conn.server.script;
    const recs = _since(s, Number(req.journal?.since) || 0);
    if (recs.length > 0) await reply.send({ journalReply: { records: recs, last: _journalLast(s), more: false } }, false);
    await conn.closed; // a subscription lasts as long as the client stays
  },
  [Op.SNAPSHOT]: async (req, reply, conn) => {
    const s = conn.server.script;
    const paths = req.snapshot?.paths ?? [];
    const tar = s.tar ? s.tar(paths, conn) : honestTar(paths, s.contents ?? new Map());
    await sendTar(reply, tar, s.tarFrame);
  },
  [Op.READ]: async (req, reply, conn) => {
    const r = req.read!;
    const c = conn.server.script.contents?.get(r.path);
    if (!c) throw new ImzError(Codes.NOT_FOUND, `cannot read: ${r.path} does not exist on the server`);
    const off = Number(r.offset) || 0;
    await reply.send({ readReply: { data: c.subarray(off, off + (r.length || 4 << 20)), offset: off } }, true);
  },
  [Op.STAT]: async (req, reply, conn) => {
    const s = conn.server.script;
    const e = lookup(s, req.stat?.path ?? '');
    const n = conn.server.requests.filter((r) => r.op === Op.STAT).length;
    if (!e || e.type === EntryType.NONE || (s.statGoneAfter !== undefined && n > s.statGoneAfter)) throw new ImzError(Codes.NOT_FOUND, `cannot stat: ${req.stat?.path} does not exist on the server`);
    await reply.send({ statReply: e }, true);
  },
  [Op.PUT_BLOB]: async (req, reply) => {
    const q = req.putBlob?.query ?? [];
    if (q.length > 0) return reply.send({ blobReply: { present: false, have: 0, held: q.map(() => true) } }, true);
    await reply.send({ blobReply: { present: true, have: Number(req.putBlob?.size) || 0 } }, true);
  },
  [Op.REINTEGRATE]: async (req, reply) => {
    const ops = req.reintegrate?.ops ?? [];
    await reply.send({ reintegrateReply: { results: ops.map((o, i) => ({ seq: o.seq, status: OpStatus.APPLIED, version: 1000 + i, server: null, conflictClass: '', keptAs: '', displaced: '', error: null })) } }, true);
  },
};
