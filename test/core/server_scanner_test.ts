// core/server_scanner.ts over a real tree with real watches: a directory that
// appears (made, or moved in) is listed before its watch exists; what is
// written into it in between must still be journalled (the crash-rounds run
// once lost a file made right after `mv dir dir2` until the periodic rescan).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ServerScanner } from '../../core/server_scanner.ts';
import { type PendingChange, ServerState } from '../../core/server_state.ts';
import { cleanupAll, makeTmp, waitFor } from '../helpers.ts';

test.after(cleanupAll);

// A scanner over root, its periodic rescan off, whose commits run `during` first (a write landing in the gap between
// a directory's listing and its watch).
async function scannerWith(root: string, during: (changes: PendingChange[]) => void) {
  const state = await ServerState.open(join(root, '.imz-server'));
  const scanner = new ServerScanner(root, state, { debounceMs: 20, rescanMs: 0 });
  await scanner.start();
  const commit = state.commit.bind(state);
  state.commit = (changes, opts) => {
    during(changes);
    return commit(changes, opts);
  };
  return { state, scanner, close: async () => { await scanner.close(); await state.close(); } };
}

for (const how of ['made', 'moved in'] as const) {
  test(`a file written into a directory ${how} after the scan listed it, before it was watched, is journalled`, async () => {
    const root = await makeTmp('imz-scanner-');
    await mkdir(join(root, 'old'));
    await writeFile(join(root, 'old', 'kept.txt'), 'kept\n');
    let wrote = false;
    const { state, close } = await scannerWith(root, (changes) => {
      if (!wrote && changes.some((c) => c.path === 'd' && c.state?.type !== undefined)) {
        wrote = true;
        writeFileSync(join(root, 'd', 'late.txt'), 'late\n');
      }
    });
    try {
      if (how === 'made') {
        await mkdir(join(root, 'd'));
        await writeFile(join(root, 'd', 'early.txt'), 'early\n');
      } else {
        await rename(join(root, 'old'), join(root, 'd'));
      }
      await waitFor(() => wrote, 5_000, 'the scan of d committed');
      await waitFor(() => state.table.has('d/late.txt'), 3_000, 'd/late.txt journalled').catch(() => {});
      assert.ok(state.table.has('d/late.txt'), 'the file written between the listing and the watch is journalled');
      assert.ok(state.table.has(how === 'made' ? 'd/early.txt' : 'd/kept.txt'));
      // And a write after that comes through the new watch as usual.
      await writeFile(join(root, 'd', 'later.txt'), 'later\n');
      await waitFor(() => state.table.has('d/later.txt'), 3_000, 'd/later.txt journalled');
    } finally {
      await close();
    }
  });
}

test.run();
