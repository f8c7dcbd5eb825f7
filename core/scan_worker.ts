// The second thread of a scan's lstat pass (core/scan_pass.ts runPass):
// waits for its job, then claims chunks of entries from the shared counter
// until none are left. Loads no more than the pass needs.
import { parentPort } from 'node:worker_threads';
import { CHECK, CHUNK, type PassJob, checkRange } from './scan_pass.ts';

parentPort?.once('message', (d: PassJob) => {
  // Nothing but native calls before the first claim: this thread's code is not compiled yet.
  const paths = d.pathBlob === '' ? [] : d.pathBlob.split('\0');
  // The facts view where the main thread has it (not the buffer's start: a cache read from its file has its header there).
  const facts = new Float64Array(d.facts, d.factsOffset, d.factsLength);
  const targets: string[] = [];
  for (const [i, t] of d.links) targets[i] = t;
  const inp = { rootSlash: d.rootSlash, paths, facts, targets, refTime: d.refTime };
  const state = new Uint8Array(d.state);
  const ctl = new Int32Array(d.ctl);
  const done = new Uint8Array(d.done);
  const n = paths.length;
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
});
