import { EventEmitter } from 'node:events';
import { closeSync, constants as fsc, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { type AddressInfo, createServer, isIPv4, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { join, resolve } from 'node:path';
import { pack as tarPack } from 'tar-stream';
import { Codes, ImzError, firstLine } from '../protocol/errors.ts';
import { DEFAULT_MAX_FRAME, encodeFrame } from '../protocol/frame_codec.ts';
import { Access, type AccessCode, type Entry, EntryType, type Envelope, type JournalRecord, Op, PROTOCOL_VERSION, encodeEnvelope } from '../protocol/messages.ts';
import { type ReplyChannel, Session } from '../protocol/session.ts';
import { NONCE_BYTES, newNonce } from './auth.ts';
import { SERVER_DIR, checkPath, comparePaths, inDir } from './paths.ts';
import type { SkippedPath } from './tree_scan.ts';
import { Reintegrator } from './server_apply.ts';
import { ServerAuth, type ServerTokens } from './server_auth.ts';
import { ServerScanner } from './server_scanner.ts';
import { ServerState, type TableEntry, tableToEntry } from './server_state.ts';
import { sameMtime } from './tree_scan.ts';
import { VERSION } from './version.ts';

/** Options of `imz serve`. */
export interface ServeOptions {
  dir: string;
  host?: string;
  port?: number;
  stateDir?: string;
  maxFrame?: number;
  debounceMs?: number;
  rescanMs?: number;
  /** Close connections silent this long (default 60 s, or IMZ_IDLE_MS). */
  idleMs?: number;
  /** Tokens sessions must prove (none: every session may read and write, loopback only). */
  tokens?: ServerTokens;
  /** Serve over TLS with this certificate and key (PEM). */
  tls?: { cert: string | Uint8Array; key: string | Uint8Array };
  /** Allow a non-loopback host without tokens. */
  insecure?: boolean;
  /** Most connections at once (default 1000). */
  maxConnections?: number;
  /** Most connections at once from one address (default 100). */
  maxConnectionsPerAddress?: number;
  /** Close a connection that has not finished HELLO (and AUTH) this long after connecting (default 10 s, or IMZ_HANDSHAKE_MS). */
  handshakeMs?: number;
  /** Refuse every write, whatever the token (a read-only mirror). */
  readOnly?: boolean;
  /** A mirror: where its content comes from, told to clients in HELLO. */
  upstream?: { address: string; reachable: () => boolean };
  /** An on-demand mirror: files listed but not here yet. */
  virtual?: (path: string) => boolean;
  /** An on-demand mirror: brings the content of these listed files here (called before serving them). */
  materialize?: (paths: string[]) => Promise<void>;
}

/** Where a started server listens, and the SHA-256 fingerprint of its TLS certificate. */
export interface Listening {
  host: string;
  port: number;
  tlsFingerprint?: string;
}

/** A failed authentication, for the log. */
export interface AuthFailure {
  address: string;
  reason: string;
  /** True when this failure put the address over the limit: it is refused for a while. */
  blocked: boolean;
}

/** Entries per LIST/READDIR frame. */
const LIST_BATCH = 1000;
/** Tar bytes gathered before a SNAPSHOT frame is sent. */
const SNAPSHOT_FRAME = 512 * 1024;
/** Tar bytes a SNAPSHOT may have packed ahead of the socket. */
const SNAPSHOT_AHEAD = 4 * 1024 * 1024;
/** Files up to this size are packed from one buffer. */
const PACK_WHOLE = 256 * 1024;
/** Bytes a subscriber's socket may have queued before it is told to catch up by itself. */
const SUBSCRIBER_BACKLOG = 8 * 1024 * 1024;
/** Records a subscriber may have waiting for its socket before it is dropped as lagging. */
const SUBSCRIBER_QUEUE = 50_000;
/** Largest READ reply payload. */
const READ_MAX = 4 * 1024 * 1024;
/** Largest frame before the handshake is done: a stranger cannot make the server buffer more. */
const HANDSHAKE_MAX_FRAME = 64 * 1024;
/** READ and SNAPSHOT requests served at once per connection (each may hold a few MiB): the rest wait their turn. */
const HEAVY_PER_SESSION = 8;
/** Pause before answering a failed AUTH, so guessing is slow even below the rate limit. */
const AUTH_FAIL_DELAY_MS = 200;

// Per-connection handshake state.
interface _Peer {
  address: string;
  hello: boolean;
  access: AccessCode;
  serverNonce: Uint8Array;
  clientNonce: Uint8Array;
  /** The replica id HELLO gave ('' for none). */
  replicaId: string;
  maxFrame: number;
  /** Ends the handshake deadline. */
  done: () => void;
  /** READ and SNAPSHOT requests running, and those waiting for a turn. */
  heavy: number;
  waiting: (() => void)[];
}

/**
 * An imz server: the master copy of a tree, its journal, and the network
 * front. Events: 'connection' (address), 'skipped' (SkippedPath), 'warning'
 * (Error), 'auth-failed' (AuthFailure), 'refused' ({ address, reason }).
 */
export class ImzServer extends EventEmitter {
  readonly root: string;
  state!: ServerState;
  scanner!: ServerScanner;
  reintegrator!: Reintegrator;
  /** Paths the scanner saw but cannot replicate (special files, bad names), with the reason. */
  readonly skipped = new Map<string, string>();
  private _net: Server | undefined;
  private _sessions = new Set<Session>();
  private _auth: ServerAuth;
  private _connections = 0;
  private _perAddress = new Map<string, number>();
  // Connections still in their handshake, by "address:port": the deadline, and the session once there is one.
  private _handshakes = new Map<string, { timer: ReturnType<typeof setTimeout>; session?: Session }>();
  private _opts: ServeOptions;
  private _idleTimer: ReturnType<typeof setInterval> | undefined;

  constructor(opts: ServeOptions) {
    super();
    this._opts = opts;
    this.root = resolve(opts.dir);
    this._auth = new ServerAuth(opts.tokens);
  }

  /** True when sessions must authenticate with a token. */
  get authRequired(): boolean {
    return this._auth.required;
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this._connections;
  }

  /** Opens the state, scans the tree, starts watching and listening. */
  async start(): Promise<Listening> {
    const host = this._opts.host ?? '127.0.0.1';
    if (!isLoopback(host) && !this._auth.required && !this._opts.insecure) {
      throw new ImzError(Codes.BAD_USAGE, `cannot listen on ${host}: without tokens imz serves only loopback addresses (give --token-file, use --host 127.0.0.1, or --insecure to expose the tree to anyone who can connect)`);
    }
    // A mistyped directory would be made and served empty (and filled by the next push): refused instead.
    let rootSt;
    try {
      rootSt = statSync(this.root, { throwIfNoEntry: false });
    } catch (err) {
      // A path under a file (ENOTDIR), or one this user cannot look into (EACCES).
      throw new ImzError(Codes.BAD_USAGE, `cannot serve ${this.root}: ${_PATH_PROBLEMS.get((err as NodeJS.ErrnoException).code ?? '') ?? (err as Error).message}`);
    }
    if (!rootSt) throw new ImzError(Codes.BAD_USAGE, `cannot serve ${this.root}: no such directory (create it first, or check the path)`);
    if (!rootSt.isDirectory()) throw new ImzError(Codes.BAD_USAGE, `cannot serve ${this.root}: it is not a directory`);
    let tlsFingerprint: string | undefined;
    if (this._opts.tls) {
      try {
        tlsFingerprint = new X509Certificate(this._opts.tls.cert).fingerprint256;
      } catch (err) {
        throw new ImzError(Codes.BAD_USAGE, `cannot use the TLS certificate: ${(err as Error).message}`);
      }
    }
    // The listener first: a certificate and key that do not fit fail before any state is opened.
    const handshakeMs = this._handshakeMs();
    if (this._opts.tls) {
      const tls = this._opts.tls;
      let net: Server;
      try {
        net = createTlsServer({ cert: Buffer.from(tls.cert), key: Buffer.from(tls.key), minVersion: 'TLSv1.2', handshakeTimeout: handshakeMs }, (s: TLSSocket) => this._onSecure(s));
      } catch (err) {
        throw new ImzError(Codes.BAD_USAGE, `cannot use the TLS certificate and key: ${firstLine((err as Error).message)}`);
      }
      // Admission on the raw connection, before any TLS work is spent on it.
      net.on('connection', (raw: Socket) => { this._admit(raw, false); });
      // A failed TLS handshake (a scanner, a plain-TCP client) costs nothing more than this.
      net.on('tlsClientError', () => {});
      this._net = net;
    } else {
      this._net = createServer((socket) => { if (this._admit(socket, true)) this._onSecure(socket); });
    }
    try {
      const stateDir = resolve(this._opts.stateDir ?? join(this.root, SERVER_DIR));
      this.state = await ServerState.open(stateDir).catch((err) => {
        throw _stateDirError(err, stateDir);
      });
      this.scanner = new ServerScanner(this.root, this.state, { debounceMs: this._opts.debounceMs, rescanMs: this._opts.rescanMs, virtual: this._opts.virtual });
      this.scanner.on('skipped', (s: SkippedPath) => {
        // Remembered (bounded) so clones can say what they will not get.
        if (this.skipped.size < 1000 || this.skipped.has(s.path)) this.skipped.set(s.path, s.reason);
        this.emit('skipped', s);
      });
      this.scanner.on('error', (e) => this.emit('warning', e));
      await this.scanner.start();
      this.reintegrator = new Reintegrator(this.root, this.state, this.scanner);
      await this.reintegrator.sweepStaging();
      await new Promise<void>((res, rej) => {
        this._net!.once('error', rej);
        this._net!.listen(this._opts.port ?? 0, host, () => res());
      });
    } catch (err) {
      // Nothing left running: the process can report the error and exit.
      await this.scanner?.close().catch(() => {});
      await this.state?.close().catch(() => {});
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EADDRINUSE') throw new ImzError(Codes.BAD_USAGE, `cannot listen on ${host}:${this._opts.port}: the port is in use (choose another --port, or 0 for a free one)`);
      if (e.code === 'EADDRNOTAVAIL') throw new ImzError(Codes.BAD_USAGE, `cannot listen on ${host}: no such address on this machine`);
      if (e.code === 'EACCES') throw new ImzError(Codes.BAD_USAGE, `cannot listen on ${host}:${this._opts.port}: permission denied (ports below 1024 need privileges)`);
      throw err;
    }
    this._net.on('error', (e) => this.emit('warning', e));
    // A peer silent for this long is gone (a follower pings every few
    // seconds; a half-open connection never will): close it.
    const hb = Number(process.env.IMZ_HEARTBEAT_MS);
    const idleMs = this._opts.idleMs ?? (Number(process.env.IMZ_IDLE_MS) || (hb > 0 ? 3 * hb : 60_000));
    this._idleTimer = setInterval(() => {
      const now = Date.now();
      for (const s of this._sessions) {
        if (now - s.lastReceived > idleMs) s.abort(new ImzError(Codes.TIMEOUT, `cannot keep the connection: nothing received for ${Math.round(idleMs / 1000)} s`));
      }
    }, Math.min(5000, idleMs));
    this._idleTimer.unref?.();
    const addr = this._net.address() as AddressInfo;
    return { host: addr.address, port: addr.port, tlsFingerprint };
  }

  private _handshakeMs(): number {
    return this._opts.handshakeMs ?? (Number(process.env.IMZ_HANDSHAKE_MS) || 10_000);
  }

  // Counts a new connection against the limits; refuses it (false) when over.
  private _admit(socket: Socket, plain: boolean): boolean {
    const address = socket.remoteAddress ?? '?';
    const total = this._opts.maxConnections ?? 1000;
    const per = this._opts.maxConnectionsPerAddress ?? 100;
    const mine = this._perAddress.get(address) ?? 0;
    const why = this._connections >= total ? `the server has ${total} connections, its limit`
      : mine >= per ? `${address} has ${per} connections, the limit per address` : undefined;
    if (why) {
      this.emit('refused', { address, reason: why });
      if (plain) {
        const err = encodeFrame(encodeEnvelope({ xid: 0, op: Op.ERROR, last: true, error: { code: Codes.BUSY, message: `cannot accept the connection: ${why} (try again later)` } }));
        socket.end(err);
        setTimeout(() => socket.destroy(), 1000).unref?.();
      } else {
        socket.destroy();
      }
      return false;
    }
    this._connections++;
    this._perAddress.set(address, mine + 1);
    socket.once('close', () => {
      this._connections--;
      const n = (this._perAddress.get(address) ?? 1) - 1;
      if (n <= 0) this._perAddress.delete(address);
      else this._perAddress.set(address, n);
    });
    // Until the handshake is done, a connection gets a short deadline (TLS
    // sockets have the TLS server's handshakeTimeout for their first part).
    const key = `${address}:${socket.remotePort}`;
    const pending: { timer: ReturnType<typeof setTimeout>; session?: Session } = {
      timer: setTimeout(() => {
        this._handshakes.delete(key);
        if (pending.session) pending.session.abort(new ImzError(Codes.TIMEOUT, `cannot greet: no handshake within ${this._handshakeMs() / 1000} s`));
        else socket.destroy();
      }, this._handshakeMs()),
    };
    pending.timer.unref?.();
    this._handshakes.set(key, pending);
    socket.once('close', () => {
      clearTimeout(pending.timer);
      if (this._handshakes.get(key) === pending) this._handshakes.delete(key);
    });
    return true;
  }

  /** Stops listening, closes sessions, flushes the journal and checkpoints the table. */
  async close(): Promise<void> {
    // Stop accepting, and close open sessions now: net.Server.close() waits
    // for every connection to end, and a follower never ends by itself.
    if (this._idleTimer) clearInterval(this._idleTimer);
    const closed = new Promise<void>((r) => (this._net ? this._net.close(() => r()) : r()));
    for (const s of this._sessions) s.close();
    await closed;
    await this.scanner?.close();
    // Uploads held in memory go to staging: a push cut short by the stop finds them there after a restart.
    this.reintegrator?.stageHeld();
    await this.state?.close();
  }

  private _onSecure(socket: Socket): void {
    const session = new Session(socket, { maxFrame: HANDSHAKE_MAX_FRAME });
    const address = socket.remoteAddress ?? '?';
    const key = `${address}:${socket.remotePort}`;
    const pending = this._handshakes.get(key);
    if (pending) pending.session = session;
    this._sessions.add(session);
    this.emit('connection', `${address}:${socket.remotePort}`);
    session.on('close', () => this._sessions.delete(session));
    const peer: _Peer = { address, hello: false, access: Access.NONE, serverNonce: newNonce(), clientNonce: new Uint8Array(0), replicaId: '', maxFrame: HANDSHAKE_MAX_FRAME, done: () => {
      if (pending) clearTimeout(pending.timer);
      if (this._handshakes.get(key) === pending) this._handshakes.delete(key);
    }, heavy: 0, waiting: [] };
    session.handle(async (req, reply) => {
      if (req.op === Op.HELLO) return this._hello(session, peer, req, reply);
      if (!peer.hello) throw new ImzError(Codes.PROTOCOL, 'cannot serve request: HELLO must come first');
      if (req.op === Op.AUTH) return this._authenticate(session, peer, req, reply);
      if (req.op === Op.PING) return reply.send({}, true);
      if (peer.access === Access.NONE) {
        session.abort(new ImzError(Codes.AUTH, 'cannot serve request: this server requires a token (give --token-file FILE or set IMZ_TOKEN)'));
        return;
      }
      if ((req.op === Op.PUT_BLOB || req.op === Op.PUT_BLOBS || req.op === Op.REINTEGRATE) && peer.access !== Access.READ_WRITE) {
        throw new ImzError(Codes.READ_ONLY, this._opts.readOnly
          ? 'cannot change the server: it is a read-only mirror (push to its upstream instead)'
          : 'cannot change the server: this token gives read-only access (use a read-write token)');
      }
      switch (req.op) {
        case Op.STAT: return this._stat(req, reply);
        case Op.READDIR: return this._readdir(req, reply);
        case Op.LIST: return this._list(req, reply);
        case Op.READ: return this._heavy(peer, () => this._read(req, reply));
        case Op.JOURNAL: return this._journal(req, reply);
        case Op.SUBSCRIBE: return this._subscribe(session, req, reply);
        case Op.SNAPSHOT: return this._heavy(peer, () => this._snapshot(req, reply));
        case Op.PUT_BLOB: {
          if (!req.putBlob) throw new ImzError(Codes.PROTOCOL, 'cannot stage content: PUT_BLOB without a body');
          if (req.putBlob.query && req.putBlob.query.length > 0) return reply.send({ blobReply: { present: false, have: 0, held: this.reintegrator.holds(req.putBlob.query) } }, true);
          return reply.send({ blobReply: await this.reintegrator.putBlob(req.putBlob) }, true);
        }
        case Op.PUT_BLOBS: {
          if (!req.putBlobs) throw new ImzError(Codes.PROTOCOL, 'cannot stage content: PUT_BLOBS without a body');
          return reply.send({ blobsReply: { replies: await this.reintegrator.putBlobs(req.putBlobs.blobs) } }, true);
        }
        case Op.REINTEGRATE: {
          const r = req.reintegrate;
          if (!r) throw new ImzError(Codes.PROTOCOL, 'cannot reintegrate: REINTEGRATE without a body');
          return reply.send({ reintegrateReply: { results: await this.reintegrator.reintegrate(r.replicaId, r.ops, r.policy) } }, true);
        }
        default: throw new ImzError(Codes.UNSUPPORTED, `cannot serve request: operation ${req.op} is not supported by this server`);
      }
    });
  }

  private async _hello(session: Session, peer: _Peer, req: Envelope, reply: ReplyChannel): Promise<void> {
    const h = req.hello;
    if (peer.hello) throw new ImzError(Codes.PROTOCOL, 'cannot greet: HELLO was already said on this connection');
    if (!h || !h.version) throw new ImzError(Codes.PROTOCOL, 'cannot greet: HELLO without a version');
    peer.hello = true;
    peer.clientNonce = h.nonce ?? new Uint8Array(0);
    peer.replicaId = h.replicaId ?? '';
    const ours = this._opts.maxFrame ?? DEFAULT_MAX_FRAME;
    peer.maxFrame = Math.max(64 * 1024, Math.min(ours, h.maxFrame || DEFAULT_MAX_FRAME));
    if (!this._auth.required) peer.access = this._opts.readOnly ? Access.READ_ONLY : Access.READ_WRITE;
    await reply.send({
      helloReply: {
        version: Math.min(PROTOCOL_VERSION, h.version), maxFrame: peer.maxFrame, serverId: this.state.id, journalFirst: this.state.journal.first,
        journalLast: this.state.journal.durableLast, server: `imz/${VERSION}`, nonce: peer.serverNonce, access: peer.access,
        upstream: this._opts.upstream?.address ?? '', upstreamReachable: this._opts.upstream?.reachable() ?? false,
        originSeq: peer.access !== Access.NONE ? this._originSeq(h.replicaId) : 0,
      },
    }, true);
    if (peer.access !== Access.NONE) this._handshakeDone(session, peer);
  }

  // Bounds the memory one connection's pipelined reads can hold: a peer
  // that sends 256 READs and never reads the replies gets 8 served at once.
  private async _heavy(peer: _Peer, fn: () => Promise<void>): Promise<void> {
    while (peer.heavy >= HEAVY_PER_SESSION) await new Promise<void>((r) => peer.waiting.push(r));
    peer.heavy++;
    try {
      await fn();
    } finally {
      peer.heavy--;
      peer.waiting.shift()?.();
    }
  }

  // What a replica needs to number its next operations: the highest seq of its that this server applied (see ReintLog).
  private _originSeq(replicaId: string | undefined): number {
    return replicaId ? this.state.origins.get(replicaId) ?? 0 : 0;
  }

  private _handshakeDone(session: Session, peer: _Peer): void {
    peer.done();
    session.maxFrame = peer.maxFrame;
  }

  // AUTH: one attempt per connection; a failure is logged, counted against
  // the peer's address, answered after a pause, and ends the connection.
  private async _authenticate(session: Session, peer: _Peer, req: Envelope, reply: ReplyChannel): Promise<void> {
    if (!this._auth.required) return reply.send({ authReply: { proof: new Uint8Array(0), access: peer.access } }, true);
    if (peer.access !== Access.NONE) throw new ImzError(Codes.PROTOCOL, 'cannot authenticate: this connection already did');
    const wait = this._auth.blockedFor(peer.address);
    if (wait > 0) {
      session.abort(new ImzError(Codes.AUTH, `cannot authenticate: too many failed attempts from ${peer.address}; try again in ${Math.ceil(wait / 1000)} s`));
      return;
    }
    const ok = this._auth.verify(req.auth?.proof ?? new Uint8Array(0), peer.serverNonce, peer.clientNonce, this.state.id);
    if (!ok) {
      const blocked = this._auth.recordFailure(peer.address);
      const reason = peer.clientNonce.length !== NONCE_BYTES ? 'no valid client nonce in HELLO' : 'the proof matches no token';
      this.emit('auth-failed', { address: peer.address, reason, blocked } satisfies AuthFailure);
      await new Promise((r) => setTimeout(r, AUTH_FAIL_DELAY_MS));
      session.abort(new ImzError(Codes.AUTH, 'cannot authenticate: the server did not accept the token (check --token-file or IMZ_TOKEN)'));
      return;
    }
    peer.access = this._opts.readOnly ? Access.READ_ONLY : ok.access;
    await reply.send({ authReply: { proof: ok.proof, access: peer.access, originSeq: this._originSeq(peer.replicaId) } }, true);
    this._handshakeDone(session, peer);
  }

  /** An on-demand mirror fetches listed files from its upstream before serving them (elsewhere: nothing to do). */
  async materialize(paths: string[]): Promise<void> {
    const virtual = this._opts.virtual;
    if (!virtual || !this._opts.materialize) return;
    const absent = paths.filter((p) => this.state.table.get(p)?.type === EntryType.FILE && virtual(p));
    if (absent.length > 0) await this._opts.materialize(absent);
  }

  private _lookup(path: string, action: string): TableEntry {
    const t = this.state.table.get(path);
    if (!t) throw new ImzError(Codes.NOT_FOUND, `cannot ${action}: ${path} does not exist on the server`);
    return t;
  }

  // The table runs ahead of the disk during a reintegration batch (its journal records are written at its end):
  // what is served from it is a durable state, whose versions a crash cannot hand out again.
  private async _durableTable(): Promise<void> {
    for (let i = 0; i < 100 && this.state.journal.durableLast < this.state.lastSeq; i++) await this.state.flush();
  }

  private async _stat(req: Envelope, reply: ReplyChannel): Promise<void> {
    const path = checkPath(req.stat?.path, 'stat');
    await this._durableTable();
    await reply.send({ statReply: tableToEntry(path, this._lookup(path, 'stat')) }, true);
  }

  private async _readdir(req: Envelope, reply: ReplyChannel): Promise<void> {
    const dir = checkPath(req.readdir?.path ?? '', 'list directory', true);
    await this._durableTable();
    if (dir !== '' && this._lookup(dir, 'list directory').type !== EntryType.DIR) {
      throw new ImzError(Codes.NOT_FOUND, `cannot list directory: ${dir} is not a directory`);
    }
    const prefix = dir === '' ? '' : `${dir}/`;
    const out: Entry[] = [];
    for (const [p, t] of this.state.table) {
      if (p.startsWith(prefix) && p.indexOf('/', prefix.length) < 0) out.push(tableToEntry(p, t));
    }
    out.sort((a, b) => comparePaths(a.path, b.path));
    await this._sendEntries(reply, out, this.state.lastSeq);
  }

  private async _list(req: Envelope, reply: ReplyChannel): Promise<void> {
    const prefix = checkPath(req.list?.prefix ?? '', 'list', true);
    await this._durableTable();
    // Snapshot the table at one sequence number: entries are replaced, never mutated in place by commits.
    const cursor = this.state.lastSeq;
    const out: Entry[] = [];
    for (const [p, t] of this.state.table) {
      if (prefix === '' || p === prefix || p.startsWith(`${prefix}/`)) out.push(tableToEntry(p, t));
    }
    out.sort((a, b) => comparePaths(a.path, b.path));
    const skipped = [...this.skipped].filter(([p]) => prefix === '' || p === prefix || p.startsWith(`${prefix}/`)).map(([path, reason]) => ({ path, reason }));
    await this._sendEntries(reply, out, cursor, skipped);
  }

  private async _sendEntries(reply: ReplyChannel, out: Entry[], cursor: number, skipped: { path: string; reason: string }[] = []): Promise<void> {
    if (out.length === 0) return reply.send({ entries: { entries: [], cursor, skipped } }, true);
    for (let i = 0; i < out.length; i += LIST_BATCH) {
      if (reply.closed) return;
      const last = i + LIST_BATCH >= out.length;
      await reply.send({ entries: { entries: out.slice(i, i + LIST_BATCH), cursor, skipped: i === 0 ? skipped : [] } }, last);
    }
  }

  private async _openChecked(path: string, t: TableEntry, action: string): Promise<FileHandle> {
    let fh: FileHandle;
    try {
      fh = await open(inDir(this.root, path), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') throw new ImzError(Codes.STALE, `cannot ${action}: ${path} changed on the server (pull again)`);
      throw err;
    }
    const st = await fh.stat();
    // The inode check also defeats a parent directory swapped for a symlink
    // after the scan: whatever that open reached is not the file we listed.
    if (!st.isFile() || st.size !== t.size || !sameMtime(st.mtimeMs, t.mtimeMs) || (t.ino > 0 && st.ino !== t.ino)) {
      await fh.close();
      throw new ImzError(Codes.STALE, `cannot ${action}: ${path} changed on the server (pull again)`);
    }
    return fh;
  }

  private async _read(req: Envelope, reply: ReplyChannel): Promise<void> {
    const r = req.read;
    const path = checkPath(r?.path, 'read');
    const t = this._lookup(path, 'read');
    if (t.type !== EntryType.FILE) throw new ImzError(Codes.NOT_FOUND, `cannot read: ${path} is not a file`);
    if (r!.hash && r!.hash.length > 0 && Buffer.from(r!.hash).toString('latin1') !== t.hash) {
      throw new ImzError(Codes.STALE, `cannot read: ${path} has changed since the version asked for (pull again)`);
    }
    const offset = Math.max(0, Number(r!.offset) || 0);
    const want = Math.min(r!.length || READ_MAX, READ_MAX);
    await this.materialize([path]);
    const fh = await this._openChecked(path, t, 'read');
    try {
      const buf = Buffer.allocUnsafe(Math.max(0, Math.min(want, t.size - offset)));
      let got = 0;
      while (got < buf.length) {
        const { bytesRead } = await fh.read(buf, got, buf.length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      // The client verifies the whole-file hash; a file rewritten mid-read fails that check.
      await reply.send({ readReply: { data: buf.subarray(0, got), offset } }, true);
    } finally {
      await fh.close();
    }
  }

  private async _journal(req: Envelope, reply: ReplyChannel): Promise<void> {
    const since = Math.max(0, Number(req.journal?.since) || 0);
    const limit = req.journal?.limit || 0;
    const last = this.state.journal.durableLast;
    let sent = 0;
    let pending: import('../protocol/messages.ts').JournalRecord[] | undefined;
    for await (const batch of this.state.journal.readSince(since, 1000)) {
      if (reply.closed) return;
      let b = batch;
      if (limit > 0 && sent + b.length > limit) b = b.slice(0, limit - sent);
      if (pending) await reply.send({ journalReply: { records: pending, last, more: false } }, false);
      pending = b;
      sent += b.length;
      if (limit > 0 && sent >= limit) break;
    }
    const more = limit > 0 && sent >= limit && (pending?.[pending.length - 1]?.seq ?? since) < last;
    await reply.send({ journalReply: { records: pending ?? [], last, more } }, true);
  }

  // SUBSCRIBE: the backlog since the cursor, then every record as it is
  // committed, on this request's xid, until the client goes away. A
  // subscriber that cannot keep up (its socket backs up past a bound) is
  // told IMZ_LAGGING and dropped: it catches up with JOURNAL and subscribes
  // again, so one slow follower never holds the server's memory or others.
  private async _subscribe(session: Session, req: Envelope, reply: ReplyChannel): Promise<void> {
    let since = Math.max(0, Number(req.journal?.since) || 0);
    let queue: JournalRecord[] = [];
    let lagging = false;
    let wake: (() => void) | undefined;
    const onRecords = (records: JournalRecord[]) => {
      if (lagging) return;
      queue.push(...records);
      // Bounded per subscriber: past this, it is told to catch up by itself.
      if (queue.length > SUBSCRIBER_QUEUE) {
        lagging = true;
        queue = [];
      }
      wake?.();
    };
    this.state.on('records', onRecords);
    const closed = new Promise<void>((r) => session.once('close', () => r()));
    try {
      for await (const batch of this.state.journal.readSince(since, 1000)) {
        if (reply.closed) return;
        await reply.send({ journalReply: { records: batch, last: this.state.journal.durableLast, more: false } }, false);
        since = batch[batch.length - 1]!.seq;
      }
      for (;;) {
        if (reply.closed || session.closed) return;
        if (queue.length === 0 && !lagging) {
          await Promise.race([new Promise<void>((r) => { wake = r; }), closed]);
          wake = undefined;
          continue;
        }
        const batch = queue.filter((r) => r.seq > since);
        queue = [];
        if (batch.length === 0 && !lagging) continue;
        if (lagging || session.socket.writableLength > SUBSCRIBER_BACKLOG) {
          throw new ImzError('IMZ_LAGGING', 'cannot keep streaming: this subscriber fell too far behind (catch up with a pull, then subscribe again)');
        }
        await reply.send({ journalReply: { records: batch, last: this.state.journal.durableLast, more: false } }, false);
        since = batch[batch.length - 1]!.seq;
      }
    } finally {
      this.state.off('records', onRecords);
    }
  }

  private async _snapshot(req: Envelope, reply: ReplyChannel): Promise<void> {
    let paths = req.snapshot?.paths ?? [];
    if (paths.length === 0) {
      paths = [...this.state.table].filter(([, t]) => t.type === EntryType.FILE).map(([p]) => p).sort(comparePaths);
    }
    for (const p of paths) checkPath(p, 'make snapshot');
    await this.materialize(paths);
    const pack = tarPack();
    // Bytes handed to the packer but not yet sent: bounds memory per request.
    let ahead = 0;
    let wake: (() => void) | undefined;
    const producer = (async () => {
      for (const p of paths) {
        if (reply.closed) break;
        const t = this.state.table.get(p);
        if (!t || t.type !== EntryType.FILE) continue; // gone: the client sees it missing and pulls again
        // Small files are read with synchronous calls: four thread-pool round
        // trips per file would cost far more than the reads themselves.
        const fd = this._openCheckedSync(p, t);
        if (fd === undefined) continue;
        try {
          await _packFile(pack, p, t, fd);
        } finally {
          closeSync(fd);
        }
        ahead += 512 + t.size;
        while (ahead > SNAPSHOT_AHEAD && !reply.closed) await new Promise<void>((r) => { wake = r; });
      }
      pack.finalize();
    })();
    producer.catch((err) => pack.destroy(err));
    let parts: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of pack as AsyncIterable<Uint8Array>) {
      parts.push(chunk);
      size += chunk.length;
      if (size >= SNAPSHOT_FRAME) {
        await reply.send({ snapshotReply: { tar: Buffer.concat(parts) } }, false);
        ahead -= size;
        parts = [];
        size = 0;
        wake?.();
      }
      if (reply.closed) break;
    }
    wake?.();
    await producer;
    await reply.send({ snapshotReply: { tar: Buffer.concat(parts) } }, true);
  }

  // Opens a file for a snapshot if it still matches the table (undefined when it changed).
  private _openCheckedSync(path: string, t: TableEntry): number | undefined {
    let fd: number;
    try {
      fd = openSync(inDir(this.root, path), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') return undefined;
      throw err;
    }
    const st = fstatSync(fd);
    if (!st.isFile() || st.size !== t.size || !sameMtime(st.mtimeMs, t.mtimeMs) || (t.ino > 0 && st.ino !== t.ino)) {
      closeSync(fd);
      return undefined;
    }
    return fd;
  }
}

// Writes one file into the tar pack, exactly t.size bytes (zero-padded if
// the file shrank under us: the hash check on the client rejects it then).
async function _packFile(pack: ReturnType<typeof tarPack>, path: string, t: TableEntry, fd: number): Promise<void> {
  // No pax header for the hash: the client checks against the hash it got from LIST or the journal.
  const header = { name: path, size: t.size, mode: t.mode, mtime: new Date(t.mtimeMs) };
  if (t.size <= PACK_WHOLE) {
    const buf = Buffer.alloc(t.size);
    let got = 0;
    while (got < t.size) {
      const n = readSync(fd, buf, got, t.size - got, got);
      if (n === 0) break;
      got += n;
    }
    pack.entry(header, buf);
    return;
  }
  await new Promise<void>((res, rej) => {
    const entry = pack.entry(header, (err) => (err ? rej(err) : res()));
    void (async () => {
      const buf = Buffer.allocUnsafe(PACK_WHOLE);
      let pos = 0;
      while (pos < t.size) {
        const n = Math.min(buf.length, t.size - pos);
        const bytesRead = readSync(fd, buf, 0, n, pos);
        const chunk = bytesRead > 0 ? Buffer.from(buf.subarray(0, bytesRead)) : Buffer.alloc(n);
        const more = entry.write(chunk);
        pos += chunk.length;
        if (!more) await new Promise<void>((r) => entry.once('drain', () => r()));
      }
      (entry as unknown as { end(): void }).end();
    })().catch(rej);
  });
}

/** True for an address that only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIPv4(host) && host.startsWith('127.'));
}

// A state directory that cannot be made or written (a path under a file, no permission, a read-only file system) is
// a usage error naming it: said as a failure to listen (EACCES), it sent users looking at ports.
function _stateDirError(err: unknown, stateDir: string): unknown {
  const why = _PATH_PROBLEMS.get((err as NodeJS.ErrnoException)?.code ?? '');
  if (why === undefined) return err;
  return new ImzError(Codes.BAD_USAGE, `cannot serve: cannot keep the server state in ${stateDir}: ${why} (give --state-dir a directory this user can write)`);
}

// What a path the server is given (its tree, its state directory) can be wrong with, by error code.
const _PATH_PROBLEMS = new Map<string, string>([
  ['ENOTDIR', 'a part of the path is not a directory'], ['EACCES', 'permission denied'], ['EPERM', 'permission denied'],
  ['EROFS', 'the file system is read-only'], ['EEXIST', 'it is not a directory'],
]);
