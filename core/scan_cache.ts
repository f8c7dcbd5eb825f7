import { closeSync, fstatSync, lstatSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { tempNameFor } from './atomic_fs.ts';
import { crc32 } from './crc32.ts';
import { type StatFacts, lstatFacts } from './fast_lstat.ts';
import { BUCKETS, type IndexEntry, decodeBucket } from './index_model.ts';
import { PathList, editRows } from './path_list.ts';
import { SCAN_CACHE_FILE, readScanCacheFile } from './scan_cache_file.ts';
import { type BucketDelta, type Replica, readBucketFile } from './replica.ts';
import {
  type BucketSection,
  CACHE_HEADER,
  F_LISTED_CTIME,
  F_LISTED_MTIME,
  F_TYPE,
  FACTS,
  REMOTE_FLAG,
  type ScanCacheData,
  bucketOfFacts,
  decodeScanCache,
  encodeScanCacheHead,
  encodeScanCacheParts,
  encodedLength,
  resealInPlace,
  factsOf,
  factsOffset,
  newFacts,
  recordedSum,
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
  /** The checksum of the file the rows were read from, while they are its rows path for path (see _rewrite). */
  private _fileSum: number | undefined;
  /** Rows changed since they were read from the file (see _fileSum): save writes them in place, and the header. */
  private _rewrite: Set<number> | undefined;

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
    let fileSum: number | undefined;
    try {
      const bytes = preread ?? readScanCacheFile(join(replica.stateDir, SCAN_CACHE_FILE));
      old = bytes && decodeScanCache(bytes, preread === undefined ? 'all' : 'none');
      fileSum = old && recordedSum(bytes!);
    } catch {
      old = undefined; // none yet, or unreadable: rebuilt
    }
    const sections: BucketSection[] = [];
    const stale = new Map<number, Map<string, IndexEntry>>();
    let settled = 0;
    // What the rows are read from now is what a push's appends are counted from (refreshed).
    replica.markAppends();
    for (let b = 0; b < BUCKETS; b++) {
      const unflushed = replica.unflushedBucket(b);
      if (unflushed) {
        // Never trusted once written: the file is rebuilt from then.
        sections.push(_NEVER);
        stale.set(b, unflushed);
        continue;
      }
      const file = replica.bucketFile(b);
      // lstat before reading: a bucket replaced in between then fails to match next time, never the other way round.
      const ident = _identity(file);
      const prev = old?.sections[b];
      let bytes: Buffer | undefined;
      if (prev && _sameIdentity(prev, ident)) {
        if (prev.sum < 0) {
          sections.push(prev);
          continue;
        }
        // Recorded within a tick of its writing: the bytes must be the same too.
        bytes = readBucketFile(file);
        if (bytes && crc32(bytes) === prev.sum) {
          // Past the tick now: the identity alone will do, once the cache is written again.
          if (_recent(ident)) sections.push(prev);
          else {
            sections.push({ ...prev, sum: -1 });
            settled++;
          }
          continue;
        }
      }
      bytes ??= ident.size >= 0 ? readBucketFile(file) : undefined;
      let entries = new Map<string, IndexEntry>();
      if (bytes) {
        const text = bytes.toString('utf8');
        entries = decodeBucket(text, file);
        replica.adoptBucket(b, entries, text);
        ident.sum = _recent(ident) ? crc32(bytes) : -1;
      } else if (ident.size >= 0) {
        ident.size = -2; // vanished after the lstat: never matches, so rebuilt next time
      }
      sections.push(ident);
      stale.set(b, entries);
    }
    if (old) old.sections = sections;
    const cache = ScanCache._withBuckets(old, sections, stale, ignoreKey, inUse, settled > _SETTLED_SAVE);
    if (cache.rowsAsLoaded) {
      cache._fileSum = fileSum;
      cache._rewrite = new Set(cache.patchedRows);
    }
    return cache;
  }

  /**
   * The cache after this process wrote index buckets (a push): their
   * sections take the identities of the files written and their rows the
   * entries in memory, so the next scan need not read them. Buckets still
   * unwritten are rebuilt next time.
   */
  refreshed(replica: Replica): ScanCache {
    const touched = replica.touchedBuckets();
    // Paths came or went in buckets written as they changed since the load (a push of many deletions, or of new
    // files among changed ones): their rows are dropped and added, the rest copied as bytes.
    const edited = this._edited(replica, touched);
    if (edited) return edited;
    // Buckets that only gained entries (addNew: a push of new files touches them all): their rows here are as they
    // were, and the new ones are merged in, without parsing the buckets.
    const appended = new Map<number, ReadonlyMap<string, IndexEntry>>();
    const sections = this.data.sections.slice();
    for (const b of touched) {
      const a = replica.appendedOnly(b);
      if (!a) continue;
      const ident = _identity(replica.bucketFile(b));
      ident.sum = _recent(ident) ? a.sum : -1;
      sections[b] = ident;
      appended.set(b, a.adds);
    }
    const rest = touched.filter((b) => !appended.has(b));
    // Paths came past a few other buckets: merging their rows anew is most of a rebuild, left to the next scan (which
    // may never come). Told before the buckets are parsed for it.
    if (rest.length > _MERGE_MAX && rest.some((b) => [...(replica.changedPaths(b) ?? [])].some((p) => this.lookup(p) < 0))) return this;
    // Per bucket to take again, its entries: a bucket written is parsed only if the rows cannot be patched.
    const stale = new Map<number, { entry: (path: string) => IndexEntry | undefined; entries: () => Map<string, IndexEntry> }>();
    for (const b of rest) {
      const unflushed = replica.unflushedBucket(b);
      if (unflushed) {
        sections[b] = _NEVER;
        stale.set(b, { entry: (p) => unflushed.get(p), entries: () => unflushed });
        continue;
      }
      const written = replica.writtenBucket(b)!;
      const ident = _identity(replica.bucketFile(b));
      ident.sum = written.sum;
      if (_sameIdentity(sections[b]!, ident) && sections[b]!.sum === ident.sum) continue;
      if (!_recent(ident)) ident.sum = -1;
      sections[b] = ident;
      stale.set(b, written);
    }
    if (stale.size === 0 && appended.size === 0) return this;
    // Most pushes change contents only: the rows of the paths set are updated where they are.
    const updates = appended.size === 0 ? this._rowsOfChanged(replica, stale) : undefined;
    if (updates) {
      _applyUpdates(this.data, updates);
      for (const u of updates) this._rewrite?.add(u.i);
      this.data.sections = sections;
      this.changed = true;
      return this;
    }
    // Paths came or went: the rows are merged anew, as the next load would. Past a few buckets (a push of many new
    // files touches them all) that is most of a rebuild: those are left to the next scan, which may never come.
    if (stale.size > _MERGE_MAX) return this;
    const entries = new Map([...stale].map(([b, s]) => [b, s.entries()]));
    const next = ScanCache._withBuckets({ ...this.data, sections }, sections, entries, this.data.ignoreKey, false, this.changed, appended);
    next.changed ||= this.changed;
    return next;
  }

  // This cache with each touched bucket's delta applied, when every one has one and a path came or went in one;
  // undefined otherwise (contents changed in place are patched, by the caller).
  private _edited(replica: Replica, touched: number[]): ScanCache | undefined {
    const deltas = new Map<number, BucketDelta & { sum: number }>();
    let structural = false;
    for (const b of touched) {
      const d = replica.deltaOf(b);
      if (!d) return undefined;
      deltas.set(b, d);
      if (d.removed.size !== d.adds.size || [...d.removed].some((p) => !d.adds.has(p))) structural = true;
    }
    if (!structural || deltas.size === 0 || this.data.sections.length !== BUCKETS) return undefined;
    const sections = this.data.sections.slice();
    for (const [b, d] of deltas) {
      const ident = _identity(replica.bucketFile(b));
      ident.sum = _recent(ident) ? d.sum : -1;
      sections[b] = ident;
    }
    const data = _withDelta(this.data, sections, deltas);
    if (!data) return undefined;
    const next = new ScanCache(data.data, true);
    for (const dir of data.unmark) next.clearMark(dir);
    return next;
  }

  // The rows of the paths this process changed in the stale buckets, with their entries now; undefined when a path came or went.
  private _rowsOfChanged(replica: Replica, stale: Map<number, { entry: (path: string) => IndexEntry | undefined }>): _RowUpdate[] | undefined {
    const updates: _RowUpdate[] = [];
    for (const [b, entries] of stale) {
      const changed = replica.changedPaths(b);
      if (!changed) return undefined;
      for (const p of changed) {
        const e = entries.entry(p);
        const i = e ? this.lookup(p) : -1;
        // (A symlink's new target moves what follows the rows: left to a rebuild.)
        if (i < 0 || bucketOfFacts(this.data.facts, i) !== b || this.data.targets[i] !== e!.target) return undefined;
        updates.push({ i, e: e!, b });
      }
    }
    return updates;
  }

  /**
   * old (as decoded, or undefined) with the rows of the stale buckets
   * replaced by their entries: patched in place when they hold the same
   * paths, else merged anew. save: write it back even when nothing was
   * rebuilt.
   */
  private static _withBuckets(
    old: ScanCacheData | undefined,
    sections: BucketSection[],
    stale: Map<number, Map<string, IndexEntry>>,
    ignoreKey: string,
    inUse: boolean,
    save: boolean,
    appended?: ReadonlyMap<number, ReadonlyMap<string, IndexEntry>>,
  ): ScanCache {
    const sameIgnore = old !== undefined && old.ignoreKey === ignoreKey;
    if (stale.size === 0 && !appended?.size && old && sameIgnore) {
      const current = new ScanCache(old, save);
      current.rowsAsLoaded = true;
      return current;
    }
    // Bytes a worker's pass is judging rows by stay as it read them: patched in a copy.
    if (old && sameIgnore && inUse) old = { ...old, facts: _copyOf(old.facts) };
    const patchedRows = old && sameIgnore && !appended?.size ? _patchRows(old, stale) : undefined;
    if (old && patchedRows) {
      // The rebuilt buckets hold the same paths as before (contents changed, not names): their rows were updated in place.
      old.sections = sections;
      // Written back unless every rebuilt bucket is one never to be trusted (rebuilt again anyway).
      const patched = new ScanCache(old, save || [...stale.keys()].some((b) => sections[b]!.size !== -2));
      patched.rowsAsLoaded = true;
      patched.patchedRows = patchedRows;
      return patched;
    }

    // Only new paths (a push of new files): put among the old rows, which are copied as they are.
    if (old && sameIgnore && stale.size === 0 && appended?.size) {
      const merged = _withNewPaths(old, sections, appended);
      if (merged) return new ScanCache(merged, true);
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
    // (Buckets that only gained entries keep their rows: old and sameIgnore, as refreshed passes them.)
    for (const [b, entries] of appended ?? []) for (const [p, e] of entries) added.push({ p, e, b });
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
    return this._filesIn(0, this.data.paths.length);
  }

  /** trackedFiles() under directory dir (not counting dir itself). */
  trackedFilesUnder(dir: string): number {
    // Rows are in string order: those under dir/ lie between dir/ and dir0 ('0' follows '/').
    return this._filesIn(this.data.paths.lowerBound(`${dir}/`), this.data.paths.lowerBound(`${dir}0`));
  }

  // Files with content here among rows [from, to).
  private _filesIn(from: number, to: number): number {
    let k = 0;
    const f = this.data.facts;
    for (let i = from; i < to; i++) if ((f[i * FACTS + F_TYPE]! & (15 | REMOTE_FLAG)) === 1) k++;
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
      this._rewrite?.add(i);
    }
    this.changed = true;
  }

  /** Drops a directory's mark, so it is listed next time. */
  clearMark(dir: string): void {
    this.setMark(dir, 0, 0);
  }

  /**
   * Writes the cache back when it changed. When only some rows changed
   * since they were read from the file, and the file is still the one read
   * (its recorded checksum), those rows and the header are written over it
   * (a push of 10 changes: 11 small writes, not 9 MB); otherwise the whole
   * cache goes to a temp file, renamed into place. Not synced: a derived
   * file; one a crash tore fails its checksum and is rebuilt from the index.
   * A cache that cannot be written (full disk, read-only replica) is left as
   * it was; the next scan rebuilds what it needs.
   */
  save(replica: Replica): void {
    if (!this.changed) return;
    const file = join(replica.stateDir, SCAN_CACHE_FILE);
    // In place, the checksum is worked out from the bytes that change (_writeRows); whole, from all of them.
    let head = this._rewrite && this._fileSum !== undefined ? _writeRows(file, this.data, this._fileSum, this._rewrite) : undefined;
    if (!head) {
      let parts: Uint8Array[];
      try {
        parts = encodeScanCacheParts(this.data);
      } catch {
        return;
      }
      if (!_writeWhole(file, parts)) return;
      head = parts[0]!;
    }
    this.changed = false;
    this._fileSum = recordedSum(head);
    this._rewrite = new Set();
  }
}

