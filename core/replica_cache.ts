import { lstatSync, unlinkSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type Entry, EntryType } from '../protocol/messages.ts';
import { fsyncDirSync } from './atomic_fs.ts';
import { fromHex, hashFile, toHex } from './hash.ts';
import type { IndexEntry } from './index_model.ts';
import { IGNORE_FILE } from './ignore_rules.ts';
import { checkPath, comparePaths } from './paths.ts';
import type { Replica } from './replica.ts';

// What on-demand replicas share: where content may go, what may be evicted,
// and the cache limit. Kept apart from get (pull, reconcile, fetcher) so that
// `imz cat` and `imz ls` load only what they use.

/** What evict did. */
export interface EvictSummary {
  evicted: string[];
  bytes: number;
  /** Files left as they are, with why (local changes are never dropped). */
  kept: { path: string; reason: string }[];
}

/** How `imz ls` names entry types. */
export const TYPE_NAMES: Record<number, 'file' | 'dir' | 'symlink'> = { [EntryType.FILE]: 'file', [EntryType.DIR]: 'dir', [EntryType.SYMLINK]: 'symlink' };

/** Drops the content of these files when unchanged (verified by hash unless in verified), keeping their entries as remote. */
export async function evictPaths(replica: Replica, paths: string[], out: EvictSummary, verified?: Set<string>): Promise<void> {
  const dirs = new Set<string>();
  for (const p of paths) {
    const idx = (await replica.get(p))!;
    const abs = join(replica.root, p);
    const why = verified?.has(p) ? undefined : await whyKept(replica, p, idx);
    if (why) {
      out.kept.push({ path: p, reason: why });
      continue;
    }
    unlinkSync(abs);
    dirs.add(dirname(abs));
    await replica.set(p, { ...idx, ctimeMs: 0, ino: 0, remote: true, fetchedMs: undefined });
    out.evicted.push(p);
    out.bytes += idx.size;
  }
  for (const d of dirs) fsyncDirSync(d);
  await replica.flushIndex();
}

// Why a file's local content must stay (undefined: it is exactly what was fetched, verified by hash).
async function whyKept(replica: Replica, p: string, idx: IndexEntry): Promise<string | undefined> {
  if (!parentsAreDirs(replica.root, p)) return 'a parent is not a directory here';
  const abs = join(replica.root, p);
  const st = lstatSync(abs, { throwIfNoEntry: false });
  if (!st) return 'deleted here (push or pull first)';
  if (!st.isFile()) return 'no longer a file here';
  if ((st.mode & 0o7777) !== idx.mode || st.size !== idx.size || toHex(await hashFile(abs)) !== idx.hash) return 'it has local changes (push them first)';
  return undefined;
}

/**
 * Evicts least recently fetched, unchanged files until the fetched content
 * fits the replica's cache limit (maxCache in .imz/config); never those in protect.
 */
export async function enforceCacheLimit(replica: Replica, protect: Set<string>): Promise<string[]> {
  const max = replica.config.maxCache;
  if (!max || max <= 0) return [];
  const cached: [string, IndexEntry][] = [];
  let total = 0;
  for (const [p, e] of await replica.all()) {
    if (e.type === EntryType.FILE && !e.remote && e.fetchedMs && p !== IGNORE_FILE) {
      cached.push([p, e]);
      total += e.size;
    }
  }
  if (total <= max) return [];
  cached.sort((a, b) => a[1].fetchedMs! - b[1].fetchedMs! || comparePaths(a[0], b[0]));
  const picked: string[] = [];
  for (const [p, e] of cached) {
    if (total <= max) break;
    // A file with local changes never goes, and does not count as freed: the next one does.
    if (protect.has(p) || (await whyKept(replica, p, e))) continue;
    picked.push(p);
    total -= e.size;
  }
  const out: EvictSummary = { evicted: [], bytes: 0, kept: [] };
  await evictPaths(replica, picked, out, new Set(picked));
  return out.evicted;
}

/** True when every parent of rel under root is a real directory (never a symlink). */
export function parentsAreDirs(root: string, rel: string): boolean {
  let cur = '';
  for (const seg of rel.split('/').slice(0, -1)) {
    cur = cur === '' ? seg : `${cur}/${seg}`;
    if (!lstatSync(join(root, cur), { throwIfNoEntry: false })?.isDirectory()) return false;
  }
  return true;
}

/** An index entry as the wire Entry a fetch asks for. */
export function entryOf(path: string, e: IndexEntry): Entry {
  return { path, type: e.type, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, hash: e.type === EntryType.FILE ? fromHex(e.hash) : new Uint8Array(0), target: e.target, version: e.version };
}

/** A path given on the command line, relative to where the command runs, as a replica path. */
export function replicaPath(replica: Replica, dir: string, path: string, action: string): string {
  const abs = resolve(dir, path);
  const rel = relative(replica.root, abs).split('\\').join('/');
  if (rel === '') return '';
  if (rel.startsWith('..')) throw new ImzError(Codes.BAD_PATH, `cannot ${action} ${path}: it is outside the replica ${replica.root}`);
  return checkPath(rel, action);
}
