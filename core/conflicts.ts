import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { extname, join, posix } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import type { Entry } from '../protocol/messages.ts';
import { writeFileAtomic } from './atomic_fs.ts';
import { toHex } from './hash.ts';
import { MAX_NAME_BYTES, checkPath } from './paths.ts';

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
  /** The copies earlier conflicts on this path kept (settled by a policy, not resolved since): listed, never reused. */
  earlierCopies?: string[];
  /** Set when a policy already settled it (kept for the record, listed, not outstanding). */
  resolvedBy?: string;
  /** client-wins/newest: where the server keeps the version that was replaced (under its state dir). */
  serverDisplaced?: string;
  /** A directory the server's side took whole (ours moved aside) whose contents are not all here yet: taken again. */
  takingWhole?: boolean;
  detected: string;
}

/** File name of a conflict record: a hash of the path keeps any name safe. */
export function conflictFileName(path: string): string {
  return createHash('sha256').update(path).digest('hex').slice(0, 32) + '.json';
}

/**
 * Saves (or replaces) the conflict record of a path. The copies a replaced
 * record named (a policy's earlier conflict on the same path, never
 * resolved) stay named in the new one (earlierCopies), so that resolve
 * --list still shows where those versions are.
 */
export async function saveConflict(stateDir: string, c: ConflictRecord): Promise<void> {
  const dir = join(stateDir, 'conflicts');
  await mkdir(dir, { recursive: true });
  const file = join(dir, conflictFileName(c.path));
  let old: unknown;
  try {
    old = JSON.parse(readFileSync(file, 'utf8'));
  } catch { /* none (or torn: nothing to carry) */ }
  // (A damaged record carries nothing: spreading what it held failed every push that met the conflict again.)
  if (!_wellFormed(old)) old = undefined;
  const prev = old as ConflictRecord | undefined;
  const earlier = [...(prev?.earlierCopies ?? []), ...(prev?.localCopy ? [prev.localCopy] : [])].filter((p) => typeof p === 'string' && p !== c.localCopy);
  if (earlier.length > 0) c = { ...c, earlierCopies: [...new Set([...earlier, ...(c.earlierCopies ?? [])])] };
  await writeFileAtomic(file, JSON.stringify(c, null, 2) + '\n');
}

/**
 * name if nothing is there in root (nor taken, if given), else the first of name-2, name-3...
 * (before the extension) that is free: a conflict copy or a kept version
 * never replaces another (two conflicts on one path at the same server
 * version would get the same name).
 */
export function freeName(root: string, name: string, taken?: (candidate: string) => boolean): string {
  const ext = posix.extname(name);
  const stem = ext && !name.endsWith(`/${ext}`) ? name.slice(0, -ext.length) : name;
  for (let n = 1; n < 1000; n++) {
    const candidate = n === 1 ? name : _fit(stem, `-${n}${stem === name ? '' : ext}`);
    checkPath(candidate, 'keep a version');
    if (!lstatSync(join(root, candidate), { throwIfNoEntry: false }) && !taken?.(candidate)) return candidate;
  }
  throw new ImzError(Codes.IO, `cannot find a free name for ${name}`);
}

/** Lists the recorded conflicts, by path. */
export async function listConflicts(stateDir: string, damaged?: string[]): Promise<ConflictRecord[]> {
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
    let c: unknown;
    try {
      c = JSON.parse(readFileSync(join(dir, n), 'utf8'));
    } catch {
      c = undefined;
    }
    // (Written whole, by rename: one that does not read as a record was damaged. Taken as one, it failed every
    // command with a TypeError; skipped, and named to whoever asks, the push or pull that meets the path again
    // records its conflict anew.)
    if (_wellFormed(c)) out.push(c);
    else damaged?.push(join('conflicts', n));
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : 1));
}

// Every field a reader uses, of the type it expects (a field of another type failed resolve, or reached the index).
function _wellFormed(c: unknown): c is ConflictRecord {
  if (c === null || typeof c !== 'object') return false;
  const r = c as Record<string, unknown>;
  const opt = (x: unknown, type: 'string' | 'number' | 'boolean') => x === undefined || typeof x === type;
  const side = (x: unknown) => {
    if (x === undefined || x === null) return true;
    if (typeof x !== 'object') return false;
    const s = x as Record<string, unknown>;
    return typeof s.type === 'number' && opt(s.version, 'number') && opt(s.hash, 'string') && opt(s.size, 'number') && opt(s.mtimeMs, 'number') &&
      opt(s.target, 'string') && opt(s.mode, 'number');
  };
  return typeof r.path === 'string' && r.path !== '' && typeof r.class === 'string' && side(r.local) && side(r.server) &&
    opt(r.localCopy, 'string') && opt(r.serverBlob, 'string') && opt(r.resolvedBy, 'string') && opt(r.serverDisplaced, 'string') && opt(r.takingWhole, 'boolean') &&
    (r.earlierCopies === undefined || (Array.isArray(r.earlierCopies) && r.earlierCopies.every((p) => typeof p === 'string')));
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
  let ext = extname(path);
  let stem = ext && ext !== path && !path.endsWith(`/${ext}`) ? path.slice(0, -ext.length) : path;
  // An extension that leaves no room for the tag is kept in the stem (and cut with it).
  if (Buffer.byteLength(tag + ext) > MAX_NAME_BYTES / 2) {
    stem = path;
    ext = '';
  }
  return _fit(stem, `${tag}${ext}`);
}

// stem + suffix, the last name of stem cut short (at a character's edge) so that the name fits in MAX_NAME_BYTES: a
// conflict copy of a long name was refused as too long, and the conflict could never be settled by a policy.
function _fit(stem: string, suffix: string): string {
  const slash = stem.lastIndexOf('/');
  const base = Buffer.from(stem.slice(slash + 1));
  const room = MAX_NAME_BYTES - Buffer.byteLength(suffix);
  if (base.length <= room) return stem + suffix;
  let end = Math.max(1, room);
  while (end > 0 && (base[end]! & 0xc0) === 0x80) end--; // not inside a character
  return stem.slice(0, slash + 1) + base.subarray(0, end).toString('utf8') + suffix;
}

/** Where server-wins keeps the local version: name.imz-conflict-<replica8>-<version>.ext (never pushed unless renamed). */
export function conflictCopyName(path: string, replicaId: string, version: number): string {
  return _withTag(path, `.imz-conflict-${replicaId.slice(0, 8)}-${version}`);
}

/** Where keep-both stores the client's version: name.imz-keep-<replica8>-<version>.ext (replicated like any file). */
export function keepName(path: string, replicaId: string, version: number): string {
  return _withTag(path, `.imz-keep-${replicaId.slice(0, 8)}-${version}`);
}
