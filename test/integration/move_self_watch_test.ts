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

T('MOVE a.txt -> b.txt where b.txt is a hard link of a.txt on the server: a.txt is gone, as journalled', async () => {
  const tmp = await makeTmp('imz-rev-mv-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  await writeFile(join(srv, 'a.txt'), 'same file\n');
  await link(join(srv, 'a.txt'), join(srv, 'b.txt'));
  const server = await startServer(srv, ['--rescan-interval', '0']);
  const { Remote } = await import('../../core/remote.ts');
  const remote = await Remote.connect(server.address, { timeoutMs: 5_000 });
  let status: number | undefined;
  try {
    const a = await remote.stat('a.txt');
    const b = await remote.stat('b.txt');
    const reply = await remote.session.request(Op.REINTEGRATE, { reintegrate: { replicaId: randomUUID(), policy: 'manual', ops: [{
      seq: 1, kind: 7 as never, path: 'b.txt', fromPath: 'a.txt', base: Number(b.version), fromBase: Number(a.version), baseMode: 0,
      state: { path: 'b.txt', type: 1 as never, size: a.size, mode: a.mode, mtimeMs: a.mtimeMs, hash: a.hash, target: '', version: 0 },
    }] } });
    status = (reply as { reintegrateReply?: { results?: { status?: number }[] } }).reintegrateReply?.results?.[0]?.status;
  } finally {
    remote.close();
  }
  assert.is(status, OpStatus.APPLIED, 'applied');
  const last = (await readJournal(server.address)).filter((r) => r.path === 'a.txt').at(-1);
  assert.is(last?.change, 4, 'a.txt journalled as removed');
  assert.not.ok(existsSync(join(srv, 'a.txt')), 'a.txt is still in the served tree, though journalled as removed');
  assert.is(readFileSync(join(srv, 'b.txt'), 'utf8'), 'same file\n');
  // A local change to a.txt's old name is journalled as usual (the removal announced no event that swallows it).
  await writeFile(join(srv, 'a.txt'), 'new a\n');
  await waitFor(async () => (await readJournal(server.address)).filter((r) => r.path === 'a.txt').at(-1)?.change === 1, 4000, 'a.txt made again journalled');
});

T.run();
