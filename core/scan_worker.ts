// The second thread of a scan's lstat pass (core/scan_pass.ts runPass and
// PassWorker). Started for a directory, it first reads the replica's scan
// cache file and runs a pass of its own over it (the scan joins it or stops
// it); then, or at once, it waits for a job and claims chunks of entries
// from the shared counter until none are left. Loads no more than the pass
// needs.
import { parentPort, workerData } from 'node:worker_threads';
import { monotonicMs } from './file_times.ts';
import { PathList } from './path_list.ts';
import { cacheOffer, isWorkingDir } from './scan_cache_file.ts';
import { checksumOk, decodeScanCache } from './scan_cache_model.ts';
import { type CacheOffer, CHUNK, CTL_NEXT, CTL_STOP, type PassJob, type Speculation, type SpeculationOffer, type SpeculationStart } from './pass_job.ts';
import { CHECK, type PassInput, checkRange } from './scan_pass.ts';

/**
 * Claims chunks from ctl until none are left (or, for the worker's own
 * pass, it is told to stop).
 */
function _claim(inp: PassInput, state: Uint8Array, ctl: Int32Array, done: Uint8Array, stoppable: boolean): void {
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
  }
}

/**
 * What the worker does with the replica's cache file (see PassWorker):
 * checks it, says what it found (and what pass it began) before its first
 * lstat, then, if asked, runs a pass of its own over it. The checksum first
 * (native CRC-32, ~2 ms): a file that checks out is one the encoder wrote,
 * so its structure is not walked again before the pass.
 */
function _speculate(offer: CacheOffer, ctl: Int32Array): void {
  let spec: Speculation | undefined;
  let inp: PassInput | undefined;
  try {
    const { root } = offer;
    const data = root !== undefined && offer.bytes.buffer instanceof SharedArrayBuffer && checksumOk(offer.bytes) ? decodeScanCache(offer.bytes, 'none') : undefined;
    if (root !== undefined && data) {
      const n = data.paths.length;
      spec = {
        root, bytes: offer.bytes, refTime: offer.refTime,
        pass: {
          startedAt: monotonicMs(),
          state: new Uint8Array(new SharedArrayBuffer(Math.max(1, n)), 0, n),
          done: new Uint8Array(new SharedArrayBuffer(Math.max(1, Math.ceil(n / CHUNK))), 0, Math.ceil(n / CHUNK)),
        },
      };
      inp = { rootSlash: isWorkingDir(root) ? '' : root.endsWith('/') ? root : `${root}/`, paths: data.paths, facts: data.facts, targets: data.targets, refTime: offer.refTime };
    }
  } catch {
    spec = undefined; // nothing begun: the scan reads the file itself and hands a job as usual
  }
  parentPort!.postMessage({ speculation: spec });
  if (spec?.pass && inp) _claim(inp, spec.pass.state, ctl, spec.pass.done, true);
}

function _job(d: PassJob): void {
  const paths = new PathList(d.pathBytes, d.pathEnds);
  const targets: string[] = [];
  for (const [i, t] of d.links) targets[i] = t;
  _claim({ rootSlash: d.rootSlash, paths, facts: d.facts, targets, refTime: d.refTime }, new Uint8Array(d.state), new Int32Array(d.ctl), new Uint8Array(d.done), false);
}

// Started with a ctl, the first message is the offer of a cache file and the second the job (if the scan hands one);
// without, the first is the job.
const _start = workerData as SpeculationStart | undefined;
let _offered = !_start;
parentPort?.on('message', (m: SpeculationOffer | PassJob) => {
  if (!_offered) {
    _offered = true;
    const offer = m as SpeculationOffer;
    _speculate(offer.dir === undefined ? { root: undefined } : cacheOffer(offer.dir), new Int32Array(_start!.ctl));
  } else {
    parentPort!.removeAllListeners('message');
    _job(m as PassJob);
  }
});
