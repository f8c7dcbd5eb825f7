import { createHash } from 'node:crypto';
import { closeSync, constants as fsc, fchmodSync, fsyncSync, futimesSync, lstatSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type Entry, EntryType } from '../protocol/messages.ts';
import { fsyncDirSync, tempNameFor } from './atomic_fs.ts';
import { type SecurityOptions, connectReplica } from './credentials.ts';
import { toHex } from './hash.ts';
import { placedFacts } from './local_state.ts';
import { parentOf } from './paths.ts';
import type { Remote } from './remote.ts';
import { Replica } from './replica.ts';
import { TYPE_NAMES, enforceCacheLimit, entryOf, parentsAreDirs, replicaPath } from './replica_cache.ts';
import { fsEntryFromStats, type FsEntry, utimeSeconds } from './tree_scan.ts';
import { IGNORE_FILE } from './ignore_rules.ts';

/** Bytes per READ when streaming a file (cat). */
const CAT_CHUNK = 1024 * 1024;
/** READs in flight while streaming. */
const CAT_IN_FLIGHT = 4;

/**
 * Streams a file's content: from the replica when it is here, else from the
 * server (verified against its SHA-256 as it goes; a mismatch is thrown at
 * the end), keeping it in the replica unless keep is false.
 */
export async function* catFile(dir: string, path: string, opts: { security?: SecurityOptions; keep?: boolean } = {}): AsyncGenerator<Uint8Array> {
  const replica = await Replica.open(dir);
  const rel = replicaPath(replica, dir, path, 'cat');
  if (rel === '') throw new ImzError(Codes.BAD_USAGE, `cannot cat ${path}: it is the replica's root directory`);
  const idx = await replica.get(rel);
  if (!idx) throw new ImzError(Codes.NOT_FOUND, `cannot cat ${path}: no such file in the replica (run \`imz pull\` to refresh it)`);
  if (idx.type !== EntryType.FILE) throw new ImzError(Codes.NOT_FOUND, `cannot cat ${path}: it is a ${TYPE_NAMES[idx.type] ?? 'special entry'}, not a file`);
  if (!idx.remote) {
    // Here already (perhaps with local changes, which is what the user expects to read).
    const fh = await open(join(replica.root, rel), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      for await (const chunk of fh.createReadStream({ highWaterMark: 256 * 1024 })) yield chunk as Uint8Array;
    } finally {
      await fh.close();
    }
    return;
  }
  let keep = opts.keep !== false;
  let locked = false;
  if (keep) {
    try {
      await replica.lock();
      locked = true;
    } catch {
      keep = false; // another imz works here: stream only
    }
  }
  let remote: Remote | undefined;
  let tmp: string | undefined;
  let fd: number | undefined;
  try {
    remote = await connectReplica(replica, opts.security);
    let entry = entryOf(rel, idx);
    const dest = join(replica.root, rel);
    if (keep && !parentsAreDirs(replica.root, rel)) keep = false;
    if (keep) {
      tmp = tempNameFor(dest);
      await replica.noteTempDirs([parentOf(rel)]);
      fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    }
    let chunks: AsyncGenerator<Uint8Array>;
    let firstChunk: IteratorResult<Uint8Array>;
    try {
      chunks = _readPipelined(remote, entry);
      firstChunk = await chunks.next();
    } catch (err) {
      if (!(err instanceof ImzError) || err.code !== Codes.STALE) throw err;
      // Changed on the server since our last pull: serve its current version, without keeping it.
      entry = await remote.stat(rel);
      if (entry.type !== EntryType.FILE) throw new ImzError(Codes.NOT_FOUND, `cannot cat ${path}: it is no longer a file on the server (run \`imz pull\`)`);
      keep = false;
      chunks = _readPipelined(remote, entry);
      firstChunk = await chunks.next();
    }
    const h = createHash('sha256');
    for (let r = firstChunk; !r.done; r = await chunks.next()) {
      h.update(r.value);
      if (keep && fd !== undefined) _writeAll(fd, r.value);
      yield r.value;
    }
    if (toHex(new Uint8Array(h.digest())) !== toHex(entry.hash)) {
      throw new ImzError(Codes.HASH_MISMATCH, `cannot cat ${path}: the content received does not match its SHA-256 (what was printed is damaged; run again)`);
    }
    if (keep && fd !== undefined && tmp) {
      fchmodSync(fd, entry.mode & 0o777);
      futimesSync(fd, utimeSeconds(entry.mtimeMs), utimeSeconds(entry.mtimeMs));
      fsyncSync(fd);
      closeSync(fd);
      fd = undefined;
      // The user may have created the file meanwhile: never overwrite that.
      if (lstatSync(dest, { throwIfNoEntry: false })) return;
      renameSync(tmp, dest);
      tmp = undefined;
      fsyncDirSync(dirname(dest));
      const fs = placedFacts(fsEntryFromStats(rel, lstatSync(dest), '') as FsEntry, entry);
      await replica.set(rel, { ...idx, size: fs.size, mode: fs.mode, mtimeMs: fs.mtimeMs, ctimeMs: fs.ctimeMs, ino: fs.ino, remote: undefined, ...(rel === IGNORE_FILE ? {} : { fetchedMs: Date.now() }) });
      await replica.flushIndex();
      await enforceCacheLimit(replica, new Set([rel]));
    }
  } finally {
    if (fd !== undefined) closeSync(fd);
    if (tmp) try { unlinkSync(tmp); } catch { /* not made */ }
    remote?.close();
    if (locked) {
      await replica.clearTempDirs().catch(() => {});
      await replica.unlock().catch(() => {});
    }
  }
}

// Yields a file's content in order, with several READs in flight.
async function* _readPipelined(remote: Remote, e: Entry): AsyncGenerator<Uint8Array> {
  const inFlight: Promise<Uint8Array>[] = [];
  let next = 0;
  const issue = () => {
    const off = next;
    const len = Math.min(CAT_CHUNK, e.size - off);
    next += len;
    const p = remote.read(e.path, e.hash, off, len);
    p.catch(() => {}); // awaited below in order; no unhandled rejection meanwhile
    inFlight.push(p);
  };
  while (next < e.size && inFlight.length < CAT_IN_FLIGHT) issue();
  let got = 0;
  while (inFlight.length > 0) {
    const data = await inFlight.shift()!;
    if (data.length === 0 && got < e.size) throw new ImzError(Codes.STALE, `cannot read ${e.path}: it shrank on the server while being read (pull again)`);
    got += data.length;
    if (next < e.size) issue();
    yield data;
  }
}

function _writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}
