import { Buffer } from 'node:buffer';
import type { BlobPiece } from './messages.ts';

/** An envelope that carries a PUT_BLOBS request and nothing else of note: the one encodePutBlobs takes. */
export interface PutBlobsEnvelope {
  xid?: number;
  op?: number;
  reply?: boolean;
  last?: boolean;
  putBlobs: { blobs: BlobPiece[] };
}

/** The envelope's fields encodePutBlobs writes; any other field set sends the envelope to the generic encoder. */
const _KNOWN = new Set(['xid', 'op', 'reply', 'last', 'putBlobs']);

/** True when encodePutBlobs can encode env (a PUT_BLOBS request, no error, no other body). */
export function isPutBlobs(env: object): env is PutBlobsEnvelope {
  const e = env as Partial<PutBlobsEnvelope> & Record<string, unknown>;
  if (e.putBlobs == null || !Array.isArray(e.putBlobs.blobs)) return false;
  if (!_uint(e.xid, 0xffffffff) || !_uint(e.op, 0x7fffffff)) return false;
  for (const k in e) if (!_KNOWN.has(k) && e[k] != null) return false;
  for (const k in e.putBlobs) if (k !== 'blobs' && (e.putBlobs as Record<string, unknown>)[k] != null) return false;
  return true;
}

function _uint(v: unknown, max: number): boolean {
  return v == null || (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max);
}

/**
 * Encodes a PUT_BLOBS envelope straight into one buffer of its exact size:
 * the same bytes as the generated encoder, which grows its buffer by
 * doubling and moves every nested message once its length is known, so a
 * megabyte of contents was copied five or six times over (most of a push's
 * encoding time, for a push of many small files).
 */
export function encodePutBlobs(env: PutBlobsEnvelope): Uint8Array {
  const blobs = env.putBlobs.blobs;
  const sizes = new Array<number>(blobs.length);
  let body = 0;
  for (let i = 0; i < blobs.length; i++) {
    const n = _blobSize(blobs[i]!);
    sizes[i] = n;
    body += 1 + _varintSize(n) + n;
  }
  const xid = env.xid ?? 0;
  const op = env.op ?? 0;
  let total = 0;
  if (xid !== 0) total += 1 + _varintSize(xid);
  if (op !== 0) total += 1 + _varintSize(op);
  if (env.reply) total += 2;
  if (env.last) total += 2;
  total += 2 + _varintSize(body) + body;
  const out = Buffer.allocUnsafe(total); // every byte is written below (checked at the end): no zero-fill
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  let at = 0;
  const varint = (v: number): void => {
    while (v > 127) {
      out[at++] = (v & 127) | 128;
      v = Math.floor(v / 128);
    }
    out[at++] = v;
  };
  const bytes = (tag: number, b: Uint8Array): void => {
    out[at++] = tag;
    varint(b.length);
    out.set(b, at);
    at += b.length;
  };
  const double = (tag: number, v: number): void => {
    out[at++] = tag;
    view.setFloat64(at, v, true);
    at += 8;
  };
  if (xid !== 0) {
    out[at++] = 8;
    varint(xid);
  }
  if (op !== 0) {
    out[at++] = 16;
    varint(op);
  }
  if (env.reply) {
    out[at++] = 24;
    out[at++] = 1;
  }
  if (env.last) {
    out[at++] = 32;
    out[at++] = 1;
  }
  // Field 29, length-delimited: tag 234 as a varint.
  out[at++] = 234;
  out[at++] = 1;
  varint(body);
  for (let i = 0; i < blobs.length; i++) {
    const b = blobs[i]!;
    out[at++] = 10;
    varint(sizes[i]!);
    if (b.hash != null && b.hash.length) bytes(10, b.hash);
    if (b.size != null && !Object.is(b.size, 0)) double(17, b.size);
    if (b.offset != null && !Object.is(b.offset, 0)) double(25, b.offset);
    if (b.data != null && b.data.length) bytes(34, b.data);
    if (b.last) {
      out[at++] = 40;
      out[at++] = 1;
    }
    if (b.query != null) for (const q of b.query) bytes(50, q);
    if (b.mode != null && b.mode !== 0) {
      out[at++] = 56;
      varint(b.mode >>> 0);
    }
    if (b.mtimeMs != null && !Object.is(b.mtimeMs, 0)) double(65, b.mtimeMs);
  }
  if (at !== total) throw new Error(`encodePutBlobs: wrote ${at} of ${total} bytes`);
  return out;
}

// Bytes of one BlobRequest's body, as the generated encoder writes it (fields at their default left out).
function _blobSize(b: BlobPiece): number {
  let n = 0;
  if (b.hash != null && b.hash.length) n += 1 + _varintSize(b.hash.length) + b.hash.length;
  if (b.size != null && !Object.is(b.size, 0)) n += 9;
  if (b.offset != null && !Object.is(b.offset, 0)) n += 9;
  if (b.data != null && b.data.length) n += 1 + _varintSize(b.data.length) + b.data.length;
  if (b.last) n += 2;
  if (b.query != null) for (const q of b.query) n += 1 + _varintSize(q.length) + q.length;
  if (b.mode != null && b.mode !== 0) n += 1 + _varintSize(b.mode >>> 0);
  if (b.mtimeMs != null && !Object.is(b.mtimeMs, 0)) n += 9;
  return n;
}

function _varintSize(v: number): number {
  let n = 1;
  while (v > 127) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}
