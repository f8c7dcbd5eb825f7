import { relative, resolve } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type Entry, EntryType } from '../protocol/messages.ts';
import { type SecurityOptions, connectReplica } from './credentials.ts';
import { comparePaths } from './paths.ts';
import { type PullEvent, pullWith } from './pull.ts';
import { reconcile } from './reconcile.ts';
import type { Remote } from './remote.ts';
import { Replica } from './replica.ts';
import { type EvictSummary, enforceCacheLimit, entryOf, evictPaths } from './replica_cache.ts';
import { IGNORE_FILE } from './ignore_rules.ts';

/** Options of the commands that may reach the server. */
export interface OnDemandOptions {
  security?: SecurityOptions;
  onEvent?: (e: PullEvent) => void;
}

/** What get did. */
export interface GetSummary {
  fetched: number;
  bytes: number;
  /** Matching files whose content was already here. */
  already: number;
  /** Files evicted afterwards to stay under the cache limit. */
  evicted: string[];
  /** True when the replica became a full one (get --all). */
  full: boolean;
  /** Conflicts still open after the pull that refreshed the namespace. */
  outstanding: number;
}

/**
 * Fetches the content of the files matching patterns (paths, directories or
 * globs: `*`, `?`, `**`), after a pull that refreshes the namespace; from
 * then on pulls keep them fresh. `all` fetches everything and makes the
 * replica a full one.
 */
export async function getFiles(dir: string, patterns: string[], opts: OnDemandOptions & { all?: boolean } = {}): Promise<GetSummary> {
  const replica = await Replica.open(dir);
  const match = opts.all ? () => true : _matcher(replica, dir, patterns, 'get');
  await replica.lock();
  let remote: Remote | undefined;
  try {
    await replica.sweepTemps();
    remote = await connectReplica(replica, opts.security);
    let pulled = await pullWith(replica, remote, { onEvent: opts.onEvent });
    const summary: GetSummary = { fetched: 0, bytes: 0, already: 0, evicted: [], full: false, outstanding: pulled.outstanding };
    const wanted = new Set<string>();
    let first = true;
    // A file that changes on the server while it is fetched comes back stale: refresh, try again.
    for (let round = 0; round < 4; round++) {
      const all = await replica.all();
      const targets: Entry[] = [];
      let matched = 0;
      for (const [p, e] of all) {
        if (e.type !== EntryType.FILE || !match(p)) continue;
        matched++;
        if (e.remote) targets.push(entryOf(p, e));
        else if (first) summary.already++;
      }
      if (first && matched === 0 && !opts.all) {
        throw new ImzError(Codes.NOT_FOUND, `cannot get ${patterns.join(' ')}: no file in the replica matches (see \`imz ls\`)`);
      }
      first = false;
      if (targets.length === 0) break;
      for (const t of targets) wanted.add(t.path);
      const r = await reconcile(replica, remote, targets, opts.onEvent, replica.config.policy ?? 'manual', { fetch: new Set(targets.map((t) => t.path)) });
      summary.fetched += r.files;
      summary.bytes += r.bytes;
      if (r.stale.length === 0) break;
      pulled = await pullWith(replica, remote, { onEvent: opts.onEvent });
      summary.outstanding = pulled.outstanding;
    }
    if (opts.all) {
      const left = [...(await replica.all()).values()].some((e) => e.remote);
      if (!left && replica.config.mode !== 'full') {
        replica.config.mode = 'full';
        await replica.saveConfig();
        summary.full = true;
      }
    }
    summary.evicted = await enforceCacheLimit(replica, wanted);
    return summary;
  } finally {
    remote?.close();
    await replica.unlock();
  }
}

/**
 * Drops the local content of the matching files that are unchanged since
 * they were fetched (verified by hash), keeping their namespace entries; a
 * later get or cat fetches them again. Files with local changes are kept.
 * A full replica becomes an on-demand one.
 */
export async function evictFiles(dir: string, patterns: string[], opts: { all?: boolean } = {}): Promise<EvictSummary> {
  const replica = await Replica.open(dir);
  const match = opts.all ? () => true : _matcher(replica, dir, patterns, 'evict');
  await replica.lock();
  try {
    const all = await replica.all();
    // (Never .imzignore: its rules must keep applying here, or what the tree excludes is pushed from here.)
    const picked = [...all].filter(([p, e]) => e.type === EntryType.FILE && !e.remote && p !== IGNORE_FILE && match(p)).map(([p]) => p);
    const out: EvictSummary = { evicted: [], bytes: 0, kept: [] };
    if (picked.length === 0 && !opts.all && ![...all].some(([p, e]) => e.type === EntryType.FILE && match(p))) {
      throw new ImzError(Codes.NOT_FOUND, `cannot evict ${patterns.join(' ')}: no file in the replica matches (see \`imz ls\`)`);
    }
    if (replica.config.mode !== 'on-demand') {
      replica.config.mode = 'on-demand';
      await replica.saveConfig();
    }
    await evictPaths(replica, picked.sort(comparePaths), out);
    return out;
  } finally {
    await replica.unlock();
  }
}

// Patterns (paths, directories, globs) as a test on replica paths.
function _matcher(replica: Replica, dir: string, patterns: string[], action: string): (p: string) => boolean {
  if (patterns.length === 0) throw new ImzError(Codes.BAD_USAGE, `cannot ${action}: name at least one PATH or GLOB (or pass --all)`);
  const tests = patterns.map((pat) => {
    const prefix = relative(replica.root, resolve(dir)).split('\\').join('/');
    if (prefix.startsWith('..')) throw new ImzError(Codes.BAD_PATH, `cannot ${action} ${pat}: the current directory is outside the replica`);
    const full = pat.startsWith('/') ? relative(replica.root, pat) : (prefix ? `${prefix}/${pat}` : pat);
    const clean = full.replace(/\/+$/, '');
    if (clean === '' || clean === '.') return () => true;
    const re = globToRegExp(clean);
    return (p: string) => re.test(p) || _underMatch(re, p);
  });
  return (p) => tests.some((t) => t(p));
}

// True when some parent directory of p matches (a directory pattern takes what is inside).
function _underMatch(re: RegExp, p: string): boolean {
  for (let i = p.indexOf('/'); i > 0; i = p.indexOf('/', i + 1)) if (re.test(p.slice(0, i))) return true;
  return false;
}

/** A glob (`*` within a name, `?` one character, `**` any depth) as an anchored regular expression. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      i++;
      if (glob[i + 1] === '/') {
        i++;
        re += '(?:.*/)?';
      } else re += '.*';
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}
