import { createHash } from 'node:crypto';
import { closeSync, fchmodSync, fdatasync, futimesSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import type { Entry } from '../protocol/messages.ts';
import { tempNameFor } from './atomic_fs.ts';
import { sameHash } from './hash.ts';
import type { Remote } from './remote.ts';
import { TarReader } from './tar_reader.ts';
import { utimeSeconds } from './tree_scan.ts';

/** A file to fetch and where it must end up. */
export interface FetchItem {
  entry: Entry;
  /** Absolute final path (the temp file is made beside it). */
  dest: string;
}

/** A verified temp file, fsynced, ready to be renamed into place. */
export interface Fetched {
  item: FetchItem;
  tmp: string;
}

/** Progress of a fetch. */
export interface FetchProgress {
  files: number;
  bytes: number;
}

/** Options of fetchFiles. */
export interface FetchOptions {
  onProgress?: (p: FetchProgress) => void;
  /** Files at least this big go by pipelined READs instead of tar. */
  largeFile?: number;
  /** Make temp files durable before handing them over (off only for tests of the mechanism). */
  durable?: boolean;
}

const SMALL_BATCH_FILES = 2000;
const SMALL_BATCH_BYTES = 64 * 1024 * 1024;
const COMMIT_BATCH = 256;
const CHUNK = 2 * 1024 * 1024;
const LARGE_FILE = 1024 * 1024;
const READS_IN_FLIGHT = 8;

/**
 * Fetches file contents into verified temp files beside their destinations:
 * many small files as tar streams (SNAPSHOT, one batch at a time), large
 * files as pipelined chunked READs. Each file's SHA-256 is checked before it
 * is handed to commit (in batches, after one parallel round of fsyncs).
 * Files that changed on the server meanwhile come back in `stale`.
 */
export async function fetchFiles(remote: Remote, items: FetchItem[], commit: (batch: Fetched[]) => Promise<void>, opts: FetchOptions = {}): Promise<{ stale: FetchItem[] }> {
  const largeFile = opts.largeFile ?? LARGE_FILE;
  const durable = opts.durable ?? true;
  const progress: FetchProgress = { files: 0, bytes: 0 };
  const stale: FetchItem[] = [];
  const small = items.filter((i) => i.entry.size < largeFile);
  const large = items.filter((i) => i.entry.size >= largeFile);

  let pending: { item: FetchItem; tmp: string; fd: number }[] = [];
  let commitChain: Promise<void> = Promise.resolve();
  const flush = async () => {
    const batch = pending;
    pending = [];
    if (batch.length === 0) return;
    if (durable) {
      // One parallel round of fsyncs per batch: far cheaper than one at a time.
      await Promise.all(batch.map((b) => new Promise<void>((res, rej) => fdatasync(b.fd, (err) => (err ? rej(err) : res())))));
    }
    for (const b of batch) closeSync(b.fd);
    const ready = batch.map(({ item, tmp }) => ({ item, tmp }));
    commitChain = commitChain.then(() => commit(ready));
    await commitChain;
  };
  let lastReport = 0;
  const report = (force = false) => {
    const now = Date.now();
    if (!force && now - lastReport < 100) return; // progress is for eyes: ten updates a second
    lastReport = now;
    opts.onProgress?.(progress);
  };
  const done = async (item: FetchItem, tmp: string, fd: number) => {
    pending.push({ item, tmp, fd });
    progress.files++;
    report();
    if (pending.length >= COMMIT_BATCH) await flush();
  };

  try {
    const batches: FetchItem[][] = [];
    let cur: FetchItem[] = [];
    let curBytes = 0;
    for (const it of small) {
      cur.push(it);
      curBytes += it.entry.size;
      if (cur.length >= SMALL_BATCH_FILES || curBytes >= SMALL_BATCH_BYTES) {
        batches.push(cur);
        cur = [];
        curBytes = 0;
      }
    }
    if (cur.length > 0) batches.push(cur);
    // One tar stream at a time: the session applies TCP backpressure to the
    // connection as a whole, so a second stream left unread could stall the first.
    for (const batch of batches) {
      const got = await _tarBatch(remote, batch).consume(async (item, tmp, fd, bytes) => {
        progress.bytes += bytes;
        await done(item, tmp, fd);
      });
      for (const it of batch) if (!got.has(it)) stale.push(it);
    }
    for (const it of large) {
      const r = await _fetchLarge(remote, it, (n) => {
        progress.bytes += n;
        report();
      });
      if (!r) stale.push(it);
      else await done(it, r.tmp, r.fd);
    }
    await flush();
    report(true);
  } catch (err) {
    for (const p of pending) {
      try { closeSync(p.fd); } catch { /* already closed */ }
      try { unlinkSync(p.tmp); } catch { /* already gone */ }
    }
    throw err;
  }
  return { stale };
}

interface _TarBatch {
  consume(onFile: (item: FetchItem, tmp: string, fd: number, bytes: number) => Promise<void>): Promise<Set<FetchItem>>;
}

// A SNAPSHOT request for a batch, sent when consume() starts reading it.
function _tarBatch(remote: Remote, items: FetchItem[]): _TarBatch {
  const byPath = new Map(items.map((i) => [i.entry.path, i]));
  const stream = remote.snapshot(items.map((i) => i.entry.path));
  return {
    async consume(onFile) {
      const got = new Set<FetchItem>();
      const ready: { item: FetchItem; tmp: string; fd: number; bytes: number }[] = [];
      let partial: { fd: number; tmp: string } | undefined;
      const reader = new TarReader((h) => {
        const item = byPath.get(h.name);
        if (!item || h.size !== item.entry.size || got.has(item)) return null; // not asked for, or not the version asked for
        const tmp = tempNameFor(item.dest);
        const fd = openSync(tmp, 'wx', item.entry.mode & 0o777);
        const hash = createHash('sha256');
        partial = { fd, tmp };
        return {
          write(bytes) {
            writeSync(fd, bytes);
            hash.update(bytes);
          },
          end() {
            partial = undefined;
            if (!sameHash(new Uint8Array(hash.digest()), item.entry.hash)) {
              // Changed on the server while being read: never made visible.
              closeSync(fd);
              unlinkSync(tmp);
              return;
            }
            _finishMeta(fd, item.entry);
            got.add(item);
            ready.push({ item, tmp, fd, bytes: h.size });
          },
        };
      });
      try {
        for await (const chunk of stream) {
          reader.push(chunk);
          while (ready.length > 0) {
            const r = ready.shift()!;
            await onFile(r.item, r.tmp, r.fd, r.bytes);
          }
        }
      } catch (err) {
        for (const r of partial ? [...ready, partial] : ready) {
          closeSync(r.fd);
          unlinkSync(r.tmp);
        }
        throw err;
      }
      if (partial) {
        // The stream ended inside a member: that file is not complete.
        closeSync(partial.fd);
        unlinkSync(partial.tmp);
      }
      return got;
    },
  };
}

// The process umask, read once: open() already applied it to the mode.
const _umask = (() => {
  const u = process.umask(0o022);
  process.umask(u);
  return u;
})();

function _finishMeta(fd: number, e: Entry): void {
  if ((e.mode & 0o777 & ~_umask) !== (e.mode & 0o777)) fchmodSync(fd, e.mode & 0o777);
  futimesSync(fd, utimeSeconds(e.mtimeMs), utimeSeconds(e.mtimeMs));
}

// Fetches one large file with several READs in flight, hashing in order.
// Memory stays at READS_IN_FLIGHT chunks whatever the file size.
async function _fetchLarge(remote: Remote, item: FetchItem, onBytes: (n: number) => void): Promise<{ tmp: string; fd: number } | undefined> {
  const e = item.entry;
  const chunk = Math.min(CHUNK, remote.info.maxFrame - 4096);
  // A frame limit this small (a server's HELLO says it) would mean empty or negative reads: an endless loop.
  if (!(chunk >= 4096)) throw new ImzError(Codes.PROTOCOL, `cannot fetch ${e.path}: the server allows frames of only ${remote.info.maxFrame} bytes`);
  const tmp = tempNameFor(item.dest);
  const fh = await open(tmp, 'wx', 0o600);
  const h = createHash('sha256');
  let ok = false;
  try {
    const inflight = new Map<number, Promise<Uint8Array>>();
    let nextReq = 0;
    let nextHash = 0;
    const issue = () => {
      while (inflight.size < READS_IN_FLIGHT && nextReq < e.size) {
        const off = nextReq;
        const len = Math.min(chunk, e.size - off);
        const p = remote.read(e.path, e.hash, off, len);
        p.catch(() => {}); // observed below, in order
        inflight.set(off, p);
        nextReq += len;
      }
    };
    issue();
    while (nextHash < e.size) {
      let data: Uint8Array;
      try {
        data = await inflight.get(nextHash)!;
      } catch (err) {
        if (err instanceof ImzError && (err.code === Codes.STALE || err.code === Codes.NOT_FOUND)) return undefined;
        throw err;
      }
      inflight.delete(nextHash);
      const want = Math.min(chunk, e.size - nextHash);
      if (data.length !== want) return undefined; // the file shrank under the server
      await fh.write(data, 0, data.length, nextHash);
      h.update(data);
      nextHash += data.length;
      onBytes(data.length);
      issue();
    }
    if (!sameHash(new Uint8Array(h.digest()), e.hash)) return undefined;
    await fh.chmod(e.mode & 0o777);
    await fh.utimes(utimeSeconds(e.mtimeMs), utimeSeconds(e.mtimeMs));
    ok = true;
    // Hand over a plain fd: the batch commit fsyncs and closes it.
    const fd = openSync(tmp, 'r+');
    return { tmp, fd };
  } finally {
    await fh.close();
    if (!ok) {
      try { unlinkSync(tmp); } catch { /* not created */ }
    }
  }
}

/** The directories that will receive temp files for these items. */
export function tempDirsOf(items: FetchItem[]): Set<string> {
  return new Set(items.map((i) => dirname(i.dest)));
}