// Writes the header and the given rows of d over the cache file, if it is still the one whose checksum was fileSum
// (so its other rows are d's), at its length. The new header, or undefined when it was not written in place.
function _writeRows(file: string, d: ScanCacheData, fileSum: number, rows: Set<number>): Uint8Array | undefined {
  const facts = d.facts;
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r+');
    const head = new Uint8Array(CACHE_HEADER);
    if (readSync(fd, head, 0, CACHE_HEADER, 0) !== CACHE_HEADER || recordedSum(head) !== fileSum) return undefined;
    const next = encodeScanCacheHead(d, head);
    const size = fstatSync(fd).size;
    if (!next || size !== encodedLength(head)) return undefined;
    const changed = [...rows].map((i) => {
      const at = factsOffset(i);
      const before = new Uint8Array(FACTS * 8);
      if (readSync(fd!, before, 0, before.length, at) !== before.length) throw new Error('short read');
      return { at, before, after: new Uint8Array(facts.buffer, facts.byteOffset + i * FACTS * 8, FACTS * 8) };
    });
    resealInPlace(head, next, size, changed);
    for (const r of changed) _writeAt(fd, r.after, r.at);
    _writeAt(fd, next, 0);
    return next;
  } catch {
    return undefined; // written whole instead
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

// Writes the whole cache to a temp file and renames it into place.
function _writeWhole(file: string, parts: Uint8Array[]): boolean {
  const tmp = tempNameFor(file);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', 0o644);
    for (const part of parts) for (let off = 0; off < part.length;) off += writeSync(fd, part, off);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, file);
    return true;
  } catch {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    return false;
  }
}

