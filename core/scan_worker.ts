// The second thread of a scan's lstat pass (core/scan_pass.ts runPass):
// decodes the scan cache it was handed, then claims chunks of entries from
// the shared counter until none are left. Loads no more than the pass needs.
import { parentPort, workerData } from 'node:worker_threads';
import { decodeScanCache } from './scan_cache_model.ts';
import { CHECK, CHUNK, checkRange } from './scan_pass.ts';

const d = workerData as { rootSlash: string; refTime: number; bytes: SharedArrayBuffer; state: SharedArrayBuffer; ctl: SharedArrayBuffer; done: SharedArrayBuffer };
// A copy: TextDecoder refuses views of shared memory.
const data = decodeScanCache(new Uint8Array(d.bytes).slice(), false);
if (data) {
  const inp = { rootSlash: d.rootSlash, paths: data.paths, facts: data.facts, targets: data.targets, refTime: d.refTime };
  const state = new Uint8Array(d.state);
  const ctl = new Int32Array(d.ctl);
  const done = new Uint8Array(d.done);
  const n = data.paths.length;
  const chunks = Math.ceil(n / CHUNK);
  for (;;) {
    const c = Atomics.add(ctl, 0, 1);
    if (c >= chunks) break;
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
parentPort?.postMessage('done');
