import { closeSync, fdatasyncSync, fstatSync, lstatSync, openSync, readFileSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { tempNameFor } from './atomic_fs.ts';
import { BUCKETS, type IndexEntry, decodeBucket } from './index_model.ts';
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
  encodeScanCache,
  factsOf,
  newFacts,
} from './scan_cache_model.ts';

/** The cache's file in the replica's state directory. */
export const SCAN_CACHE_FILE = 'scan-cache';

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
  private _byPath: Map<string, number> | undefined;

  private constructor(data: ScanCacheData, changed: boolean) {
    this.data = data;
    this.changed = changed;
  }

  /** The paths joined by NUL (as decoded, or joined after a rebuild). */
  pathBlob(): string {
    this.data.pathBlob ??= this.data.paths.join('\0');
    return this.data.pathBlob;
  }

  /** Loads .imz/scan-cache and brings it up to date with the index (and with the .imzignore identified by ignoreKey). */
  static load(replica: Replica, ignoreKey: string): ScanCache {
    let old: ScanCacheData | undefined;
    try {
      const bytes = _readScanCache(join(replica.stateDir, SCAN_CACHE_FILE));
      old = bytes && decodeScanCache(bytes);
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
    if (stale.size === 0 && old && sameIgnore) return new ScanCache(old, false);

    // Kept rows (still in path order), and the rebuilt buckets' entries, sorted, merged into one path order.
    const kept: number[] = [];
    const unmark: string[] = [];
    const marks = new Map<string, [number, number]>();
    if (old) {
      for (let i = 0; i < old.paths.length; i++) {
        const b = bucketOfFacts(old.facts, i);
        const entries = stale.get(b);
        if (!entries) {
          kept.push(i);
          continue;
        }
        const p = old.paths[i]!;
        // A path the index no longer has: its directory's mark said "nothing new here" with it tracked.
        if (!entries.has(p)) unmark.push(p);
        else if (old.facts[i * FACTS + F_LISTED_MTIME] !== 0) marks.set(p, [old.facts[i * FACTS + F_LISTED_MTIME]!, old.facts[i * FACTS + F_LISTED_CTIME]!]);
      }
    }
    const added: Array<{ p: string; e: IndexEntry; b: number }> = [];
    for (const [b, entries] of stale) for (const [p, e] of entries) added.push({ p, e, b });
    added.sort((x, y) => (x.p < y.p ? -1 : x.p > y.p ? 1 : 0));

    const n = kept.length + added.length;
    const data: ScanCacheData = { sections, paths: new Array(n), facts: newFacts(n), targets: new Array(n), ignoreKey, rootListed: [0, 0] };
    let k = 0;
    let a = 0;
    for (let at = 0; at < n; at++) {
      if (a >= added.length || (k < kept.length && old!.paths[kept[k]!]! < added[a]!.p)) {
        // A run of kept rows that are contiguous in the old cache and come before the next added path: one copy.
        const first = kept[k]!;
        let len = 1;
        const limit = a < added.length ? added[a]!.p : undefined;
        while (k + len < kept.length && kept[k + len] === first + len && (limit === undefined || old!.paths[first + len]! < limit)) len++;
        data.facts.set(old!.facts.subarray(first * FACTS, (first + len) * FACTS), at * FACTS);
        for (let j = 0; j < len; j++) {
          data.paths[at + j] = old!.paths[first + j]!;
          data.targets[at + j] = old!.targets[first + j]!;
        }
        k += len;
        at += len - 1;
      } else {
        const { p, e, b } = added[a++]!;
        factsOf(e, b, data.facts, at * FACTS);
        const mark = e.type === 2 ? marks.get(p) : undefined;
        if (mark) {
          data.facts[at * FACTS + F_LISTED_MTIME] = mark[0];
          data.facts[at * FACTS + F_LISTED_CTIME] = mark[1];
        }
        data.paths[at] = p;
        data.targets[at] = e.target;
      }
    }
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
    if (!this._byPath) {
      this._byPath = new Map();
      const paths = this.data.paths;
      for (let i = 0; i < paths.length; i++) this._byPath.set(paths[i]!, i);
    }
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
      const bytes = encodeScanCache(this.data);
      fd = openSync(tmp, 'wx', 0o644);
      for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off);
      fdatasyncSync(fd);
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

function _identity(file: string): BucketSection {
  const st = lstatSync(file, { throwIfNoEntry: false });
  if (!st) return { ino: 0, size: -1, mtimeMs: 0, ctimeMs: 0 };
  return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
}

/**
 * Reads a cache file into shared memory (where the runtime has it), so its
 * facts serve the scan and its worker in place; undefined when there is none.
 */
function _readScanCache(file: string): Uint8Array | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    const bytes = new Uint8Array(typeof SharedArrayBuffer === 'function' ? new SharedArrayBuffer(size) : new ArrayBuffer(size));
    for (let off = 0; off < size;) {
      const k = readSync(fd, bytes, off, size - off, off);
      if (k === 0) return bytes.subarray(0, off); // shrank meanwhile: the checksum will say so
      off += k;
    }
    return bytes;
  } finally {
    closeSync(fd);
  }
}
