import { closeSync, fstatSync, openSync, read, readSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { CacheOffer, Speculation } from './pass_job.ts';
import { REPLICA_DIR } from './paths.ts';

/** The scan cache's file in a replica's state directory. */
export const SCAN_CACHE_FILE = 'scan-cache';

/**
 * Reads a cache file into shared memory (where the runtime has it), so its
 * facts serve the scan and its worker in place; undefined when there is none.
 */
export function readScanCacheFile(file: string): Uint8Array | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    const bytes = _sharedBytes(size);
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

/** The root of the replica dir is in (the nearest directory up from it holding .imz/), or undefined (also when dir is not a directory). */
export function replicaRootOf(dir: string): string | undefined {
  let cur = resolve(dir);
  if (!statSync(cur, { throwIfNoEntry: false })?.isDirectory()) return undefined;
  for (;;) {
    if (statSync(join(cur, REPLICA_DIR), { throwIfNoEntry: false })?.isDirectory()) return cur;
    const up = dirname(cur);
    if (up === cur) return undefined;
    cur = up;
  }
}

/**
 * When the index was last written: the later of .imz/HEAD's mtime and the
 * mtime of .imz/index/ (renaming a bucket into place moves it), so a writer
 * that flushes the index without touching HEAD is covered too. Files whose
 * times are not older are racily clean.
 */
export function indexWriteTime(stateDir: string): number {
  let t = 0;
  for (const p of [join(stateDir, 'HEAD'), join(stateDir, 'index')]) {
    const st = statSync(p, { throwIfNoEntry: false });
    if (st && st.mtimeMs > t) t = st.mtimeMs;
  }
  return t;
}

/**
 * The scan cache file of the replica holding dir, for a pass worker (see
 * PassWorker): { root: undefined } when there is none, or it cannot be read.
 */
export function cacheOffer(dir: string): CacheOffer {
  try {
    const root = replicaRootOf(dir);
    if (root === undefined) return { root: undefined };
    const stateDir = join(root, REPLICA_DIR);
    const bytes = readScanCacheFile(join(stateDir, SCAN_CACHE_FILE));
    return bytes ? { root, bytes, refTime: indexWriteTime(stateDir) } : { root: undefined };
  } catch {
    return { root: undefined };
  }
}

/**
 * The scan cache file of the replica holding dir, read by the thread pool
 * into shared memory (the command's thread goes on loading meanwhile): a
 * Speculation without a pass, its checksum not checked yet; undefined when
 * there is none or it cannot be read.
 */
export async function prereadScanCache(dir: string): Promise<Speculation | undefined> {
  try {
    const root = replicaRootOf(dir);
    if (root === undefined) return undefined;
    const stateDir = join(root, REPLICA_DIR);
    const refTime = indexWriteTime(stateDir);
    const bytes = await _readShared(join(stateDir, SCAN_CACHE_FILE));
    return bytes && { root, bytes, refTime, unchecked: true };
  } catch {
    return undefined;
  }
}

// readScanCacheFile with its one long read in the thread pool: opened here, so that the read is under way at once
// (a chain of callbacks would wait for this thread at each step, and it is busy loading the CLI).
function _readShared(file: string): Promise<Uint8Array | undefined> {
  let fd: number;
  let size: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return Promise.resolve(undefined);
  }
  try {
    size = fstatSync(fd).size;
  } catch {
    closeSync(fd);
    return Promise.resolve(undefined);
  }
  const bytes = _sharedBytes(size);
  return new Promise((resolve) => {
    const more = (off: number): void => {
      if (off >= size) {
        closeSync(fd);
        return resolve(bytes);
      }
      read(fd, bytes, off, size - off, off, (err, k) => {
        if (err || k === 0) {
          closeSync(fd);
          return resolve(err ? undefined : bytes.subarray(0, off)); // shrank meanwhile: the checksum will say so
        }
        more(off + k);
      });
    };
    more(0);
  });
}

// Memory the scan and its worker can both read in place, where the runtime has shared memory.
function _sharedBytes(size: number): Uint8Array {
  return new Uint8Array(typeof SharedArrayBuffer === 'function' ? new SharedArrayBuffer(size) : new ArrayBuffer(size));
}

/**
 * True when the process's working directory is the tree's root (the CLI
 * enters it for a scan): lstat then takes paths relative to it, as git's
 * do, which saves the kernel the walk down to the root for every path.
 * Checked by identity too, so a root renamed away under the process is
 * not taken for the directory of the same name.
 */
export function isWorkingDir(root: string): boolean {
  let cwd: string;
  try {
    cwd = process.cwd();
  } catch {
    return false; // removed under the process
  }
  if (cwd !== root) return false;
  try {
    const here = statSync('.', { throwIfNoEntry: false });
    const there = statSync(root, { throwIfNoEntry: false });
    return here !== undefined && there !== undefined && here.ino === there.ino && here.dev === there.dev;
  } catch {
    return false; // not to be looked at (EACCES...): absolute paths, whose lstat reports it
  }
}