function _writeAt(fd: number, bytes: Uint8Array, position: number): void {
  for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off, bytes.length - off, position + off);
}

// old's rows with those of paths it does not hold inserted in order, runs of old rows copied whole (the general merge
// decodes and re-encodes every path, ~50 ms for 100,000); undefined when one of them is there already. A delta
// that removes nothing.
function _withNewPaths(old: ScanCacheData, sections: BucketSection[], appended: ReadonlyMap<number, ReadonlyMap<string, IndexEntry>>): ScanCacheData | undefined {
  const none = new Set<string>();
  return _withDelta(old, sections, new Map([...appended].map(([b, adds]) => [b, { adds, removed: none }])))?.data;
}

/**
 * old with each bucket's delta applied: the rows of removed paths dropped,
 * the added entries put in path order (a changed directory keeps its listing
 * mark), the rows in between copied as they are. Also the directories whose
 * marks no longer hold (a tracked name went). Undefined when the rows do not
 * agree with the deltas (a removed path without its row, an added one
 * already there): rebuilt by the next scan instead.
 */
function _withDelta(old: ScanCacheData, sections: BucketSection[], deltas: ReadonlyMap<number, { adds: ReadonlyMap<string, IndexEntry>; removed: ReadonlySet<string> }>): { data: ScanCacheData; unmark: string[] } | undefined {
  const dropRow = new Map<string, number>();
  for (const [b, d] of deltas) {
    for (const p of d.removed) {
      const i = old.paths.indexOf(p);
      if (i < 0 || bucketOfFacts(old.facts, i) !== b) return undefined;
      dropRow.set(p, i);
    }
  }
  const dropped = [...dropRow.values()].sort((x, y) => x - y);
  const added: Array<{ p: string; e: IndexEntry; b: number }> = [];
  for (const [b, d] of deltas) for (const [p, e] of d.adds) added.push({ p, e, b });
  added.sort((x, y) => _stringOrder(x.p, y.p));
  const at = new Array<number>(added.length);
  for (let k = 0; k < added.length; k++) {
    const p = added[k]!.p;
    const row = old.paths.lowerBound(p);
    if ((row < old.paths.length && old.paths.at(row) === p && !dropRow.has(p)) || (k > 0 && added[k - 1]!.p === p)) return undefined;
    at[k] = row;
  }
  const n = old.paths.length + added.length - dropped.length;
  const facts = newFacts(n);
  const targets = new Array<string>(n);
  let to = 0;
  editRows(old.paths.length, at, dropped, (from, end) => {
    facts.set(old.facts.subarray(from * FACTS, end * FACTS), to * FACTS);
    for (let j = from; j < end; j++) targets[to++] = old.targets[j]!;
  }, (k) => {
    const { p, e, b } = added[k]!;
    factsOf(e, b, facts, to * FACTS);
    const was = dropRow.get(p);
    if (was !== undefined && e.type === 2) {
      facts[to * FACTS + F_LISTED_MTIME] = old.facts[was * FACTS + F_LISTED_MTIME]!;
      facts[to * FACTS + F_LISTED_CTIME] = old.facts[was * FACTS + F_LISTED_CTIME]!;
    }
    targets[to++] = e.target;
  });
  const unmark: string[] = [];
  for (const [, d] of deltas) for (const p of d.removed) if (!d.adds.has(p)) unmark.push(p.slice(0, Math.max(0, p.lastIndexOf('/'))));
  const paths = old.paths.edited(at, added.map((x) => x.p), dropped);
  return { data: { sections, paths, facts, targets, ignoreKey: old.ignoreKey, rootListed: old.rootListed }, unmark };
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
  const updates: _RowUpdate[] = [];
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
  // A symlink's new target moves what follows the rows (see save): left to a rebuild.
  if (updates.some((u) => old.targets[u.i] !== u.e.target)) return undefined;
  _applyUpdates(old, updates);
  return updates.map((u) => u.i).sort((x, y) => x - y);
}

