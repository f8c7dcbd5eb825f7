import { type Stats, readdirSync, readlinkSync, statSync } from 'node:fs';
import { EntryType } from '../protocol/constants.ts';
import { hashFile, hashFileKeeping, toHex } from './hash.ts';
import { loadIgnoreKeyed } from './ignore_rules.ts';
import type { IndexEntry } from './index_model.ts';
import { statMatches } from './local_state.ts';
import { comparePaths, depthOf, inDir, isReservedName } from './paths.ts';
import type { Replica } from './replica.ts';
import { LISTING_SLACK_MS, ScanCache } from './scan_cache.ts';
import { checksumOk, isRemoteRow, typeOfFacts } from './scan_cache_model.ts';
import { indexWriteTime, isWorkingDir } from './scan_cache_file.ts';
import { monotonicMs } from './file_times.ts';
import { PassWorker, SPECULATION_MAX_AGE_MS, type Speculation } from './pass_worker.ts';
import { CHECK, GONE, LIST, NOT_DIR, checkRange, lstatOrNot, racy, runPass } from './scan_pass.ts';
import { type FsEntry, type IgnoreFn, type SkippedPath, fsEntryFromStats, listDir, listedEntry, sameMtime, statEntrySync } from './tree_scan.ts';

/** One local change of the working tree against the index (what the last sync left). */
export interface LocalChange {
  kind: 'create' | 'modify' | 'delete' | 'mkdir' | 'rmdir' | 'symlink' | 'meta' | 'rename' | 'retype';
  path: string;
  /** rename: where the content was (its index entry is fromIndex). */
  fromPath?: string;
  /** Index version of path (0 when the path is new). */
  base: number;
  /** rename: index version of fromPath. */
  fromBase?: number;
  /** Current lstat of path (absent for delete/rmdir). */
  fs?: FsEntry;
  /**
   * Hex SHA-256 of a file's current content (create/modify/retype-to-file/
   * rename). Always set for those kinds unless the scan ran with
   * contentHashes: false, where it is set only when classifying needed it.
   */
  hash?: string;
  /** The index entry of path before the change (undefined when new). */
  index?: IndexEntry;
  /** rename: the index entry of fromPath. */
  fromIndex?: IndexEntry;
}

/** A tracked file whose content is unchanged but whose stat facts moved (ctime, inode): refreshing its index entry saves hashing it next time. */
export interface RefreshHint {
  path: string;
  fs: FsEntry;
  hash: string;
}

/** What a scan found. */
export interface ChangeScan {
  changes: LocalChange[];
  /** Paths that cannot be replicated (sockets, devices, bad names); never reported as deleted. */
  skipped: SkippedPath[];
  /** Index entries that are files (counted at first use: read it before anything changes the cache). */
  readonly tracked: number;
  /** Tracked files deleted (renames not counted): for the mass-delete guard. */
  deleted: number;
  /** Clean files whose stat facts differ from the index (see RefreshHint). */
  refresh: RefreshHint[];
  /** The scan cache as the scan left it: already written back, unless keepCache. */
  cache: ScanCache;
  /** Changes handed to opts.stream (not in changes). */
  streamed: number;
}

/** Options of scanChanges. */
export interface ScanChangesOptions {
  /** Called every few thousand entries walked, and once at the end. */
  onProgress?: (scanned: number) => void;
  /**
   * Hash every created/modified file (default true, what push needs). false
   * hashes only what classification needs (status): same-size files whose
   * stat differs, racily clean files, and rename candidates.
   */
  contentHashes?: boolean;
  /**
   * Leave the scan cache unwritten: the caller writes it (result.cache)
   * once it is done with the index, the buckets it wrote included (a push).
   */
  keepCache?: boolean;
  /**
   * Takes the bytes of each file the scan hashes for a create or a modify,
   * as hashed, when it holds at most upTo bytes: a push uploads them while
   * the scan goes on, instead of reading them again. The scan waits on take.
   */
  onContent?: { upTo: number; take: (c: LocalChange, data: Buffer) => Promise<void> | void };
  /**
   * Awaited once the cache is loaded, before the first lstat: a push
   * connects while the scan loads, and looks at the tree only once the
   * server has answered (a save made while it waited is pushed). Its
   * failure fails the scan.
   */
  gate?: Promise<unknown>;
  /**
   * Takes the changes as the scan makes them, when the lstat pass found no
   * tracked path gone (then nothing the scan finds later can turn a change
   * into a rename or undo it): they are left out of result.changes.
   */
  stream?: ChangeStream;
}

