import { createHash } from 'node:crypto';
import { closeSync, constants as fsc, fchmodSync, fsyncSync, futimesSync, lstatSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type Entry, EntryType } from '../protocol/messages.ts';
import { fsyncDirSync, tempNameFor } from './atomic_fs.ts';
import { type SecurityOptions, connectReplica } from './credentials.ts';
import { fromHex, hashFile, toHex } from './hash.ts';
import type { IndexEntry } from './index_model.ts';
import { checkPath, comparePaths, parentOf } from './paths.ts';
import { type PullEvent, pullWith } from './pull.ts';
import { reconcile } from './reconcile.ts';
import type { Remote } from './remote.ts';
import { Replica } from './replica.ts';
import { fsEntryFromStats, type FsEntry, utimeSeconds } from './tree_scan.ts';

/** One entry as `imz ls` shows it. */
export interface LsEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink';
  size: number;
  version: number;
  mtimeMs: number;
  /** False for a file whose content is not in the replica (on demand). */
  local: boolean;
  target?: string;
}

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

/** What evict did. */
export interface EvictSummary {
  evicted: string[];
  bytes: number;
  /** Files left as they are, with why (local changes are never dropped). */
  kept: { path: string; reason: string }[];
}

const TYPE_NAMES: Record<number, LsEntry['type']> = { [EntryType.FILE]: 'file', [EntryType.DIR]: 'dir', [EntryType.SYMLINK]: 'symlink' };
/** Bytes per READ when streaming a file (cat). */
const CAT_CHUNK = 1024 * 1024;
/** READs in flight while streaming. */
const CAT_IN_FLIGHT = 4;

/**
 * Lists a directory of the replica from its index (no server needed): each
 * child's type, size, version, and whether its content is here. A file
 * path lists that file.
 */
export async function listReplica(dir: string, path = ''): Promise<LsEntry[]> {
  const replica = await Replica.open(dir);
  const rel = _relPath(replica, dir, path, 'list');
  // One index bucket for a path; the whole index only to list a directory (its children are in every bucket).
  const self = rel === '' ? undefined : await replica.get(rel);
  if (rel !== '' && !self) throw new ImzError(Codes.NOT_FOUND, `cannot list ${path}: no such path in the replica (run \`imz pull\` to refresh it)`);
  if (self && self.type !== EntryType.DIR) return [_lsEntry(rel, self)];
  const all = await replica.all();
  const out: LsEntry[] = [];
  for (const [p, e] of all) if (p !== rel && parentOf(p) === rel) out.push(_lsEntry(p, e));
  return out.sort((a, b) => comparePaths(a.path, b.path));
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
        if (e.remote) targets.push(_entryOf(p, e));
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
    summary.evicted = await _enforceCacheLimit(replica, wanted);
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
    const picked = [...all].filter(([p, e]) => e.type === EntryType.FILE && !e.remote && match(p)).map(([p]) => p);
    const out: EvictSummary = { evicted: [], bytes: 0, kept: [] };
    if (picked.length === 0 && !opts.all && ![...all].some(([p, e]) => e.type === EntryType.FILE && match(p))) {
      throw new ImzError(Codes.NOT_FOUND, `cannot evict ${patterns.join(' ')}: no file in the replica matches (see \`imz ls\`)`);
    }
    if (replica.config.mode !== 'on-demand') {
      replica.config.mode = 'on-demand';
      await replica.saveConfig();
    }
    await _evict(replica, picked.sort(comparePaths), out);
    return out;
  } finally {
    await replica.unlock();
  }
}

/**
 * Streams a file's content: from the replica when it is here, else from the
 * server (verified against its SHA-256 as it goes; a mismatch is thrown at
 * the end), keeping it in the replica unless keep is false.
 */
