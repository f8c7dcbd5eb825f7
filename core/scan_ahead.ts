import { lstatSync, readdirSync, statSync } from 'node:fs';
import { EntryType } from '../protocol/constants.ts';
import { hashFileKeeping, toHex } from './hash.ts';
import { isReservedName } from './paths.ts';
import type { ScanCache } from './scan_cache.ts';
import { F_LISTED_CTIME, F_LISTED_MTIME, FACTS, isRemoteRow, typeOfFacts } from './scan_cache_model.ts';
import { type FsEntry, type IgnoreFn, listedEntry } from './tree_scan.ts';
import type { LocalChange, ScanChangesOptions } from './changes.ts';

/** What a file was when it was hashed ahead. */
interface _Hashed {
  hash: string;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

/**
 * Looks for new small files while the lstat pass runs, and hands their
 * content to onContent (a push uploads it): the server stages them while
 * the pass goes on, instead of waiting for the pass to end. It lists only
 * directories whose listing may hold something new (their mtime moved since
 * a listing found nothing new; a few thousand lstats on a tree of 100,000
 * files), and everything under new directories. It decides nothing: the
 * scan finds the same files again afterwards, and takes the hash made here
 * (see hashOf) instead of reading a file again.
 */
export class ScanAhead {
  private readonly _hashed = new Map<string, _Hashed>();
  private _stopped = false;
  private _run: Promise<void> = Promise.resolve();
  private readonly _root: string;
  private readonly _rootSlash: string;
  private readonly _cache: ScanCache;
  private readonly _ignore: IgnoreFn;
  private readonly _onContent: NonNullable<ScanChangesOptions['onContent']>;

  constructor(root: string, cache: ScanCache, ignore: IgnoreFn, onContent: NonNullable<ScanChangesOptions['onContent']>) {
    this._root = root;
    this._rootSlash = root.endsWith('/') ? root : `${root}/`;
    this._cache = cache;
    this._ignore = ignore;
    this._onContent = onContent;
  }

  /** Starts looking (runs between the pass's turns on this thread). */
  start(): void {
    // Only a head start: whatever fails here (a directory gone, a file unreadable) the scan meets again, and reports.
    this._run = this._walk().catch(() => {});
  }

  /** Resolves once it has looked everywhere it meant to (or was stopped). */
  whenDone(): Promise<void> {
    return this._run;
  }

  /** Stops looking, once the current file is handed over. */
  async stop(): Promise<void> {
    this._stopped = true;
    await this._run;
  }

  /** The hex hash of a new file hashed here, if it still has the lstat facts it had then. */
  hashOf(fs: FsEntry): string | undefined {
    const h = this._hashed.get(fs.path);
    if (!h || h.size !== fs.size || h.mtimeMs !== fs.mtimeMs || h.ctimeMs !== fs.ctimeMs || h.ino !== fs.ino) return undefined;
    return h.hash;
  }

  private async _walk(): Promise<void> {
    // Yield first: the pass starts its workers before this takes the thread.
    await new Promise<void>((r) => setImmediate(r));
    const dirs: string[] = [];
    const { paths, facts, rootListed } = this._cache.data;
    const rootSt = statSync(this._root);
    if (rootSt.mtimeMs !== rootListed[0] || rootSt.ctimeMs !== rootListed[1]) dirs.push('');
    for (let i = 0; i < paths.length; i++) {
      if (typeOfFacts(facts, i) !== EntryType.DIR || isRemoteRow(facts, i)) continue;
      const st = lstatSync(this._rootSlash + paths.at(i), { throwIfNoEntry: false });
      if (st?.isDirectory() && (st.mtimeMs !== facts[i * FACTS + F_LISTED_MTIME] || st.ctimeMs !== facts[i * FACTS + F_LISTED_CTIME])) dirs.push(paths.at(i));
    }
    // Depth first: the new directories found are walked as they are met.
    while (dirs.length > 0 && !this._stopped) {
      const dir = dirs.pop()!;
      let names: string[];
      try {
        names = readdirSync(dir === '' ? this._root : this._rootSlash + dir);
      } catch {
        continue;
      }
      for (const name of names) {
        if (this._stopped) return;
        if (isReservedName(name)) continue;
        const rel = dir === '' ? name : `${dir}/${name}`;
        if (this._cache.lookup(rel) >= 0) continue;
        const fs = listedEntry(this._root, rel, name);
        if (fs === undefined || typeof fs === 'string') continue;
        if (this._ignore(rel, fs.type === EntryType.DIR)) continue;
        if (fs.type === EntryType.DIR) dirs.push(rel);
        else if (fs.type === EntryType.FILE && fs.size <= this._onContent.upTo) await this._take(fs);
      }
    }
  }

  private async _take(fs: FsEntry): Promise<void> {
    const r = hashFileKeeping(this._rootSlash + fs.path, fs.size);
    if (r.data?.length !== fs.size) return; // changed since its lstat: the scan looks again
    const hash = toHex(r.hash);
    this._hashed.set(fs.path, { hash, size: fs.size, mtimeMs: fs.mtimeMs, ctimeMs: fs.ctimeMs, ino: fs.ino });
    const c: LocalChange = { kind: 'create', path: fs.path, base: 0, fs, hash };
    await this._onContent.take(c, r.data);
  }
}
