import { connect as netConnect, isIP, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { Codes, ImzError, firstLine } from '../protocol/errors.ts';
import { DEFAULT_MAX_FRAME } from '../protocol/frame_codec.ts';
import { Access, type Entry, type Envelope, type JournalRecord, Op, PROTOCOL_VERSION } from '../protocol/messages.ts';
import { Session } from '../protocol/session.ts';
import { NONCE_BYTES, clientProof, newNonce, sameProof, serverProof } from './auth.ts';
import { VERSION } from './version.ts';

/** What HELLO told us about the server. */
export interface ServerInfo {
  serverId: string;
  journalFirst: number;
  journalLast: number;
  version: number;
  maxFrame: number;
  /** What this session may do. */
  access: 'read-write' | 'read-only';
  /** True when both sides proved knowledge of the token. */
  authenticated: boolean;
  /** SHA-256 fingerprint of the server's certificate ("AB:CD:..."), when over TLS. */
  tlsFingerprint?: string;
  /** A mirror: the server it mirrors, and whether it is following it now. */
  upstream?: { address: string; reachable: boolean };
  /** The highest operation seq the server applied from this replica (0: none, or an older server). */
  originSeq: number;
}

/** How to reach a server safely: a token, and TLS settings. */
export interface Security {
  /** Token proved in AUTH when the server asks for one. */
  token?: string;
  /** Connect over TLS: trust the system CAs, or ca (PEM), or only a certificate with this SHA-256 fingerprint. */
  tls?: { ca?: string | Uint8Array; fingerprint?: string };
}

/** Options of Remote.connect. */
export interface ConnectOptions extends Security {
  replicaId?: string;
  timeoutMs?: number;
  /** Give up (IMZ_TIMEOUT) when requests wait this long with nothing received at all (default 60 s, or IMZ_REPLY_TIMEOUT_MS). */
  replyTimeoutMs?: number;
}

/** Parses "HOST:PORT" (IPv6 as "[::1]:PORT"); throws IMZ_USAGE when malformed. */
export function parseAddress(addr: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(addr) ?? /^([^:]+):(\d+)$/.exec(addr);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ImzError(Codes.BAD_USAGE, `cannot parse server address ${JSON.stringify(addr)}: expected HOST:PORT, e.g. 127.0.0.1:7070`);
  }
  return { host: m[1]!, port };
}

/** A connected, greeted server: typed calls over one session. */
export class Remote {
  readonly session: Session;
  readonly info: ServerInfo;
  readonly address: string;

  private constructor(session: Session, info: ServerInfo, address: string) {
    this.session = session;
    this.info = info;
    this.address = address;
  }

