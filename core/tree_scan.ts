import type { Stats } from 'node:fs';
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { lstat, readlink } from 'node:fs/promises';
import { EntryType, type EntryTypeCode } from '../protocol/constants.ts';
import { TMP_PREFIX, inDir, isReservedName, pathProblem } from './paths.ts';

export { sameMtime } from './file_times.ts';

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
 * Seconds to hand to utimes for an mtime in ms. Kept inside the millisecond
 * it was in (the whole milliseconds are what a Deno server reports and what
 * people compare), to the nearest microsecond below its end, then nudged
 * half a microsecond up so the double of seconds the kernel takes never
 * lands just below the millisecond. Rounding to the nearest microsecond
 * alone moved a time at .9995 ms or later into the next millisecond.
 */
export function utimeSeconds(ms: number): number {
  const whole = Math.floor(ms);
  const us = Math.min(999, Math.round((ms - whole) * 1000));
  return (whole * 1000 + us + 0.5) / 1e6;
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
    st = await lstat(inDir(root, path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
  const target = st.isSymbolicLink() ? await readlink(inDir(root, path)) : '';
  return fsEntryFromStats(path, st, target);
}

/**
 * Synchronous lstat of one path inside root, without throwing for a missing
 * path (exceptions are costly when most paths are new, as in a clone).
 */
export function statEntrySync(root: string, path: string): FsEntry | string | undefined {
  let st: Stats | undefined;
  try {
    st = lstatSync(inDir(root, path), { throwIfNoEntry: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
  if (!st) return undefined;
  return fsEntryFromStats(path, st, st.isSymbolicLink() ? readlinkSync(inDir(root, path)) : '');
}

/** statEntrySync, with what imz cannot sync (a socket, a FIFO...) read as nothing there. */
export function fsEntryAt(root: string, path: string): FsEntry | undefined {
  const e = statEntrySync(root, path);
  return typeof e === 'string' ? undefined : e;
}

/** One entry of a directory listing, lstat'ed. */
export interface DirStat {
  rel: string;
  name: string;
  st: Stats;
}

/**
 * Lists one directory of the tree with lstat, synchronously (a thread-pool
 * round trip per lstat costs ten times the call). Drops imz's reserved names
 * (reporting its temp files to onTemp), excluded directories, names that are
 * not valid UTF-8 or not safe paths (to onSkip), and entries that vanished.
 * Ignore rules are the caller's: they differ between the server and the
 * replica scans. Undefined when the directory itself is gone.
 */
export function listDir(root: string, dir: string, opts: ScanOptions = {}, sorted = false): DirStat[] | undefined {
  const rootSlash = root.endsWith('/') ? root : `${root}/`;
  let names: string[];
  try {
    names = readdirSync(dir === '' ? root : rootSlash + dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
  if (sorted) names.sort();
  const out: DirStat[] = [];
  for (const name of names) {
    const rel = dir === '' ? name : `${dir}/${name}`;
    if (isReservedName(name)) {
      if (name.startsWith(TMP_PREFIX)) opts.onTemp?.(rel);
      continue;
    }
    if (opts.exclude?.has(rootSlash + rel)) continue;
    const problem = nameProblem(name, rel);
    if (problem) {
      opts.onSkip?.({ path: rel, reason: problem });
      continue;
    }
    const st = lstatSync(rootSlash + rel, { throwIfNoEntry: false });
    if (st) out.push({ rel, name, st }); // else it vanished mid-walk
  }
  return out;
}

/** Why a name read from directory listing cannot be replicated (rel is its path), or undefined. */
export function nameProblem(name: string, rel: string): string | undefined {
  // Node decodes invalid UTF-8 as U+FFFD; such a name cannot be named back.
  if (name.includes('\uFFFD')) return 'name is not valid UTF-8';
  return _mayBeUnsafe(name, rel) ? pathProblem(rel) : undefined;
}

/**
 * One name met in a listing of the tree (not a reserved name): its FsEntry,
 * a reason to skip it, or undefined when it vanished.
 */
export function listedEntry(root: string, rel: string, name: string): FsEntry | string | undefined {
  return nameProblem(name, rel) ?? statEntrySync(root, rel);
}

// Cheap pre-check: only long names or control characters can fail
// pathProblem for a name read from a directory (no '/', never '' or '.').
function _mayBeUnsafe(name: string, rel: string): boolean {
  return name.length > 85 || rel.length > 1365 || _CONTROL.test(name);
}
// eslint-disable-next-line no-control-regex
const _CONTROL = /[\u0000-\u001f\u007f]/;

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
    // Yield to the event loop between directories so a server keeps answering during a long scan.
    if (++dirsSinceYield >= 16) {
      dirsSinceYield = 0;
      await new Promise<void>((r) => setImmediate(r));
    }
    const entries = listDir(root, dir, opts, true);
    if (!entries) continue;
    const subdirs: string[] = [];
    for (const { rel, st } of entries) {
      if (opts.ignore?.(rel, st.isDirectory())) continue;
      let target = '';
      if (st.isSymbolicLink()) {
        try {
          target = readlinkSync(inDir(root, rel));
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
