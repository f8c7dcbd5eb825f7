import type { Argv, CommandModule } from 'yargs';
import type { LocalChange } from '../../core/changes.ts';
import { Exit } from '../exit_codes.ts';
import { type GlobalArgs, damagedConflictWarning } from '../output.ts';
import { enterReplica, run, securityOf } from '../run.ts';

interface StatusArgs extends GlobalArgs {
  short: boolean;
  offline: boolean;
}

const TYPE_NAMES = ['none', 'file', 'dir', 'symlink'] as const;

/** Two-letter codes of the human output (documented in the epilogue). */
const CODES: Record<LocalChange['kind'], string> = {
  create: 'A ', mkdir: 'A ', symlink: 'A ', modify: 'M ', meta: 'm ', retype: 'T ', delete: 'D ', rmdir: 'D ', rename: 'R ',
};

const EPILOGUE = `Output, one line per change (like \`git status --short\`):
  A  path          new file          A  dir/   new directory       A  link@  new symlink
  M  path          content changed   M  link@  symlink retargeted
  m  path          mode or mtime only changed
  T  path          type changed (dir/ or link@ shows the new type)
  D  path          file deleted      D  dir/   directory removed   D  link@  symlink removed
  R  old -> new    renamed (the same content found under a new name)
  C  path (class)  conflict left for \`imz resolve\`
then a summary: local changes, conflicts, and how many journal records the replica is behind its
server ("offline" when the server cannot be reached within 2 s, or with --offline).
--json prints {"event":"change",...} per change, {"event":"conflict",...} per conflict,
{"event":"skipped",...} per path that cannot be replicated, then one {"event":"status",...}.
Exit status: 0 (also when offline); 3 when conflicts remain; 1 on errors.`;