  /**
   * Connects (over TLS when asked), says HELLO and, when the server asks
   * for it, proves the token and checks the server's proof. An unreachable
   * server is IMZ_UNREACHABLE; a refused token IMZ_AUTH; a certificate that
   * fails verification or its pin IMZ_TLS.
   */
  static async connect(address: string, opts: ConnectOptions = {}): Promise<Remote> {
    const { host, port } = parseAddress(address);
    const timeoutMs = opts.timeoutMs ?? 10_000;
    // node:tls costs a few ms to load: only when asked for.
    const tlsConnect = opts.tls ? (await import('node:tls')).connect : undefined;
    const socket = await _open(address, host, port, opts, timeoutMs, tlsConnect);
    const session = new Session(socket, { maxFrame: DEFAULT_MAX_FRAME });
    const nonce = newNonce();
    const greet = async (): Promise<ServerInfo> => {
      const reply: Envelope = await session.request(Op.HELLO, {
        hello: { version: PROTOCOL_VERSION, maxFrame: DEFAULT_MAX_FRAME, client: `imz/${VERSION}`, replicaId: opts.replicaId ?? '', nonce },
      });
      const h = reply.helloReply;
      if (!h || !h.serverId) throw new ImzError(Codes.PROTOCOL, `cannot greet server ${address}: it did not answer HELLO like an imz server`);
      // Shown to people and kept in HEAD: a UUID-like identity only.
      if (!/^[0-9A-Za-z-]{1,64}$/.test(h.serverId)) throw new ImzError(Codes.PROTOCOL, `cannot greet server ${address}: its identity is not a valid server id`);
      // Never more than we offered (a larger frame would let the server make us buffer it), never uselessly small.
      const maxFrame = Math.min(h.maxFrame || DEFAULT_MAX_FRAME, DEFAULT_MAX_FRAME);
      if (maxFrame < 64 * 1024) throw new ImzError(Codes.PROTOCOL, `cannot greet server ${address}: it offers frames of only ${h.maxFrame} bytes`);
      let access = h.access ?? Access.READ_WRITE;
      let authenticated = false;
      let originSeq = Number(h.originSeq) || 0;
      // An older server sends no access field: it reads as NONE (0) only when a nonce came too.
      if (access === Access.NONE && (h.nonce?.length ?? 0) === 0) access = Access.READ_WRITE;
      if (access === Access.NONE) {
        if (!opts.token) throw new ImzError(Codes.AUTH, `cannot connect to ${address}: the server requires a token (give --token-file FILE or set IMZ_TOKEN)`);
        if (h.nonce!.length !== NONCE_BYTES) throw new ImzError(Codes.PROTOCOL, `cannot authenticate to ${address}: the server sent a ${h.nonce!.length}-byte nonce`);
        const a = await session.request(Op.AUTH, { auth: { proof: clientProof(opts.token, h.nonce!, nonce, h.serverId) } });
        const expected = serverProof(opts.token, h.nonce!, nonce, h.serverId);
        if (!a.authReply || !sameProof(a.authReply.proof, expected)) {
          throw new ImzError(Codes.AUTH, `cannot trust ${address}: it accepted the token without proving it knows it (an impostor?)`);
        }
        access = a.authReply.access;
        authenticated = true;
        originSeq = Number(a.authReply.originSeq) || 0;
      }
      if (access !== Access.READ_WRITE && access !== Access.READ_ONLY) throw new ImzError(Codes.PROTOCOL, `cannot greet server ${address}: it granted unknown access ${access}`);
      session.maxFrame = maxFrame;
      return {
        serverId: h.serverId, journalFirst: Number(h.journalFirst) || 0, journalLast: Number(h.journalLast) || 0, version: h.version, maxFrame: session.maxFrame,
        access: access === Access.READ_WRITE ? 'read-write' : 'read-only', authenticated,
        tlsFingerprint: opts.tls ? (socket as TLSSocket).getPeerCertificate?.()?.fingerprint256 : undefined,
        upstream: h.upstream ? { address: h.upstream, reachable: h.upstreamReachable === true } : undefined,
        originSeq,
      };
    };
    try {
      const info = await _withTimeout(greet(), timeoutMs, () => new ImzError(Codes.UNREACHABLE, `cannot greet server ${address}: no HELLO reply within ${timeoutMs / 1000} s`));
      const remote = new Remote(session, info, address);
      remote._watchReplies(opts.replyTimeoutMs ?? (Number(process.env.IMZ_REPLY_TIMEOUT_MS) || 60_000));
      return remote;
    } catch (err) {
      session.close();
      if (err instanceof ImzError && err.code === Codes.CLOSED) throw new ImzError(Codes.UNREACHABLE, `cannot greet server ${address}: it closed the connection${opts.tls ? '' : ' (does it expect TLS? give --tls)'}`);
      throw err;
    }
  }

  /** Streams the namespace: batches of entries, with the cursor they reflect. */
  async *list(prefix = ''): AsyncGenerator<{ entries: Entry[]; cursor: number; skipped: { path: string; reason: string }[] }> {
    for await (const env of this.session.stream(Op.LIST, { list: { prefix } })) {
      yield { entries: env.entries?.entries ?? [], cursor: Number(env.entries?.cursor) || 0, skipped: env.entries?.skipped ?? [] };
    }
  }

  /** Streams journal records after since. */
  async *journal(since: number, limit = 0): AsyncGenerator<JournalRecord[]> {
    for await (const env of this.session.stream(Op.JOURNAL, { journal: { since, limit } })) {
      yield env.journalReply?.records ?? [];
    }
  }

  /** Current server state of one path (IMZ_NOT_FOUND when absent). */
  async stat(path: string): Promise<Entry> {
    const env = await this.session.request(Op.STAT, { stat: { path } });
    if (!env.statReply) throw new ImzError(Codes.PROTOCOL, `cannot stat ${path}: the server sent no entry`);
    return env.statReply;
  }

