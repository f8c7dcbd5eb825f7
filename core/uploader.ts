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
 * in flight. Returns the bytes sent. A file that changed since it was
 * scanned is not finished (its hash would not match): the server then
 * rejects the operation and the next push sends the new content.
 */
export async function uploadBlobs(remote: Remote, items: BlobItem[], onProgress?: (bytes: number, total: number) => void): Promise<number> {
  const unique = new Map<string, BlobItem>();
  for (const it of items) if (!unique.has(it.hash)) unique.set(it.hash, it);
  // Ask first, in batches: content the server holds (staged by an earlier
  // try, or anywhere in its tree) is never sent again.
  const all = [...unique.values()];
  const list: BlobItem[] = [];
  for (let i = 0; i < all.length; i += QUERY_BATCH) {
    const part = all.slice(i, i + QUERY_BATCH);
    const env = await remote.session.request(Op.PUT_BLOB, { putBlob: { hash: new Uint8Array(0), size: 0, offset: 0, data: new Uint8Array(0), last: false, query: part.map((b) => fromHex(b.hash)) } });
    const held = env.blobReply?.held ?? [];
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

// Sends whole small contents in PUT_BLOBS batches, several in flight.
// Returns the items left to send one by one (all of them from where a
// server that predates PUT_BLOBS said so).
async function _uploadBatched(remote: Remote, items: BlobItem[], budget: number, onBytes: (n: number) => void): Promise<BlobItem[]> {
  const inFlight: Promise<void>[] = [];
  let unsupported: BlobItem[] | undefined;
  let batch: { piece: BlobPiece; item: BlobItem }[] = [];
  let bytes = 0;
  // Batches the server found a content in that does not match its hash (a file
  // written again, in the same clock tick, after the scan): each is checked and sent alone.
  const recheck: BlobItem[] = [];
  const send = (b: typeof batch) => {
    const req = remote.session.request(Op.PUT_BLOBS, { putBlobs: { blobs: b.map((x) => x.piece) } }).then(
      () => { for (const x of b) onBytes(x.piece.data.length); },
      (err) => {
        if (err instanceof ImzError && err.code === Codes.UNSUPPORTED) {
          (unsupported ??= []).push(...b.map((x) => x.item));
          return;
        }
        if (err instanceof ImzError && err.code === Codes.HASH_MISMATCH) {
          recheck.push(...b.map((x) => ({ ...x.item, seen: undefined })));
          return;
        }
        throw err;
      },
    );
    req.catch(() => {}); // observed below, in order; a lost connection must not be an unhandled rejection
    inFlight.push(req);
  };
  let i = 0;
  for (; i < items.length && !unsupported; i++) {
    const it = items[i]!;
    const data = _readAsScanned(it);
    if (!data) continue;
    if (batch.length > 0 && (bytes + data.length + PER_BLOB_OVERHEAD > budget || batch.length >= BATCH_COUNT)) {
      send(batch);
      batch = [];
      bytes = 0;
      if (inFlight.length >= BATCHES_IN_FLIGHT) await inFlight.shift();
    }
    batch.push({ piece: { hash: fromHex(it.hash), size: it.size, offset: 0, data, last: true }, item: it });
    bytes += data.length + PER_BLOB_OVERHEAD;
  }
  if (batch.length > 0 && !unsupported) send(batch);
  else if (batch.length > 0) unsupported!.push(...batch.map((x) => x.item));
  await Promise.all(inFlight);
  if (unsupported) unsupported.push(...items.slice(i));
  return [...(unsupported ?? []), ...recheck];
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
