import { EventEmitter } from 'node:events';
import { type FSWatcher, watch } from 'node:fs';
import { join } from 'node:path';
import { isReservedName } from './paths.ts';

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
  private _dirty = new Set<string>();
  private _timer: ReturnType<typeof setTimeout> | undefined;
  private _failed = false;
  private _closed = false;
  private _debounceMs: number;

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

  /** Starts watching one directory (relative path, '' for the root). */
  watch(rel: string): void {
    if (this._closed || this._watchers.has(rel) || this._failed) return;
    try {
      const w = watch(rel === '' ? this.root : join(this.root, rel), (_event, filename) => {
        if (filename === null || filename === undefined) return this.mark(rel);
        const name = String(filename);
        if (isReservedName(name)) return;
        this.mark(rel === '' ? name : `${rel}/${name}`);
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
    if (w) {
      w.close();
      this._watchers.delete(rel);
    }
  }

  /** True when the directory is watched. */
  has(rel: string): boolean {
    return this._watchers.has(rel);
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