  /** Reads a byte range of a file whose content must hash to hash. */
  async read(path: string, hash: Uint8Array, offset: number, length: number): Promise<Uint8Array> {
    const env = await this.session.request(Op.READ, { read: { path, hash, offset, length } });
    return env.readReply?.data ?? new Uint8Array(0);
  }

  /** Streams a tar of the named files (or of all files). */
  async *snapshot(paths: string[]): AsyncGenerator<Uint8Array> {
    for await (const env of this.session.stream(Op.SNAPSHOT, { snapshot: { paths } })) {
      const b = env.snapshotReply?.tar;
      if (b && b.length > 0) yield b;
    }
  }

  /** Closes the connection. */
  close(): void {
    if (this._replyTimer) clearInterval(this._replyTimer);
    this.session.close();
  }

  private _replyTimer: ReturnType<typeof setInterval> | undefined;

  // A server that stalls (half a frame, or no answer) while we wait for it
  // would otherwise hold a clone or a push forever.
  private _watchReplies(ms: number): void {
    this._replyTimer = setInterval(() => {
      if (this.session.closed) {
        clearInterval(this._replyTimer);
        return;
      }
      if (this.session.pending > 0 && Date.now() - this.session.lastReceived > ms) {
        this.session.close(new ImzError(Codes.TIMEOUT, `cannot finish talking to ${this.address}: nothing received for ${Math.round(ms / 1000)} s (the server or the network stalled; run the command again)`));
      }
    }, Math.min(1000, ms));
    this._replyTimer.unref?.();
  }
}

// Opens the TCP (or TLS) connection; failures are IMZ_UNREACHABLE or IMZ_TLS.
function _open(address: string, host: string, port: number, opts: Security, timeoutMs: number, tlsConnect?: typeof import('node:tls').connect): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const tls = opts.tls;
    const pin = tls?.fingerprint ? _normFingerprint(tls.fingerprint) : undefined;
    const s: Socket = tls && tlsConnect
      ? tlsConnect({
        host, port, ca: tls.ca ? Buffer.from(tls.ca) : undefined, minVersion: 'TLSv1.2',
        // SNI is for names only; an IP address is checked against the certificate's IP entries.
        servername: isIP(host) ? undefined : host,
        // With a pin, the fingerprint is the whole check (a self-signed certificate is fine).
        rejectUnauthorized: !pin,
      })
      : netConnect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new ImzError(Codes.UNREACHABLE, `cannot reach server ${address}: no answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    s.once(tls ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      if (pin) {
        const got = _normFingerprint((s as TLSSocket).getPeerCertificate()?.fingerprint256 ?? '');
        if (got !== pin) {
          s.destroy();
          reject(new ImzError(Codes.TLS, `cannot trust server ${address}: its certificate fingerprint is ${got || 'missing'}, not the pinned ${pin}`));
          return;
        }
      }
      resolve(s);
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ECONNREFUSED') reject(new ImzError(Codes.UNREACHABLE, `cannot reach server ${address}: connection refused (is \`imz serve\` running there?)`));
      else if (tls && (err.code?.startsWith('ERR_SSL') || err.code?.startsWith('ERR_TLS') || /certificate|SSL|TLS/i.test(err.message) || err.code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || err.code === 'SELF_SIGNED_CERT_IN_CHAIN' || err.code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || err.code === 'CERT_HAS_EXPIRED')) {
        const why = /wrong version number|packet length too long|unexpected eof|ECONNRESET/i.test(err.message)
          ? 'the server did not answer TLS (is it serving plain TCP? then drop the TLS options)'
          : `${firstLine(err.message) || err.code} (check --tls-ca or --tls-fingerprint)`;
        reject(new ImzError(Codes.TLS, `cannot set up TLS with ${address}: ${why}`));
      } else reject(new ImzError(Codes.UNREACHABLE, `cannot reach server ${address}: ${err.message}`));
    });
  });
}

// "ab:CD:..." or "abcd..." → "ABCD..." (hex only).
function _normFingerprint(f: string): string {
  return f.replace(/^sha256[:=]/i, '').replace(/[^0-9a-f]/gi, '').toUpperCase();
}

function _withTimeout<T>(p: Promise<T>, ms: number, err: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, rej) => { timer = setTimeout(() => rej(err()), ms); }),
  ]);
}
