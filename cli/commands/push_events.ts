import type { PushEvent } from '../../core/push.ts';
import { type Output, formatBytes } from '../output.ts';

/** Turns push events into lines, JSON events, warnings and progress. */
export function pushEventPrinter(out: Output, verbose: boolean): (e: PushEvent) => void {
  return (e) => {
    if (e.type === 'upload') void out.progress(`uploading ${formatBytes(e.bytes)} of ${formatBytes(e.total)}`);
    else if (e.type === 'op') {
      out.event({ event: 'op', path: e.path, kind: e.kind, status: e.status, ...(e.message ? { message: e.message } : {}) });
      if (e.status === 'rejected') out.warn(`${e.kind} ${e.path} was refused: ${e.message ?? 'no reason given'}`);
      else if (verbose) out.line(`${e.status.padEnd(9)} ${e.kind.padEnd(7)} ${e.path}`);
    } else if (e.type === 'conflict') {
      const c = e.conflict;
      out.event({ event: 'conflict', path: c.path, class: c.class, localCopy: c.localCopy, serverBlob: c.serverBlob, ...(c.resolvedBy ? { resolvedBy: c.resolvedBy } : {}) });
      out.warn(c.localCopy
        ? `conflict (${c.class}) on ${c.path}: the server's version won; yours is kept as ${c.localCopy}`
        : c.resolvedBy
          ? `conflict (${c.class}) on ${c.path}: the server's version won (${c.resolvedBy}); your ${c.local ? 'change' : 'removal'} is not applied`
          : `conflict (${c.class}) on ${c.path}: left as you wrote it; the server's version is kept in .imz/${c.serverBlob ?? 'conflicts/'} (see imz resolve)`);
    } else if (e.type === 'displaced') {
      out.event({ event: 'displaced', path: e.path, keptAs: e.displaced });
      out.warn(`${e.path}: the other version is kept as ${e.displaced}`);
    }
  };
}
