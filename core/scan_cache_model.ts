import type { EntryTypeCode } from '../protocol/messages.ts';
import { BUCKETS, type IndexEntry } from './index_model.ts';
import { crc32, crc32Patch } from './crc32.ts';
import { PathList } from './path_list.ts';
import { utf8 } from './utf8.ts';

/**
 * The scan cache (.imz/scan-cache): a binary copy of the index's stat facts,
 * derived from the bucket files and checked against their identity, plus
 * what git calls the untracked cache: for each directory, the mtime and
 * ctime at which a listing found nothing new in it. With it, `imz status`
 * is one lstat per tracked path, with no JSON to parse and no readdir of an
 * unchanged directory. It is only ever a cache: anything that does not
 * validate is rebuilt from the index.
 */
export interface ScanCacheData {
  /** Per index bucket, the identity of the bucket file its entries were derived from. */
  sections: BucketSection[];
  /** Every index path, in string order (lstat in that order finds the kernel's directory entries warm: ~30% faster). */
  paths: PathList;
  /** FACTS numbers per entry (see the F_ offsets), in shared memory where there is any (a pass worker reads them in place). */
  facts: Float64Array;
  /** Symlink targets by entry ('' for the rest). */
  targets: string[];
  /** Identity of the .imzignore the listing marks were made under ('' without one). */
  ignoreKey: string;
  /** The listing mark of the tree's root (mtime, ctime; 0 = unknown). */
  rootListed: [number, number];
}

/** A bucket file's identity (lstat facts; size -1 when it did not exist, -2 never to be trusted). */
export interface BucketSection {
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  /**
   * The CRC-32 of the bucket's bytes when its identity was recorded within a
   * clock tick of its writing (a rewrite in the same tick could keep the
   * identity): the bytes are then checked too. -1: the identity suffices.
   */
  sum: number;
}

export const SCAN_CACHE_MAGIC = 'imz-scan-cache 4'; // 16 bytes, the version in it
export const FACTS = 8;
export const F_TYPE = 0; // type code, plus REMOTE_FLAG, plus the bucket << BUCKET_SHIFT
export const F_SIZE = 1;
export const F_MODE = 2;
export const F_MTIME = 3;
export const F_CTIME = 4;
export const F_INO = 5;
export const F_LISTED_MTIME = 6; // directories: the mark (0 = list it)
export const F_LISTED_CTIME = 7;
export const REMOTE_FLAG = 16;
export const BUCKET_SHIFT = 8;

const _SECTION_F64 = 5;
const _HEAD = 56;
const _BODY = _HEAD + BUCKETS * _SECTION_F64 * 8;

/** Room for n facts rows, in shared memory where the runtime has it. */
export function newFacts(n: number): Float64Array {
  const bytes = Math.max(8, n * FACTS * 8);
  return new Float64Array(typeof SharedArrayBuffer === 'function' ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes), 0, n * FACTS);
}

/** The facts row of an index entry of bucket b (no listing mark yet). */
export function factsOf(e: IndexEntry, b: number, out: Float64Array, at: number): void {
  out[at + F_TYPE] = e.type | (e.remote ? REMOTE_FLAG : 0) | (b << BUCKET_SHIFT);
  out[at + F_SIZE] = e.size;
  out[at + F_MODE] = e.mode;
  out[at + F_MTIME] = e.mtimeMs;
  out[at + F_CTIME] = e.ctimeMs;
  out[at + F_INO] = e.ino;
  out[at + F_LISTED_MTIME] = 0;
  out[at + F_LISTED_CTIME] = 0;
}

/** The entry type stored in a facts row. */
export function typeOfFacts(facts: Float64Array, i: number): EntryTypeCode {
  return (facts[i * FACTS + F_TYPE]! & 15) as EntryTypeCode;
}

/** True for a facts row of an on-demand file whose content is not here. */
export function isRemoteRow(facts: Float64Array, i: number): boolean {
  return (facts[i * FACTS + F_TYPE]! & REMOTE_FLAG) !== 0;
}

/** The index bucket of a facts row. */
export function bucketOfFacts(facts: Float64Array, i: number): number {
  return facts[i * FACTS + F_TYPE]! >>> BUCKET_SHIFT;
}

/**
 * Encodes the cache: a fixed header and section table, the facts, each
 * path's end offset (32-bit), then paths, targets and the ignore key as
 * NUL-separated UTF-8.
 */