export async function* catFile(dir: string, path: string, opts: OnDemandOptions & { keep?: boolean } = {}): AsyncGenerator<Uint8Array> {
  const replica = await Replica.open(dir);
  const rel = _relPath(replica, dir, path, 'cat');
  if (rel === '') throw new ImzError(Codes.BAD_USAGE, `cannot cat ${path}: it is the replica's root directory`);
  const idx = await replica.get(rel);
  if (!idx) throw new ImzError(Codes.NOT_FOUND, `cannot cat ${path}: no such file in the replica (run \`imz pull\` to refresh it)`);
  if (idx.type !== EntryType.FILE) throw new ImzError(Codes.NOT_FOUND, `cannot cat ${path}: it is a ${TYPE_NAMES[idx.type] ?? 'special entry'}, not a file`);
  if (!idx.remote) {
    // Here already (perhaps with local changes, which is what the user expects to read).
    const fh = await open(join(replica.root, rel), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      for await (const chunk of fh.createReadStream({ highWaterMark: 256 * 1024 })) yield chunk as Uint8Array;
    } finally {
      await fh.close();
    }
    return;
  }
  let keep = opts.keep !== false;
  let locked = false;
  if (keep) {
    try {
      await replica.lock();
      locked = true;
    } catch {
      keep = false; // another imz works here: stream only
    }
  }
  let remote: Remote | undefined;
  let tmp: string | undefined;
  let fd: number | undefined;
  try {
    remote = await connectReplica(replica, opts.security);
    let entry = _entryOf(rel, idx);
    const dest = join(replica.root, rel);
    if (keep && !_parentsAreDirs(replica.root, rel)) keep = false;
    if (keep) {
      tmp = tempNameFor(dest);
      await replica.noteTempDirs([parentOf(rel)]);
      fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    }
    let chunks: AsyncGenerator<Uint8Array>;
    let firstChunk: IteratorResult<Uint8Array>;
    try {
      chunks = _readPipelined(remote, entry);
      firstChunk = await chunks.next();
    } catch (err) {
      if (!(err instanceof ImzError) || err.code !== Codes.STALE) throw err;
      // Changed on the server since our last pull: serve its current version, without keeping it.
      entry = await remote.stat(rel);
      if (entry.type !== EntryType.FILE) throw new ImzError(Codes.NOT_FOUND, `cannot cat ${path}: it is no longer a file on the server (run \`imz pull\`)`);
      keep = false;
      chunks = _readPipelined(remote, entry);
      firstChunk = await chunks.next();
    }
    const h = createHash('sha256');
    for (let r = firstChunk; !r.done; r = await chunks.next()) {
      h.update(r.value);
      if (keep && fd !== undefined) _writeAll(fd, r.value);
      yield r.value;
    }
    if (toHex(new Uint8Array(h.digest())) !== toHex(entry.hash)) {
      throw new ImzError(Codes.HASH_MISMATCH, `cannot cat ${path}: the content received does not match its SHA-256 (what was printed is damaged; run again)`);
    }
    if (keep && fd !== undefined && tmp) {
      fchmodSync(fd, entry.mode & 0o777);
      futimesSync(fd, utimeSeconds(entry.mtimeMs), utimeSeconds(entry.mtimeMs));
      fsyncSync(fd);
      closeSync(fd);
      fd = undefined;
      // The user may have created the file meanwhile: never overwrite that.
      if (lstatSync(dest, { throwIfNoEntry: false })) return;
      renameSync(tmp, dest);
      tmp = undefined;
      fsyncDirSync(dirname(dest));
      const fs = fsEntryFromStats(rel, lstatSync(dest), '') as FsEntry;
      await replica.set(rel, { ...idx, size: fs.size, mode: fs.mode, mtimeMs: fs.mtimeMs, ctimeMs: fs.ctimeMs, ino: fs.ino, remote: undefined, fetchedMs: Date.now() });
      await replica.flushIndex();
      await _enforceCacheLimit(replica, new Set([rel]));
    }
  } finally {
    if (fd !== undefined) closeSync(fd);
    if (tmp) try { unlinkSync(tmp); } catch { /* not made */ }
    remote?.close();
    if (locked) {
      await replica.clearTempDirs().catch(() => {});
      await replica.unlock().catch(() => {});
    }
  }
}

// Yields a file's content in order, with several READs in flight.
async function* _readPipelined(remote: Remote, e: Entry): AsyncGenerator<Uint8Array> {
  const inFlight: Promise<Uint8Array>[] = [];
  let next = 0;
  const issue = () => {
    const off = next;
    const len = Math.min(CAT_CHUNK, e.size - off);
    next += len;
    const p = remote.read(e.path, e.hash, off, len);
    p.catch(() => {}); // awaited below in order; no unhandled rejection meanwhile
    inFlight.push(p);
  };
  while (next < e.size && inFlight.length < CAT_IN_FLIGHT) issue();
  let got = 0;
  while (inFlight.length > 0) {
    const data = await inFlight.shift()!;
    if (data.length === 0 && got < e.size) throw new ImzError(Codes.STALE, `cannot read ${e.path}: it shrank on the server while being read (pull again)`);
    got += data.length;
    if (next < e.size) issue();
    yield data;
  }
}

