import type { Argv, CommandModule } from 'yargs';
import type { ConflictDetails, Resolution, Take } from '../../core/resolve.ts';
import { Exit, exitFor } from '../exit_codes.ts';
import { type GlobalArgs, type Output, damagedConflictWarning, formatBytes } from '../output.ts';
import { run, securityOf, workDir } from '../run.ts';

interface ResolveArgs extends GlobalArgs {
  path?: string;
  list: boolean;
  take?: Take;
  all: boolean;
}

/** `imz resolve`: list, inspect and settle conflicts. */
export const resolveCommand: CommandModule<GlobalArgs, ResolveArgs> = {
  command: 'resolve [path]',
  describe: 'list, inspect and settle conflicts',
  builder: (y: Argv<GlobalArgs>) => y
    .positional('path', { type: 'string', describe: 'the conflicting path: alone, shows both versions and their difference' })
    .option('list', { type: 'boolean', default: false, describe: 'list the conflicts (what `imz resolve` does without arguments)' })
    .option('take', { type: 'string', describe: 'local | server | both: settle PATH (or --all): keep your version, take the server\'s, or keep both (yours under a .imz-keep- name that push sends)' })
    .option('all', { type: 'boolean', default: false, describe: 'with --take: settle every conflict (for cron and CI)' })
    .example('imz resolve', 'list the conflicts')
    .example('imz resolve docs/a.txt', 'show both versions of docs/a.txt and their difference')
    .example('imz resolve docs/a.txt --take local && imz push', 'keep your version and send it')
    .example('imz resolve --all --take server', 'take the server\'s version everywhere (yours stay in .imz/conflicts/blobs)') as unknown as Argv<ResolveArgs>,
  handler: (args) => run(args, async (out) => {
    const { ImzError } = await import('../../protocol/errors.ts');
    const usage = (why: string) => new ImzError('IMZ_USAGE', `cannot resolve: ${why} (see imz resolve --help)`);
    if (args.take !== undefined && !(['local', 'server', 'both'] as unknown[]).includes(args.take)) throw usage(`--take must be local, server or both, not ${JSON.stringify(args.take)}`);
    if (args.take && !args.path && !args.all) throw usage('--take needs a PATH or --all');
    if (args.all && !args.take) throw usage('--all needs --take local, server or both');
    if (args.all && args.path) throw usage('give either a PATH or --all, not both');
    if (args.list && (args.path || args.take)) throw usage('--list takes no PATH and no --take');
    const core = await import('../../core/resolve.ts');
    const dir = workDir(args);

    if (args.take) {
      const r = await core.resolveConflict(dir, { path: args.path, all: args.all, take: args.take, security: securityOf(args) });
      for (const res of r.resolved) {
        out.event({ event: 'resolved', path: res.path, class: res.class, take: res.take, serverVersion: res.serverVersion, fetched: res.fetched, next: res.next, kept: res.kept });
        out.line(_resolutionLine(res));
      }
      for (const f of r.failed) {
        out.event({ event: 'unresolved', path: f.path, code: f.code, message: f.message });
        out.warn(`${f.path} is not resolved: ${f.message}`);
      }
      out.event({ event: 'resolve-done', resolved: r.resolved.length, failed: r.failed.length, remaining: r.remaining });
      if (r.remaining > 0) out.line(`${r.remaining} conflicts remain (imz resolve --list)`);
      if (r.failed.length > 0) return exitFor(r.failed[0]!.code);
      return r.remaining > 0 ? Exit.CONFLICTS : Exit.OK;
    }

    if (args.path) {
      const c = await core.conflictDetails(dir, args.path);
      const diff = await core.conflictDiff(dir, args.path);
      out.event({ event: 'conflict', ..._jsonOf(c), diff });
      _printDetails(out, c, core.typeName);
      out.line('');
      out.line(diff.endsWith('\n') ? diff.slice(0, -1) : diff);
      out.line('');
      out.line(`settle it with: imz resolve ${c.path} --take local|server|both`);
      return Exit.CONFLICTS;
    }

    const damaged: string[] = [];
    const list = await core.listConflictsDetailed(dir, damaged);
    for (const d of damaged) out.warn(damagedConflictWarning(d));
    for (const c of list) out.event({ event: 'conflict', ..._jsonOf(c) });
    if (list.length === 0) {
      out.line('no conflicts');
      return Exit.OK;
    }
    const rows = [['PATH', 'CLASS', 'AT', 'LOCAL', 'SERVER', 'LOCAL COPY']];
    for (const c of list) {
      rows.push([c.path, c.class, c.at, _side(c.local, c.local?.version ?? c.base, core.typeName, 'base v'), _side(c.server, c.server?.version, core.typeName, 'v'), _copies(c)]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) out.line(r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd());
    out.line('');
    const open = list.filter((c) => !(c as { resolvedBy?: string }).resolvedBy).length;
    out.line(`${list.length} conflict${list.length === 1 ? '' : 's'} (${list.length - open} already settled by a policy): \`imz resolve PATH\` shows one, \`imz resolve PATH --take local|server|both\` settles it`);
    return open > 0 ? Exit.CONFLICTS : Exit.OK;
  }),
};

type _Side = ConflictDetails['local'];

// The LOCAL COPY cell: this conflict's copy, then those earlier conflicts on the path kept.
function _copies(c: ConflictDetails): string {
  const cells = [...(c.localCopy ? [`${c.localCopy}${c.localCopyPresent ? '' : ' (gone)'}`] : []), ...(c.earlierCopies ?? []).map((p) => `${p} (earlier)`)];
  return cells.length > 0 ? cells.join(', ') : '-';
}

function _jsonOf(c: ConflictDetails): Record<string, unknown> {
  return {
    path: c.path, class: c.class, at: c.at, detected: c.detected, base: c.base, local: c.local, server: c.server,
    serverBlob: c.serverBlob, serverContentKept: c.serverContentKept, localCopy: c.localCopy, localCopyPresent: c.localCopy ? c.localCopyPresent : undefined,
    earlierCopies: c.earlierCopies, resolvedBy: c.resolvedBy, serverDisplaced: c.serverDisplaced,
  };
}

function _time(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '';
  return new Date(ms).toISOString().slice(0, 19).replace('T', ' ') + 'Z';
}

// One side in a table cell: "v7 1.2 KiB 2024-05-01 12:00:03Z", "removed", "directory v3", "symlink v3 -> x".
function _side(s: _Side, version: number | undefined, typeName: (t: number) => string, label: string): string {
  if (!s) return 'removed';
  const parts: string[] = [];
  if (s.type !== 1) parts.push(typeName(s.type));
  if (version !== undefined) parts.push(`${label}${version}`);
  if (s.type === 1 && s.size !== undefined) parts.push(formatBytes(s.size));
  if (s.type === 1 && s.mtimeMs !== undefined) parts.push(_time(s.mtimeMs));
  if (s.target) parts.push(`-> ${s.target}`);
  return parts.join(' ') || '?';
}

function _printDetails(out: Output, c: ConflictDetails, typeName: (t: number) => string): void {
  const side = (s: _Side, version: string) => {
    if (!s) return 'removed';
    const parts = [typeName(s.type), version];
    if (s.type === 1 && s.size !== undefined) parts.push(`${s.size} bytes`);
    if (s.mtimeMs !== undefined) parts.push(`modified ${_time(s.mtimeMs)}`);
    if (s.hash) parts.push(`sha256 ${s.hash}`);
    if (s.target) parts.push(`-> ${s.target}`);
    return parts.filter((p) => p).join(', ');
  };
  const base = c.local?.version ?? c.base;
  out.line(`${c.path}: ${c.class} conflict, found at ${c.at} (${c.detected})`);
  out.line(`  local:  ${side(c.local, base !== undefined ? `based on version ${base}` : 'new')}`);
  out.line(`  server: ${side(c.server, c.server?.version !== undefined ? `version ${c.server.version}` : '')}`);
  if (c.server?.type === 1) out.line(`  server's content: ${c.serverContentKept ? (c.serverBlob ? `.imz/${c.serverBlob}` : 'at the path') : 'not kept here (--take server fetches it)'}`);
  if (c.localCopy) out.line(`  your version: ${c.localCopy}${c.localCopyPresent ? '' : ' (no longer there)'}`);
}

function _resolutionLine(r: Resolution): string {
  const kept = r.kept.map((k) => (k.as === 'blob' ? `${k.from} is kept in .imz/${k.where}`
    : k.as === 'keep' ? `${k.from} is now ${k.where} (the next push sends it)`
    : k.as === 'copy' ? `${k.from} is kept as ${k.where} (never pushed)`
    : `${k.from} was a symlink to ${k.where}`));
  if (r.take === 'local') {
    const next = r.next === 'update' ? `the next push sends it, based on the server's version ${r.serverVersion}`
      : r.next === 'create' ? 'the next push creates it on the server again'
      : r.next === 'remove' ? 'the next push removes it from the server'
      : 'nothing to push';
    return [`${r.path}: kept your version; ${next}`, ...kept].join('; ');
  }
  const took = r.serverVersion > 0 ? `took the server's version ${r.serverVersion}${r.fetched ? ' (fetched)' : ''}` : 'took the server\'s removal';
  return [`${r.path}: ${took}`, ...kept].join('; ');
}
