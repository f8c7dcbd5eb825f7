import { randomBytes } from 'node:crypto';
import { closeSync, fdatasync, fdatasyncSync, fsync, fsyncSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { TMP_PREFIX } from './paths.ts';

/** Runs fn over items with at most limit calls in flight. */
export async function inParallel<T>(items: T[], limit: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  const worker = async () => {
    while (i < items.length) await fn(items[i++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** fsync (fdatasync with data) through the thread pool: many of them in flight let a disk merge their flushes. */
export function fsyncFd(fd: number, data = false): Promise<void> {
  return new Promise((res, rej) => (data ? fdatasync : fsync)(fd, (err) => (err ? rej(err) : res())));
}

// Memory-backed file systems, whose fsync does nothing (statfs f_type).
const _RAM_FS = new Set([0x01021994 /* tmpfs */, 0x858458f6 /* ramfs */]);

/**
 * False when dir is on a memory-backed file system, where an fsync is a
 * no-op: not worth a thread-pool round trip each. True when unsure.
 */
export function fsyncCostsIo(dir: string): boolean {
  try {
    return !_RAM_FS.has(statfsSync(dir).type);
  } catch {
    return true; // no statfs (an older runtime): assume a disk
  }
}

/** fsyncs a directory so a rename or create in it is durable. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // Some file systems refuse fsync on directories; the rename is still atomic.
  } finally {
    await fh?.close();
  }
}

// One random tag per process plus a counter: unique names without a
// random-number call per file.
const _tag = randomBytes(4).toString('hex');
let _counter = 0;

/** A file's bytes; undefined when there is no such file. */
export function readFileOrNot(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return undefined;
  }
}

/** A fresh temporary name beside path (same directory, so rename is atomic). */
export function tempNameFor(path: string): string {
  return join(dirname(path), `${TMP_PREFIX}${_tag}${(_counter++).toString(36)}-${basename(path).slice(0, 40)}`);
}

/** fsyncs a directory synchronously (for small state writes, where a thread-pool round trip costs more). */
export function fsyncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on directories; the rename is still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Writes a small state file atomically: temp file in the same directory,
 * fsync, rename, fsync the directory. Readers see the old or the new bytes.
 * Synchronous calls: state files are small, and a follower writes one per
 * applied batch, where thread-pool round trips would dominate.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string, opts: { durable?: boolean } = {}): Promise<void> {
  const durable = opts.durable ?? true;
  const tmp = tempNameFor(path);
  const fd = openSync(tmp, 'wx', 0o644);
  try {
    writeFileSync(fd, data);
    if (durable) fdatasyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  if (durable) fsyncDirSync(dirname(path));
}

/**
 * A file-system error met while `action` wrote under `where` (a replica
 * root), as one line that says what failed, where, and what to do: a full
 * disk or quota (IMZ_NO_SPACE), a read-only file system or a permission
 * refused (IMZ_IO). Any other error, and an ImzError, comes back unchanged.
 * The message promises a resumable re-run: state advances only after the
 * data it describes is on disk, so an interrupted run resumes.
 */
export function explainFsError(err: unknown, action: string, where: string): unknown {
  if (err instanceof ImzError || typeof err !== 'object' || err === null) return err;
  const e = err as NodeJS.ErrnoException & { dest?: string };
  const at = fsErrorPlace(e, where);
  const again = 'run the command again (it resumes where it stopped)';
  switch (e.code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new ImzError(Codes.NO_SPACE, `cannot ${action}: no space left on device (${e.code === 'EDQUOT' ? 'disk quota exceeded' : 'the disk is full'}) writing ${at}; free some space there, then ${again}`, { path: at, errno: e.code }, { cause: err });
    case 'EROFS':
      return new ImzError(Codes.IO, `cannot ${action}: ${at} is on a read-only file system; remount it read-write, then ${again}`, { path: at, errno: e.code }, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new ImzError(Codes.IO, `cannot ${action}: permission denied on ${at}${e.syscall ? ` (${e.syscall})` : ''}; fix its permissions (or run imz as its owner), then ${again}`, { path: at, errno: e.code }, { cause: err });
    case 'EISDIR': {
      // A rename names both ends: the directory is the one renamed onto.
      const dir = typeof e.dest === 'string' ? e.dest : at;
      return new ImzError(Codes.IO, `cannot ${action}: ${dir} is a directory where imz keeps a file; move it away, then ${again}`, { path: dir, errno: e.code }, { cause: err });
    }
    default:
      return err;
  }
}

/**
 * Where a file-system error happened, for a message: the path it names (for
 * a temp file of ours, the directory it was being written in), or fallback
 * when it names none (a write on an open file).
 */
export function fsErrorPlace(e: NodeJS.ErrnoException & { dest?: string }, fallback: string): string {
  // A rename or copy names both ends; the temp file's directory is the one written to.
  const p = typeof e.dest === 'string' && basename(e.dest).startsWith(TMP_PREFIX) ? e.dest : e.path;
  if (typeof p !== 'string' || p === '') return fallback;
  return basename(p).startsWith(TMP_PREFIX) ? `directory ${dirname(p)}` : p;
}

const _swept = new Set<string>();

/**
 * Removes the temp files (TMP_PREFIX) that a process killed in the middle
 * of writing a state file (index bucket, HEAD, conflict record) left in
 * dirs. Call it only under the lock that serialises the writers of those
 * dirs; each dir is swept once per process.
 */
export function sweepStateTemps(dirs: string[]): void {
  for (const d of dirs) {
    if (_swept.has(d)) continue;
    _swept.add(d);
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) if (n.startsWith(TMP_PREFIX)) rmSync(join(d, n), { force: true, recursive: true });
  }
}
