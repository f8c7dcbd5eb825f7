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
      out.event({ event: 'conflict', path: e.conflict.path, class: e.conflict.class });
      out.warn(`conflict (${e.conflict.class}) on ${e.conflict.path}: your version is left as it is; the server's is kept in .imz/${e.conflict.serverBlob ?? 'conflicts/'}`);
    } else if (e.type === 'skipped') {
      out.event({ event: 'skipped', path: e.path, reason: e.reason });
      out.warn(`not replicated: ${e.path} (${e.reason}, on the server)`);
    } else if (e.type === 'resync') {
      if (e.reason !== 'clone') out.warn(`resynchronising by hash (${e.reason})`);
    }
  };
}