// Drops the content of paths (those in verified were just checked by _whyKept, not hashed again).
async function _evict(replica: Replica, paths: string[], out: EvictSummary, verified?: Set<string>): Promise<void> {
  const dirs = new Set<string>();
  for (const p of paths) {
    const idx = (await replica.get(p))!;
    const abs = join(replica.root, p);
    const why = verified?.has(p) ? undefined : await _whyKept(replica, p, idx);
    if (why) {
      out.kept.push({ path: p, reason: why });
      continue;
    }
    unlinkSync(abs);
    dirs.add(dirname(abs));
    await replica.set(p, { ...idx, ctimeMs: 0, ino: 0, remote: true, fetchedMs: undefined });
    out.evicted.push(p);
    out.bytes += idx.size;
  }
  for (const d of dirs) fsyncDirSync(d);
  await replica.flushIndex();
}

// Why a file's local content must stay (undefined: it is exactly what was fetched, verified by hash).
async function _whyKept(replica: Replica, p: string, idx: IndexEntry): Promise<string | undefined> {
  if (!_parentsAreDirs(replica.root, p)) return 'a parent is not a directory here';
  const abs = join(replica.root, p);
  const st = lstatSync(abs, { throwIfNoEntry: false });
  if (!st) return 'deleted here (push or pull first)';
  if (!st.isFile()) return 'no longer a file here';
  if ((st.mode & 0o7777) !== idx.mode || st.size !== idx.size || toHex(await hashFile(abs)) !== idx.hash) return 'it has local changes (push them first)';
  return undefined;
}

// Evicts least recently fetched, unchanged files until the fetched content
// fits the replica's cache limit (maxCache in .imz/config); never those in protect.
async function _enforceCacheLimit(replica: Replica, protect: Set<string>): Promise<string[]> {
  const max = replica.config.maxCache;
  if (!max || max <= 0) return [];
  const cached: [string, IndexEntry][] = [];
  let total = 0;
  for (const [p, e] of await replica.all()) {
    if (e.type === EntryType.FILE && !e.remote && e.fetchedMs) {
      cached.push([p, e]);
      total += e.size;
    }
  }
  if (total <= max) return [];
  cached.sort((a, b) => a[1].fetchedMs! - b[1].fetchedMs! || comparePaths(a[0], b[0]));
  const picked: string[] = [];
  for (const [p, e] of cached) {
    if (total <= max) break;
    // A file with local changes never goes, and does not count as freed: the next one does.
    if (protect.has(p) || (await _whyKept(replica, p, e))) continue;
    picked.push(p);
    total -= e.size;
  }
  const out: EvictSummary = { evicted: [], bytes: 0, kept: [] };
  await _evict(replica, picked, out, new Set(picked));
  return out.evicted;
}

function _parentsAreDirs(root: string, rel: string): boolean {
  let cur = '';
  for (const seg of rel.split('/').slice(0, -1)) {
    cur = cur === '' ? seg : `${cur}/${seg}`;
    if (!lstatSync(join(root, cur), { throwIfNoEntry: false })?.isDirectory()) return false;
  }
  return true;
}

function _writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}

function _entryOf(path: string, e: IndexEntry): Entry {
  return { path, type: e.type, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, hash: e.type === EntryType.FILE ? fromHex(e.hash) : new Uint8Array(0), target: e.target, version: e.version };
}

function _lsEntry(path: string, e: IndexEntry): LsEntry {
  const out: LsEntry = { path, type: TYPE_NAMES[e.type] ?? 'file', size: e.type === EntryType.FILE ? e.size : 0, version: e.version, mtimeMs: e.mtimeMs, local: !e.remote };
  if (e.type === EntryType.SYMLINK) out.target = e.target;
  return out;
}

// A path given on the command line, relative to where the command runs, as a replica path.
function _relPath(replica: Replica, dir: string, path: string, action: string): string {
  const abs = resolve(dir, path);
  const rel = relative(replica.root, abs).split('\\').join('/');
  if (rel === '') return '';
  if (rel.startsWith('..')) throw new ImzError(Codes.BAD_PATH, `cannot ${action} ${path}: it is outside the replica ${replica.root}`);
  return checkPath(rel, action);
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
