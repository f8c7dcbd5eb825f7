import { lstatSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { Change, type Entry, EntryType } from '../protocol/messages.ts';
import { clone } from './clone.ts';
import { type SecurityOptions, connectReplica } from './credentials.ts';
import { type FollowEvent, follow } from './follow.ts';
import { fromHex } from './hash.ts';
import { REPLICA_DIR } from './paths.ts';
import { reconcile } from './reconcile.ts';
import type { Remote } from './remote.ts';
import { Replica, withReplicaLock } from './replica.ts';
import { type RunningServer, type ServeHooks, serve } from './serve.ts';
import type { ServeOptions } from './server.ts';
import type { PendingChange } from './server_state.ts';
import { type WatchSyncEvent, watchSync } from './watch_sync.ts';

/** Options of a mirror: a server whose tree is a replica of another server. */
export interface MirrorOptions {
  /** The server mirrored, HOST:PORT. */
  upstream: string;
  /** Fetch a file's content from the upstream only when a client reads it. */
  onDemand?: boolean;
  /** Refuse writes from the mirror's clients (otherwise they are applied here and pushed upstream). */
  readOnly?: boolean;
  /** Token and TLS settings for the upstream. */
  upstreamSecurity?: SecurityOptions;
  /** What the link to the upstream does (following, disconnected, pushed...). */
  onUpstream?: (e: FollowEvent | WatchSyncEvent) => void;
}

/** A running mirror. */
export interface RunningMirror extends RunningServer {
  /** True while the upstream is being followed. */
  upstreamReachable(): boolean;
}

/**
 * Starts a mirror: DIR becomes (or already is) a replica of the upstream,
 * served to the mirror's own clients and kept current by following the
 * upstream's journal, each change re-journalled here. Mirrors cascade. An
 * on-demand mirror lists every file but fetches content only when a client
 * reads it (once, however many ask), then keeps it fresh. Writes of the
 * mirror's clients are applied here and pushed upstream, or refused when
 * read-only. While the upstream is away the mirror serves what it has and
 * says so in HELLO.
 */
export async function startMirror(opts: ServeOptions, m: MirrorOptions, hooks: ServeHooks = {}): Promise<RunningMirror> {
  const dir = resolve(opts.dir);
  if (!_isReplica(dir)) {
    if (_nonEmpty(dir)) throw new ImzError(Codes.NOT_EMPTY, `cannot mirror ${m.upstream} into ${dir}: it is not empty and not a mirror of it (choose a new or empty directory)`);
    await clone(m.upstream, dir, { onDemand: m.onDemand, security: m.upstreamSecurity });
  }
  const first = await Replica.open(dir);
  if (first.config.remote !== m.upstream) {
    throw new ImzError(Codes.BAD_USAGE, `cannot mirror ${m.upstream} into ${dir}: it mirrors ${first.config.remote} (use that --upstream, or a new directory)`);
  }
  const onDemand = first.config.mode === 'on-demand';
  // Files listed here whose content is still upstream.
  const remote = new Set<string>();
  for (const [p, e] of await first.all()) if (e.remote) remote.add(p);

  let reachable = false;
  let server: RunningServer | undefined;
  let upstream: Remote | undefined;
  const inflight = new Map<string, Promise<void>>();
  // Files this mirror fetched for its clients: not local writes to push upstream.
  const fetched = new Map<string, number>();
  const stop = new AbortController();

  // The mirror's own journal learns of listed-only files from the follower, not from its disk.
  const commitVirtual = async (changes: PendingChange[]) => {
    const srv = server!.server;
    await srv.scanner.exclusive(() => srv.state.commit(changes));
  };

  const fetchBatch = async (paths: string[]) => {
    await withReplicaLock(dir, stop.signal, async (replica) => {
      const targets: Entry[] = [];
      for (const p of paths) {
        const e = await replica.get(p);
        if (e?.remote) targets.push({ path: p, type: EntryType.FILE, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, hash: fromHex(e.hash), target: '', version: e.version });
      }
      if (targets.length === 0) return;
      for (const t of targets) fetched.set(t.path, Date.now());
      if (!upstream || upstream.session.closed) {
        upstream = await connectReplica(replica, m.upstreamSecurity, { timeoutMs: 5000 }).catch((err) => {
          throw new ImzError(Codes.UNREACHABLE, `cannot serve ${paths[0]}${paths.length > 1 ? ` and ${paths.length - 1} more` : ''}: this mirror does not have it yet and its upstream ${m.upstream} is unreachable (${(err as Error).message})`);
        });
      }
      await reconcile(replica, upstream, targets, undefined, replica.config.policy ?? 'manual', { fetch: new Set(targets.map((t) => t.path)) });
    }, 20);
    for (const p of paths) remote.delete(p);
  };

  // One fetch per file however many clients ask at once.
  const materialize = async (paths: string[]): Promise<void> => {
    const waits: Promise<void>[] = [];
    const fresh: string[] = [];
    for (const p of paths) {
      const running = inflight.get(p);
      if (running) waits.push(running);
      else if (remote.has(p)) fresh.push(p);
    }
    if (fresh.length > 0) {
      const batch = fetchBatch(fresh);
      for (const p of fresh) inflight.set(p, batch);
      batch.catch(() => {}).finally(() => { for (const p of fresh) if (inflight.get(p) === batch) inflight.delete(p); });
      waits.push(batch);
    }
    await Promise.all(waits);
  };

  server = await serve({
    ...opts,
    readOnly: m.readOnly,
    upstream: { address: m.upstream, reachable: () => reachable },
    ...(onDemand ? { virtual: (p: string) => remote.has(p) && !lstatSync(join(dir, p), { throwIfNoEntry: false }), materialize } : {}),
  }, hooks);

  if (onDemand) {
    // Listed-only files the journal does not know yet (a first start, or changes while stopped).
    const table = server.server.state.table;
    const missing: PendingChange[] = [];
    for (const [p, e] of await first.all()) {
      if (!e.remote) continue;
      const t = table.get(p);
      const hash = Buffer.from(fromHex(e.hash)).toString('latin1');
      if (t && t.type === EntryType.FILE && t.hash === hash && t.size === e.size) continue;
      missing.push({ change: t ? Change.MODIFY : Change.CREATE, path: p, state: { type: EntryType.FILE, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, hash, target: '', ino: 0 } });
    }
    if (missing.length > 0) await commitVirtual(missing);
  }

  const onEvent = (e: FollowEvent | WatchSyncEvent) => {
    if (e.type === 'following') reachable = true;
    else if (e.type === 'disconnected') reachable = false;
    else if (e.type === 'change' && e.wasRemote && onDemand) {
      const t = e.entry!;
      const known = server!.server.state.table.get(t.path);
      if (e.action === 'remote') {
        remote.add(t.path);
        void commitVirtual([{
          change: known ? Change.MODIFY : Change.CREATE, path: t.path,
          state: { type: EntryType.FILE, size: t.size, mode: t.mode, mtimeMs: t.mtimeMs, hash: Buffer.from(t.hash).toString('latin1'), target: '', ino: 0 },
        }]).catch((err) => hooks.onWarning?.(err as Error));
      } else if (e.action === 'remove' && remote.delete(t.path) && known) {
        void commitVirtual([{ change: Change.REMOVE, path: t.path, state: undefined }]).catch((err) => hooks.onWarning?.(err as Error));
      }
    }
    m.onUpstream?.(e);
  };
  const link = m.readOnly
    ? follow(dir, { signal: stop.signal, security: m.upstreamSecurity, onEvent })
    : watchSync(dir, { signal: stop.signal, security: m.upstreamSecurity, onEvent, applied: fetched });
  link.catch((err) => hooks.onWarning?.(err as Error));

  return {
    ...server,
    upstreamReachable: () => reachable,
    close: async () => {
      stop.abort();
      await link.catch(() => {});
      upstream?.close();
      await server!.close();
    },
  };
}

function _isReplica(dir: string): boolean {
  return lstatSync(join(dir, REPLICA_DIR), { throwIfNoEntry: false })?.isDirectory() === true;
}

function _nonEmpty(dir: string): boolean {
  try {
    // The server's own state from an earlier start does not count.
    return readdirSync(dir).some((n) => n !== '.imz-server');
  } catch {
    return false;
  }
}
