import { EventEmitter } from 'node:events';
import { type FSWatcher, watch } from 'node:fs';
import { join } from 'node:path';
import { isReservedName } from './paths.ts';

/** How long an announced event is waited for: past that, the next event on the path marks it again. */
const EXPECT_MS = 5000;
/**
 * Where one write makes exactly one event per name (inotify: a rename or
 * mkdir into a watched directory). Elsewhere (FSEvents coalesces, Deno maps
 * events its own way) nothing is announced and every event is scanned.
 */
const IS_DENO = typeof (globalThis as { Deno?: unknown }).Deno !== 'undefined';
const EXACT_EVENTS = process.platform === 'linux' && !IS_DENO;

/**
 * Watches a tree with one non-recursive watch per directory (libuv shares
 * one inotify descriptor among them; Node 20's recursive mode keeps state
 * per file and costs far more on large trees). Events are gathered for
 * debounceMs, then emitted once as 'dirty' (relative paths, '' for the
 * root) so bursts (an editor's save-via-rename, a checkout) cost one scan.
 * When watches run out (inotify limits are per user) it emits 'error' once
 * and stops adding watches: callers' periodic scans cover the rest.
 */
export class DirWatcher extends EventEmitter {
  readonly root: string;
  private _watchers = new Map<string, FSWatcher>();
  /** The inode each watch was set on, where the owner told it (see watchDir). */
  private _inos = new Map<string, number>();
  private _dirty = new Set<string>();
  private _timer: ReturnType<typeof setTimeout> | undefined;
  private _failed = false;
  private _closed = false;
  private _debounceMs: number;
  /** Events the owner caused itself and announced, per relative path, with the time they stop being waited for. */
  private _expected = new Map<string, { n: number; until: number }>();

  constructor(root: string, opts: { debounceMs?: number } = {}) {
    super();
    this.root = root;
    this._debounceMs = opts.debounceMs ?? 50;
  }

  /** Number of directories watched. */
  get size(): number {
    return this._watchers.size;
  }

  /** True while events are gathered but not yet emitted. */
  get pending(): boolean {
    return this._timer !== undefined;
  }

  /** True once watches ran out: only periodic scans see changes then. */
  get degraded(): boolean {
    return this._failed;
  }

  /**
   * Watches directory rel, found with inode ino: a watch follows its inode,
   * so one set on another directory that had this name (moved away, a new
   * one made in its place) is set again.
   */
  watchDir(rel: string, ino: number): void {
    const was = this._inos.get(rel);
    if (this._watchers.has(rel) && (was === undefined || was === ino)) {
      this._inos.set(rel, ino);
      return;
    }
    this.unwatch(rel);
    if (IS_DENO && was !== undefined) {
      // Deno drops a new watch on a path whose old one is closing: set a moment later, then the directory is scanned
      // again for what came in between.
      setTimeout(() => {
        if (this._closed || this._watchers.has(rel)) return;
        this.watch(rel);
        if (this._watchers.has(rel)) this._inos.set(rel, ino);
        this.mark(rel);
      }, 300).unref?.();
      return;
    }
    this.watch(rel);
    if (this._watchers.has(rel)) this._inos.set(rel, ino);
  }

  /** Stops watching rel and every directory under it (the owner removed them). */
  unwatchUnder(rel: string): void {
    const prefix = `${rel}/`;
    for (const p of [...this._watchers.keys()]) if (p === rel || p.startsWith(prefix)) this.unwatch(p);
  }

  /** Starts watching one directory (relative path, '' for the root). */
  watch(rel: string): void {
    if (this._closed || this._watchers.has(rel) || this._failed) return;
    try {
      const w = watch(rel === '' ? this.root : join(this.root, rel), (_event, filename) => {
        if (filename === null || filename === undefined) return this.mark(rel);
        const name = String(filename);
        if (isReservedName(name)) return;
        const path = rel === '' ? name : `${rel}/${name}`;
        if (this._expected.size > 0 && this._consume(path)) return;
        this.mark(path);
      });
      w.on('error', () => {
        // The directory went away (its parent's watch sees that) or the watch broke.
        this.unwatch(rel);
        this.mark(rel);
      });
      this._watchers.set(rel, w);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      this._failed = true;
      this.emit('error', new Error(`cannot watch ${rel || '.'}: ${(err as Error).message}; changes are found by the periodic scan only`));
    }
  }

  /** Stops watching one directory. */
  unwatch(rel: string): void {
    const w = this._watchers.get(rel);
    // Announced events under it will not come through this watch.
    if (w && this._expected.size > 0) for (const p of this._expected.keys()) if (p.startsWith(`${rel}/`) || rel === '') this._expected.delete(p);
    if (w) {
      w.close();
      this._watchers.delete(rel);
    }
    this._inos.delete(rel);
  }

  /** True when the directory is watched. */
  has(rel: string): boolean {
    return this._watchers.has(rel);
  }

  /**
   * Announces that the owner has just made one change to rel itself (a
   * rename or mkdir that yields exactly one event): that event is dropped
   * instead of marking rel, which the owner already knows the state of. Any
   * other event on rel, and this one if it comes too late, marks it as usual.
   */
  expect(rel: string): void {
    if (!EXACT_EVENTS || this._closed || this._failed) return;
    const slash = rel.lastIndexOf('/');
    if (!this._watchers.has(slash < 0 ? '' : rel.slice(0, slash))) return;
    const until = Date.now() + EXPECT_MS;
    const e = this._expected.get(rel);
    if (e) {
      e.n++;
      e.until = until;
    } else {
      if (this._expected.size >= 100_000) this._forgetExpired();
      this._expected.set(rel, { n: 1, until });
    }
  }

  // True (and one fewer expected) when an event on path was announced and is still waited for.
  private _consume(path: string): boolean {
    const e = this._expected.get(path);
    if (!e) return false;
    if (--e.n <= 0) this._expected.delete(path);
    return e.until >= Date.now();
  }

  private _forgetExpired(): void {
    const now = Date.now();
    for (const [p, e] of this._expected) if (e.until < now) this._expected.delete(p);
    // Announced events that never came (a watch lost in between): past a bound, every event marks again.
    if (this._expected.size >= 100_000) this._expected.clear();
  }

  /** Marks a path changed (as a watch event would). */
  mark(rel: string): void {
    if (this._closed) return;
    this._dirty.add(rel);
    if (!this._timer) this._timer = setTimeout(() => this._flush(), this._debounceMs);
  }

  private _flush(): void {
    this._timer = undefined;
    const paths = [...this._dirty];
    this._dirty.clear();
    if (paths.length > 0) this.emit('dirty', paths);
  }

  /** Closes every watch. */
  close(): void {
    this._closed = true;
    if (this._timer) clearTimeout(this._timer);
    this._timer = undefined;
    for (const w of this._watchers.values()) w.close();
    this._watchers.clear();
    this._inos.clear();
    this._expected.clear();
  }
}

/** Drops paths whose ancestor (or the root, '') is in the list: one scan of the ancestor covers them. */
export function topmostPaths(paths: string[]): string[] {
  const set = new Set(paths);
  if (set.has('')) return [''];
  return paths.filter((p) => {
    for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) if (set.has(p.slice(0, i))) return false;
    return true;
  });
}
