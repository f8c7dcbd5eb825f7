// The pass worker's handle, apart from the pass itself (core/scan_pass.ts)
// so that the CLI loads little to hand the thread its work (the thread
// itself it starts first of all: core/pass_boot.ts).
import type { Worker } from 'node:worker_threads';
import { CTL_STOP, SPECULATION_WAIT_MS, type PassJob, type Speculation, type SpeculationOffer } from './pass_job.ts';
import { newPassThread, takeEarly, workerUrl } from './pass_boot.ts';
import { prereadScanCache } from './scan_cache_file.ts';

export { replicaRootOf } from './scan_cache_file.ts';

export { CHUNK, CTL_NEXT, CTL_STOP, SPECULATION_MAX_AGE_MS, SPECULATION_WAIT_MS, type PassJob, type Speculation, type SpeculationOffer, type SpeculationStart, type SpeculativePass } from './pass_job.ts';

/**
 * A worker thread started before the scan knows what to give it: a
 * thread's start-up (25-60 ms here) then overlaps the CLI's. Started with
 * a directory, it does not wait: it reads the replica's scan cache file,
 * checks it and starts the lstat pass alone, on the core the process's
 * start-up leaves idle. The scan joins that pass when the cache it loads
 * is that file; otherwise it stops it and hands it a job.
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
  static start(dir?: string, url: URL = workerUrl(), opts: WarmUpOptions = {}): PassWorker | undefined {
    if (typeof SharedArrayBuffer !== 'function') return undefined;
    let w: PassWorker;
    try {
      const { worker, ctl } = newPassThread(url, dir !== undefined);
      w = new PassWorker(worker, ctl);
    } catch {
      return undefined;
    }
    if (dir !== undefined) w._offer(dir, opts);
    return w;
  }

  // For a pass of its own, the thread reads the file itself: the command's own thread is busy loading the CLI
  // meanwhile, and on two cores the thread's reading costs it nothing. Without one (push, sync), the file is read
  // by the thread pool at once instead: the thread would only start reading once it is up (~30 ms), after the
  // command is ready to scan.
  private _offer(dir: string, opts: WarmUpOptions): void {
    if (opts.pass !== false) {
      this._w.postMessage({ dir } satisfies SpeculationOffer);
      return;
    }
    this._w.postMessage({ dir: undefined } satisfies SpeculationOffer);
    this._preread = prereadScanCache(dir);
  }

  private _preread: Promise<Speculation | undefined> | undefined;

  private static _warm: PassWorker | undefined;

  /**
   * Starts one now for the next scan of this process to take: a CLI about
   * to scan calls this first thing, with the directory it will scan
   * (absolute), so the pass is under way when the scan starts (or, with
   * pass false, the cache file is read and checked).
   */
  static warmUp(dir?: string, url?: URL, opts: WarmUpOptions = {}): void {
    if (PassWorker._warm) return;
    // One the CLI started before it loaded this module (startEarly) is given the directory now.
    const early = url === undefined ? takeEarly() : undefined;
    if (early && !early.failed && dir !== undefined) {
      PassWorker._warm = new PassWorker(early.worker, early.ctl);
      PassWorker._warm._offer(dir, opts);
    } else {
      if (early) void early.worker.terminate();
      PassWorker._warm = PassWorker.start(dir, url, opts);
    }
  }

  /** The worker warmUp started, if any and still alive (each is taken once). */
  static take(): PassWorker | undefined {
    const w = PassWorker._warm;
    PassWorker._warm = undefined;
    return w && !w.gone ? w : undefined;
  }

  /**
   * What it made of the cache file of the replica at root, once it has said
   * (before its first lstat); undefined when the file did not check out or
   * it began nothing, or for another directory (its pass is then stopped).
   */
  async speculation(root: string, waitMs = SPECULATION_WAIT_MS): Promise<Speculation | undefined> {
    let wake: () => void = () => {};
    const late = new Promise<undefined>((r) => (wake = () => r(undefined)));
    const timer = setTimeout(() => wake(), waitMs);
    const s = await Promise.race([this._preread ?? this._spec, late]);
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

/** Options of PassWorker.warmUp and start. */
export interface WarmUpOptions {
  /**
   * false: the worker begins no pass of its own (for a scan that will not
   * join one); the command's thread pool reads the cache file instead, and
   * the scan checks it. Default true.
   */
  pass?: boolean;
}
