import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { Op } from '../protocol/messages.ts';
import { fromHex } from './hash.ts';
import type { Remote } from './remote.ts';

/** A file whose content the server may need. */
export interface BlobItem {
  hash: string; // hex
  size: number;
  file: string; // absolute path in the replica
}

const PIECE = 1024 * 1024;
const IN_FLIGHT = 32;
const QUERY_BATCH = 5000;

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
  let next = 0;
  const worker = async () => {
    while (next < list.length) {
      const it = list[next++]!;
      await _uploadOne(remote, it, (n) => {
        sent += n;
        onProgress?.(sent, total);
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, list.length) }, worker));
  return sent;
}

async function _uploadOne(remote: Remote, it: BlobItem, onBytes: (n: number) => void): Promise<void> {
  const hash = fromHex(it.hash);
  if (it.size <= PIECE) {
    // Small content goes in one request (the query above said the server lacks it).
    let data: Buffer;
    try {
      data = readFileSync(it.file);
    } catch {
      return; // gone since the scan: the operation will be rejected and rescanned
    }
    if (data.length !== it.size || createHash('sha256').update(data).digest('hex') !== it.hash) return; // changed since the scan
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