/** `imz status`: local changes, conflicts, how far behind the server. */
export const statusCommand: CommandModule<GlobalArgs, StatusArgs> = {
  command: 'status',
  describe: 'show local changes, conflicts, and how far the replica is behind its server',
  builder: (y: Argv<GlobalArgs>) => y
    .option('short', { alias: 's', type: 'boolean', default: false, describe: 'change and conflict lines only, no summary' })
    .option('offline', { type: 'boolean', default: false, describe: 'do not contact the server' })
    .example('imz status', 'what `imz push` would send, and how much `imz pull` would replay')
    .example('imz status --json --offline', 'machine-readable, without touching the network')
    .epilogue(EPILOGUE) as unknown as Argv<StatusArgs>,
  handler: (args) => run(args, async (out) => {
    const { status } = await import('../../core/status.ts');
    const r0 = await status(await enterReplica(args), {
      security: securityOf(args),
      offline: args.offline,
      onProgress: (n) => void out.progress(`scanning: ${n} entries`),
    });
    // Conflicts a policy already settled stay listed (--json) but are not waiting for anyone.
    const r = { ...r0, conflicts: r0.conflicts.filter((c) => !c.resolvedBy), settled: r0.conflicts.filter((c) => c.resolvedBy) };
    for (const c of r.settled) out.event({ event: 'conflict', path: c.path, class: c.class, at: c.at, resolvedBy: c.resolvedBy, localCopy: c.localCopy, ...(c.takingWhole ? { takingWhole: true } : {}) });
    const taking = r.settled.filter((c) => c.takingWhole).map((c) => c.path);
    if (taking.length > 0) out.warn(`an interrupted pull is still bringing ${taking.slice(0, 5).join(', ')}${taking.length > 5 ? ', ...' : ''} whole from the server: run \`imz pull\` (what it placed there may show as new here until then)`);
    out.stopProgress();
    for (const c of r.changes) {
      const type = c.fs?.type ?? c.index?.type ?? 0;
      out.event({
        event: 'change', kind: c.kind, path: c.path, ...(c.fromPath !== undefined ? { from: c.fromPath, fromBase: c.fromBase } : {}),
        type: TYPE_NAMES[type] ?? 'unknown', ...(c.index && c.kind === 'retype' ? { was: TYPE_NAMES[c.index.type] ?? 'unknown' } : {}),
        base: c.base, ...(c.fs && type === 1 ? { size: c.fs.size } : {}), ...(c.hash ? { hash: c.hash } : {}),
      });
      out.line(`${CODES[c.kind]} ${_shown(c)}`);
    }
    for (const c of r.conflicts) {
      out.event({ event: 'conflict', path: c.path, class: c.class, at: c.at, localVersion: c.local?.version, serverVersion: c.server?.version, detected: c.detected, ...(c.resolvedBy ? { resolvedBy: c.resolvedBy } : {}) });
      if (!c.resolvedBy) out.line(`C  ${c.path} (${c.class})`);
    }
    for (const s of r.skipped) {
      out.event({ event: 'skipped', path: s.path, reason: s.reason });
    }
    if (!out.json && r.skipped.length > 0) {
      const shown = r.skipped.slice(0, 10).map((s) => `${s.path} (${s.reason})`).join(', ');
      out.warn(`${r.skipped.length} paths cannot be replicated and are left out: ${shown}${r.skipped.length > 10 ? ', ...' : ''}`);
    }
    const srv = r.server;
    out.event({
      event: 'status', root: r.root, cloning: r.cloning, owed: r.owed.length, changes: r.changes.length, conflicts: r.conflicts.length, skipped: r.skipped.length, cursor: r.cursor,
      tracked: r.tracked, deleted: r.deleted, server: srv.address, reachable: srv.reachable, ...(srv.behind !== undefined ? { behind: srv.behind } : {}),
      ...(srv.serverId ? { serverId: srv.serverId } : {}), ...(srv.error ? { error: srv.error } : {}), offline: !srv.reachable,
      ...(srv.access ? { access: srv.access } : {}), ...(srv.upstream ? { upstream: srv.upstream.address, upstreamReachable: srv.upstream.reachable } : {}),
    });
    if (!args.short) {
      let where: string;
      // Offline means it could not be reached; a server that answered and refused us says why.
      const away = !srv.code || ['IMZ_UNREACHABLE', 'IMZ_CLOSED', 'IMZ_TIMEOUT', 'IMZ_BUSY'].includes(srv.code);
      if (!srv.reachable && away) where = `server ${srv.address} offline`;
      else if (!srv.reachable) where = `server ${srv.address} not asked: ${srv.error}`;
      else if (srv.behind !== undefined) where = `${_n(srv.behind, 'record')} behind server ${srv.address}${srv.access === 'read-only' ? ' (read-only)' : ''}`;
      else where = `server ${srv.address}: ${srv.error ?? 'unknown state'}`;
      out.line(`${_n(r.changes.length, 'local change')}, ${_n(r.conflicts.length, 'conflict')}, ${where}`);
    }
    if (srv.upstream) out.line(`  (a mirror of ${srv.upstream.address}${srv.upstream.reachable ? '' : ', which it cannot reach now: it serves what it has'})`);
    if (srv.reachable && srv.error) out.warn(srv.error);
    for (const d of r.damagedConflicts) out.warn(damagedConflictWarning(d));
    if (r.owed.length > 0) out.warn(`${_n(r.owed.length, 'file')} could not be fetched yet (they kept changing on the server): run \`imz pull\` to fetch ${r.owed.length === 1 ? 'it' : 'them'} (${r.owed.slice(0, 5).join(', ')}${r.owed.length > 5 ? ', ...' : ''})`);
    if (r.cloning) out.warn(`the clone of ${srv.address} into ${r.root} has not finished: run the same \`imz clone\` again to resume it`);
    return r.conflicts.length > 0 ? Exit.CONFLICTS : Exit.OK;
  }),
};

function _n(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

/** A path with a type suffix (dir/, link@), as ls -F does; renames as old -> new. */
function _shown(c: LocalChange): string {
  const type = c.fs?.type ?? c.index?.type ?? 0;
  const name = c.path + (type === 2 ? '/' : type === 3 ? '@' : '');
  return c.kind === 'rename' ? `${c.fromPath} -> ${name}` : name;
}
