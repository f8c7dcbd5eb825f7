import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type BlobPiece, Op } from '../protocol/messages.ts';
import { fromHex, hashBytes, toHex } from './hash.ts';
import type { Remote } from './remote.ts';

/** A file whose content the server may need. */
export interface BlobItem {
  hash: string; // hex
  size: number;
  file: string; // absolute path in the replica
  /**
   * The lstat facts the scan saw when it hashed the file: when the file
   * still has them, the content is taken as hashed (the server checks the
   * hash again in any case) instead of being hashed a second time.
   */
  seen?: { mtimeMs: number; ctimeMs: number; ino: number };
  /** The mode and mtime the store the content is for gives its file: sent as a hint (see BlobRequest in imz.proto). */
  mode?: number;
  mtimeMs?: number;
}

const PIECE = 1024 * 1024;
const IN_FLIGHT = 32;
const QUERY_BATCH = 5000;
/** Bytes of whole contents gathered into one PUT_BLOBS request (bounded by the frame size too). */
const BATCH_BYTES = 1024 * 1024;
/** Most contents in one PUT_BLOBS request (the server takes up to 10000). */
const BATCH_COUNT = 2000;
/** PUT_BLOBS requests in flight: the next batch is read while the server stages one. */
const BATCHES_IN_FLIGHT = 4;
/** Protobuf bytes around each content in a PUT_BLOBS request (hash, size, flags, lengths), rounded up. */
const PER_BLOB_OVERHEAD = 96;

/**
 * Uploads the content of files the server does not hold yet, staged there
 * by hash: asks first (content already staged is not sent again; a partial
 * upload resumes where it stopped), then sends pieces with several requests
 * in flight; contents in send go without asking. Returns the bytes sent. A
 * file that changed since it was scanned is not finished (its hash would
 * not match): the server then rejects the operation and the next push
 * sends the new content.
 */
export async function uploadBlobs(remote: Remote, items: BlobItem[], onProgress?: (bytes: number, total: number) => void, send?: ReadonlySet<string>): Promise<number> {
  const unique = new Map<string, BlobItem>();
  for (const it of items) if (!unique.has(it.hash)) unique.set(it.hash, it);
  // Ask first, in batches: content the server holds (staged by an earlier
  // try, or anywhere in its tree) is never sent again; but for contents in send.
  const all = [...unique.values()].filter((it) => !send?.has(it.hash));
  const list: BlobItem[] = [...unique.values()].filter((it) => send?.has(it.hash));
  for (let i = 0; i < all.length; i += QUERY_BATCH) {
    const part = all.slice(i, i + QUERY_BATCH);
    const held = await _askHeld(remote, part);
    part.forEach((b, k) => { if (held[k] !== true) list.push(b); });
  }
  const total = list.reduce((n, i) => n + i.size, 0);
  let sent = 0;
  const onBytes = (n: number) => {
    sent += n;
    onProgress?.(sent, total);
  };
  // Small contents go many to a request: one round trip per file costs more than the file.
  const budget = Math.min(BATCH_BYTES, remote.session.maxFrame - 4096);
  const small = list.filter((it) => it.size + PER_BLOB_OVERHEAD <= budget);
  const rest = list.filter((it) => it.size + PER_BLOB_OVERHEAD > budget);
  const unbatched = await _uploadBatched(remote, small, budget, onBytes);
  rest.push(...unbatched);
  let next = 0;
  const worker = async () => {
    while (next < rest.length) await _uploadOne(remote, rest[next++]!, onBytes);
  };
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, rest.length) }, worker));
  return sent;
}

// Which of these contents the server holds (staged, or anywhere in its tree): one query.
async function _askHeld(remote: Remote, items: BlobItem[]): Promise<boolean[]> {
  const env = await remote.session.request(Op.PUT_BLOB, { putBlob: { hash: new Uint8Array(0), size: 0, offset: 0, data: new Uint8Array(0), last: false, query: items.map((b) => fromHex(b.hash)) } });
  return env.blobReply?.held ?? [];
}

// Sends whole small contents in PUT_BLOBS batches, several in flight.
// Returns the items left to send one by one (all of them from where a
// server that predates PUT_BLOBS said so).
async function _uploadBatched(remote: Remote, items: BlobItem[], budget: number, onBytes: (n: number) => void): Promise<BlobItem[]> {
  const batcher = new _Batcher(remote, budget, onBytes);
  for (const it of items) {
    if (batcher.unsupported) batcher.unsupported.push(it);
    else {
      const data = _readAsScanned(it);
      if (data) await batcher.add(it, data);
    }
  }
  await batcher.end();
  return [...(batcher.unsupported ?? []), ...batcher.recheck];
}

/**
 * Gathers whole contents into PUT_BLOBS requests of up to budget bytes,
 * BATCHES_IN_FLIGHT of them in flight. A batch the server finds a content
 * in that does not match its hash (a file written again, in the same clock
 * tick, after the scan) goes to recheck, each to be checked and sent alone;
 * a server that predates PUT_BLOBS makes everything from then on go to
 * unsupported. Other errors are thrown by add or end.
 */
