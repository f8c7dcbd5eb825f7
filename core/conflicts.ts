import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { extname, join } from 'node:path';
import type { Entry } from '../protocol/messages.ts';
import { writeFileAtomic } from './atomic_fs.ts';
import { toHex } from './hash.ts';

/** Conflict classes, after Coda (local side first, server side second). */
export type ConflictClass = 'update/update' | 'update/remove' | 'remove/update' | 'create/create' | 'type-change' | 'dir-removed';

/** One side of a conflict. */
export interface ConflictSide {
  type: number;
  version?: number;
  hash?: string;
  size?: number;
  mtimeMs?: number;
  target?: string;
  /** Permission bits, when the detector knew them (resolve falls back to the kept blob's mode). */
  mode?: number;
}

/** A conflict kept in .imz/conflicts/ until resolved. */
export interface ConflictRecord {
  path: string;
  class: ConflictClass;
  /** Where it was found: at pull (replay) or at push (reintegration). */
  at: 'pull' | 'push';
  local: ConflictSide | null;
  server: ConflictSide | null;
  /** The server's content, kept in the replica (relative to .imz/). */
  serverBlob?: string;
  /** server-wins: where the local version was kept (relative to the replica root). */
  localCopy?: string;
  /** Set when a policy already settled it (kept for the record, listed, not outstanding). */
  resolvedBy?: string;
  /** client-wins/newest: where the server keeps the version that was replaced (under its state dir). */
  serverDisplaced?: string;
  detected: string;
}

/** File name of a conflict record: a hash of the path keeps any name safe. */
export function conflictFileName(path: string): string {
  return createHash('sha256').update(path).digest('hex').slice(0, 32) + '.json';
}

/** Saves (or replaces) the conflict record of a path. */
export async function saveConflict(stateDir: string, c: ConflictRecord): Promise<void> {
  const dir = join(stateDir, 'conflicts');
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(join(dir, conflictFileName(c.path)), JSON.stringify(c, null, 2) + '\n');
}

/** Lists the recorded conflicts, by path. */
export async function listConflicts(stateDir: string): Promise<ConflictRecord[]> {
  const dir = join(stateDir, 'conflicts');
  // Synchronous: usually an empty directory, read at every pull and followed batch.
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: ConflictRecord[] = [];
  for (const n of names) {
    if (!n.endsWith('.json')) continue;
    try {
      out.push(JSON.parse(readFileSync(join(dir, n), 'utf8')));
    } catch { /* a record being written: skip */ }
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : 1));
}

/** Conflicts still waiting for a person (not settled by a policy). */
export function outstanding(records: ConflictRecord[]): ConflictRecord[] {
  return records.filter((c) => !c.resolvedBy);
}

/** Removes a path's conflict record (its kept blobs stay until gc). */
export async function clearConflict(stateDir: string, path: string): Promise<void> {
  await rm(join(stateDir, 'conflicts', conflictFileName(path)), { force: true });
}

/** The side of a conflict that a server's entry is. */
export function sideOfEntry(e: Entry): ConflictSide {
  return { type: e.type, version: e.version, hash: e.hash.length ? toHex(e.hash) : undefined, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, target: e.target || undefined };
}

/** Where the server's content of a conflicting file is kept, relative to .imz/. */
export function blobPath(hashHex: string): string {
  return join('conflicts', 'blobs', hashHex);
}

function _withTag(path: string, tag: string): string {
  const ext = extname(path);
  const stem = ext && ext !== path && !path.endsWith(`/${ext}`) ? path.slice(0, -ext.length) : path;
  return `${stem}${tag}${ext}`;
}

/** Where server-wins keeps the local version: name.imz-conflict-<replica8>-<version>.ext (never pushed unless renamed). */
export function conflictCopyName(path: string, replicaId: string, version: number): string {
  return _withTag(path, `.imz-conflict-${replicaId.slice(0, 8)}-${version}`);
}

/** Where keep-both stores the client's version: name.imz-keep-<replica8>-<version>.ext (replicated like any file). */
export function keepName(path: string, replicaId: string, version: number): string {
  return _withTag(path, `.imz-keep-${replicaId.slice(0, 8)}-${version}`);
}
