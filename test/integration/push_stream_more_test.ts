// More runs of the push that streams while it scans (core/push.ts _Stream), from the review of
// 90456e4: create/create conflicts among streamed changes under every policy but manual
// (push_stream_test has manual), a server killed while groups go up, imz sync, and a tracked
// file turned into a directory holding a copy of its old content beside a big copy-then-edit.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type RunResult, runReport as out, byReplica, cleanupAll, readJournal, recordsPerPath, diffTreesBut, imz, manyFiles, jsonLines, pushUnderWay, readReintLog, sampleWorld, setRemote, snapshotTree, startServer,
} from '../helpers.ts';

const T = suite('push: streamed while scanning, more');
T.after.each(cleanupAll);
T.after(cleanupAll);

const pushed = (r: RunResult) => jsonLines(r.stdout).find((e) => e.event === 'pushed') as Record<string, number> | undefined;

for (const policy of ['server-wins', 'client-wins', 'newest', 'keep-both']) {
  T(`streamed create/create conflicts under ${policy}: settled, server and replica alike, status clean, a second replica alike`, async () => {
    const { srv, replicas: [a, b, c] } = await sampleWorld(3);
    await manyFiles(b!, 'clash', 120, 'b');
    assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
    await new Promise((r) => setTimeout(r, 20));
    await manyFiles(a!, 'clash', 120, 'a');
    await manyFiles(a!, 'mine', 700, 'a');
    const r = await imz(['push', '-C', a!, '--json', '--policy', policy]);
    assert.ok(r.code === 0, out(r));
    assert.ok(pushed(r)!.streamed >= 820, JSON.stringify(pushed(r)));
    const d = diffTreesBut(await snapshotTree(srv), await snapshotTree(a!));
    assert.ok(d.length === 0, `server vs replica after the push:\n  ${d.slice(0, 10).join('\n  ')}`);
    const s = await imz(['status', '-C', a!, '--json']);
    const ch = jsonLines(s.stdout).filter((e) => e.event === 'change');
    assert.is(ch.length, 0, `nothing left to push: ${JSON.stringify(ch.slice(0, 5))}`);
    const again = await imz(['push', '-C', a!, '--json', '--policy', policy]);
    assert.is(again.code, 0, out(again));
    assert.is(pushed(again)!.logged, 0, `a second push has nothing: ${JSON.stringify(pushed(again))}`);
    assert.is((await imz(['pull', '-C', c!])).code, 0);
    const d2 = diffTreesBut(await snapshotTree(srv), await snapshotTree(c!));
    assert.ok(d2.length === 0, `server vs third replica:\n  ${d2.slice(0, 10).join('\n  ')}`);
  });
}

T('server killed (SIGKILL) while streamed groups go up: exit 4, changes logged; after a restart each applied once', async () => {
  const { srv, server, replicas: [a, b], since, paths, done } = await pushUnderWay();
  await server.stop('SIGKILL');
  const r1 = await done;
  console.log(`  first push: exit ${r1.code}`);
  if (r1.code !== 0) assert.is(r1.code, 4, out(r1));
  const again = await startServer(srv);
  await setRemote(a!, again.address);
  await setRemote(b!, again.address);
  const r = await imz(['push', '-C', a!, '--json'], { timeoutMs: 30_000 });
  assert.is(r.code, 0, out(r));
  // Applied once: one record per path. Files the killed server had renamed in but not yet journalled (a batch cut
  // short) are journalled by the restarted server's own scan, with no origin, and the resent operations find them
  // as they would have made them ('same'); the rest carry the replica's origin.
  const journal = await readJournal(again.address, since);
  const perPath = recordsPerPath(journal, byReplica);
  const records = recordsPerPath(journal);
  for (const p of paths) assert.is(records.get(p), 1, `${p} journalled once`);
  for (const p of paths) assert.ok((perPath.get(p) ?? 0) <= 1, `${p} applied once`);
  console.log(`  ${paths.filter((p) => !perPath.has(p)).length} of ${paths.length} journalled by the restarted server's scan`);
  const d = diffTreesBut(await snapshotTree(srv), await snapshotTree(a!));
  assert.ok(d.length === 0, `trees differ:\n  ${d.slice(0, 10).join('\n  ')}`);
  const s = await imz(['status', '-C', a!, '--json']);
  assert.is(jsonLines(s.stdout).filter((e) => e.event === 'change').length, 0, s.stdout.slice(0, 400));
  assert.is((await readReintLog(a!)).filter((l) => l.t === 'op').length, 0);
});

T('imz sync streams too: pull then a streamed push, everything applied, status clean', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await writeFile(join(b!, 'from-b.txt'), 'b\n');
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await manyFiles(a!, 'syncd', 1200, 's');
  const r = await imz(['sync', '-C', a!, '--json'], { timeoutMs: 30_000 });
  assert.is(r.code, 0, out(r));
  const d = diffTreesBut(await snapshotTree(srv), await snapshotTree(a!));
  assert.ok(d.length === 0, `trees differ:\n  ${d.slice(0, 10).join('\n  ')}`);
  const s = await imz(['status', '-C', a!, '--json']);
  assert.is(jsonLines(s.stdout).filter((e) => e.event === 'change').length, 0, s.stdout.slice(0, 400));
  const st = jsonLines(s.stdout).find((e) => e.event === 'status');
  console.log('  status after sync:', JSON.stringify(st));
});

T('a tracked file becomes a directory full of files (one a copy of its old content, > 256 KiB), big copy-then-edit, new nested trees: streamed, server alike', async () => {
  const { srv, replicas: [a, c] } = await sampleWorld(2);
  // a tracked big file first
  const big = Buffer.alloc(600 * 1024, 7);
  await writeFile(join(a!, 'big.bin'), big);
  await writeFile(join(a!, 'will-be-dir'), 'old content of a file that becomes a directory\n');
  assert.is((await imz(['push', '-C', a!, '--quiet'])).code, 0);
  assert.is((await imz(['pull', '-C', c!, '--quiet'])).code, 0);
  await new Promise((r) => setTimeout(r, 20));
  await copyFile(join(a!, 'big.bin'), join(a!, 'zz-big-copy.bin'));
  await writeFile(join(a!, 'big.bin'), Buffer.alloc(600 * 1024, 9));
  const old = await readFile(join(a!, 'will-be-dir'));
  await rm(join(a!, 'will-be-dir'));
  await mkdir(join(a!, 'will-be-dir'));
  await writeFile(join(a!, 'will-be-dir', 'was-me.txt'), old);
  await manyFiles(a!, 'will-be-dir/inner', 700, 'w');
  await manyFiles(a!, 'aaa/deep/er', 300, 'x');
  const r = await imz(['push', '-C', a!, '--json']);
  assert.is(r.code, 0, out(r));
  assert.ok(pushed(r)!.streamed > 0, JSON.stringify(pushed(r)));
  assert.is(pushed(r)!.rejected, 0, JSON.stringify(pushed(r)));
  const d = diffTreesBut(await snapshotTree(srv), await snapshotTree(a!));
  assert.ok(d.length === 0, `trees differ:\n  ${d.slice(0, 10).join('\n  ')}`);
  assert.is((await imz(['pull', '-C', c!])).code, 0);
  const d2 = diffTreesBut(await snapshotTree(srv), await snapshotTree(c!));
  assert.ok(d2.length === 0, `trees differ (c):\n  ${d2.slice(0, 10).join('\n  ')}`);
});

T.run();