class _Batcher {
  unsupported: BlobItem[] | undefined;
  readonly recheck: BlobItem[] = [];
  private _batch: { piece: BlobPiece; item: BlobItem }[] = [];
  private _bytes = 0;
  private _inFlight: Promise<void>[] = [];

  private readonly _remote: Remote;
  private readonly _budget: number;
  private readonly _onBytes: (n: number) => void;
  private readonly _onStaged: ((it: BlobItem) => void) | undefined;

  constructor(remote: Remote, budget: number, onBytes: (n: number) => void, onStaged?: (it: BlobItem) => void) {
    this._remote = remote;
    this._budget = budget;
    this._onBytes = onBytes;
    this._onStaged = onStaged;
  }

  /** Adds a content (at most budget bytes with its overhead); waits while the requests in flight are many. */
  async add(item: BlobItem, data: Buffer): Promise<void> {
    if (this.unsupported) {
      this.unsupported.push(item);
      return;
    }
    if (this._batch.length > 0 && (this._bytes + data.length + PER_BLOB_OVERHEAD > this._budget || this._batch.length >= BATCH_COUNT)) {
      this._send();
      if (this._inFlight.length >= BATCHES_IN_FLIGHT) await this._inFlight.shift();
    }
    this._batch.push({ piece: { hash: fromHex(item.hash), size: item.size, offset: 0, data, last: true, mode: item.mode ?? 0, mtimeMs: item.mtimeMs ?? 0 }, item });
    this._bytes += data.length + PER_BLOB_OVERHEAD;
  }

  /** Sends what is gathered and waits for every answer. */
  async end(): Promise<void> {
    if (this._batch.length > 0) {
      if (this.unsupported) this.unsupported.push(...this._batch.map((x) => x.item));
      else this._send();
    }
    this._batch = [];
    // Every answer is in before this returns (what was staged is counted), then the first failure is thrown.
    const settled = await Promise.allSettled(this._inFlight);
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  private _send(): void {
    const b = this._batch;
    this._batch = [];
    this._bytes = 0;
    const req = this._remote.session.request(Op.PUT_BLOBS, { putBlobs: { blobs: b.map((x) => x.piece) } }).then(
      () => {
        for (const x of b) {
          this._onBytes(x.piece.data.length);
          this._onStaged?.(x.item);
        }
      },
      (err) => {
        if (err instanceof ImzError && err.code === Codes.UNSUPPORTED) {
          (this.unsupported ??= []).push(...b.map((x) => x.item));
          return;
        }
        if (err instanceof ImzError && err.code === Codes.HASH_MISMATCH) {
          this.recheck.push(...b.map((x) => ({ ...x.item, seen: undefined })));
          return;
        }
        throw err;
      },
    );
    req.catch(() => {}); // observed in order by add or end; a lost connection must not be an unhandled rejection
    this._inFlight.push(req);
  }
}

/** Hashes asked about in one query while the scan goes on: answers come back while it hashes more. */
const PRESTAGE_QUERY = 256;
/** Bytes of contents the Prestager keeps waiting for answers (asked about, or being sent) before the scan waits. */
const PRESTAGE_WAITING = 16 * 1024 * 1024;

/**
 * Uploads the contents a scan hashes while it goes on (the scan's
 * onContent), so that the server stages them while the client hashes more,
 * and no file is read twice: asks the server which it lacks, a few hundred
 * at a time, and sends those in PUT_BLOBS batches. Never fails: whatever it
 * did not stage (an error, an old server, a content changed since) is left
 * to uploadBlobs, which meets the same error and reports it.
 */
export class Prestager {
  /** The contents (hex hashes) the server acknowledged staging. */
  readonly staged = new Set<string>();
  /** The contents the server said it held when asked (staged earlier, or somewhere in its tree). */
  readonly held = new Set<string>();
  /** Bytes sent. */
  sent = 0;
  private _offered = new Set<string>();
  private _pending: { item: BlobItem; data: Buffer }[] = [];
  private _pendingBytes = 0;
  private _waitingBytes = 0;
  private _off = false;
  private _chain: Promise<void> = Promise.resolve();
  private _steps: { done: Promise<void>; bytes: number }[] = [];
  private readonly _batcher: _Batcher;
  private readonly _remote: Remote;
  private readonly _budget: number;

  constructor(remote: Remote) {
    this._remote = remote;
    this._budget = Math.min(BATCH_BYTES, remote.session.maxFrame - 4096);
    this._batcher = new _Batcher(remote, this._budget, (n) => (this.sent += n), (it) => this.staged.add(it.hash));
  }

