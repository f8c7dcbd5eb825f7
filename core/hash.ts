import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';

/** Bytes read per step when hashing files. */
const CHUNK = 1024 * 1024;

/** Files up to this size are hashed with synchronous reads (far cheaper per file). */
const SYNC_LIMIT = 1024 * 1024;
const _syncBuf = Buffer.allocUnsafe(SYNC_LIMIT);

/** SHA-256 of a file's content, read in chunks so memory stays bounded. */
export async function hashFile(path: string): Promise<Uint8Array> {
  const fd = openSync(path, 'r');
  try {
    if (fstatSync(fd).size <= SYNC_LIMIT) return _hashFdSync(fd);
  } finally {
    closeSync(fd);
  }
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, CHUNK, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return new Uint8Array(h.digest());
}

/**
 * SHA-256 of a file's content with synchronous reads: for callers that
 * handle many small files one after another, where a thread-pool round
 * trip per read costs more than the read.
 */
export function hashFileSync(path: string): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    return _hashFdSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * SHA-256 of a file of at most SYNC_LIMIT bytes (as lstat last said) and
 * the bytes hashed, read once: for callers that send the content too. A
 * file that grew past its size meanwhile is hashed whole, its bytes not kept.
 */
export function hashFileKeeping(path: string, size: number): { hash: Uint8Array; data?: Buffer } {
  const fd = openSync(path, 'r');
  try {
    // One byte more than lstat said: a read that stops at the size is the end of the file, without a second read to
    // hear it (10,000 system calls on a push of 10,000 files). A shorter read goes on until a read gives nothing.
    const data = Buffer.allocUnsafe(Math.min(size, SYNC_LIMIT) + 1);
    let got = readSync(fd, data, 0, data.length, null);
    if (got < size) for (let n = 1; got < data.length && n > 0; got += n) n = readSync(fd, data, got, data.length - got, null);
    if (got < data.length) return { hash: new Uint8Array(createHash('sha256').update(data.subarray(0, got)).digest()), data: data.subarray(0, got) };
    const h = createHash('sha256').update(data);
    for (let n = readSync(fd, _syncBuf, 0, SYNC_LIMIT, null); n > 0; n = readSync(fd, _syncBuf, 0, SYNC_LIMIT, null)) h.update(_syncBuf.subarray(0, n));
    return { hash: new Uint8Array(h.digest()) };
  } finally {
    closeSync(fd);
  }
}

function _hashFdSync(fd: number): Uint8Array {
  const h = createHash('sha256');
  for (let n = readSync(fd, _syncBuf, 0, SYNC_LIMIT, null); n > 0; n = readSync(fd, _syncBuf, 0, SYNC_LIMIT, null)) h.update(_syncBuf.subarray(0, n));
  return new Uint8Array(h.digest());
}

/** Hex form of a hash, for logs, tar headers and JSON. */
export function toHex(hash: Uint8Array): string {
  return Buffer.from(hash.buffer, hash.byteOffset, hash.byteLength).toString('hex');
}

/** Parses a hex hash. */
export function fromHex(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

/** True when two hashes are the same bytes. */
export function sameHash(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** SHA-256 of in-memory bytes. */
export function hashBytes(b: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(b).digest());
}
