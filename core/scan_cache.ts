import { closeSync, lstatSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { tempNameFor } from './atomic_fs.ts';
import { type StatFacts, lstatFacts } from './fast_lstat.ts';
import { BUCKETS, type IndexEntry, decodeBucket } from './index_model.ts';
import { PathList } from './path_list.ts';
import { SCAN_CACHE_FILE, readScanCacheFile } from './scan_cache_file.ts';
import type { Replica } from './replica.ts';
import {
  type BucketSection,
  F_LISTED_CTIME,
  F_LISTED_MTIME,
  F_TYPE,
  FACTS,
  REMOTE_FLAG,
  type ScanCacheData,
  bucketOfFacts,
  decodeScanCache,
  encodeScanCacheParts,
  factsOf,
  newFacts,
  typeOfFacts,
} from './scan_cache_model.ts';

export { SCAN_CACHE_FILE } from './scan_cache_file.ts';

/** Marks a directory listing must predate its mtime by: a change in the same clock tick must not hide behind an equal mtime. */
export const LISTING_SLACK_MS = 1000;

/**
 * The scan cache of a replica (see ScanCacheData), loaded and brought up to
 * date with the index: sections whose bucket file changed (or that the
 * replica holds unflushed in memory) are rebuilt from the bucket, and the
 * listing marks they could make wrong are dropped. save() writes it back
 * when something changed.
 */
export class ScanCache {
  data: ScanCacheData;
  /** True when the file on disk no longer matches data. */
  changed: boolean;
  /** With rowsAsLoaded: the rows of the buckets rebuilt from the index at load, updated in place, in order. */
  patchedRows: readonly number[] = [];
  /**
   * True when the rows are the cache file's, path for path (a rebuild that
   * only refreshed facts, under the same .imzignore): a pass over the file's
   * rows then holds for every row outside the rebuilt buckets.
   */
  rowsAsLoaded = false;
  private _lookups = 0;
  private _byPath: Map<string, number> | undefined;

  private constructor(data: ScanCacheData, changed: boolean) {
    this.data = data;
    this.changed = changed;
  }

  /**
   * Loads .imz/scan-cache and brings it up to date with the index (and with
   * the .imzignore identified by ignoreKey). preread: the file's bytes as
   * a pass worker was handed them and checked them (any cache that checks
   * out will do: every section is checked against its bucket here);
   * inUse: the worker is running a pass over those very bytes, so rows to
   * update are updated in a copy.
   */
  static load(replica: Replica, ignoreKey: string, preread?: Uint8Array, inUse = false): ScanCache {
    let old: ScanCacheData | undefined;
    try {
      const bytes = preread ?? readScanCacheFile(join(replica.stateDir, SCAN_CACHE_FILE));
      old = bytes && decodeScanCache(bytes, preread === undefined ? 'all' : 'none');
    } catch {
      old = undefined; // none yet, or unreadable: rebuilt
    }
    const sections: BucketSection[] = [];
    const stale = new Map<number, Map<string, IndexEntry>>();
    for (let b = 0; b < BUCKETS; b++) {
      const unflushed = replica.unflushedBucket(b);
      if (unflushed) {
        // Never trusted once written: the file is rebuilt from then.
        sections.push({ ino: 0, size: -2, mtimeMs: 0, ctimeMs: 0 });
        stale.set(b, unflushed);
        continue;
      }
      // lstat before reading: a bucket replaced in between then fails to match next time, never the other way round.
      const ident = _identity(replica.bucketFile(b));
      sections.push(ident);
      const prev = old?.sections[b];
      if (prev && prev.ino === ident.ino && prev.size === ident.size && prev.mtimeMs === ident.mtimeMs && prev.ctimeMs === ident.ctimeMs) continue;
      // A bucket written within the last second could be written again in the same clock tick, at the same size,
      // into a reused inode: its identity would not change. Such a section is rebuilt next time too (git's racy rule).
      const now = Date.now();
      if (ident.mtimeMs >= now - LISTING_SLACK_MS || ident.ctimeMs >= now - LISTING_SLACK_MS) sections[b] = { ...ident, size: -2 };
      let entries = new Map<string, IndexEntry>();
      if (ident.size >= 0) {
        try {
          const text = readFileSync(replica.bucketFile(b), 'utf8');
          entries = decodeBucket(text, replica.bucketFile(b));
          replica.adoptBucket(b, entries, text);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          ident.size = -2; // vanished after the lstat: never matches, so rebuilt next time
        }
      }
      stale.set(b, entries);
    }
    const sameIgnore = old !== undefined && old.ignoreKey === ignoreKey;
    if (stale.size === 0 && old && sameIgnore) {
      const current = new ScanCache(old, false);
      current.rowsAsLoaded = true;
      return current;
    }
    // Bytes a worker's pass is judging rows by stay as it read them: patched in a copy.
    if (old && sameIgnore && inUse) old = { ...old, facts: _copyOf(old.facts) };
    const patchedRows = old && sameIgnore ? _patchRows(old, stale) : undefined;
    if (old && patchedRows) {
      // The rebuilt buckets hold the same paths as before (contents changed, not names): their rows were updated in place.
      old.sections = sections;
      // Written back only when a rebuilt bucket can be trusted next time: one written in the last second is
      // rebuilt again anyway (and a push has just written the buckets it changed).
      const patched = new ScanCache(old, [...stale.keys()].some((b) => sections[b]!.size !== -2));
      patched.rowsAsLoaded = true;
      patched.patchedRows = patchedRows;
      return patched;
    }

    // Kept rows (still in path order), and the rebuilt buckets' entries, sorted, merged into one path order.
    const kept: number[] = [];
    const unmark: string[] = [];
    const marks = new Map<string, [number, number]>();
    const oldPaths = old ? old.paths.toArray() : [];
    if (old) {
      for (let i = 0; i < oldPaths.length; i++) {
        const b = bucketOfFacts(old.facts, i);
        const entries = stale.get(b);
        if (!entries) {
          kept.push(i);
          continue;
        }
        const p = oldPaths[i]!;
        // A path the index no longer has: its directory's mark said "nothing new here" with it tracked.
        if (!entries.has(p)) unmark.push(p);
        else if (old.facts[i * FACTS + F_LISTED_MTIME] !== 0) marks.set(p, [old.facts[i * FACTS + F_LISTED_MTIME]!, old.facts[i * FACTS + F_LISTED_CTIME]!]);
      }
    }
    const added: Array<{ p: string; e: IndexEntry; b: number }> = [];
    for (const [b, entries] of stale) for (const [p, e] of entries) added.push({ p, e, b });
    added.sort((x, y) => _stringOrder(x.p, y.p));

    const n = kept.length + added.length;
    const paths: string[] = new Array(n);
    const facts = newFacts(n);
    const targets: string[] = new Array(n);
    let k = 0;
    let a = 0;
    for (let at = 0; at < n; at++) {
      if (a >= added.length || (k < kept.length && oldPaths[kept[k]!]! < added[a]!.p)) {
        // A run of kept rows that are contiguous in the old cache and come before the next added path: one copy.
        const first = kept[k]!;
        let len = 1;
        const limit = a < added.length ? added[a]!.p : undefined;
        while (k + len < kept.length && kept[k + len] === first + len && (limit === undefined || oldPaths[first + len]! < limit)) len++;
        facts.set(old!.facts.subarray(first * FACTS, (first + len) * FACTS), at * FACTS);
        for (let j = 0; j < len; j++) {
          paths[at + j] = oldPaths[first + j]!;
          targets[at + j] = old!.targets[first + j]!;
        }
        k += len;
        at += len - 1;
      } else {
        const { p, e, b } = added[a++]!;
        factsOf(e, b, facts, at * FACTS);
        const mark = e.type === 2 ? marks.get(p) : undefined;
        if (mark) {
          facts[at * FACTS + F_LISTED_MTIME] = mark[0];
          facts[at * FACTS + F_LISTED_CTIME] = mark[1];
        }
        paths[at] = p;
        targets[at] = e.target;
      }
    }
    const data: ScanCacheData = { sections, paths: PathList.fromStrings(paths), facts, targets, ignoreKey, rootListed: [0, 0] };
    const cache = new ScanCache(data, true);
    if (old && sameIgnore) {
      data.rootListed = old.rootListed;
      for (const p of unmark) cache.clearMark(p.slice(0, Math.max(0, p.lastIndexOf('/'))));
    } else {
      // Another .imzignore (or no old cache): what was ignored may not be now, so every directory is listed again.
      for (let i = 0; i < n; i++) data.facts[i * FACTS + F_LISTED_MTIME] = data.facts[i * FACTS + F_LISTED_CTIME] = 0;
    }
    return cache;
  }

  /** About how many paths the replica's cache file held when last written (0 without one): a hint, read before loading. */
  static sizeHint(replica: Replica): number {
    const st = lstatSync(join(replica.stateDir, SCAN_CACHE_FILE), { throwIfNoEntry: false });
    // A row is FACTS numbers and a path: ~90 bytes for typical paths.
    return st ? Math.floor(st.size / 90) : 0;
  }

  /** The entry number of a tracked path, or -1. */
  lookup(path: string): number {
    // Lookups search the sorted paths (~1 µs each on 100,000); past a quarter as many lookups as paths (a first scan
    // lists every directory), a map of every path (~0.3 µs a path to build) pays for itself.
    if (this._byPath) return this._byPath.get(path) ?? -1;
    if (++this._lookups < Math.max(_MAP_AFTER, this.data.paths.length / 4)) return this.data.paths.indexOf(path);
    this._byPath = new Map();
    const all = this.data.paths.toArray();
    for (let i = 0; i < all.length; i++) this._byPath.set(all[i]!, i);
    return this._byPath.get(path) ?? -1;
  }

  /** Index entries that are files with content here (what the mass-delete guard counts). */
  trackedFiles(): number {
    let k = 0;
    const f = this.data.facts;
    for (let i = 0; i < this.data.paths.length; i++) if ((f[i * FACTS + F_TYPE]! & (15 | REMOTE_FLAG)) === 1) k++;
    return k;
  }

  /** Records that directory dir ('' for the root) held nothing new when its mtime and ctime were these. */
  setMark(dir: string, mtimeMs: number, ctimeMs: number): void {
    if (dir === '') {
      this.data.rootListed = [mtimeMs, ctimeMs];
    } else {
      const i = this.lookup(dir);
      if (i < 0) return;
      this.data.facts[i * FACTS + F_LISTED_MTIME] = mtimeMs;
      this.data.facts[i * FACTS + F_LISTED_CTIME] = ctimeMs;
    }
    this.changed = true;
  }

  /** Drops a directory's mark, so it is listed next time. */
  clearMark(dir: string): void {
    this.setMark(dir, 0, 0);
  }

  /**
   * Writes the cache back when it changed: temp file, fdatasync, rename. A
   * cache that cannot be written (full disk, read-only replica) is left as
   * it was; the next scan rebuilds what it needs.
   */
  save(replica: Replica): void {
    if (!this.changed) return;
    const file = join(replica.stateDir, SCAN_CACHE_FILE);
    const tmp = tempNameFor(file);
    let fd: number | undefined;
    try {
      const parts = encodeScanCacheParts(this.data);
      fd = openSync(tmp, 'wx', 0o644);
      for (const part of parts) for (let off = 0; off < part.length;) off += writeSync(fd, part, off);
      // Not synced: a derived file; one a crash tore fails its checksum and is rebuilt from the index.
      closeSync(fd);
      fd = undefined;
      renameSync(tmp, file);
      this.changed = false;
    } catch {
      if (fd !== undefined) closeSync(fd);
      rmSync(tmp, { force: true });
    }
  }
}

/** The order of the cache's rows (PathList.indexOf searches by it): plain string order, not comparePaths'. */
function _stringOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Updates, in place, the rows of the stale buckets when each still holds
 * exactly the paths it held (what a push or pull of changed contents
 * leaves): no path list to rebuild, no rows to move. Returns the rows
 * updated, in order; undefined, with nothing changed, when a path came or
 * went. Listing marks stay (the directories
 * are still tracked), except on a row that changed type.
 */
function _patchRows(old: ScanCacheData, stale: Map<number, Map<string, IndexEntry>>): number[] | undefined {
  // The rows of each stale bucket, in path order; its entries, sorted the same way, must be those paths one for one.
  const { facts, paths } = old;
  const rowsOf = _rowsOfBuckets(facts, paths.length, stale.keys());
  const enc = new TextEncoder();
  const updates: Array<{ i: number; e: IndexEntry; b: number }> = [];
  for (const [b, entries] of stale) {
    const rows = rowsOf.get(b)!;
    if (rows.length !== entries.size) return undefined;
    const names = [...entries.keys()].sort(_stringOrder);
    for (let k = 0; k < rows.length; k++) {
      const i = rows[k]!;
      // Compared as bytes: no string is decoded for the rows.
      const want = enc.encode(names[k]!);
      const start = paths.startOf(i);
      if (paths.ends[i]! - start !== want.length) return undefined;
      for (let x = 0; x < want.length; x++) if (paths.bytes[start + x] !== want[x]) return undefined;
      updates.push({ i, e: entries.get(names[k]!)!, b });
    }
  }
  for (const { i, e, b } of updates) {
    const o = i * FACTS;
    const sameType = typeOfFacts(facts, i) === e.type;
    const mtime = facts[o + F_LISTED_MTIME]!;
    const ctime = facts[o + F_LISTED_CTIME]!;
    factsOf(e, b, facts, o);
    if (sameType) {
      facts[o + F_LISTED_MTIME] = mtime;
      facts[o + F_LISTED_CTIME] = ctime;
    }
    old.targets[i] = e.target;
  }
  return updates.map((u) => u.i).sort((x, y) => x - y);
}

/** The rows of each of buckets, in order: a loop of its own (the engine compiles it alone, not all of its caller). */
function _rowsOfBuckets(facts: Float64Array, n: number, buckets: Iterable<number>): Map<number, number[]> {
  const rowsOf = new Map<number, number[]>();
  const lists: Array<number[] | undefined> = new Array(BUCKETS).fill(undefined);
  for (const b of buckets) rowsOf.set(b, (lists[b] = []));
  for (let i = 0; i < n; i++) lists[bucketOfFacts(facts, i)]?.push(i);
  return rowsOf;
}

/** A copy of facts rows, in shared memory where there is any. */
function _copyOf(facts: Float64Array): Float64Array {
  const copy = newFacts(facts.length / FACTS);
  copy.set(facts);
  return copy;
}

/** Lookups after which a map of every path pays for itself, at least (see lookup). */
const _MAP_AFTER = 2048;

function _identity(file: string): BucketSection {
  // lstatFacts: 256 of these per scan, and lstatSync builds four Dates for each.
  const st = _identityFacts;
  if (!lstatFacts(file, st)) return { ino: 0, size: -1, mtimeMs: 0, ctimeMs: 0 };
  return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
}

const _identityFacts: StatFacts = { mode: 0, ino: 0, size: 0, mtimeMs: 0, ctimeMs: 0 };
