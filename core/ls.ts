import { Codes, ImzError } from '../protocol/errors.ts';
import { EntryType } from '../protocol/messages.ts';
import type { IndexEntry } from './index_model.ts';
import { comparePaths, parentOf } from './paths.ts';
import { Replica } from './replica.ts';
import { TYPE_NAMES, replicaPath } from './replica_cache.ts';

/** One entry as `imz ls` shows it. */
export interface LsEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink';
  size: number;
  version: number;
  mtimeMs: number;
  /** False for a file whose content is not in the replica (on demand). */
  local: boolean;
  target?: string;
}

/**
 * Lists a directory of the replica from its index (no server needed): each
 * child's type, size, version, and whether its content is here. A file
 * path lists that file.
 */
export async function listReplica(dir: string, path = ''): Promise<LsEntry[]> {
  const replica = await Replica.open(dir);
  const rel = replicaPath(replica, dir, path, 'list');
  // One index bucket for a path; the whole index only to list a directory (its children are in every bucket).
  const self = rel === '' ? undefined : await replica.get(rel);
  if (rel !== '' && !self) throw new ImzError(Codes.NOT_FOUND, `cannot list ${path}: no such path in the replica (run \`imz pull\` to refresh it)`);
  if (self && self.type !== EntryType.DIR) return [_lsEntry(rel, self)];
  const all = await replica.all();
  const out: LsEntry[] = [];
  for (const [p, e] of all) if (p !== rel && parentOf(p) === rel) out.push(_lsEntry(p, e));
  return out.sort((a, b) => comparePaths(a.path, b.path));
}

function _lsEntry(path: string, e: IndexEntry): LsEntry {
  const out: LsEntry = { path, type: TYPE_NAMES[e.type] ?? 'file', size: e.type === EntryType.FILE ? e.size : 0, version: e.version, mtimeMs: e.mtimeMs, local: !e.remote };
  if (e.type === EntryType.SYMLINK) out.target = e.target;
  return out;
}
