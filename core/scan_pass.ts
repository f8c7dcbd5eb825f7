import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import { type StatFacts, fillFacts, lstatFacts, rawLstat } from './fast_lstat.ts';
import { sameMtime } from './file_times.ts';
import { CHUNK, CTL_NEXT } from './pass_job.ts';
import type { PassWorker } from './pass_worker.ts';
import type { PathList } from './path_list.ts';
import { F_CTIME, F_INO, F_LISTED_CTIME, F_LISTED_MTIME, F_MODE, F_MTIME, F_SIZE, F_TYPE, FACTS, REMOTE_FLAG } from './scan_cache_model.ts';

/** What the lstat pass says of an entry: 0 clean, else these bits. */
export const CHECK = 1; // stat cannot settle it: a close look
export const LIST = 2; // a directory whose listing may hold something new
export const GONE = 4; // not there (and not an on-demand file whose content was never fetched)
export const NOT_DIR = 8; // a tracked directory that is something else now

// EntryType codes (protocol/messages.ts), written out so the worker does not load the protocol codec.
const _FILE = 1;
const _DIR = 2;
const _SYMLINK = 3;

/** The tracked paths and their index facts (a scan cache), and what a pass needs to judge them. */
export interface PassInput {
  /** The tree's root and a slash, or '' when the process's working directory is the root (shorter paths: a shorter walk in the kernel). */
  rootSlash: string;
  paths: PathList;
  facts: Float64Array;
  targets: string[];
  /** When the index was last written (racily clean files need hashing). */
  refTime: number;
}

/**
 * lstat of entries [from, to), each compared with its index facts; writes
 * the verdicts into state. A tracked file is clean when every stat fact
 * matches and it is not racily clean; a directory when its mode matches
 * (and it needs no listing when its mtime and ctime are those of its
 * listing mark); a symlink when its target matches.
 */
export function checkRange(inp: PassInput, from: number, to: number, state: Uint8Array): void {
  const { rootSlash, facts, targets, refTime } = inp;
  // Decoded for this range only: strings that die young cost the garbage collector nothing.
  const names = inp.paths.slice(from, to);
  const st = _facts;
  // The raw lstat called here, not through lstatFacts: one function fewer for the engine to compile in each thread
  // while both run the pass (on a machine that may have two cores).
  const raw = to > from ? rawLstat(rootSlash + names[0]!) : undefined;
  for (let i = from; i < to; i++) {
    const path = rootSlash === '' ? names[i - from]! : rootSlash + names[i - from]!;
    const o = i * FACTS;
    const t = facts[o + F_TYPE]!;
    const type = t & 15;
    let there: boolean;
    try {
      if (raw !== undefined) {
        const v = raw(path, false, undefined, false);
        there = v !== undefined;
        if (there) fillFacts(v!, st);
      } else {
        there = lstatFacts(path, st);
      }
    } catch (err) {
      // ENOTDIR: a parent is not a directory, so the path is not there. ELOOP, EACCES...: a close look, this entry
      // only. Below a tracked directory that became a symlink (a loop, or a place not to be entered) the scan then
      // counts it gone; anywhere else the close look meets the error again and reports it. Thrown from here it
      // failed the whole scan (ELOOP under such a symlink), or in the worker took every verdict of its chunk
      // (LIST bits too) with it.
      if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') {
        there = false;
      } else {
        state[i] = CHECK;
        continue;
      }
    }
    if (!there) {
      // On demand: a file whose content was never fetched is absent by design, not deleted.
      state[i] = t & REMOTE_FLAG ? 0 : GONE;
      continue;
    }
    const fmt = st.mode & _S_IFMT;
    let s = 0;
    if (type === _FILE) {
      if (!(fmt === _S_IFREG && st.size === facts[o + F_SIZE] && sameMtime(st.mtimeMs, facts[o + F_MTIME]!) && sameMtime(st.ctimeMs, facts[o + F_CTIME]!) &&
        st.ino === facts[o + F_INO] && (st.mode & 0o7777) === facts[o + F_MODE] && !racy(st, refTime) && !(t & REMOTE_FLAG))) s = CHECK;
    } else if (type === _DIR) {
      if (fmt !== _S_IFDIR) s = CHECK | NOT_DIR;
      else {
        if ((st.mode & 0o7777) !== facts[o + F_MODE]) s = CHECK;
        if (st.mtimeMs !== facts[o + F_LISTED_MTIME] || st.ctimeMs !== facts[o + F_LISTED_CTIME]) s |= LIST;
      }
    } else if (type === _SYMLINK) {
      let target: string | undefined;
      try {
        target = fmt === _S_IFLNK ? readlinkSync(path) : undefined;
      } catch {
        target = undefined;
      }
      if (target !== targets[i]) s = CHECK;
    } else {
      s = CHECK;
    }
    state[i] = s;
  }
}

const _S_IFMT = 0o170000;
const _S_IFREG = 0o100000;
const _S_IFDIR = 0o040000;
const _S_IFLNK = 0o120000;
const _facts: StatFacts = { mode: 0, ino: 0, size: 0, mtimeMs: 0, ctimeMs: 0 };


