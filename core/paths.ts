import { Codes, ImzError, UNSAFE_TEXT } from '../protocol/errors.ts';

/** Name of the replica's state directory. */
export const REPLICA_DIR = '.imz';
/** Default name of the server's state directory inside the served tree. */
export const SERVER_DIR = '.imz-server';
/** Prefix of temporary files written beside their final name. */
export const TMP_PREFIX = '.imz-tmp-';
/** Longest accepted path, in bytes (Linux PATH_MAX). */
export const MAX_PATH_BYTES = 4096;
/** Longest accepted name of one component, in bytes (Linux NAME_MAX). */
export const MAX_NAME_BYTES = 255;

/** True for names imz keeps for itself: state dirs and temp files. */
export function isReservedName(name: string): boolean {
  return name === REPLICA_DIR || name === SERVER_DIR || name.startsWith(TMP_PREFIX);
}

/**
 * Why a path from the wire or the user is unsafe, or undefined when it is a
 * relative, normalised path that stays inside the tree: no empty, '.' or '..'
 * segments, no NUL or control characters, no reserved name anywhere, within
 * length limits. The root itself is "" and only allowed where allowRoot.
 */
export function pathProblem(p: unknown, allowRoot = false): string | undefined {
  if (typeof p !== 'string') return 'not a string';
  if (p === '') return allowRoot ? undefined : 'empty path';
  // Char codes, no copies: every path of a push is checked on both sides (an encode and a split per path cost ~5 µs).
  // (Up to 1365 UTF-16 units, the UTF-8 bytes cannot pass 4096.)
  if (p.length * 3 > MAX_PATH_BYTES && _utf8Length(p, 0, p.length) > MAX_PATH_BYTES) return 'path too long';
  if (p.charCodeAt(0) === 47) return 'absolute path';
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return 'control character in path';
  }
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i < p.length && p.charCodeAt(i) !== 47) continue;
    const len = i - start;
    if (len === 0) return 'empty path segment';
    // Every name to refuse begins with a dot: '.', '..' and the reserved ones.
    if (p.charCodeAt(start) === 46) {
      const seg = p.slice(start, i);
      if (seg === '.' || seg === '..') return `'${seg}' segment`;
      if (isReservedName(seg)) return `reserved name '${seg}'`;
    }
    if (len * 3 > MAX_NAME_BYTES && _utf8Length(p, start, i) > MAX_NAME_BYTES) return 'name too long';
    start = i + 1;
  }
  return undefined;
}

// Bytes of s[from, to) in UTF-8, as TextEncoder would write them (a lone surrogate becomes U+FFFD: 3 bytes).
function _utf8Length(s: string, from: number, to: number): number {
  let n = to - from;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < to && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 2; // two units, four bytes
      i++;
    } else n += 2;
  }
  return n;
}

/** Throws IMZ_BAD_PATH unless p is a safe relative path (see pathProblem). */
export function checkPath(p: unknown, action: string, allowRoot = false): string {
  const why = pathProblem(p, allowRoot);
  // Only a string is quoted: String() of an arbitrary value can throw (an object without a prototype).
  if (why) throw new ImzError(Codes.BAD_PATH, `cannot ${action}: unsafe path ${typeof p === 'string' ? printable(JSON.stringify(p).slice(0, 200)) : `(${typeof p})`} (${why})`);
  return p as string;
}

/** Text from the wire made safe to show: DEL, C1 controls and bidirectional overrides escaped (JSON.stringify leaves them). */
export function printable(s: string): string {
  return s.replace(UNSAFE_TEXT, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The absolute path of rel under dir, for a rel already checked (see
 * pathProblem) or a name of imz's own: path.join's normalising is then
 * moot, and it costs a few µs and ~1 KB of garbage per call, several times
 * per file of a push on each side.
 */
export function inDir(dir: string, rel: string): string {
  if (rel === '') return dir;
  return dir.charCodeAt(dir.length - 1) === 47 ? dir + rel : `${dir}/${rel}`;
}

/** Parent of a relative path ("" for top-level names). */
export function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

/** Number of segments, used to order creations (shallow first) and removals (deep first). */
export function depthOf(p: string): number {
  let n = 0;
  for (let i = 0; i < p.length; i++) if (p.charCodeAt(i) === 47) n++;
  return n;
}

/** Compares paths so that a directory sorts right before its contents. */
export function comparePaths(a: string, b: string): number {
  // Compare segment-wise: "a/b" < "a-c" must hold so a parent precedes its children.
  const as = a.split('/');
  const bs = b.split('/');
  const n = Math.min(as.length, bs.length);
  for (let i = 0; i < n; i++) {
    if (as[i] !== bs[i]) return as[i]! < bs[i]! ? -1 : 1;
  }
  return as.length - bs.length;
}
