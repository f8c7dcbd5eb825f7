import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, fsyncSync, futimesSync, fchmodSync, lstatSync, openSync, readSync, renameSync } from 'node:fs';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { fsyncDir, tempNameFor } from './atomic_fs.ts';
import { SERVER_DIR, checkPath } from './paths.ts';
import { utimeSeconds } from './tree_scan.ts';

/** One version a client-wins (or newest) conflict displaced on the server. */
export interface DisplacedVersion {
  /** Position in the list (1-based), what --restore takes. */
  n: number;
  path: string;
  kind: 'file' | 'symlink' | 'dir';
  version: number;
  hash?: string;
  size?: number;
  mode?: number;
  mtimeMs?: number;
  target?: string;
  /** File name under .imz-server/displaced/ holding the content (files only). */
  savedAs?: string;
  time: string;
}

function _stateDir(dir: string, stateDir?: string): string {
  return resolve(stateDir ?? join(dir, SERVER_DIR));
}

/** Lists the displaced versions kept in a server's state (run where the server's tree is). */
export async function listDisplaced(dir: string, stateDir?: string): Promise<DisplacedVersion[]> {
  let text: string;
  try {
    text = await readFile(join(_stateDir(dir, stateDir), 'displaced', 'index.jsonl'), 'utf8');
  } catch {
    return [];
  }
  const out: DisplacedVersion[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push({ n: out.length + 1, kind: 'file', ...JSON.parse(line) });
    } catch { /* a torn last line after a crash */ }
  }
  return out;
}

/**
 * Puts a displaced file version back at its path in the served tree (or at
 * `to`), atomically; the running server journals it like any direct write.
 * What is at the destination now is displaced in its turn, so nothing is lost.
 */
export async function restoreDisplaced(dir: string, n: number, opts: { stateDir?: string; to?: string } = {}): Promise<{ path: string; from: DisplacedVersion }> {
  const root = resolve(dir);
  const all = await listDisplaced(dir, opts.stateDir);
  const v = all.find((d) => d.n === n);
  if (!v) throw new ImzError(Codes.NOT_FOUND, `cannot restore displaced version ${n}: there are ${all.length} (see imz displaced ${dir})`);
  if (v.kind !== 'file' || !v.savedAs) throw new ImzError(Codes.UNSUPPORTED, `cannot restore displaced version ${n}: it is a ${v.kind}, recorded (${v.target ? `target ${v.target}` : 'no content'}) but not restorable as a file`);
  const dest = checkPath(opts.to ?? v.path, 'restore a displaced version');
  const displacedDir = join(_stateDir(dir, opts.stateDir), 'displaced');
  const src = join(displacedDir, v.savedAs);
  const abs = join(root, dest);
  // Never through a symlink: every parent must be a real directory.
  let cur = root;
  for (const seg of dirname(dest) === '.' ? [] : dirname(dest).split('/')) {
    cur = join(cur, seg);
    const st = lstatSync(cur, { throwIfNoEntry: false });
    if (!st || !st.isDirectory()) throw new ImzError(Codes.BAD_PATH, `cannot restore to ${dest}: ${cur} is not a directory`);
  }
  const existing = lstatSync(abs, { throwIfNoEntry: false });
  if (existing?.isFile()) {
    const keep = `${Date.now()}-restore-${basename(dest).slice(0, 100)}`;
    copyFileSync(abs, join(displacedDir, keep));
    await appendFile(join(displacedDir, 'index.jsonl'), JSON.stringify({ path: dest, kind: 'file', version: 0, size: existing.size, mode: existing.mode & 0o777, mtimeMs: existing.mtimeMs, savedAs: keep, time: new Date().toISOString(), note: 'replaced by a restore' }) + '\n');
  } else if (existing) {
    throw new ImzError(Codes.CONFLICT, `cannot restore to ${dest}: a ${existing.isDirectory() ? 'directory' : 'symlink'} is there (choose another place with --to)`);
  }
  await mkdir(dirname(abs), { recursive: true });
  const tmp = tempNameFor(abs);
  copyFileSync(src, tmp);
  const fd = openSync(tmp, 'r+');
  try {
    if (v.hash) {
      const h = createHash('sha256');
      const buf = Buffer.allocUnsafe(1024 * 1024);
      for (let k = readSync(fd, buf, 0, buf.length, 0), pos = k; k > 0; k = readSync(fd, buf, 0, buf.length, pos), pos += k) h.update(buf.subarray(0, k));
      if (h.digest('hex') !== v.hash) throw new ImzError(Codes.HASH_MISMATCH, `cannot restore displaced version ${n}: ${v.savedAs} does not match its recorded SHA-256`);
    }
    if (v.mode !== undefined) fchmodSync(fd, v.mode & 0o777);
    if (v.mtimeMs !== undefined) futimesSync(fd, utimeSeconds(v.mtimeMs), utimeSeconds(v.mtimeMs));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, abs);
  await fsyncDir(dirname(abs));
  return { path: dest, from: v };
}