/** Where a scan hands the changes it will not revise (a push sends them while the scan goes on). */
export interface ChangeStream {
  /** Asked once, after the lstat pass, when nothing tracked is gone: whether to take the changes from here on. */
  start(): Promise<boolean>;
  /** A change, in an order that replays (a directory before what is in it); its content offered first (onContent). */
  take(c: LocalChange): Promise<void>;
}

/** What marks the name of a conflict copy (`name.imz-conflict-<replica>-<version>.ext`). */
export const CONFLICT_MARK = '.imz-conflict-';

/** True for names of conflict copies that a scan never picks up unless tracked: contains '.imz-conflict-'. */
export function isConflictCopy(name: string): boolean {
  return name.includes(CONFLICT_MARK);
}

const PROGRESS_EVERY = 4096;

/**
 * Compares the replica's working tree with its index. lstat facts first
 * (statMatches): a file is hashed only when its stat differs from the index
 * with the same size, or when it is "racily clean" (its mtime or ctime is
 * not older than the last index write, so a same-tick rewrite could hide
 * behind equal stat facts; git's rule). No file is hashed twice.
 *
 * Untracked conflict copies and .imzignore'd paths are left out; a tracked
 * path that is now ignored or unsupported is not reported as deleted. A
 * deleted tracked file whose content (hash, size) reappears as a new file is
 * reported once, as a rename.
 *
 * Order of the result, so that replaying it in order always works (parents
 * exist before children are made; a directory is emptied, and its files
 * moved out, before it goes):
 *   1. mkdirs and retypes into a directory, shallowest first;
 *   2. everything else that adds or changes (create, modify, meta, symlink,
 *      rename by its target, retype into a file/symlink from a file/symlink),
 *      in path order, parents before children;
 *   3. delete, rmdir and retypes of a directory into something else,
 *      deepest first.
 * Takes no lock and writes nothing but the scan cache (.imz/scan-cache, a
 * derived file; see core/scan_cache.ts).
 */
