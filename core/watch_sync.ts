import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { EntryType } from '../protocol/messages.ts';
import type { SecurityOptions } from './credentials.ts';
import { DirWatcher } from './dir_watcher.ts';
import { type FollowEvent, follow } from './follow.ts';
import { type PushSummary, push } from './push.ts';
import { Replica } from './replica.ts';
import { checkPolicy } from './policy.ts';
import { walkTree } from './tree_scan.ts';

/** Options of sync --watch. */
export interface WatchSyncOptions {
  policy?: string;
  /** Token and TLS settings from the command line (over those saved at clone). */
  security?: SecurityOptions;
  allowMassDelete?: boolean;
  signal?: AbortSignal;
  onEvent?: (e: WatchSyncEvent) => void;
  /** Paths written by imz itself (path → when), not to be pushed back: shared with a mirror's fetches. */
  applied?: Map<string, number>;
  /** Quiet time gathering local writes before a push (default 300 ms). */
  debounceMs?: number;
  /** Period of the verification push (a full scan) that catches what watches miss (default 60 s). */
  verifyMs?: number;
  heartbeatMs?: number;
}

/** What sync --watch reports. */
export type WatchSyncEvent =
  | FollowEvent
  | { type: 'pushed'; summary: PushSummary }
  | { type: 'push-offline'; message: string }
  | { type: 'push-error'; code: string; message: string }
  | { type: 'watch-degraded'; message: string };

/** How long a path the follower just wrote is not taken for a local edit. */
const ECHO_MS = 2000;

/**
 * `imz sync --watch`: both directions, continuously. The server's journal is
 * followed (pull --follow); local writes are seen by per-directory watches,
 * debounced, and pushed (the log keeps them while the server is away and
 * drains when it returns). A periodic verification push (a full scan)
 * catches whatever the watches missed. Paths the follower itself just wrote
 * are not pushed back (no echo); the scan would find them clean anyway.
 */
export async function watchSync(dir: string, opts: WatchSyncOptions = {}): Promise<{ cursor: number }> {
  // A policy that does not exist is bad usage, said at once (each push round warned of it, on and on).
  if (opts.policy !== undefined) checkPolicy(opts.policy);
  const root = (await Replica.open(dir)).root;
  const stopped = () => opts.signal?.aborted === true;
  const applied = opts.applied ?? new Map<string, number>();
  const dw = new DirWatcher(root, { debounceMs: opts.debounceMs ?? 300 });
  dw.on('error', (e: Error) => opts.onEvent?.({ type: 'watch-degraded', message: e.message }));

  let pushing: Promise<void> | undefined;
  let again = false;
  const pushRound = (): void => {
    if (stopped()) return;
    if (pushing) {
      again = true;
      return;
    }
    pushing = (async () => {
      do {
        again = false;
        try {
          const summary = await push(dir, { policy: opts.policy, allowMassDelete: opts.allowMassDelete, security: opts.security });
          if (summary.logged > 0 || summary.applied > 0) opts.onEvent?.({ type: 'pushed', summary });
        } catch (err) {
          const e = err instanceof ImzError ? err : new ImzError(Codes.INTERNAL, (err as Error).message);
          if (e.code === Codes.UNREACHABLE) opts.onEvent?.({ type: 'push-offline', message: e.message });
          else if (e.code === Codes.LOCKED) {
            // The follower is applying a batch: try again in a moment.
            await new Promise((r) => setTimeout(r, 200));
            again = true;
          } else opts.onEvent?.({ type: 'push-error', code: e.code, message: e.message });
        }
      } while (again && !stopped());
    })().finally(() => { pushing = undefined; });
  };

  const watchTree = async (sub: string) => {
    dw.watch(sub);
    for await (const e of walkTree(root, sub)) if (e.type === EntryType.DIR) dw.watch(e.path);
  };
  dw.on('dirty', (paths: string[]) => {
    const now = Date.now();
    const local = paths.filter((p) => {
      const t = applied.get(p);
      return t === undefined || now - t > ECHO_MS;
    });
    for (const [p, t] of applied) if (now - t > ECHO_MS) applied.delete(p);
    if (local.length === 0) return;
    // New directories need watches of their own.
    void Promise.all(local.map(async (p) => {
      const st = await lstat(join(root, p)).catch(() => undefined);
      if (st?.isDirectory() && !dw.has(p)) await watchTree(p);
    })).then(pushRound);
  });
  await watchTree('');

  const verify = setInterval(pushRound, opts.verifyMs ?? (Number(process.env.IMZ_VERIFY_MS) || 60_000));
  pushRound(); // what changed while nothing was watching
  try {
    return await follow(dir, {
      security: opts.security,
      signal: opts.signal,
      heartbeatMs: opts.heartbeatMs,
      policy: opts.policy,
      onEvent: (e) => {
        if (e.type === 'change') applied.set(e.path, Date.now());
        if (e.type === 'following') pushRound(); // reconnected: drain what was logged meanwhile
        opts.onEvent?.(e);
      },
    });
  } finally {
    clearInterval(verify);
    dw.close();
    await pushing;
  }
}
