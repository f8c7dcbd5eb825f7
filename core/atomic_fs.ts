import { randomBytes } from 'node:crypto';
import { closeSync, fdatasyncSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { TMP_PREFIX } from './paths.ts';

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
