// The second thread of a scan's lstat pass (core/scan_pass.ts runPass and
// PassWorker). Started with a directory, it first runs a pass of its own
// over the replica's scan cache as it finds it (the scan joins it or stops
// it); then, or at once, it waits for a job and claims chunks of entries
// from the shared counter until none are left. Loads no more than the
// pass needs.
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { monotonicMs } from './file_times.ts';
import { PathList } from './path_list.ts';
import { REPLICA_DIR } from './paths.ts';
import { SCAN_CACHE_FILE, indexWriteTime, readScanCacheFile, replicaRootOf } from './scan_cache_file.ts';
import { Checksum, decodeScanCache } from './scan_cache_model.ts';
import { CHUNK, CTL_CHECKED, CTL_NEXT, CTL_STOP, type PassJob, type Speculation, type SpeculationStart } from './pass_job.ts';
import { CHECK, type PassInput, checkRange } from './scan_pass.ts';

/**
 * Claims chunks from ctl until none are left (or, for the worker's own
 * pass, it is told to stop). between: work done after each chunk.
 */
function _claim(inp: PassInput, state: Uint8Array, ctl: Int32Array, done: Uint8Array, stoppable: boolean, between?: () => void): void {
  const n = inp.paths.length;
  const chunks = Math.ceil(n / CHUNK);
  for (;;) {
    if (stoppable && Atomics.load(ctl, CTL_STOP) !== 0) return;
    const c = Atomics.add(ctl, CTL_NEXT, 1);
    if (c >= chunks) return;
    const from = c * CHUNK;
    const to = Math.min(n, from + CHUNK);
    try {
      checkRange(inp, from, to, state);
    } catch {
      // An error the main thread should report (EACCES...): it meets it again when it looks closely.
      state.fill(CHECK, from, to);
    }
    Atomics.store(done, c, 1);
    between?.();
  }
}

/** The worker's own pass (see PassWorker): always says what it began, or that it began nothing, before it starts. */
function _speculate(start: SpeculationStart): void {
  let spec: Speculation | undefined;
  let inp: PassInput | undefined;
  try {
    const root = replicaRootOf(start.dir);
    const stateDir = root === undefined ? undefined : join(root, REPLICA_DIR);
    const bytes = stateDir === undefined ? undefined : readScanCacheFile(join(stateDir, SCAN_CACHE_FILE));
    // The structure now, what reading it needs; the checksum after the pass, off the scan's way (PassWorker.checked).
    const data = bytes && decodeScanCache(bytes, 'structure');
    if (root !== undefined && stateDir !== undefined && bytes && data && bytes.buffer instanceof SharedArrayBuffer) {
      const n = data.paths.length;
      const refTime = indexWriteTime(stateDir);
      spec = {
        root, bytes, refTime, startedAt: monotonicMs(),
        state: new Uint8Array(new SharedArrayBuffer(Math.max(1, n)), 0, n),
        done: new Uint8Array(new SharedArrayBuffer(Math.max(1, Math.ceil(n / CHUNK))), 0, Math.ceil(n / CHUNK)),
      };
      inp = { rootSlash: root.endsWith('/') ? root : `${root}/`, paths: data.paths, facts: data.facts, targets: data.targets, refTime };
    }
  } catch {
    spec = undefined; // nothing begun: the scan hands a job as usual
  }
  parentPort!.postMessage({ speculation: spec });
  if (!spec || !inp) return;
  const ctl = new Int32Array(start.ctl);
  // The checksum a slice after each chunk (twice the chunk's share of the file, as this thread does about half the
  // chunks), the rest at the end: the verdict is ready when the pass is.
  const sum = Checksum.ofCache(spec.bytes);
  const slice = (2 * spec.bytes.length) / Math.max(1, Math.ceil(spec.state.length / CHUNK));
  _claim(inp, spec.state, ctl, spec.done, true, () => sum.step(slice));
  if (Atomics.load(ctl, CTL_STOP) !== 0) return;
  sum.step(Infinity);
  Atomics.store(ctl, CTL_CHECKED, sum.matches(spec.bytes) ? 1 : 2);
}

parentPort?.once('message', (d: PassJob) => {
  const paths = new PathList(d.pathBytes, d.pathEnds);
  const targets: string[] = [];
  for (const [i, t] of d.links) targets[i] = t;
  _claim({ rootSlash: d.rootSlash, paths, facts: d.facts, targets, refTime: d.refTime }, new Uint8Array(d.state), new Int32Array(d.ctl), new Uint8Array(d.done), false);
});

if (workerData) _speculate(workerData as SpeculationStart);