  /** Takes a content as the scan hashed it; resolves when there is room for more. */
  async offer(item: BlobItem, data: Buffer): Promise<void> {
    if (this._off || this._offered.has(item.hash) || data.length + PER_BLOB_OVERHEAD > this._budget) return;
    this._offered.add(item.hash);
    this._pending.push({ item, data });
    this._pendingBytes += data.length;
    if (this._pending.length >= PRESTAGE_QUERY || this._pendingBytes >= BATCH_BYTES) await this._ask();
  }

  /** Sends what is left and waits for every answer (see staged and held). */
  async finish(): Promise<void> {
    if (this._pending.length > 0 && !this._off) await this._ask();
    await this._chain;
    try {
      await this._batcher.end();
    } catch {
      // left to uploadBlobs
    }
  }

  private async _ask(): Promise<void> {
    const part = this._pending;
    const bytes = this._pendingBytes;
    this._pending = [];
    this._pendingBytes = 0;
    const asked = _askHeld(this._remote, part.map((x) => x.item));
    asked.catch(() => {}); // observed below, in order
    // Answers are taken in order: each sends what the server lacks.
    const done = this._chain.then(async () => {
      if (this._off) return;
      const held = await asked;
      for (let k = 0; k < part.length; k++) {
        if (held[k] === true) this.held.add(part[k]!.item.hash);
        else await this._batcher.add(part[k]!.item, part[k]!.data);
      }
      if (this._batcher.unsupported) this._off = true;
    }).catch(() => {
      this._off = true;
    });
    this._chain = done;
    this._waitingBytes += bytes;
    this._steps.push({ done, bytes });
    // Let answers in (the scan hashes without yielding), then wait while much is held.
    await new Promise<void>((r) => setImmediate(r));
    while (this._waitingBytes > PRESTAGE_WAITING && this._steps.length > 0) {
      const s = this._steps.shift()!;
      await s.done;
      this._waitingBytes -= s.bytes;
    }
  }
}

async function _uploadOne(remote: Remote, it: BlobItem, onBytes: (n: number) => void): Promise<void> {
  const hash = fromHex(it.hash);
  if (it.size <= PIECE) {
    // Small content goes in one request (the query above said the server lacks it).
    const data = _readAsScanned(it);
    if (!data) return;
    await remote.session.request(Op.PUT_BLOB, { putBlob: { hash, size: it.size, offset: 0, data, last: true } });
    onBytes(data.length);
    return;
  }
  const q = await remote.session.request(Op.PUT_BLOB, { putBlob: { hash, size: it.size, offset: 0, data: new Uint8Array(0), last: false } });
  if (q.blobReply?.present) return;
  let offset = Number(q.blobReply?.have ?? 0);
  let fd: number;
  try {
    fd = openSync(it.file, 'r');
  } catch {
    return; // gone since the scan: the operation will be rejected and rescanned
  }
  try {
    // Hash what we send from the start, so a file changed since the scan is never completed.
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(PIECE);
    let pos = 0;
    while (pos < offset) {
      const n = readSync(fd, buf, 0, Math.min(PIECE, offset - pos), pos);
      if (n === 0) return;
      h.update(buf.subarray(0, n));
      pos += n;
    }
    const pending: Promise<unknown>[] = [];
    while (offset < it.size || (offset === 0 && it.size === 0)) {
      const n = readSync(fd, buf, 0, Math.min(PIECE, it.size - offset), offset);
      const data = Buffer.from(buf.subarray(0, n));
      h.update(data);
      const last = offset + n >= it.size;
      if (last && h.digest('hex') !== it.hash) break;
      if (n === 0 && !last) break;
      const req = remote.session.request(Op.PUT_BLOB, { putBlob: { hash, size: it.size, offset, data, last } });
      req.catch(() => {}); // observed below, in order; a lost connection must not be an unhandled rejection
      pending.push(req);
      offset += n;
      onBytes(n);
      if (pending.length >= 4) await pending.shift();
      if (last) break;
    }
    await Promise.all(pending);
  } finally {
    closeSync(fd);
  }
}

// A small file's content as the scan hashed it; undefined when it is gone or
// changed since (its operation is then rejected, and the next push rescans it).
// Hashed again unless its lstat facts are still the ones the scan saw.
function _readAsScanned(it: BlobItem): Buffer | undefined {
  let data: Buffer;
  let unchanged = false;
  let fd: number;
  try {
    fd = openSync(it.file, 'r');
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (st.size !== it.size) return undefined;
    const seen = it.seen;
    unchanged = seen !== undefined && st.mtimeMs === seen.mtimeMs && st.ctimeMs === seen.ctimeMs && st.ino === seen.ino;
    data = Buffer.allocUnsafe(it.size);
    for (let off = 0; off < it.size;) {
      const k = readSync(fd, data, off, it.size - off, off);
      if (k === 0) return undefined; // shrank meanwhile
      off += k;
    }
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
  return unchanged || toHex(hashBytes(data)) === it.hash ? data : undefined;
}
