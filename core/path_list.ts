import { utf8 } from './utf8.ts';

/**
 * A sorted list of paths held as NUL-separated UTF-8 bytes with each path's
 * end offset: what the scan cache stores. A scan of a clean tree never needs
 * 100,000 strings alive at once (building them, and the garbage collector
 * moving them, cost as much as a third of the lstat pass); it decodes a run
 * of paths, uses it, and drops it. In shared memory the bytes serve a pass
 * worker in place.
 */
export class PathList implements Iterable<string> {
  /** Number of paths. */
  readonly length: number;
  /** The paths' UTF-8 bytes, NUL between them. */
  readonly bytes: Uint8Array;
  /** ends[i]: the offset just past path i in bytes. */
  readonly ends: Uint32Array;
  private readonly _runs = new Map<number, string[]>();
  private readonly _firsts: string[] = [];

  constructor(bytes: Uint8Array, ends: Uint32Array) {
    this.bytes = bytes;
    this.ends = ends;
    this.length = ends.length;
  }

  /** Encodes paths (in the order given), in shared memory where the runtime has it. */
  static fromStrings(paths: readonly string[]): PathList {
    const enc = new TextEncoder().encode(paths.join('\0'));
    const n = paths.length;
    const endsBytes = n * 4;
    const buf = _shared(endsBytes + enc.length);
    const ends = new Uint32Array(buf, 0, n);
    const bytes = new Uint8Array(buf, endsBytes, enc.length);
    bytes.set(enc);
    let k = 0;
    for (let i = 0; i < enc.length; i++) if (enc[i] === 0) ends[k++] = i;
    if (n > 0) ends[k] = enc.length;
    return new PathList(bytes, ends);
  }

  /** True when the end offsets rise and stay inside the bytes (what a decoder checks before trusting a file). */
  valid(): boolean {
    let start = 0;
    for (let i = 0; i < this.length; i++) {
      const e = this.ends[i]!;
      // No path is empty, and a NUL follows every path but the last.
      if (e <= start || e > this.bytes.length || (i + 1 < this.length && this.bytes[e] !== 0)) return false;
      start = e + 1;
    }
    return this.length === 0 ? this.bytes.length === 0 : this.ends[this.length - 1] === this.bytes.length;
  }

  /** Where path i's bytes begin (they end at ends[i]). */
  startOf(i: number): number {
    return i === 0 ? 0 : this.ends[i - 1]! + 1;
  }

  /** Paths from..to-1, decoded now and not kept (the lstat pass: strings that die young). */
  slice(from: number, to: number): string[] {
    if (to <= from) return [];
    const text = utf8(this.bytes.subarray(this.startOf(from), this.ends[to - 1]!));
    return to - from === 1 ? [text] : text.split('\0');
  }

  /** Path i (its run of RUN paths is decoded once and kept). */
  at(i: number): string {
    const r = Math.floor(i / RUN);
    let run = this._runs.get(r);
    if (!run) {
      run = this.slice(r * RUN, Math.min(this.length, (r + 1) * RUN));
      this._runs.set(r, run);
    }
    return run[i - r * RUN]!;
  }

  /** Where path is (binary search: the list is in string order), or -1. */
  indexOf(path: string): number {
    const i = this.lowerBound(path);
    return i < this.length && this.at(i) === path ? i : -1;
  }

  /** Where path is or would go: the first row not before it in string order. */
  lowerBound(path: string): number {
    if (this.length === 0) return 0;
    // First the run that would hold it, by the runs' first paths (each decoded alone): a search through the whole
    // list decoded a run of RUN paths at each of its ~7 steps on 100,000 paths (~0.3 ms a lookup). Then that run.
    let r = 0;
    let last = Math.ceil(this.length / RUN) - 1;
    while (r < last) {
      const mid = (r + last + 1) >>> 1;
      if (this._first(mid) <= path) r = mid;
      else last = mid - 1;
    }
    let lo = r * RUN;
    let hi = Math.min(this.length, lo + RUN);
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.at(mid) < path) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * This list with paths inserted, in shared memory where the runtime has
   * it: added[i] goes before row at[i] (at rising, added in string order).
   * The rows in between are copied as bytes, never decoded.
   */
  merged(at: readonly number[], added: readonly string[]): PathList {
    return this.edited(at, added, []);
  }

  /**
   * The same, with the rows in dropped (rising) left out as well: an added
   * path may take a dropped row's place (at[i] is that row).
   */
  edited(at: readonly number[], added: readonly string[], dropped: readonly number[]): PathList {
    const joined = new TextEncoder().encode(added.join('\0'));
    const n = this.length + added.length - dropped.length;
    let size = (this.length > 0 ? this.bytes.length - (this.length - 1) : 0) + (added.length > 0 ? joined.length - (added.length - 1) : 0);
    for (const i of dropped) size -= this.ends[i]! - this.startOf(i);
    size += Math.max(0, n - 1);
    const buf = _shared(n * 4 + size);
    const ends = new Uint32Array(buf, 0, n);
    const bytes = new Uint8Array(buf, n * 4, size);
    let o = 0;
    let row = 0;
    let a = 0; // where the next added path begins in joined
    editRows(this.length, at, dropped, (from, end) => {
      if (row > 0) bytes[o++] = 0;
      const start = this.startOf(from);
      bytes.set(this.bytes.subarray(start, this.ends[end - 1]!), o);
      for (let j = from; j < end; j++) ends[row++] = this.ends[j]! - start + o;
      o = ends[row - 1]!;
    }, () => {
      if (row > 0) bytes[o++] = 0;
      let e = a;
      while (e < joined.length && joined[e] !== 0) e++;
      bytes.set(joined.subarray(a, e), o);
      o += e - a;
      ends[row++] = o;
      a = e + 1;
    });
    return new PathList(bytes, ends);
  }

  // The first path of run r, without decoding the run (kept: a scan listing new directories looks up every name).
  private _first(r: number): string {
    let p = this._firsts[r];
    if (p === undefined) {
      const i = r * RUN;
      p = this._runs.get(r)?.[0] ?? utf8(this.bytes.subarray(this.startOf(i), this.ends[i]!));
      this._firsts[r] = p;
    }
    return p;
  }

  /** True when path is in the list. */
  includes(path: string): boolean {
    return this.indexOf(path) >= 0;
  }

  /** Every path, as an array (a rebuild or a test; a scan does not need it). */
  toArray(): string[] {
    return this.slice(0, this.length);
  }

  [Symbol.iterator](): Iterator<string> {
    return this.toArray()[Symbol.iterator]();
  }
}

/** Paths decoded at a time by at(): the lstat pass's chunk size. */
export const RUN = 1024;

/**
 * Walks an edit of a list of length rows, in order: keep(from, end) for
 * each run of rows kept as they are, insert(k) for added item k, which goes
 * before row at[k] (at rising); rows in dropped (rising) are left out.
 */
export function editRows(length: number, at: readonly number[], dropped: readonly number[], keep: (from: number, end: number) => void, insert: (k: number) => void): void {
  let i = 0;
  let k = 0;
  let d = 0;
  for (;;) {
    const stop = Math.min(k < at.length ? at[k]! : length, d < dropped.length ? dropped[d]! : length, length);
    if (stop > i) {
      keep(i, stop);
      i = stop;
    }
    if (k < at.length && at[k] === i) insert(k++);
    else if (d < dropped.length && dropped[d] === i) {
      i++;
      d++;
    } else if (i >= length) break;
  }
}


function _shared(size: number): ArrayBuffer | SharedArrayBuffer {
  const bytes = Math.max(8, size);
  return typeof SharedArrayBuffer === 'function' ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
}
