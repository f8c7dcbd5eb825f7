// What the scan's two threads share (the pass worker's handle, core/pass_worker.ts, and the worker
// itself, core/scan_worker.ts): the job, the worker's own pass, and the slots of their shared counter.
// Apart from both so that the worker's bundle holds nothing of the handle.
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

/** What a worker started with a directory is given at its start (see PassWorker.warmUp). */
export interface SpeculationStart {
  /** The claim counter (CTL_NEXT) and the stop flag (CTL_STOP), shared from the start so the scan can stop it at any time. */
  ctl: SharedArrayBuffer;
}

/**
 * Its first message: the directory whose replica's scan cache file it reads,
 * checks and begins a pass over; undefined for a scan that will not join
 * one (the command's own thread reads the file: see PassWorker.warmUp), so
 * it just waits for the job.
 */
export interface SpeculationOffer {
  dir: string | undefined;
}

/** A scan cache file read for a worker (root undefined: none). */
export type CacheOffer = { root: string; bytes: Uint8Array; refTime: number } | { root: undefined };

/**
 * What a worker made of the replica's cache file, its checksum
 * confirmed: the bytes (the scan loads them instead of reading the file
 * again) and the pass it began over them, if it was asked to.
 */
export interface Speculation {
  /** The replica's root, the cache file's bytes, and the index write time when they were read. */
  root: string;
  bytes: Uint8Array;
  refTime: number;
  pass?: SpeculativePass;
  /** Read by the command's own thread, its checksum not checked yet (the scan checks it before use). */
  unchecked?: boolean;
}

/** A pass a worker began before the scan asked (judging racy files by the speculation's refTime). */
export interface SpeculativePass {
  /** When it began (monotonicMs): a scan joins only a recent one (SPECULATION_MAX_AGE_MS). */
  startedAt: number;
  /** Its verdicts and finished chunks; chunks are claimed from the counter of the ctl the worker was started with. */
  state: Uint8Array;
  done: Uint8Array;
}

/**
 * How long a scan waits for a worker to say what it began: about what
 * reading and checking the cache itself costs. A worker not up by then
 * (a slow start) is stopped and handed a job instead.
 */
export const SPECULATION_WAIT_MS = 30;

/**
 * How old a worker's own pass may be for a scan to join it. Its verdicts
 * date from the command's start, so `imz status` reports the tree as it was
 * then (a change made while it runs shows next time, as with any scan). A
 * scan under the replica lock (push, sync) never joins one: it starts its
 * pass after locking, so what it logs is never older than its scan.
 */
export const SPECULATION_MAX_AGE_MS = 250;

/** Slots of a pass's ctl array. */
export const CTL_NEXT = 0; // the next chunk to claim
export const CTL_STOP = 1; // set: a worker's own pass stops claiming

