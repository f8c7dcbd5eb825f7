// Review of 973e2f4: a MOVE whose source and destination are the same file (rename(2) then does nothing and makes
// no event) is still announced as two events (one at the source, one at the destination): the next two events on
// that path within 5 s, a local program's changes, are dropped and never journalled (periodic rescan off here).
// A well-behaved client never sends it; any client that may push can.
// Also a MOVE onto another name of the same file (a hard link made on the server): rename(2) leaves both names, so
// the server removes the source itself, as the REMOVE it journals says.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { link, rename, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Op, OpStatus } from '../../protocol/constants.ts';
import { cleanupAll, copyFixture, makeTmp, readJournal, startServer, waitFor } from '../helpers.ts';

const T = suite('review: a move of a path onto itself');
T.after.each(cleanupAll);
T.after(cleanupAll);

// A server (periodic rescan off) on a copy of fixtures/sample, once add has put its files there.
async function served(add: (srv: string) => Promise<void>) {
  const tmp = await makeTmp('imz-rev-mv-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  await add(srv);
  return { tmp, srv, server: await startServer(srv, ['--rescan-interval', '0']) };
}

// Sends the server one MOVE of from to to, as a client would (its versions and state as the server has them); the results.
async function moveOnServer(address: string, from: string, to: string): Promise<{ status?: number }[]> {
  const { Remote } = await import('../../core/remote.ts');
  const remote = await Remote.connect(address, { timeoutMs: 5_000 });
  try {
    const a = await remote.stat(from);
    const b = await remote.stat(to);
    const reply = await remote.session.request(Op.REINTEGRATE, { reintegrate: { replicaId: randomUUID(), policy: 'manual', ops: [{
      seq: 1, kind: 7 as never, path: to, fromPath: from, base: Number(b.version), fromBase: Number(a.version), baseMode: 0,
      state: { path: to, type: 1 as never, size: a.size, mode: a.mode, mtimeMs: a.mtimeMs, hash: a.hash, target: '', version: 0 },
    }] } });
    return (reply as { reintegrateReply?: { results?: { status?: number }[] } }).reintegrateReply?.results ?? [];
  } finally {
    remote.close();
  }
}

T('MOVE x.txt -> x.txt, then x.txt replaced by a local program: journalled', async () => {
  const { tmp, srv, server } = await served((srv) => writeFile(join(srv, 'x.txt'), 'x\n'));
  console.log('result', JSON.stringify(await moveOnServer(server.address, 'x.txt', 'x.txt')));
  await new Promise((r) => setTimeout(r, 300));
  const since = (await readJournal(server.address)).length;
  await writeFile(join(tmp, 'x.new'), 'changed on the server\n');
  await rename(join(tmp, 'x.new'), join(srv, 'x.txt'));
  const ok = await waitFor(async () => (await readJournal(server.address)).slice(since).some((r) => r.path === 'x.txt' && r.type === 1), 4000, 'x.txt journalled').then(() => true, () => false);
  assert.ok(ok, `x.txt, replaced on the server after the MOVE onto itself, never journalled: ${JSON.stringify((await readJournal(server.address)).slice(since - 2))}`);
});

T('MOVE a.txt -> b.txt where b.txt is a hard link of a.txt on the server: a.txt is gone, as journalled', async () => {
  const { srv, server } = await served(async (srv) => {
    await writeFile(join(srv, 'a.txt'), 'same file\n');
    await link(join(srv, 'a.txt'), join(srv, 'b.txt'));
  });
  const [result] = await moveOnServer(server.address, 'a.txt', 'b.txt');
  assert.is(result?.status, OpStatus.APPLIED, 'applied');
  const last = (await readJournal(server.address)).filter((r) => r.path === 'a.txt').at(-1);
  assert.is(last?.change, 4, 'a.txt journalled as removed');
  assert.not.ok(existsSync(join(srv, 'a.txt')), 'a.txt is still in the served tree, though journalled as removed');
  assert.is(readFileSync(join(srv, 'b.txt'), 'utf8'), 'same file\n');
  // A local change to a.txt's old name is journalled as usual (the removal announced no event that swallows it).
  await writeFile(join(srv, 'a.txt'), 'new a\n');
  await waitFor(async () => (await readJournal(server.address)).filter((r) => r.path === 'a.txt').at(-1)?.change === 1, 4000, 'a.txt made again journalled');
});

T.run();