/** A row to take an index entry's facts (bucket b's). */
interface _RowUpdate {
  i: number;
  e: IndexEntry;
  b: number;
}

/** Writes entries' facts into their rows; listing marks stay, except on a row that changed type. */
function _applyUpdates(data: ScanCacheData, updates: _RowUpdate[]): void {
  const facts = data.facts;
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
    data.targets[i] = e.target;
  }
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
  if (!lstatFacts(file, st)) return { ino: 0, size: -1, mtimeMs: 0, ctimeMs: 0, sum: -1 };
  return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, sum: -1 };
}

function _sameIdentity(a: BucketSection, b: BucketSection): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
}

/**
 * True for a bucket written within the last second: it could be written
 * again in the same clock tick, at the same size, into a reused inode, and
 * keep its identity (git's racy rule). Its section then records its bytes'
 * CRC-32 too.
 */
function _recent(ident: BucketSection): boolean {
  const now = Date.now();
  return ident.mtimeMs >= now - LISTING_SLACK_MS || ident.ctimeMs >= now - LISTING_SLACK_MS;
}


/** The section of a bucket held unwritten in memory: never matches a file. */
const _NEVER: BucketSection = { ino: 0, size: -2, mtimeMs: 0, ctimeMs: 0, sum: -1 };

/** Buckets with paths added or removed beyond which refreshed leaves them to the next load. */
const _MERGE_MAX = 32;

/** Sections past their tick beyond which a load writes the cache back (each verified costs a read of its bucket). */
const _SETTLED_SAVE = 16;

const _identityFacts: StatFacts = { mode: 0, ino: 0, size: 0, mtimeMs: 0, ctimeMs: 0 };
