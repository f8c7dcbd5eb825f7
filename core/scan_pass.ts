import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { type StatFacts, lstatFacts } from './fast_lstat.ts';
import { sameMtime } from './file_times.ts';
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
  for (let i = from; i < to; i++) {
    const path = rootSlash === '' ? names[i - from]! : rootSlash + names[i - from]!;
    const o = i * FACTS;
    const t = facts[o + F_TYPE]!;
    const type = t & 15;
    let there: boolean;
    try {
      there = _lstatFacts(path, st);
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
  /** The paths (PathList's bytes and ends) and the facts rows: views of shared memory, read in place. */
  pathBytes: Uint8Array;
  pathEnds: Uint32Array;
  facts: Float64Array;
  /** Symlink targets by entry number (the only non-empty ones). */
  links: Array<[number, string]>;
  state: SharedArrayBuffer;
  ctl: SharedArrayBuffer;
  done: SharedArrayBuffer;
}

/** What a worker started with a directory does on its own (see PassWorker.warmUp). */
export interface SpeculationStart {
  /** Where the replica is looked for (resolved by the caller: the process may change directory meanwhile). */
  dir: string;
  /** The claim counter (CTL_NEXT) and the stop flag (CTL_STOP), shared from the start so the scan can stop it at any time. */
  ctl: SharedArrayBuffer;
}

/** A pass a worker began before the scan asked: over the cache file as it read and checked it. */
export interface Speculation {
  /** The replica's root, the cache file's bytes (checksummed), and the index write time it judged racy files by. */
  root: string;
  bytes: Uint8Array;
  refTime: number;
  /** Its verdicts and finished chunks; chunks are claimed from the counter of the ctl it was started with. */
  state: Uint8Array;
  done: Uint8Array;
}

/**
 * How long a scan waits for a worker to say what it began: about what
 * reading and checking the cache itself costs. A worker not up by then
 * (a slow start) is stopped and handed a job instead.
 */
export const SPECULATION_WAIT_MS = 15;

/** Slots of a pass's ctl array. */
export const CTL_NEXT = 0; // the next chunk to claim
export const CTL_STOP = 1; // set: a worker's own pass stops claiming

/**
 * A worker thread started before the scan knows what to give it: a
 * thread's start-up (30-60 ms here) then overlaps the CLI's. Started with
 * a directory, it does not wait: it finds the replica, reads and checks its
 * scan cache and starts the lstat pass alone, on the core the process's
 * start-up leaves idle. The scan joins that pass when the cache it loads
 * is the one the worker read; otherwise it stops it and hands it a job.
 * Unref'd, so an unused one never keeps the process alive.
 */
export class PassWorker {
  gone = false;
  private readonly _w: Worker;
  private readonly _ctl: Int32Array | undefined;
  private readonly _spec: Promise<Speculation | undefined>;

  private constructor(w: Worker, ctl: Int32Array | undefined) {
    this._w = w;
    this._ctl = ctl;
    let settle: (s: Speculation | undefined) => void = () => {};
    this._spec = ctl ? new Promise((r) => (settle = r)) : Promise.resolve(undefined);
    w.on('message', (m: { speculation?: Speculation }) => settle(m.speculation));
    const end = () => {
      this.gone = true;
      settle(undefined);
    };
    w.on('error', end);
    w.on('exit', end);
    // After the listeners: a 'message' listener refs the worker again.
    w.unref();
  }

  /**
   * Starts one (with a directory: see the class); undefined where threads
   * or shared memory are not to be had. url: the worker's module, for a
   * runtime that cannot load the one beside this file (tests under tsx
   * give the bundle's).
   */
  static start(dir?: string, url: URL = _workerUrl()): PassWorker | undefined {
    if (typeof SharedArrayBuffer !== 'function') return undefined;
    try {
      const ctl = dir === undefined ? undefined : new Int32Array(new SharedArrayBuffer(8));
      const workerData: SpeculationStart | undefined = ctl && { dir: dir!, ctl: ctl.buffer as SharedArrayBuffer };
      return new PassWorker(new Worker(url, { workerData }), ctl);
    } catch {
      return undefined;
    }
  }

  private static _warm: PassWorker | undefined;

  /**
   * Starts one now for the next scan of this process to take: a CLI about
   * to scan calls this first thing, with the directory it will scan
   * (absolute), so the pass is under way when the scan starts.
   */
  static warmUp(dir?: string, url?: URL): void {
    PassWorker._warm ??= PassWorker.start(dir, url);
  }

  /** The worker warmUp started, if any and still alive (each is taken once). */
  static take(): PassWorker | undefined {
    const w = PassWorker._warm;
    PassWorker._warm = undefined;
    return w && !w.gone ? w : undefined;
  }

  /**
   * The pass it began on its own for the replica at root, once it has
   * said (it does so before its first lstat); undefined when it began none,
   * or one for another directory (which is then stopped).
   */
  async speculation(root: string, waitMs = SPECULATION_WAIT_MS): Promise<Speculation | undefined> {
    let wake: () => void = () => {};
    const late = new Promise<undefined>((r) => (wake = () => r(undefined)));
    const timer = setTimeout(() => wake(), waitMs);
    const s = await Promise.race([this._spec, late]);
    clearTimeout(timer);
    if (s && s.root === root) return s;
    this.stopSpeculation();
    return undefined;
  }

  /** Stops the pass it began on its own (it finishes the chunk it is in, then takes a job). */
  stopSpeculation(): void {
    if (this._ctl) Atomics.store(this._ctl, CTL_STOP, 1);
  }

  /** The ctl array of its own pass (to join it). */
  get ctl(): Int32Array | undefined {
    return this._ctl;
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
  /**
   * The worker's own pass over these very paths and facts (its
   * speculation, with the ctl it was started with): joined, not started.
   */
  joined?: { state: Uint8Array; done: Uint8Array; ctl: Int32Array };
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
      const links: Array<[number, string]> = [];
      for (let i = 0; i < n; i++) if ((inp.facts[i * FACTS + F_TYPE]! & 15) === _SYMLINK) links.push([i, inp.targets[i]!]);
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
