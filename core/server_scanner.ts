import { EventEmitter } from 'node:events';
import { lstatSync } from 'node:fs';
import { lstat, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Change, EntryType } from '../protocol/messages.ts';
import { DirWatcher, topmostPaths } from './dir_watcher.ts';
import { hashFile } from './hash.ts';
import { IGNORE_FILE, loadIgnore } from './ignore_rules.ts';
import { pathProblem } from './paths.ts';
import type { PendingChange, ServerState, TableEntry } from './server_state.ts';
import { type FsEntry, type IgnoreFn, type SkippedPath, sameMtime, statEntry, walkTree } from './tree_scan.ts';

/** Changes journalled at once during a long scan. */
const SCAN_CHUNK = 5000;
/** A verification rescan waits at least this many times as long as the last one took (at most 2 % of the time scanning). */
const RESCAN_DUTY = 50;
/** The longest wait a timer takes (2^31 - 1 ms, ~24.8 days): a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * How long after a verification rescan that took lastMs the next one
 * starts: rescanMs, and at least RESCAN_DUTY times lastMs; at most the
 * longest wait a timer takes.
 */
export function rescanDelayMs(rescanMs: number, lastMs: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(rescanMs, RESCAN_DUTY * lastMs));
}

/** Options of the scanner. */
export interface ScannerOptions {
  /** Milliseconds to gather watcher events before scanning them (default 50). */
  debounceMs?: number;
  /**
   * Milliseconds from the end of one full verification rescan to the start of
   * the next (default 60 s; 0 turns them off); at least RESCAN_DUTY times as
   * long as the last one took.
   */
  rescanMs?: number;
  /** Paths whose content is deliberately absent (an on-demand mirror): never journalled as removed for being missing. */
  virtual?: (path: string) => boolean;
}

/**
 * Captures writes made directly in the served tree: a full scan at start, a
 * recursive watcher whose events trigger targeted rescans, and a periodic
 * full rescan for whatever the watcher misses. Each difference between the
 * tree and the version table becomes a journal record.
 *
 * Events: 'skipped' (SkippedPath), 'error' (Error), 'scanned' (number of changes).
 */
export class ServerScanner extends EventEmitter {
  readonly root: string;
  readonly state: ServerState;
  private _exclude: Set<string>;
  private _ignore: IgnoreFn | undefined;
  private _dw: DirWatcher;
  private _started = false;
  private _rescanTimer: ReturnType<typeof setTimeout> | undefined;
  private _chain: Promise<unknown> = Promise.resolve();
  private _closed = false;
  private _debounceMs: number;
  private _rescanMs: number;
  private _virtual: ((path: string) => boolean) | undefined;

  constructor(root: string, state: ServerState, opts: ScannerOptions = {}) {
    super();
    this.root = resolve(root);
    this.state = state;
    this._exclude = new Set([resolve(state.dir)]);
    this._debounceMs = opts.debounceMs ?? 50;
    this._dw = new DirWatcher(this.root, { debounceMs: this._debounceMs });
    this._dw.on('dirty', (paths: string[]) => this._onDirty(paths));
    this._dw.on('error', (e: Error) => this.emit('error', e));
    this._rescanMs = opts.rescanMs ?? 60_000;
    this._virtual = opts.virtual;
  }

  /** Runs the start-up scan, then watches. Resolves after the first scan is journalled. */
  async start(): Promise<number> {
    this._ignore = await loadIgnore(this.root);
    const n = await this.scan('');
    this._watchAll();
    this._scheduleRescan(0);
    return n;
  }

  // The next verification rescan: rescanMs after the last one ended, and at least RESCAN_DUTY times as long as it
  // took, so that on a big tree (a second or more of CPU per full scan) the rescans never keep the server busy.
  private _scheduleRescan(lastMs: number): void {
    if (this._rescanMs <= 0 || this._closed) return;
    this._rescanTimer = setTimeout(() => {
      let took = 0;
      // (Timed from its own start: not the wait behind a push being applied.)
      this.exclusive(async () => {
        const t = performance.now();
        try {
          await this._scan('');
        } finally {
          took = performance.now() - t;
        }
      }).catch((e) => this.emit('error', e)).finally(() => this._scheduleRescan(took));
    }, rescanDelayMs(this._rescanMs, lastMs));
    this._rescanTimer.unref?.();
  }

  private _watchAll(): void {
    this._dw.watch('');
    for (const [p, t] of this.state.table) if (t.type === EntryType.DIR) this._dw.watchDir(p, t.ino);
  }

  private _markDirty(rel: string): void {
    this._dw.mark(rel);
  }

