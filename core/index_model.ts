import { Codes, ImzError } from '../protocol/errors.ts';
import type { EntryTypeCode } from '../protocol/messages.ts';

/**
 * What the replica knows of one path: the server version it matches, and
 * the stat facts (size, mtime, ctime, inode, mode) that tell a local
 * modification by lstat alone, hashing only when they differ.
 */
export interface IndexEntry {
  type: EntryTypeCode;
  version: number;
  hash: string; // hex SHA-256 (files), '' otherwise
  size: number;
  mode: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  target: string;
  /**
   * On-demand replicas: true when the file's content is not here (only its
   * server facts are known; size, mtime and mode are the server's then).
   */
  remote?: boolean;
  /** On-demand replicas: when the content was fetched (ms), for least-recently-fetched eviction. */
  fetchedMs?: number;
}

/**
 * A version no server record has (journal numbers never reach it): the
 * base of an entry whose server version is not known, which the server's
 * check never takes for its current version.
 */
export const UNKNOWN_VERSION = Number.MAX_SAFE_INTEGER;

/** A version as shown or put in a name: undefined when unknown (UNKNOWN_VERSION). */
export function knownVersion(v: number | undefined): number | undefined {
  return v === UNKNOWN_VERSION ? undefined : v;
}

export const INDEX_MAGIC = 'imz-index';
export const INDEX_VERSION = 1;
/** The index is split in this many bucket files so a change rewrites one bucket, not the whole index. */
export const BUCKETS = 256;

/** The bucket (0..255) that holds a path: FNV-1a of its UTF-16 code units. */
export function bucketOf(path: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < path.length; i++) {
    h ^= path.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % BUCKETS;
}

/**
 * Encodes one bucket: a versioned header line with the entry count, then
 * all entries as one JSON array (one parse per bucket when loading).
 */
export function encodeBucket(entries: Map<string, IndexEntry>): string {
  return bucketText(entries.size, encodeRows(entries));
}

/** A bucket's text from its entry count and its rows (encodeRows, joined by commas). */
export function bucketText(count: number, rows: string): string {
  return `${INDEX_MAGIC} ${INDEX_VERSION} ${count}\n[${rows}]\n`;
}

/** The rows of entries as a bucket holds them, comma-separated (no brackets): appending rows is joining texts. */
export function encodeRows(entries: Iterable<[string, IndexEntry]>): string {
  const rows: unknown[] = [];
  for (const [p, e] of entries) {
    const row: unknown[] = [p, e.type, e.version, e.hash, e.size, e.mode, e.mtimeMs, e.ctimeMs, e.ino, e.target];
    // An eleventh column only in on-demand replicas: -1 content not here, else when it was fetched.
    if (e.remote) row.push(-1);
    else if (e.fetchedMs) row.push(e.fetchedMs);
    rows.push(row);
  }
  return JSON.stringify(rows).slice(1, -1);
}

/**
 * rows (as encodeRows makes them) with the row of path replaced by row (one
 * row of encodeRows); undefined when rows hold no row for path.
 */
export function replaceRow(rows: string, path: string, row: string): string | undefined {
  const at = _rowSpan(rows, path);
  return at && rows.slice(0, at[0]) + row + rows.slice(at[1]);
}

/**
 * The entry of path in rows (as encodeRows makes them), found and parsed
 * without parsing the other rows (a push of a few changes reads a few rows
 * of buckets of hundreds); undefined when rows hold no row for path.
 * Throws IMZ_CORRUPT (naming the bucket, name) for a damaged row.
 */
export function rowOf(rows: string, path: string, name: string): IndexEntry | undefined {
  const at = _rowSpan(rows, path);
  if (!at) return undefined;
  let a: unknown;
  try {
    a = JSON.parse(rows.slice(at[0], at[1]));
  } catch {
    a = undefined;
  }
  if (!_wellFormedRow(a) || a[0] !== path) throw _corrupt(name, 'has a damaged entry');
  return _entryOfRow(a);
}

// Where the row of path lies in rows: [start, end) or undefined. A candidate (the path's JSON after a row's end) is
// a row's start only where the text before it ends outside a string: a string may end in '],[' just before its
// closing quote (a symlink to "to],[", then a row of a path beginning with ','). The unescaped quotes before it are
// counted, from the last place known to be outside a string, jumping from quote to quote. The row ends at the first
// ']' outside a string.
function _rowSpan(rows: string, path: string): [number, number] | undefined {
  const head = `[${JSON.stringify(path)},`;
  let at = rows.startsWith(head) ? 0 : -1;
  let from = 0;
  let inString = false;
  while (at < 0) {
    const k = rows.indexOf(`],${head}`, from);
    if (k < 0) return undefined;
    for (let q = rows.indexOf('"', from); q >= 0 && q < k; q = rows.indexOf('"', q + 1)) if (!_escaped(rows, q)) inString = !inString;
    if (!inString) at = k + 2;
    from = k + 1; // (rows[k] is ']', no quote)
  }
  inString = false;
  for (let i = at + head.length; i < rows.length; i++) {
    const c = rows.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // a backslash escapes what follows
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 93) return [at, i + 1];
  }
  return undefined;
}

