// The scan's second thread, started by the CLI's very first statement
// (cli/main.ts), before the rest of the CLI loads: it imports nothing but
// node:worker_threads, so it costs the entry no module of ours but this one.
// PassWorker (core/pass_worker.ts) adopts what it started.
import { Worker } from 'node:worker_threads';
import type { SpeculationStart } from './pass_job.ts';

/** A worker started with a claim counter, not yet given its cache file. */
export interface EarlyWorker {
  worker: Worker;
  ctl: Int32Array;
  /** Set when it failed or exited before anyone took it (its script missing, no memory for a thread...). */
  failed: boolean;
}

let _early: EarlyWorker | undefined;

/**
 * Starts the pass worker now (see PassWorker.warmUp, which adopts it);
 * nothing where threads or shared memory are not to be had. Unref'd at
 * once: a command that never scans exits without waiting for it.
 */
export function startEarly(url: URL = workerUrl()): void {
  if (_early || typeof SharedArrayBuffer !== 'function') return;
  try {
    const { worker, ctl } = newPassThread(url, true);
    const early: EarlyWorker = { worker, ctl: ctl!, failed: false };
    // Listened to from the start: an 'error' nobody listens to would take the whole CLI down before it
    // has loaded the handle that listens for it.
    const fail = () => {
      early.failed = true;
    };
    worker.on('error', fail);
    worker.on('exit', fail);
    worker.unref();
    _early = early;
  } catch {
    _early = undefined;
  }
}

/**
 * A new pass worker thread; with a claim counter (speculate) it waits for
 * the offer of a cache file first (see PassWorker). Throws what new Worker
 * throws.
 */
export function newPassThread(url: URL, speculate: boolean): { worker: Worker; ctl: Int32Array | undefined } {
  const ctl = speculate ? new Int32Array(new SharedArrayBuffer(8)) : undefined;
  const workerData: SpeculationStart | undefined = ctl && { ctl: ctl.buffer as SharedArrayBuffer };
  return { worker: new Worker(url, { workerData }), ctl };
}

/** The worker startEarly started, taken once. */
export function takeEarly(): EarlyWorker | undefined {
  const e = _early;
  _early = undefined;
  return e;
}

/** The worker's script: beside the bundle (dist/), or the .ts module from source (Deno, tsx). */
export function workerUrl(): URL {
  const here = import.meta.url;
  if (here.endsWith('.ts')) return new URL('./scan_worker.ts', here);
  return new URL('scan_worker.cjs', here);
}