  private _onDirty(paths: string[]): void {
    // Scan each dirty path once: an ancestor's scan covers its descendants.
    for (const p of topmostPaths(paths)) void this.scan(p).catch((e) => this.emit('error', e));
  }

  /** Compares root/sub (and everything under it) with the table; journals the differences. */
  scan(sub: string): Promise<number> {
    const run = this._chain.then(() => this._scan(sub));
    this._chain = run.catch(() => {});
    return run;
  }

  private async _scan(sub: string): Promise<number> {
    if (this._closed) return 0;
    if (sub === IGNORE_FILE || sub === '') this._ignore = await loadIgnore(this.root);
    if (sub !== '' && pathProblem(sub)) return 0;
    // A path under an ignored directory stays ignored.
    if (sub !== '' && this._isIgnoredPath(sub)) return 0;
    const seen = new Set<string>();
    const upserts: PendingChange[] = [];
    const retry: string[] = [];
    const onSkip = (s: SkippedPath) => this.emit('skipped', s);
    let committed = 0;
    const consider = async (e: FsEntry) => {
      seen.add(e.path);
      // Watched as soon as it is seen, before the walk lists it: what is written into it from then on makes an
      // event under its name (a watch set after the listing missed what came in between).
      if (e.type === EntryType.DIR && this._dw.size > 0) this._dw.watchDir(e.path, e.ino);
      const c = await this._diff(e);
      if (c === 'retry') retry.push(e.path);
      else if (c) upserts.push(c);
      // A first scan of a big tree journals in chunks, so memory stays bounded.
      // Type changes wait for the end: they must follow the removal of what they replace.
      if (upserts.length >= SCAN_CHUNK) {
        const now = upserts.filter((u) => u.change !== Change.RETYPE);
        const later = upserts.filter((u) => u.change === Change.RETYPE);
        upserts.length = 0;
        upserts.push(...later);
        await this.state.commit(now);
        committed += now.length;
      }
    };
    if (sub !== '') {
      const top = await statEntry(this.root, sub);
      if (typeof top === 'string') onSkip({ path: sub, reason: top });
      else if (top && this._ignore?.(sub, top.type === EntryType.DIR)) {
        seen.add(sub); // ignored now: neither journalled nor, if it was tracked, reported removed here
      } else if (top) {
        await consider(top);
        if (top.type === EntryType.DIR) for await (const e of walkTree(this.root, sub, { ignore: this._ignore, exclude: this._exclude, onSkip })) await consider(e);
      }
    } else {
      // At start-up nothing of ours is writing: temp files are a crash's leftovers.
      const temps: string[] = [];
      const onTemp = this._started ? undefined : (p: string) => temps.push(p);
      for await (const e of walkTree(this.root, '', { ignore: this._ignore, exclude: this._exclude, onSkip, onTemp })) await consider(e);
      for (const t of temps) await rm(join(this.root, t), { force: true, recursive: true }).catch(() => {});
      this._started = true;
    }
    const retrySet = new Set(retry);
    const removals: PendingChange[] = [];
    const prefix = sub === '' ? '' : `${sub}/`;
    const considerRemoval = (p: string, t: TableEntry) => {
      if (seen.has(p) || retrySet.has(p)) return;
      if (t.type === EntryType.FILE && this._virtual?.(p)) return;
      removals.push({ change: t.type === EntryType.DIR ? Change.RMDIR : Change.REMOVE, path: p, state: undefined });
    };
    const known = sub === '' ? undefined : this.state.table.get(sub);
    if (sub !== '' && known?.type !== EntryType.DIR) {
      // Not a known directory, so nothing tracked lies under it: only the path
      // itself can have gone. (The common case, one watcher event per file
      // written, never walks the whole table.)
      if (known) considerRemoval(sub, known);
    } else {
      for (const [p, t] of this.state.table) {
        if (sub !== '' && p !== sub && !p.startsWith(prefix)) continue;
        considerRemoval(p, t);
      }
    }
    // Deepest first, so a directory's contents go before it.
    removals.sort((a, b) => (a.path < b.path ? 1 : a.path > b.path ? -1 : 0));
    const changes = [...removals, ...upserts];
    if (changes.length > 0) await this.state.commit(changes);
    if (this._dw.size > 0 || sub !== '') {
      for (const c of removals) if (this._dw.has(c.path)) this._dw.unwatch(c.path);
      for (const c of upserts) if (c.state?.type === EntryType.DIR) this._dw.watch(c.path);
    }
    for (const p of retry) setTimeout(() => this._markDirty(p), 200).unref?.();
    this.emit('scanned', committed + changes.length);
    return committed + changes.length;
  }

