import { join } from 'node:path';
import { EntryType } from '../protocol/constants.ts';
import { hashFile, toHex } from './hash.ts';
import type { IndexEntry } from './index_model.ts';
import { type FsEntry, sameMtime, statEntrySync } from './tree_scan.ts';

/** How a replica path compares with what the index says was last synced. */
export type LocalKind = 'clean' | 'modified' | 'deleted' | 'created' | 'absent' | 'unsupported';

/** The local side of one path. */
export interface LocalState {
  kind: LocalKind;
  fs?: FsEntry;
  /** Hex SHA-256 when the file was hashed (only when stat could not tell). */
  hash?: string;
}

/** True when lstat facts match the index exactly, so the content needs no hashing. */
export function statMatches(fs: FsEntry, idx: IndexEntry): boolean {
  return fs.type === idx.type && fs.size === idx.size && sameMtime(fs.mtimeMs, idx.mtimeMs) && fs.ino === idx.ino && fs.mode === idx.mode && sameMtime(fs.ctimeMs, idx.ctimeMs) &&
    fs.target === idx.target;
}

/**
 * The facts to index for a file this replica just wrote (or hashed) with a
 * known size and mtime: its lstat when that still shows them, else the same
 * facts with a ctime that never matches. A write made between placing the
 * content and this lstat is then hashed again by the next scan, never indexed
 * as the content placed (a later edit would pass for synced, and never go up).
 */
export function placedFacts(fs: FsEntry, placed: { size: number; mtimeMs: number }): FsEntry {
  return fs.size === placed.size && sameMtime(fs.mtimeMs, placed.mtimeMs) ? fs : { ...fs, ctimeMs: 0 };
}

/**
 * Compares one path in the working tree with its index entry: lstat first,
 * hashing a file only when stat differs (git's approach).
 */
export async function localStateOf(root: string, path: string, idx: IndexEntry | undefined): Promise<LocalState> {
  const fs = statEntrySync(root, path);
  if (typeof fs === 'string') return { kind: 'unsupported' };
  if (!fs) return { kind: idx ? 'deleted' : 'absent' };
  if (!idx) return { kind: 'created', fs };
  if (statMatches(fs, idx)) return { kind: 'clean', fs };
  if (fs.type !== idx.type) return { kind: 'modified', fs };
  if (fs.type === EntryType.DIR) return { kind: fs.mode === idx.mode ? 'clean' : 'modified', fs };
  if (fs.type === EntryType.SYMLINK) return { kind: fs.target === idx.target ? 'clean' : 'modified', fs };
  if (fs.size !== idx.size) return { kind: 'modified', fs };
  const hash = toHex(await hashFile(join(root, path)));
  return { kind: hash === idx.hash && fs.mode === idx.mode ? 'clean' : 'modified', fs, hash };
}
