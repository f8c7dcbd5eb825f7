import { connect as netConnect, type Socket } from 'node:net';
import { Codes, ImzError } from '../protocol/errors.ts';
import { DEFAULT_MAX_FRAME } from '../protocol/frame_codec.ts';
import { type Entry, type Envelope, type JournalRecord, Op, PROTOCOL_VERSION } from '../protocol/messages.ts';
import { Session } from '../protocol/session.ts';
import { VERSION } from './version.ts';

/** What HELLO told us about the server. */
export interface ServerInfo {
  serverId: string;
  journalFirst: number;
  journalLast: number;
  version: number;
  maxFrame: number;
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

  /** Connects and says HELLO; an unreachable server is IMZ_UNREACHABLE. */
  static async connect(address: string, opts: { replicaId?: string; timeoutMs?: number } = {}): Promise<Remote> {
    const { host, port } = parseAddress(address);
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = netConnect({ host, port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new ImzError(Codes.UNREACHABLE, `cannot reach server ${address}: no answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      s.once('connect', () => { clearTimeout(timer); resolve(s); });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new ImzError(Codes.UNREACHABLE, `cannot reach server ${address}: ${err.code === 'ECONNREFUSED' ? 'connection refused (is `imz serve` running there?)' : err.message}`));
      });
    });
    const session = new Session(socket, { maxFrame: DEFAULT_MAX_FRAME });
    let reply: Envelope;
    try {
      reply = await _withTimeout(session.request(Op.HELLO, {
        hello: { version: PROTOCOL_VERSION, maxFrame: DEFAULT_MAX_FRAME, client: `imz/${VERSION}`, replicaId: opts.replicaId ?? '' },
      }), timeoutMs, () => new ImzError(Codes.UNREACHABLE, `cannot greet server ${address}: no HELLO reply within ${timeoutMs / 1000} s`));
    } catch (err) {
      session.close();
      if (err instanceof ImzError && err.code === Codes.CLOSED) throw new ImzError(Codes.UNREACHABLE, `cannot greet server ${address}: it closed the connection`);
      throw err;
    }
    const h = reply.helloReply;
    if (!h || !h.serverId) {
      session.close();
      throw new ImzError(Codes.PROTOCOL, `cannot greet server ${address}: it did not answer HELLO like an imz server`);
    }
    session.maxFrame = h.maxFrame || DEFAULT_MAX_FRAME;
    return new Remote(session, {
      serverId: h.serverId, journalFirst: Number(h.journalFirst) || 0, journalLast: Number(h.journalLast) || 0, version: h.version, maxFrame: session.maxFrame,
    }, address);
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
    this.session.close();
  }
}

function _withTimeout<T>(p: Promise<T>, ms: number, err: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, rej) => { timer = setTimeout(() => rej(err()), ms); }),
  ]);
}