  private _isIgnoredPath(p: string): boolean {
    if (!this._ignore) return false;
    const segs = p.split('/');
    for (let i = 1; i < segs.length; i++) if (this._ignore(segs.slice(0, i).join('/'), true)) return true;
    return false;
  }

  // The change that brings the table in line with e, 'retry' when the file
  // is being written right now, or undefined when nothing changed.
  private async _diff(e: FsEntry): Promise<PendingChange | 'retry' | undefined> {
    const t = this.state.table.get(e.path);
    if (e.type === EntryType.DIR) {
      if (t && t.type === EntryType.DIR) {
        if (t.mode === e.mode) return undefined;
        return { change: Change.META, path: e.path, state: { ...t, mode: e.mode, mtimeMs: e.mtimeMs, ino: e.ino } };
      }
      return { change: t ? Change.RETYPE : Change.MKDIR, path: e.path, state: _state(e, '') };
    }
    if (e.type === EntryType.SYMLINK) {
      if (t && t.type === EntryType.SYMLINK && t.target === e.target) return undefined;
      return { change: t && t.type !== EntryType.SYMLINK ? Change.RETYPE : Change.SYMLINK, path: e.path, state: _state(e, '') };
    }
    if (t && t.type === EntryType.FILE && t.size === e.size && sameMtime(t.mtimeMs, e.mtimeMs) && (t.ino === 0 || t.ino === e.ino)) {
      if (t.mode === e.mode) {
        if (t.ino === 0) t.ino = e.ino; // learn the inode once, no record needed
        return undefined;
      }
      return { change: Change.META, path: e.path, state: { ...t, mode: e.mode, ino: e.ino } };
    }
    let hash: Uint8Array;
    try {
      hash = await hashFile(join(this.root, e.path));
      const after = await lstat(join(this.root, e.path));
      if (after.size !== e.size || after.mtimeMs !== e.mtimeMs || after.ino !== e.ino) return 'retry';
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return 'retry';
      if (code === 'EACCES' || code === 'EPERM') {
        this.emit('skipped', { path: e.path, reason: 'permission denied' });
        return undefined;
      }
      throw err;
    }
    const h = Buffer.from(hash).toString('latin1');
    if (t && t.type === EntryType.FILE && t.hash === h) {
      if (t.mode === e.mode && sameMtime(t.mtimeMs, e.mtimeMs)) {
        t.ino = e.ino;
        return undefined;
      }
      return { change: Change.META, path: e.path, state: { ...t, mode: e.mode, mtimeMs: e.mtimeMs, ino: e.ino, size: e.size } };
    }
    return { change: !t ? Change.CREATE : t.type === EntryType.FILE ? Change.MODIFY : Change.RETYPE, path: e.path, state: _state(e, h) };
  }

  /**
   * Runs fn with no scan in progress or starting: the server's own writes
   * (reintegration) update the table before any scan can see them, so they
   * are never journalled twice.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this._chain.then(fn);
    this._chain = run.catch(() => {});
    return run;
  }

  /**
   * Scans one path at once, not queued behind other scans: only for a caller
   * running inside exclusive() (the reintegrator, about to change a path
   * that a local program changed and the watcher has not reported yet).
   */
  scanNow(sub: string): Promise<number> {
    return this._scan(sub);
  }

  /**
   * Tells the watcher that the server itself just created or replaced rel
   * (one rename or mkdir, journalled already): its event is not scanned.
   */
  expectWrite(rel: string): void {
    if (this._dw.size > 0) this._dw.expect(rel);
  }

  /** Starts watching a directory the server itself created. */
  watchCreated(rel: string): void {
    if (this._dw.size === 0) return;
    // With its inode: a watch left on another directory of that name (moved away, or removed) is set again.
    const st = lstatSync(join(this.root, rel), { throwIfNoEntry: false });
    if (st?.isDirectory()) this._dw.watchDir(rel, st.ino);
  }

  /** Stops watching a directory the server itself removed, and what was under it. */
  forgetRemoved(rel: string): void {
    if (this._dw.size > 0) this._dw.unwatchUnder(rel);
  }

  /** Waits for scans in progress and queued ones. */
  async idle(): Promise<void> {
    for (;;) {
      const c = this._chain;
      await c;
      if (c === this._chain && !this._dw.pending) return;
      if (this._dw.pending) await new Promise((r) => setTimeout(r, this._debounceMs));
    }
  }

  /** Stops watching; a scan in progress finishes. */
  async close(): Promise<void> {
    this._closed = true;
    if (this._rescanTimer) clearTimeout(this._rescanTimer);
    this._dw.close();
    await this._chain;
  }
}

function _state(e: FsEntry, hash: string): Omit<TableEntry, 'version'> {
  return { type: e.type, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, hash, target: e.target, ino: e.ino };
}
