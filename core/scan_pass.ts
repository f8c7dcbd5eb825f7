import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { type StatFacts, lstatFacts } from './fast_lstat.ts';
import { sameMtime } from './file_times.ts';
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
  rootSlash: string;
  paths: string[];
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
  const { rootSlash, paths, facts, targets, refTime } = inp;
  const st = _facts;
  for (let i = from; i < to; i++) {
    const o = i * FACTS;
    const t = facts[o + F_TYPE]!;
    const type = t & 15;
    let there: boolean;
    try {
      there = _lstatFacts(rootSlash + paths[i]!, st);
    } catch {
      // ELOOP, EACCES...: a close look, this entry only. Below a tracked directory that became a symlink
      // (a loop, or a place not to be entered) the scan then counts it gone; anywhere else the close look
      // meets the error again and reports it. Thrown from here it failed the whole scan (ELOOP under
      // such a symlink), or in the worker took every verdict of its chunk (LIST bits too) with it.
      state[i] = CHECK;
      continue;
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
        target = fmt === _S_IFLNK ? readlinkSync(rootSlash + paths[i]!) : undefined;
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

/** lstatFacts, with ENOTDIR (a parent is not a directory) as "not there". */
function _lstatFacts(p: string, out: StatFacts): boolean {
  try {
    return lstatFacts(p, out);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return false;
    throw err;
  }
}

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

/** Entries per claim: large enough that claiming costs nothing, small enough that the two threads finish together. */
export const CHUNK = 1024;

/** What a pass worker is sent: where the tree is, the tracked paths and their facts, and the shared claim counter and verdicts. */
export interface PassJob {
  rootSlash: string;
  refTime: number;
  /** The paths joined by NUL (one string: cloning it is a copy, not 100,000 strings). */
  pathBlob: string;
  /** The facts rows, read in place: factsLength numbers from byte factsOffset (a cache read from its file sits after the header). */
  facts: SharedArrayBuffer;
  factsOffset: number;
  factsLength: number;
  /** Symlink targets by entry number (the only non-empty ones). */
  links: Array<[number, string]>;
  state: SharedArrayBuffer;
  ctl: SharedArrayBuffer;
  done: SharedArrayBuffer;
}

/**
 * A worker thread started before the scan knows what to give it: a
 * thread's start-up (30-60 ms here) then overlaps loading the cache.
 * Unref'd, so an unused one never keeps the process alive.
 */
export class PassWorker {
  gone = false;
  private readonly _w: Worker;

  private constructor(w: Worker) {
    this._w = w;
    w.unref();
    w.on('error', () => (this.gone = true));
    w.on('exit', () => (this.gone = true));
  }

  /** Starts one; undefined where threads or shared memory are not to be had. */
  static start(): PassWorker | undefined {
    if (typeof SharedArrayBuffer !== 'function') return undefined;
    try {
      return new PassWorker(new Worker(_workerUrl()));
    } catch {
      return undefined;
    }
  }

  private static _warm: PassWorker | undefined;

  /**
   * Starts one now for the next scan of this process to take: a CLI about
   * to scan calls this first thing, so the thread is up when the pass starts.
   */
  static warmUp(): void {
    PassWorker._warm ??= PassWorker.start();
  }

  /** The worker warmUp started, if any and still alive (each is taken once). */
  static take(): PassWorker | undefined {
    const w = PassWorker._warm;
    PassWorker._warm = undefined;
    return w && !w.gone ? w : undefined;
  }

  /** Hands it the job (it then claims chunks until none are left). */
  send(job: PassJob): void {
    this._w.postMessage(job);
  }

  /** Stops it (it may be mid-chunk: runPass has waited for what it claimed). */
  stop(): void {
    this.gone = true;
    void this._w.terminate();
  }
}

/** Options of runPass. */
export interface RunPassOptions {
  onProgress?: (done: number) => void;
  /** A worker started early (PassWorker.start); runPass stops it when done. Without one, none is used. */
  worker?: PassWorker;
  /** The paths joined by NUL, for the worker (called only when there is one). */
  pathBlob: () => string;
}

/**
 * The lstat pass over every tracked path, shared with a worker thread on
 * a large tree: both claim chunks of CHUNK entries from a shared counter,
 * so the main thread starts at once and the worker joins when it is up.
 * lstat is a system call per path (the kernel's path walk is most of it),
 * so two threads nearly halve the pass on two cores. When the worker
 * cannot start or dies, the main thread does what it left.
 */
export async function runPass(inp: PassInput, opts: RunPassOptions): Promise<Uint8Array> {
  const n = inp.paths.length;
  const chunks = Math.ceil(n / CHUNK);
  const worker = opts.worker && !opts.worker.gone && inp.facts.buffer instanceof SharedArrayBuffer ? opts.worker : undefined;
  const mem = (size: number) => (worker ? new SharedArrayBuffer(Math.max(1, size)) : new ArrayBuffer(Math.max(1, size)));
  const state = new Uint8Array(mem(n), 0, n);
  const ctl = new Int32Array(mem(4));
  const done = new Uint8Array(mem(chunks));
  if (worker) {
    const links: Array<[number, string]> = [];
    for (let i = 0; i < n; i++) if ((inp.facts[i * FACTS + F_TYPE]! & 15) === _SYMLINK) links.push([i, inp.targets[i]!]);
    worker.send({
      rootSlash: inp.rootSlash, refTime: inp.refTime, pathBlob: opts.pathBlob(), facts: inp.facts.buffer as SharedArrayBuffer,
      // The view's place in its buffer, not the whole buffer: a cache read from its file has its header before the facts.
      factsOffset: inp.facts.byteOffset, factsLength: inp.facts.length, links,
      state: state.buffer as SharedArrayBuffer, ctl: ctl.buffer as SharedArrayBuffer, done: done.buffer as SharedArrayBuffer,
    });
  }
  const runChunk = (c: number): void => {
    checkRange(inp, c * CHUNK, Math.min(n, (c + 1) * CHUNK), state);
    Atomics.store(done, c, 1);
  };
  try {
    let sinceYield = 0;
    for (;;) {
      const c = Atomics.add(ctl, 0, 1);
      if (c >= chunks) break;
      runChunk(c);
      if (++sinceYield >= 16) {
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
    opts.worker?.stop();
  }
  opts.onProgress?.(n);
  return state;
}

function _workerUrl(): URL {
  const here = import.meta.url;
  // From source (Deno, tsx) the worker is a .ts module beside this one; in the bundle (dist/), an entry of its own.
  if (here.endsWith('.ts')) return new URL('./scan_worker.ts', here);
  return new URL(`${here.includes('/chunks/') ? '../' : ''}scan_worker.js`, here);
}
