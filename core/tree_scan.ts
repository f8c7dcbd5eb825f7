import type { Stats } from 'node:fs';
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { lstat, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { EntryType, type EntryTypeCode } from '../protocol/messages.ts';
import { TMP_PREFIX, isReservedName, pathProblem } from './paths.ts';

/** What a stat walk sees of one path (no content hash: hashing is the caller's choice). */
export interface FsEntry {
  path: string;
  type: EntryTypeCode;
  size: number;
  mode: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  target: string;
}

/** A path that cannot be replicated, with the reason. */
export interface SkippedPath {
  path: string;
  reason: string;
}

/** Decides whether a path is excluded (.imzignore); isDir lets 'dir/' patterns work. */
export type IgnoreFn = (path: string, isDir: boolean) => boolean;

/** Options of a walk. */
export interface ScanOptions {
  ignore?: IgnoreFn;
  /** Absolute paths never entered (a --state-dir inside the tree). */
  exclude?: Set<string>;
  onSkip?: (s: SkippedPath) => void;
  /** Called with each temporary file of imz's (a crash's leftover when no imz is writing). */
  onTemp?: (path: string) => void;
}

/**
 * True when two file times (ms) are the same instant as far as the runtimes
 * can tell: within a microsecond (setting a time goes through a double of
 * seconds), or equal to the millisecond when one side only has whole
 * milliseconds (Deno's mtimes), or to the second when one side only has
 * whole seconds (Deno's ctimes). So a replica or server used under both
 * Node and Deno does not see every file as changed.
 */
export function sameMtime(a: number, b: number): boolean {
  if (Math.abs(a - b) < 0.001) return true;
  if (Number.isInteger(a) || Number.isInteger(b)) {
    if (Math.floor(a) === Math.floor(b)) return true;
    if ((a % 1000 === 0 || b % 1000 === 0) && Math.floor(a / 1000) === Math.floor(b / 1000)) return true;
  }
  return false;
}

/**
 * Seconds to hand to utimes for an mtime in ms. Rounded to the microsecond
 * and nudged half a microsecond up, so the value stored (which the kernel
 * takes from a double) never lands just below the millisecond a server
 * that sees only whole milliseconds (Deno) reported.
 */
export function utimeSeconds(ms: number): number {
  return (Math.round(ms * 1000) + 0.5) / 1e6;
}

/** Turns lstat results into an FsEntry, or a reason to skip the path. */
export function fsEntryFromStats(path: string, st: Stats, target = ''): FsEntry | string {
  let type: EntryTypeCode;
  if (st.isFile()) type = EntryType.FILE;
  else if (st.isDirectory()) type = EntryType.DIR;
  else if (st.isSymbolicLink()) type = EntryType.SYMLINK;
  else if (st.isSocket()) return 'socket';
  else if (st.isFIFO()) return 'named pipe';
  else if (st.isCharacterDevice() || st.isBlockDevice()) return 'device';
  else return 'unsupported file type';
  return {
    path, type, size: type === EntryType.FILE ? st.size : 0, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs,
    ctimeMs: st.ctimeMs, ino: st.ino, target,
  };
}

/** lstat of one path inside root; undefined when it does not exist. */
export async function statEntry(root: string, path: string): Promise<FsEntry | string | undefined> {
  let st: Stats;
  try {
    st = await lstat(join(root, path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
  const target = st.isSymbolicLink() ? await readlink(join(root, path)) : '';
  return fsEntryFromStats(path, st, target);
}

/**
 * Synchronous lstat of one path inside root, without throwing for a missing
 * path (exceptions are costly when most paths are new, as in a clone).
 */
export function statEntrySync(root: string, path: string): FsEntry | string | undefined {
  let st: Stats | undefined;
  try {
    st = lstatSync(join(root, path), { throwIfNoEntry: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
  if (!st) return undefined;
  return fsEntryFromStats(path, st, st.isSymbolicLink() ? readlinkSync(join(root, path)) : '');
}

/**
 * Walks the tree under root/sub (sub "" for all), lstat only, never following
 * symlinks. Yields parents before their children. Reserved names (.imz,
 * .imz-server, temp files), ignored paths and excluded dirs are not entered;
 * special files and names that are not valid UTF-8 go to onSkip.
 */
export async function* walkTree(root: string, sub = '', opts: ScanOptions = {}): AsyncGenerator<FsEntry> {
  const stack: string[] = [sub];
  let dirsSinceYield = 0;
  while (stack.length > 0) {
    const dir = stack.pop()!;
    // Synchronous calls per directory: a thread-pool round trip per lstat
    // costs ten times the call itself. Yield to the event loop between
    // directories so a server keeps answering during a long scan.
    if (++dirsSinceYield >= 16) {
      dirsSinceYield = 0;
      await new Promise<void>((r) => setImmediate(r));
    }
    let names: string[];
    try {
      names = readdirSync(join(root, dir));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw err;
    }
    names.sort();
    const subdirs: string[] = [];
    for (const name of names) {
      const rel = dir === '' ? name : `${dir}/${name}`;
      if (isReservedName(name)) {
        if (name.startsWith(TMP_PREFIX)) opts.onTemp?.(dir === '' ? name : `${dir}/${name}`);
        continue;
      }
      const abs = join(root, rel);
      if (opts.exclude?.has(abs)) continue;
      // Node decodes invalid UTF-8 as U+FFFD; such a name cannot be named back.
      if (name.includes('\uFFFD')) {
        opts.onSkip?.({ path: rel, reason: 'name is not valid UTF-8' });
        continue;
      }
      const problem = pathProblem(rel);
      if (problem) {
        opts.onSkip?.({ path: rel, reason: problem });
        continue;
      }
      const st = lstatSync(abs, { throwIfNoEntry: false });
      if (!st) continue; // vanished mid-walk
      if (opts.ignore?.(rel, st.isDirectory())) continue;
      let target = '';
      if (st.isSymbolicLink()) {
        try {
          target = readlinkSync(abs);
        } catch {
          continue;
        }
      }
      const e = fsEntryFromStats(rel, st, target);
      if (typeof e === 'string') {
        opts.onSkip?.({ path: rel, reason: e });
        continue;
      }
      yield e;
      if (e.type === EntryType.DIR) subdirs.push(e.path);
    }
    // Depth-first, in name order: push in reverse so the first name pops first.
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
  }
}