// True when the quote at q is escaped: an odd run of backslashes before it (JSON has backslashes only in strings).
function _escaped(text: string, q: number): boolean {
  let n = 0;
  while (q - 1 - n >= 0 && text.charCodeAt(q - 1 - n) === 92) n++;
  return n % 2 === 1;
}

/** The rows part of a bucket's text (what encodeRows made of its entries). */
export function rowsOfBucketText(text: string): string {
  return text.slice(text.indexOf('\n') + 2, text.lastIndexOf(']'));
}

/**
 * The bytes of a bucket whose file held file (undefined: no file) once
 * rows (as encodeRows makes them) are appended to its rows and its header
 * says count: the rows it held are copied as bytes, never decoded and
 * encoded again (a push of new files appends to every bucket).
 */
export function appendedBucket(file: Uint8Array | undefined, count: number, added: string): Uint8Array {
  // Where rowsOfBucketText finds the rows in the text: '\n' and ']' are ASCII, and no byte of a longer UTF-8 character is.
  const from = file ? file.indexOf(10) + 2 : 0;
  const to = file ? Math.max(from, file.lastIndexOf(93)) : 0;
  const enc = new TextEncoder();
  const head = enc.encode(`${INDEX_MAGIC} ${INDEX_VERSION} ${count}\n[`);
  const tail = enc.encode(`${to > from && added !== '' ? ',' : ''}${added}]\n`);
  const out = new Uint8Array(head.length + (to - from) + tail.length);
  out.set(head, 0);
  if (file) out.set(file.subarray(from, to), head.length);
  out.set(tail, head.length + to - from);
  return out;
}

/** The entry count a bucket's header gives, read without parsing the rows; undefined for a header this imz does not read. */
export function bucketCount(bucket: string | Uint8Array): number | undefined {
  // The header is ASCII: its first bytes are its characters.
  const text = typeof bucket === 'string' ? bucket : String.fromCharCode(...bucket.subarray(0, 64));
  const head = /^imz-index (\d+) (\d+)\n/.exec(text);
  return head && Number(head[1]) === INDEX_VERSION ? Number(head[2]) : undefined;
}

/** Decodes a bucket; throws IMZ_CORRUPT on a bad header, count or body. */
export function decodeBucket(text: string, name: string): Map<string, IndexEntry> {
  const nl = text.indexOf('\n');
  const head = /^imz-index (\d+) (\d+)$/.exec(nl < 0 ? text : text.slice(0, nl));
  const bad = (why: string) => _corrupt(name, why);
  if (!head) throw bad('has no valid header');
  if (Number(head[1]) !== INDEX_VERSION) throw bad(`has format version ${head[1]}, this imz reads ${INDEX_VERSION}`);
  let rows: unknown;
  try {
    rows = JSON.parse(text.slice(nl + 1));
  } catch {
    throw bad('is truncated or damaged');
  }
  if (!Array.isArray(rows) || rows.length !== Number(head[2])) throw bad('is truncated');
  const out = new Map<string, IndexEntry>();
  // Indexed reads, not destructuring: a push decodes a few buckets once each, in code not yet optimised, where
  // destructuring walks the iterator protocol per element (half of the decode's time, measured).
  const list = rows as unknown[];
  for (let i = 0; i < list.length; i++) {
    const a = list[i];
    // A damaged row must not reach callers as an entry of the wrong shape (they would crash later, far from here).
    if (!_wellFormedRow(a)) throw bad('has a damaged entry');
    out.set(a[0], _entryOfRow(a));
  }
  return out;
}

function _entryOfRow(a: _Row): IndexEntry {
  const e: IndexEntry = { type: a[1], version: a[2], hash: a[3], size: a[4], mode: a[5], mtimeMs: a[6], ctimeMs: a[7], ino: a[8], target: a[9] };
  const cache = a[10];
  if (cache === -1) e.remote = true;
  else if (cache !== undefined && cache > 0) e.fetchedMs = cache;
  return e;
}

function _corrupt(name: string, why: string): ImzError {
  return new ImzError(Codes.CORRUPT, `cannot read replica index: ${name} ${why} (run \`imz pull --resync\` to rebuild it)`);
}

type _Row = [string, EntryTypeCode, number, string, number, number, number, number, number, string, number?];

function _wellFormedRow(a: unknown): a is _Row {
  if (!Array.isArray(a) || (a.length !== 10 && a.length !== 11)) return false;
  if (a.length === 11 && typeof a[10] !== 'number') return false;
  const type = a[1];
  return typeof a[0] === 'string' && (type === 0 || type === 1 || type === 2 || type === 3) && typeof a[3] === 'string' && typeof a[9] === 'string' &&
    typeof a[2] === 'number' && typeof a[4] === 'number' && typeof a[5] === 'number' && typeof a[6] === 'number' && typeof a[7] === 'number' && typeof a[8] === 'number';
}
