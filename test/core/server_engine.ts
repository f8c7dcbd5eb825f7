// A served tree and the server's engine over it, without the network: for
// tests that drive the reintegrator directly.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Reintegrator, type ReintegratorOptions } from '../../core/server_apply.ts';
import { ServerScanner } from '../../core/server_scanner.ts';
import { ServerState } from '../../core/server_state.ts';
import { makeTmp } from '../helpers.ts';

/**
 * A served tree holding files (in a temp dir under base), whose watcher waits a minute before reporting anything.
 * opts.holdBytes: 0 has every upload staged on disk; opts.holdMs: how long a held upload waits (see Reintegrator's _hold);
 * opts.syncfsFrom, opts.onWriteAhead: see _writeAhead.
 */
export async function serverEngine(files: Record<string, string>, prefix: string, base?: string, opts?: ReintegratorOptions) {
  const root = await makeTmp(prefix, base);
  for (const [p, c] of Object.entries(files)) await writeFile(join(root, p), c);
  const stateDir = join(root, '.imz-server');
  const state = await ServerState.open(stateDir);
  const scanner = new ServerScanner(root, state, { debounceMs: 60_000, rescanMs: 0 });
  await scanner.start();
  const re = new Reintegrator(root, state, scanner, opts);
  const close = async () => {
    await scanner.close();
    await state.close();
  };
  return { root, stateDir, state, re, close };
}
