import { randomBytes } from 'node:crypto';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
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

/**
 * Writes a small state file atomically: temp file in the same directory,
 * fsync, rename, fsync the directory. Readers see the old or the new bytes.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string, opts: { durable?: boolean } = {}): Promise<void> {
  const durable = opts.durable ?? true;
  const tmp = tempNameFor(path);
  const fh = await open(tmp, 'wx', 0o644);
  try {
    await fh.writeFile(data);
    if (durable) await fh.datasync();
  } catch (err) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  if (durable) await fsyncDir(dirname(path));
}