export async function scanChanges(replica: Replica, opts: ScanChangesOptions = {}): Promise<ChangeScan> {
  const root = replica.root;
  const rootSlash = root.endsWith('/') ? root : `${root}/`;
  const wantHashes = opts.contentHashes !== false;
  // A worker for the lstat pass, started first so its start-up overlaps loading the cache (sized by the last cache).
  const workerMin = _workerMin();
  let worker = PassWorker.take() ?? (ScanCache.sizeHint(replica) >= workerMin ? PassWorker.start() : undefined);
  const refTime = indexWriteTime(replica.stateDir);
  let cache: ScanCache;
  let userIgnore: IgnoreFn | undefined;
  let spec: Speculation | undefined;
  let ignoreKey = '';
  try {
    ({ ignore: userIgnore, key: ignoreKey } = await loadIgnoreKeyed(root));
    // The cache file the worker was offered (and checked, and maybe began a pass over) is the one loaded.
    spec = await worker?.speculation(root);
    // Read by this thread's pool, not checked by the worker: checked here (native CRC-32, ~2 ms for 100,000 paths).
    if (spec?.unchecked && !checksumOk(spec.bytes)) spec = undefined;
    cache = ScanCache.load(replica, ignoreKey, spec?.bytes, spec?.pass !== undefined);
    await opts.gate;
  } catch (err) {
    worker?.stop();
    throw err;
  }
  const { paths, facts, targets } = cache.data;
  const n = paths.length;
  const skipped: SkippedPath[] = [];

  const hashOf = async (path: string): Promise<string> => toHex(await hashFile(inDir(root, path)));
  // The hash of a file, and its bytes as hashed when onContent may take them (stored below only if they are pushed).
  const onContent = opts.onContent;
  const hashed = async (path: string, size: number): Promise<{ hash: string; data?: Buffer }> => {
    if (!onContent || size > onContent.upTo) return { hash: await hashOf(path) };
    const r = hashFileKeeping(inDir(root, path), size);
    return { hash: toHex(r.hash), data: r.data };
  };
  const stored = async (c: LocalChange, data: Buffer | undefined): Promise<void> => {
    if (data) await onContent!.take(c, data);
  };
  const ignore: IgnoreFn = (p, isDir) => {
    if (userIgnore?.(p, isDir)) return true;
    // Untracked conflict copies (and anything inside one) are never picked up.
    return isConflictCopy(p) && isConflictCopy(p.slice(p.lastIndexOf('/') + 1)) && cache.lookup(p) < 0;
  };

  const changes: LocalChange[] = [];
  const created: LocalChange[] = [];
  const refresh: RefreshHint[] = [];
  // Set after the lstat pass when the changes go to opts.stream as they are made.
  let stream: ChangeStream | undefined;
  let streamed = 0;
  const emit = async (c: LocalChange): Promise<void> => {
    if (!stream) {
      changes.push(c);
      return;
    }
    streamed++;
    await stream.take(c);
  };

  const visit = async (fs: FsEntry, idx: IndexEntry | undefined): Promise<void> => {
    const path = fs.path;
    if (!idx) {
      if (fs.type === EntryType.DIR) await emit({ kind: 'mkdir', path, base: 0, fs });
      else if (fs.type === EntryType.SYMLINK) await emit({ kind: 'symlink', path, base: 0, fs });
      else {
        const c: LocalChange = { kind: 'create', path, base: 0, fs };
        const h = wantHashes ? await hashed(path, fs.size) : undefined;
        c.hash = h?.hash;
        if (!stream) created.push(c); // (streamed: sent as it is, never paired into a rename)
        await stored(c, h?.data);
        await emit(c);
      }
      return;
    }
    const base = idx.version;
    if (fs.type !== idx.type) {
      const c: LocalChange = { kind: 'retype', path, base, fs, index: idx };
      const h = fs.type === EntryType.FILE && wantHashes ? await hashed(path, fs.size) : undefined;
      c.hash = h?.hash;
      await stored(c, h?.data);
      await emit(c);
      return;
    }
    if (fs.type === EntryType.DIR) {
      // Directory mtimes move with every entry added and are not replicated: mode only.
      if (fs.mode !== idx.mode) await emit({ kind: 'meta', path, base, fs, index: idx });
      return;
    }
    if (fs.type === EntryType.SYMLINK) {
      if (fs.target !== idx.target) await emit({ kind: 'symlink', path, base, fs, index: idx });
      return;
    }
    // A regular file, tracked as one.
    if (statMatches(fs, idx) && !racy(fs, refTime)) return;
    if (fs.size !== idx.size && !wantHashes) {
      await emit({ kind: 'modify', path, base, fs, index: idx });
      return;
    }
    const { hash, data } = await hashed(path, fs.size);
    if (hash !== idx.hash) {
      const c: LocalChange = { kind: 'modify', path, base, fs, hash, index: idx };
      await stored(c, data);
      await emit(c);
    } else if (statMatches(fs, idx)) return; // racily clean, and clean
    else if (fs.mode !== idx.mode || !sameMtime(fs.mtimeMs, idx.mtimeMs)) await emit({ kind: 'meta', path, base, fs, hash, index: idx });
    else refresh.push({ path, fs, hash });
  };

  // 1. One lstat per tracked path, compared with the cached index facts:
  // the whole cost of `imz status` on a large clean tree (core/scan_pass.ts).
  // A tracked file whose facts match (and is not racily clean) is settled
  // there; the rest is looked at closely below. A directory is listed only
  // when its mtime moved since a listing found nothing new in it.
  if (worker && n < workerMin) {
    worker.stop();
    worker = undefined;
  }
  // The worker's pass is joined when it judges what this scan would: the cache file's rows (the same paths, their facts
  // unchanged outside the buckets rebuilt from the index, which are looked at again after it) and the same racy time.
  // Under the replica lock (push, sync) the pass starts now: what is logged is never older than the scan. `imz status`
  // takes no lock and reports the tree as its command found it.
  const pass = spec?.pass;
  const fresh = pass !== undefined && replica.lockedAt === undefined && monotonicMs() - pass.startedAt <= SPECULATION_MAX_AGE_MS;
  const joined = pass && fresh && worker?.ctl && cache.rowsAsLoaded && cache.patchedRows.length <= _PATCHED_MAX && spec!.refTime === refTime ? { state: pass.state, done: pass.done, ctl: worker.ctl } : undefined;
  if (!joined) worker?.stopSpeculation();
  const relative = isWorkingDir(root);
  const passInput = { rootSlash: relative ? '' : rootSlash, paths, facts, targets, refTime };
  let state = await runPass(passInput, { onProgress: opts.onProgress, worker, joined, keepWorker: joined !== undefined });
  if (joined) {
    for (const i of cache.patchedRows) checkRange(passInput, i, i + 1, state);
    // What the worker found missing is looked at again now: a path away for a moment while it looked (a directory
    // renamed and back) must not become a deletion.
    for (const i of _flagged(state, GONE | NOT_DIR)) checkRange(passInput, i, i + 1, state);
    worker!.stop();
  }
  // Paths relative to the working directory: should it have moved during the pass, the verdicts are not the tree's.
  if (relative && !isWorkingDir(root)) state = await runPass({ rootSlash, paths, facts, targets, refTime }, { onProgress: opts.onProgress });

  // lstat follows symlinks in the middle of a path: below a directory that
  // is gone or is no longer one, what lstat found is not the tracked path.
  const gone = new Set<string>();
  for (const i of _flagged(state, GONE | NOT_DIR)) if (typeOfFacts(facts, i) === EntryType.DIR) gone.add(paths.at(i));
  if (gone.size > 0) {
    const all = paths.toArray();
    for (let i = 0; i < n; i++) {
      const p = all[i]!;
      for (let s = p.lastIndexOf('/'); s > 0; s = p.lastIndexOf('/', s - 1)) {
        if (gone.has(p.slice(0, s))) {
          state[i] = isRemoteRow(facts, i) ? 0 : GONE;
          break;
        }
      }
    }
  }

  // Nothing tracked is gone: no change found from here on can become a rename, nor be undone by a deletion (a path
  // that vanishes during the close look is still reported, after the streamed ones, and deletions go last anyway).
  if (opts.stream && _flagged(state, GONE | NOT_DIR).length === 0 && (await opts.stream.start())) stream = opts.stream;

  // 2. A close look at what stat could not settle.
  const newDirs: string[] = [];
  const listDirs: Array<{ dir: string; st: Stats | undefined }> = [];
  // stat, not lstat: a replica opened by a path that is a symlink to it (-C link) lists the directory, not the link.
  const rootSt = statSync(root);
  if (rootSt.mtimeMs !== cache.data.rootListed[0] || rootSt.ctimeMs !== cache.data.rootListed[1]) listDirs.push({ dir: '', st: rootSt });
  const missing: string[] = [];
  for (const i of _flagged(state, 0xff)) {
    const s = state[i]!;
    const path = paths.at(i);
    if (s & GONE) {
      missing.push(path);
      continue;
    }
    if (s & CHECK) {
      const fs = statEntrySync(root, path);
      if (fs === undefined) {
        if (!isRemoteRow(facts, i)) missing.push(path); // vanished since
        continue;
      }
      if (typeof fs === 'string') {
        skipped.push({ path, reason: fs });
        continue;
      }
      if (ignore(path, fs.type === EntryType.DIR)) continue;
      const idx = await replica.get(path);
      await visit(fs, idx);
      if (fs.type === EntryType.DIR && (!idx || idx.type !== EntryType.DIR)) {
        newDirs.push(path); // a file or link that became a directory: everything in it is new
        continue;
      }
    }
    if (s & LIST) listDirs.push({ dir: path, st: undefined });
  }

  // 3. Directories whose listing may hold something new: names not tracked
  // are new (or ignored). A listing that finds nothing new marks the
  // directory with the mtime it had before the listing.
  const listStart = Date.now();
  for (const { dir, st: known } of listDirs) {
    // The mtime before the listing: a change during it then shows next time.
    const st = known ?? lstatOrNot(rootSlash + dir);
    if (!st?.isDirectory()) continue;
    let names: string[];
    try {
      names = readdirSync(dir === '' ? root : rootSlash + dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw err;
    }
    let clean = true;
    for (const name of names) {
      if (isReservedName(name)) continue;
      const rel = dir === '' ? name : `${dir}/${name}`;
      if (cache.lookup(rel) >= 0) continue;
      const fs = listedEntry(root, rel, name);
      if (fs === undefined) continue;
      if (typeof fs === 'string') {
        skipped.push({ path: rel, reason: fs });
        clean = false;
        continue;
      }
      if (ignore(rel, fs.type === EntryType.DIR)) continue;
      clean = false;
      await visit(fs, undefined);
      if (fs.type === EntryType.DIR) newDirs.push(rel);
    }
    if (clean && st.mtimeMs < listStart - LISTING_SLACK_MS && st.ctimeMs < listStart - LISTING_SLACK_MS) cache.setMark(dir, st.mtimeMs, st.ctimeMs);
  }

  // 4. New directories: everything under them is new.
  const stack = newDirs;
  let dirsSinceYield = 0;
  while (stack.length > 0) {
    const dir = stack.pop()!;
    if (++dirsSinceYield >= 64) {
      dirsSinceYield = 0;
      await new Promise<void>((r) => setImmediate(r));
    }
    const entries = listDir(root, dir, { onSkip: (x) => skipped.push(x) });
    if (!entries) continue;
    for (const { rel, st } of entries) {
      if (cache.lookup(rel) >= 0) continue; // tracked below a new directory: settled by the lstat pass
      const isDir = st.isDirectory();
      if (ignore(rel, isDir)) continue;
      let target = '';
      if (st.isSymbolicLink()) {
        try {
          target = readlinkSync(rootSlash + rel);
        } catch {
          continue;
        }
      }
      const fs = fsEntryFromStats(rel, st, target);
      if (typeof fs === 'string') {
        skipped.push({ path: rel, reason: fs });
        continue;
      }
      await visit(fs, undefined);
      if (isDir) stack.push(rel);
    }
  }
  skipped.sort((a, b) => comparePaths(a.path, b.path));
  if (!opts.keepCache) cache.save(replica);

  // What the scan did not meet was deleted, unless it is now ignored.
  const deletedFiles: LocalChange[] = [];
  for (const path of missing) {
    const idx = await replica.get(path);
    if (!idx || idx.remote) continue;
    if (userIgnore?.(path, idx.type === EntryType.DIR)) continue;
    const c: LocalChange = { kind: idx.type === EntryType.DIR ? 'rmdir' : 'delete', path, base: idx.version, index: idx };
    changes.push(c);
    if (idx.type === EntryType.FILE) deletedFiles.push(c);
  }

  // Renames: a deleted file whose content reappears under a new name.
  if (deletedFiles.length > 0 && created.length > 0) {
    const bySize = new Map<number, LocalChange[]>();
    for (const d of deletedFiles.sort((a, b) => comparePaths(a.path, b.path))) {
      const list = bySize.get(d.index!.size);
      if (list) list.push(d);
      else bySize.set(d.index!.size, [d]);
    }
    const gone = new Set<LocalChange>();
    for (const c of created.sort((a, b) => comparePaths(a.path, b.path))) {
      const candidates = bySize.get(c.fs!.size);
      if (!candidates || candidates.length === 0) continue;
      c.hash ??= await hashOf(c.path);
      const i = candidates.findIndex((d) => d.index!.hash === c.hash);
      if (i < 0) continue;
      const d = candidates.splice(i, 1)[0]!;
      gone.add(d);
      c.kind = 'rename';
      c.fromPath = d.path;
      c.fromBase = d.base;
      c.fromIndex = d.index;
    }
    if (gone.size > 0) {
      for (let i = changes.length - 1; i >= 0; i--) if (gone.has(changes[i]!)) changes.splice(i, 1);
    }
  }

  let deleted = 0;
  for (const c of changes) if (c.kind === 'delete' && c.index!.type === EntryType.FILE) deleted++;
  // Counted when asked (a loop over every row, ~2 ms on 100,000 paths; a push asks only when something is deleted).
  let tracked: number | undefined;
  return { changes: orderChanges(changes), skipped, get tracked() {
    return (tracked ??= cache.trackedFiles());
  }, deleted, refresh, cache, streamed };
}

/** Which of the three phases (see scanChanges) a change belongs to. */
function _phase(c: LocalChange): 0 | 1 | 2 {
  if (c.kind === 'mkdir' || (c.kind === 'retype' && c.fs!.type === EntryType.DIR)) return 0;
  if (c.kind === 'delete' || c.kind === 'rmdir' || (c.kind === 'retype' && c.index!.type === EntryType.DIR)) return 2;
  return 1;
}

/** Sorts changes into an order that replays safely (see scanChanges). */
export function orderChanges(changes: LocalChange[]): LocalChange[] {
  const keyed = changes.map((c) => ({ c, phase: _phase(c), depth: depthOf(c.path) }));
  keyed.sort((a, b) => {
    if (a.phase !== b.phase) return a.phase - b.phase;
    if (a.phase === 0 && a.depth !== b.depth) return a.depth - b.depth;
    if (a.phase === 2 && a.depth !== b.depth) return b.depth - a.depth;
    return comparePaths(a.c.path, b.c.path);
  });
  return keyed.map((k) => k.c);
}


/**
 * The entries whose verdict has any of the bits of mask, in order. A loop
 * of its own: a loop over every entry inside scanChanges made the engine
 * compile all of scanChanges for it (~10 ms of a core, which the process
 * then waited for at exit).
 */
function _flagged(state: Uint8Array, mask: number): number[] {
  const out: number[] = [];
  // Eight verdicts at a time (nearly all are 0): run once per scan, in code the engine has not optimised yet, a loop
  // per byte cost ~3 ms on 100,000 paths. A verdict is under 0x80, so eight of them are never -0 as a double.
  const n = state.length;
  const words = state.byteOffset % 8 === 0 ? n >>> 3 : 0;
  const w = new Float64Array(state.buffer, state.byteOffset, words);
  for (let k = 0; k < words; k++) {
    if (w[k] === 0) continue;
    for (let i = k * 8; i < k * 8 + 8; i++) if (state[i]! & mask) out.push(i);
  }
  for (let i = words * 8; i < n; i++) if (state[i]! & mask) out.push(i);
  return out;
}

/** Rows updated at load beyond which a worker's pass is not joined (they are checked again one by one after it). */
const _PATCHED_MAX = 16_384;


/**
 * From how many tracked paths a worker thread shares the lstat pass: below
 * that its start-up costs more than it saves. IMZ_SCAN_WORKER_MIN
 * overrides it (tests set 0 to use it on small trees).
 */
function _workerMin(): number {
  const v = Number(process.env.IMZ_SCAN_WORKER_MIN);
  return process.env.IMZ_SCAN_WORKER_MIN && Number.isInteger(v) && v >= 0 ? v : 20_000;
}