/**
 * Racily clean (git's term): the file's timestamps are not older than the
 * index write, so a rewrite in the same clock tick as its stat was recorded
 * could leave every stat fact equal. ctime counts too, as a write always
 * moves it while mtime can be set back (cp -p, rsync -t, utimes). The slack
 * is the timestamp's precision: a millisecond (float rounding of the two
 * readings), or a whole second for a time read at second precision (Deno's
 * ctimes), which sameMtime lets match anything in that second.
 */
export function racy(fs: { mtimeMs: number; ctimeMs: number }, refTime: number): boolean {
  return fs.mtimeMs >= refTime - _slack(fs.mtimeMs) || fs.ctimeMs >= refTime - _slack(fs.ctimeMs);
}

function _slack(t: number): number {
  return t % 1000 === 0 ? 1000 : 1;
}

/** lstat without throwing for a path that is not there (ENOENT, or ENOTDIR: a parent is not a directory). */
export function lstatOrNot(p: string): Stats | undefined {
  try {
    return lstatSync(p, { throwIfNoEntry: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
}


/** Options of runPass. */
export interface RunPassOptions {
  onProgress?: (done: number) => void;
  /** A worker started early (PassWorker.start); runPass stops it when done. Without one, none is used. */
  worker?: PassWorker;
  /**
   * The worker's own pass over these very paths and facts (its
   * speculation, with the ctl it was started with): joined, not started.
   */
  joined?: { state: Uint8Array; done: Uint8Array; ctl: Int32Array };
  /** Leave the worker running at the end (the caller still needs it; it stops it). */
  keepWorker?: boolean;
}

/**
 * The lstat pass over every tracked path, shared with a worker thread on
 * a large tree: both claim chunks of CHUNK entries from a shared counter,
 * so the main thread starts at once and the worker joins when it is up
 * (or the main thread joins the worker, which began first). lstat is a
 * system call per path (the kernel's path walk is most of it), so two
 * threads nearly halve the pass on two cores. When the worker cannot
 * start or dies, the main thread does what it left.
 */
export async function runPass(inp: PassInput, opts: RunPassOptions): Promise<Uint8Array> {
  const n = inp.paths.length;
  const chunks = Math.ceil(n / CHUNK);
  const shared = inp.facts.buffer instanceof SharedArrayBuffer && inp.paths.bytes.buffer instanceof SharedArrayBuffer && inp.paths.ends.buffer instanceof SharedArrayBuffer;
  const worker = opts.worker && !opts.worker.gone && shared ? opts.worker : undefined;
  const mem = (size: number) => (worker ? new SharedArrayBuffer(Math.max(1, size)) : new ArrayBuffer(Math.max(1, size)));
  let state: Uint8Array;
  let ctl: Int32Array;
  let done: Uint8Array;
  if (opts.joined && opts.joined.state.length === n && opts.joined.done.length === chunks) {
    ({ state, ctl, done } = opts.joined);
  } else {
    state = new Uint8Array(mem(n), 0, n);
    ctl = new Int32Array(mem(8));
    done = new Uint8Array(mem(chunks));
    if (worker) {
      const links = _links(inp.targets, n);
      // Views of shared memory cross as views of the same memory (offsets kept): nothing is copied.
      worker.send({
        rootSlash: inp.rootSlash, refTime: inp.refTime, pathBytes: inp.paths.bytes, pathEnds: inp.paths.ends, facts: inp.facts, links,
        state: state.buffer as SharedArrayBuffer, ctl: ctl.buffer as SharedArrayBuffer, done: done.buffer as SharedArrayBuffer,
      });
    }
  }
  const runChunk = (c: number): void => {
    checkRange(inp, c * CHUNK, Math.min(n, (c + 1) * CHUNK), state);
    Atomics.store(done, c, 1);
  };
  try {
    let sinceYield = 0;
    for (;;) {
      const c = Atomics.add(ctl, CTL_NEXT, 1);
      if (c >= chunks) break;
      runChunk(c);
      if (++sinceYield >= 2) {
        // Let the event loop breathe (a status asks the server meanwhile).
        sinceYield = 0;
        opts.onProgress?.(Math.min(n, (c + 1) * CHUNK));
        await new Promise<void>((r) => setImmediate(r));
      }
    }
    // The worker's last chunks; should it die, the main thread does them.
    for (;;) {
      let missing = -1;
      for (let c = 0; c < chunks; c++) {
        if (Atomics.load(done, c) === 0) {
          missing = c;
          break;
        }
      }
      if (missing < 0) break;
      if (!worker || worker.gone) {
        for (let c = missing; c < chunks; c++) if (Atomics.load(done, c) === 0) runChunk(c);
        break;
      }
      await new Promise<void>((r) => setTimeout(r, 1));
    }
  } finally {
    if (!opts.keepWorker) opts.worker?.stop();
  }
  opts.onProgress?.(n);
  return state;
}

/**
 * The symlinks' rows and targets: a loop of its own (the engine compiles it
 * alone, not all of runPass). Read from the targets, '' but for symlinks: the
 * facts' rows are a cache line each, ~3 ms to walk on 100,000 paths. A
 * symlink row left out (an empty target) only gets a close look.
 */
function _links(targets: string[], n: number): Array<[number, string]> {
  const links: Array<[number, string]> = [];
  for (let i = 0; i < n; i++) {
    const t = targets[i];
    if (t) links.push([i, t]);
  }
  return links;
}
