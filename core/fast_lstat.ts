import { lstatSync } from 'node:fs';

/** The lstat facts a scan compares (mtime and ctime in ms, as Stats has them). */
export interface StatFacts {
  mode: number;
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
}

type _RawLstat = (path: string, bigint: false, req: undefined, throwIfNoEntry: boolean) => Float64Array | undefined;

// undefined: not tried yet; null: not to be had here (use lstatSync).
let _raw: _RawLstat | null | undefined;

/**
 * lstat of path into out; false when nothing is there (ENOENT). Throws
 * what lstat throws otherwise (ENOTDIR, EACCES...).
 *
 * Node 20 builds four Date objects for every Stats: on a scan of 100,000
 * paths that costs as much as the system calls. Where the runtime's own
 * fs binding gives the same numbers without them, that is used; it is
 * checked against lstatSync on a real path first and dropped for good at
 * the first difference, so another Node (or Deno, which has no such
 * binding) only ever gets lstatSync.
 */
export function lstatFacts(path: string, out: StatFacts): boolean {
  if (_raw === undefined) _raw = _probe(path);
  if (!_raw) {
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st) return false;
    out.mode = st.mode;
    out.ino = st.ino;
    out.size = st.size;
    out.mtimeMs = st.mtimeMs;
    out.ctimeMs = st.ctimeMs;
    return true;
  }
  const v = _raw(path, false, undefined, false);
  if (v === undefined) return false;
  fillFacts(v, out);
  return true;
}

/**
 * The runtime's own lstat (see lstatFacts), once checked on path; undefined
 * where it is not to be had. It returns a Float64Array that every call
 * reuses (read it with fillFacts), undefined for ENOENT; it throws what
 * lstat throws otherwise. For a loop that cannot afford lstatFacts' call.
 */
export function rawLstat(path: string): ((path: string, bigint: false, req: undefined, throwIfNoEntry: boolean) => Float64Array | undefined) | undefined {
  if (_raw === undefined) _raw = _probe(path);
  return _raw ?? undefined;
}

/** The numbers of one raw lstat result (the layout of node's statValues; ms as node computes them). */
export function fillFacts(v: Float64Array, out: StatFacts): void {
  out.mode = v[1]!;
  out.ino = v[7]!;
  out.size = v[8]!;
  out.mtimeMs = v[12]! * 1e3 + v[13]! / 1e6;
  out.ctimeMs = v[14]! * 1e3 + v[15]! / 1e6;
}

function _probe(path: string): _RawLstat | null | undefined {
  // --pending-deprecation would print a warning for process.binding.
  if (process.execArgv.includes('--pending-deprecation') || (process.env.NODE_OPTIONS ?? '').includes('--pending-deprecation')) return null;
  let raw: _RawLstat;
  try {
    const binding = (process as unknown as { binding?: (name: string) => { lstat?: unknown } }).binding?.('fs');
    if (typeof binding?.lstat !== 'function') return null;
    raw = binding.lstat.bind(binding) as _RawLstat;
  } catch {
    return null;
  }
  try {
    // Nothing there (the server's check before it makes a new file): compared on the file system's root instead. Asking
    // again on the next path, every call of a push of new files paid two lstats, through lstatSync.
    let st = lstatSync(path, { throwIfNoEntry: false });
    if (!st) {
      path = '/';
      st = lstatSync(path);
    }
    const v = raw(path, false, undefined, false);
    if (!(v instanceof Float64Array) || v.length < 16) return null;
    const got: StatFacts = { mode: 0, ino: 0, size: 0, mtimeMs: 0, ctimeMs: 0 };
    fillFacts(v, got);
    if (got.mode !== st.mode || got.ino !== st.ino || got.size !== st.size || got.mtimeMs !== st.mtimeMs || got.ctimeMs !== st.ctimeMs) return null;
    if (raw(`${path}.imz-no-such-path`, false, undefined, false) !== undefined) return null;
    return raw;
  } catch {
    return null;
  }
}
