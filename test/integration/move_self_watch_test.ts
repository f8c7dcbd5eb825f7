// Review of 973e2f4: a MOVE whose source and destination are the same file (rename(2) then does nothing and makes
// no event) is still announced as two events (one at the source, one at the destination): the next two events on
// that path within 5 s, a local program's changes, are dropped and never journalled (periodic rescan off here).
// A well-behaved client never sends it; any client that may push can.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Op } from '../../protocol/constants.ts';
import { cleanupAll, copyFixture, makeTmp, readJournal, startServer, waitFor } from '../helpers.ts';

const T = suite('review: a move of a path onto itself');
T.after.each(cleanupAll);
T.after(cleanupAll);

T('MOVE x.txt -> x.txt, then x.txt replaced by a local program: journalled', async () => {
  const tmp = await makeTmp('imz-rev-mv-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  await writeFile(join(srv, 'x.txt'), 'x\n');
  const server = await startServer(srv, ['--rescan-interval', '0']);
  const { Remote } = await import('../../core/remote.ts');
  const remote = await Remote.connect(server.address, { timeoutMs: 5_000 });
  try {
    const st = await remote.stat('x.txt');
    const v = Number(st.version);
    const reply = await remote.session.request(Op.REINTEGRATE, { reintegrate: { replicaId: randomUUID(), policy: 'manual', ops: [{
      seq: 1, kind: 7 as never, path: 'x.txt', fromPath: 'x.txt', base: v, fromBase: v, baseMode: 0,
      state: { path: 'x.txt', type: 1 as never, size: st.size, mode: st.mode, mtimeMs: st.mtimeMs, hash: st.hash, target: '', version: 0 },
    }] } });
    const res = (reply as { reintegrateReply?: { results?: { status?: number }[] } }).reintegrateReply?.results ?? [];
    console.log('result', JSON.stringify(res));
  } finally {
    remote.close();
  }
  await new Promise((r) => setTimeout(r, 300));
  const since = (await readJournal(server.address)).length;
  await writeFile(join(tmp, 'x.new'), 'changed on the server\n');
  await rename(join(tmp, 'x.new'), join(srv, 'x.txt'));
  const ok = await waitFor(async () => (await readJournal(server.address)).slice(since).some((r) => r.path === 'x.txt' && r.type === 1), 4000, 'x.txt journalled').then(() => true, () => false);
  assert.ok(ok, `x.txt, replaced on the server after the MOVE onto itself, never journalled: ${JSON.stringify((await readJournal(server.address)).slice(since - 2))}`);
});

T.run();
