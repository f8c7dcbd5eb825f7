import type { FollowEvent } from '../../core/follow.ts';
import type { PullEvent } from '../../core/pull.ts';
import { type Output, formatBytes } from '../output.ts';

/** Turns pull/clone events into spinner text, per-change JSON lines and conflict warnings. */
export function pullEventPrinter(out: Output, verbose: boolean): (e: PullEvent) => void {
  const started = Date.now();
  return (e) => {
    if (e.type === 'progress') {
      const secs = Math.max(0.001, (Date.now() - started) / 1000);
      void out.progress(`${e.files}/${e.totalFiles} files, ${formatBytes(e.bytes)} of ${formatBytes(e.totalBytes)}, ${formatBytes(e.bytes / secs)}/s`);
    } else if (e.type === 'change') {
      out.event({ event: 'change', path: e.path, action: e.action });
      if (verbose) out.line(`${e.action.padEnd(7)} ${e.path}`);
    } else if (e.type === 'conflict') {
      const c = e.conflict;
      out.event({ event: 'conflict', path: c.path, class: c.class, ...(c.resolvedBy ? { resolvedBy: c.resolvedBy } : {}), ...(c.localCopy ? { localCopy: c.localCopy } : {}) });
      const removedHere = c.class === 'dir-removed' && c.at === 'pull' && c.local === null;
      out.warn(removedHere
        ? c.resolvedBy && c.resolvedBy !== 'client-wins'
          ? `conflict (${c.class}) on ${c.path}: you removed it, the server added entries inside; theirs are in place (${c.resolvedBy}), the rest of your removal is still pushed`
          : `conflict (${c.class}) on ${c.path}: you removed it, the server added entries inside; it stays removed here${c.resolvedBy ? ` (${c.resolvedBy}: the next push removes it there)` : ', theirs stay on the server'}`
        : c.localCopy
        ? `conflict (${c.class}) on ${c.path}: the server's version is in place (${c.resolvedBy}); yours is kept as ${c.localCopy}`
        : c.resolvedBy && c.local === null && c.resolvedBy !== 'client-wins'
          ? `conflict (${c.class}) on ${c.path}: the server's version is in place (${c.resolvedBy}); your removal is not applied`
        : c.resolvedBy
          ? `conflict (${c.class}) on ${c.path}: your version stays (${c.resolvedBy}); the next push sends it`
          : c.serverBlob
            ? `conflict (${c.class}) on ${c.path}: your version is left as it is; the server's is kept in .imz/${c.serverBlob}`
            : c.server === null
              ? `conflict (${c.class}) on ${c.path}: your version is left as it is; the server removed it (imz resolve ${c.path} --take server removes it here, yours kept)`
              : `conflict (${c.class}) on ${c.path}: your version is left as it is; the server's stays on the server (imz resolve ${c.path} --take server fetches it)`);
    } else if (e.type === 'skipped') {
      out.event({ event: 'skipped', path: e.path, reason: e.reason });
      out.warn(`not replicated: ${e.path} (${e.reason}, on the server)`);
    } else if (e.type === 'resync') {
      if (e.reason !== 'clone') out.warn(`resynchronising by hash (${e.reason})`);
    }
  };
}

/** Prints follow events (live pull): connection state lines, then each change as pullEventPrinter does. */
export function followEventPrinter(out: Output): (e: FollowEvent) => void {
  const changes = pullEventPrinter(out, true);
  return (e) => {
    if (e.type === 'following') {
      out.event({ event: 'following', address: e.address, cursor: e.cursor, stale: e.stale });
      out.line(`following ${e.address} from journal record ${e.cursor}`);
      if (e.stale > 0) out.warn(staleWarning(e.stale));
    } else if (e.type === 'applied') {
      out.event({ event: 'applied', records: e.records, cursor: e.cursor, stale: e.stale });
      if (e.stale > 0) out.warn(staleWarning(e.stale));
    }
    else if (e.type === 'disconnected') {
      out.event({ event: 'disconnected', message: e.message, retryInMs: e.retryInMs });
      out.warn(`${e.message}; retrying in ${(e.retryInMs / 1000).toFixed(1)} s`);
    } else if (e.type === 'retried') {
      // (Asked for again now and then: said when something came, not at every try.)
      out.event({ event: 'retried', fetched: e.fetched, stale: e.stale });
      if (e.fetched > 0) out.line(`fetched ${e.fetched} ${e.fetched === 1 ? 'file' : 'files'} that had kept changing on the server`);
    } else changes(e);
  };
}

/** The warning for files a pull could not fetch because they kept changing on the server (owed to the next pull). */
export function staleWarning(n: number): string {
  return `${n} ${n === 1 ? 'file' : 'files'} kept changing on the server and ${n === 1 ? 'is' : 'are'} not here yet; the next \`imz pull\` fetches ${n === 1 ? 'it' : 'them'}`;
}

/** Stops on SIGINT or SIGTERM: the signal aborts, and the command saves its state and returns. */
export function stopOnSignals(): AbortSignal {
  const stop = new AbortController();
  process.once('SIGINT', () => stop.abort());
  process.once('SIGTERM', () => stop.abort());
  return stop.signal;
}
