// The pass worker's handle, apart from the pass itself (core/scan_pass.ts)
// so that the CLI can start the thread before it loads anything else (see
// cli/main.ts).
import { Worker } from 'node:worker_threads';
import { CTL_CHECKED, CTL_STOP, SPECULATION_WAIT_MS, type PassJob, type Speculation, type SpeculationStart } from './pass_job.ts';

export { CHUNK, CTL_CHECKED, CTL_NEXT, CTL_STOP, SPECULATION_MAX_AGE_MS, SPECULATION_WAIT_MS, type PassJob, type Speculation, type SpeculationStart } from './pass_job.ts';

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
      const ctl = dir === undefined ? undefined : new Int32Array(new SharedArrayBuffer(16));
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

  /**
   * Whether the cache file its own pass read checks out (the worker says so
   * after its last chunk). For a worker gone before saying, check() says.
   */
  async checked(check: () => boolean): Promise<boolean> {
    for (;;) {
      const v = this._ctl ? Atomics.load(this._ctl, CTL_CHECKED) : 0;
      if (v !== 0) return v === 1;
      if (this.gone || !this._ctl) return check();
      await new Promise<void>((r) => setTimeout(r, 1));
    }
  }

  /** What the worker has said of the cache file so far: true (checks out), false (does not), undefined (not yet). */
  checkedSoFar(): boolean | undefined {
    const v = this._ctl ? Atomics.load(this._ctl, CTL_CHECKED) : 0;
    return v === 0 ? undefined : v === 1;
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

function _workerUrl(): URL {
  const here = import.meta.url;
  // From source (Deno, tsx) the worker is a .ts module beside this one; in the bundle (dist/), a script of its own.
  if (here.endsWith('.ts')) return new URL('./scan_worker.ts', here);
  return new URL(`${here.includes('/chunks/') ? '../' : ''}scan_worker.cjs`, here);
}