export function encodeScanCache(d: ScanCacheData): Uint8Array {
  const parts = encodeScanCacheParts(d);
  const bytes = new Uint8Array(parts.reduce((k, p) => k + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return bytes;
}

/**
 * encodeScanCache's bytes in parts, in order: the header (checksum and
 * all), then views of the facts, the path ends and the paths as they are
 * in memory, the padding, the symlink targets and the ignore key. A writer
 * writes them one after the other; nothing is copied into one buffer.
 */
export function encodeScanCacheParts(d: ScanCacheData): Uint8Array[] {
  const enc = new TextEncoder();
  const n = d.paths.length;
  const targets = enc.encode(_linkTargets(d.facts, d.targets, n).join('\0'));
  const key = enc.encode(d.ignoreKey);
  const head = _encodeHead(d, targets.length, key.length);
  const parts = [
    head,
    new Uint8Array(d.facts.buffer, d.facts.byteOffset, n * FACTS * 8),
    new Uint8Array(d.paths.ends.buffer, d.paths.ends.byteOffset, n * 4),
    new Uint8Array(_pad8(n * 4) - n * 4),
    d.paths.bytes,
    targets,
    key,
  ];
  _seal(parts);
  return parts;
}

/**
 * The header alone (unsealed) of d encoded over a file whose header is
 * like, for a cache written in place: its rows are like's path for path,
 * link targets and .imzignore included, so the lengths of the sections
 * after the rows are taken from like instead of encoded again (a loop over
 * every row). Undefined when like holds another number of rows or paths.
 */
export function encodeScanCacheHead(d: ScanCacheData, like: Uint8Array): Uint8Array | undefined {
  if (like.length < _BODY) return undefined;
  const v = new DataView(like.buffer, like.byteOffset, like.length);
  if (v.getUint32(24, true) !== d.paths.length || v.getUint32(28, true) !== d.paths.bytes.length) return undefined;
  return _encodeHead(d, v.getUint32(32, true), v.getUint32(36, true));
}

/** The length of the whole encoded cache whose header is head. */
export function encodedLength(head: Uint8Array): number {
  const v = new DataView(head.buffer, head.byteOffset, head.length);
  const n = v.getUint32(24, true);
  return _BODY + n * FACTS * 8 + _pad8(n * 4) + v.getUint32(28, true) + v.getUint32(32, true) + v.getUint32(36, true);
}

function _encodeHead(d: ScanCacheData, targetBytes: number, keyBytes: number): Uint8Array {
  const head = new Uint8Array(_BODY);
  const view = new DataView(head.buffer);
  head.set(new TextEncoder().encode(SCAN_CACHE_MAGIC), 0);
  view.setUint32(24, d.paths.length, true);
  view.setUint32(28, d.paths.bytes.length, true);
  view.setUint32(32, targetBytes, true);
  view.setUint32(36, keyBytes, true);
  const f64 = new Float64Array(head.buffer, 40, (_BODY - 40) / 8);
  f64[0] = d.rootListed[0];
  f64[1] = d.rootListed[1];
  for (let b = 0; b < BUCKETS; b++) {
    const s = d.sections[b]!;
    const at = 2 + b * _SECTION_F64;
    f64[at] = s.ino;
    f64[at + 1] = s.size;
    f64[at + 2] = s.mtimeMs;
    f64[at + 3] = s.ctimeMs;
    f64[at + 4] = s.sum;
  }
  return head;
}

/** Records the checksum of the encoded cache in its header (parts[0]): CRC-32 of every byte after the checksum. */
function _seal(parts: Uint8Array[]): void {
  const head = parts[0]!;
  let sum = crc32(head.subarray(_SUMMED_FROM));
  for (let k = 1; k < parts.length; k++) sum = crc32(parts[k]!, sum);
  new DataView(head.buffer, head.byteOffset, head.length).setUint32(_SUM_AT, sum, true);
}

/** The symlinks' targets, in row order: a loop of its own (the engine compiles it alone, not all of its caller). */
function _linkTargets(facts: Float64Array, targets: string[], n: number): string[] {
  const links: string[] = [];
  for (let i = 0; i < n; i++) if (typeOfFacts(facts, i) === 3) links.push(targets[i] ?? '');
  return links;
}

/**
 * How much decodeScanCache checks: everything (the checksum, then the
 * lengths, offsets and row types: what makes reading it safe); or the
 * lengths only, for bytes whose checksum was confirmed (by a pass worker):
 * a file that checks out is one encodeScanCache wrote.
 */
export type CacheCheck = 'all' | 'none';

/**
 * True when the bytes' checksum is what their header says: the CRC-32 of
 * everything after it (native in node:zlib, ~2 ms for a 100,000-path
 * cache). It guards against a torn or foreign file, not an adversary: the
 * cache only ever decides which paths need a closer look.
 */
export function checksumOk(bytes: Uint8Array): boolean {
  return bytes.length >= _SUMMED_FROM && _recordedSum(bytes) === crc32(bytes.subarray(_SUMMED_FROM));
}

/** Where the header records the checksum, and where the bytes it sums begin. */
const _SUM_AT = 16;
const _SUMMED_FROM = 20;

function _recordedSum(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.length).getUint32(_SUM_AT, true);
}

/** Bytes of the cache's start that recordedSum reads. */
export const CACHE_PREFIX = 40;

/** The checksum a cache's header records, from its first CACHE_PREFIX bytes; undefined when they are not a cache of this version. */
export function recordedSum(bytes: Uint8Array): number | undefined {
  if (bytes.length < CACHE_PREFIX) return undefined;
  // Compared by code unit: TextDecoder refuses views of shared memory (a worker's read).
  for (let k = 0; k < SCAN_CACHE_MAGIC.length; k++) if (bytes[k] !== SCAN_CACHE_MAGIC.charCodeAt(k)) return undefined;
  return _recordedSum(bytes);
}

/** Bytes of the header: what resealInPlace compares. */
export const CACHE_HEADER = _BODY;

/**
 * Records in newHead the checksum of a cache file of size bytes once its
 * header (oldHead: the file's, CACHE_HEADER bytes) and the given rows are
 * written over it in place: worked out from the checksum oldHead records
 * and the bytes that change (CRC-32 is linear), not from the whole file
 * (~2.5 ms for 100,000 paths).
 */
export function resealInPlace(oldHead: Uint8Array, newHead: Uint8Array, size: number, rows: Array<{ at: number; before: Uint8Array; after: Uint8Array }>): void {
  const summed = size - _SUMMED_FROM;
  let sum = crc32Patch(_recordedSum(oldHead), summed, 0, oldHead.subarray(_SUMMED_FROM, _BODY), newHead.subarray(_SUMMED_FROM, _BODY));
  for (const r of rows) sum = crc32Patch(sum, summed, r.at - _SUMMED_FROM, r.before, r.after);
  new DataView(newHead.buffer, newHead.byteOffset, newHead.length).setUint32(_SUM_AT, sum, true);
}

/** Where row i's facts lie in the encoded cache. */
export function factsOffset(i: number): number {
  return _BODY + i * FACTS * 8;
}

/**
 * Decodes the cache; undefined when it is not one, is of another version,
 * or does not check out (it is then rebuilt). check: see CacheCheck. The facts and paths are
 * views of the bytes (copied into shared memory first when they are not
 * there), so a pass worker reads them in place.
 */
export function decodeScanCache(input: Uint8Array, check: CacheCheck = 'all'): ScanCacheData | undefined {
  if (input.length < _BODY) return undefined;
  if (new TextDecoder().decode(input.subarray(0, 16)) !== SCAN_CACHE_MAGIC) return undefined;
  let bytes = input;
  if (!(input.buffer instanceof SharedArrayBuffer) && typeof SharedArrayBuffer === 'function') {
    bytes = new Uint8Array(new SharedArrayBuffer(_pad8(input.length)), 0, input.length);
    bytes.set(input);
  } else if (input.byteOffset % 8 !== 0) {
    bytes = input.slice(); // Float64Array views need an 8-aligned offset
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (check === 'all' && !checksumOk(bytes)) return undefined;
  const n = view.getUint32(24, true);
  const pathBytes = view.getUint32(28, true);
  const targetBytes = view.getUint32(32, true);
  const keyBytes = view.getUint32(36, true);
  const factsBytes = n * FACTS * 8;
  const endsAt = _BODY + factsBytes;
  const pathsAt = endsAt + _pad8(n * 4);
  if (encodedLength(bytes) !== bytes.length) return undefined;
  const head = new Float64Array(bytes.buffer, bytes.byteOffset + 40, (_BODY - 40) / 8);
  const sections: BucketSection[] = [];
  for (let b = 0; b < BUCKETS; b++) {
    const o = 2 + b * _SECTION_F64;
    sections.push({ ino: head[o]!, size: head[o + 1]!, mtimeMs: head[o + 2]!, ctimeMs: head[o + 3]!, sum: head[o + 4]! });
  }
  const facts = new Float64Array(bytes.buffer, bytes.byteOffset + _BODY, n * FACTS);
  const paths = new PathList(bytes.subarray(pathsAt, pathsAt + pathBytes), new Uint32Array(bytes.buffer, bytes.byteOffset + endsAt, n));
  if (check !== 'none' && !paths.valid()) return undefined;
  let at = pathsAt + pathBytes;
  const links = utf8(bytes.subarray(at, at + targetBytes)).split('\0');
  at += targetBytes;
  const ignoreKey = utf8(bytes.subarray(at, at + keyBytes));
  const targets: string[] = new Array(n).fill('');
  let li = 0;
  if (check !== 'none' || targetBytes > 0) {
    for (let i = 0; i < n; i++) {
      const t = facts[i * FACTS + F_TYPE]!;
      if (!(Number.isInteger(t) && t >= 0 && t < BUCKETS << BUCKET_SHIFT)) return undefined;
      if ((t & 15) === 3) {
        if (li >= links.length) return undefined;
        targets[i] = links[li++]!;
      }
    }
  }
  // ''.split gives [''], so no symlinks means no targets.
  if (li !== (li === 0 && targetBytes === 0 ? 0 : links.length)) return undefined;
  return { sections, paths, facts, targets, ignoreKey, rootListed: [head[0]!, head[1]!] };
}

function _pad8(k: number): number {
  return k + ((8 - (k % 8)) % 8);
}


