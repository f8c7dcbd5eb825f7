// A push whose lstat pass finds nothing tracked gone sends its changes while
// the scan goes on (core/push.ts _Stream): in groups, each logged, its
// content made sure of, and sent before the scan is over. These runs check
// that such a push does what the whole-scan push does: every operation
// applied once, in an order that replays (directories first), content the
// push itself replaces still uploaded, conflicts settled, a killed client
// resent exactly once, and the whole-scan push still taken when something
// tracked is gone.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmod, copyFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type RunResult, runReport as out, type SnapEntry, appliedPerPath, cleanupAll, diffTreesBut, imz, manyFiles, jsonLines, pushUnderWay, readJournal, readReintLog, sampleWorld, snapshotTree,
} from '../helpers.ts';

const T = suite('push: streamed while scanning');
T.after.each(cleanupAll);
T.after(cleanupAll);

function assertSame(a: Record<string, SnapEntry>, b: Record<string, SnapEntry>, what: string): void {
  const d = diffTreesBut(a, b);
  assert.ok(d.length === 0, `${what}: trees differ:\n  ${d.slice(0, 20).join('\n  ')}`);
}
const pushed = (r: RunResult) => jsonLines(r.stdout).find((e) => e.event === 'pushed') as Record<string, number> | undefined;

T('1,300 new files in a new tree, a copy of a tracked file then that file edited, a chmod and a symlink: streamed in groups, applied once, pulled by a second replica', async () => {
  const { srv, server, replicas: [a, b] } = await sampleWorld(2);
  // Fewer changes than a group: nothing goes up before the scan is over (one log write for them all).
  await manyFiles(a!, 'few', 30, 'f');
  const small = await imz(['push', '-C', a!, '--json']);
  assert.is(small.code, 0, out(small));
  assert.is(pushed(small)!.streamed, 0, JSON.stringify(pushed(small)));
  assert.is(pushed(small)!.applied, 32, JSON.stringify(pushed(small))); // 30 files, 2 directories
  const since = (await readJournal(server.address)).at(-1)?.seq ?? 0;
  const paths = await manyFiles(a!, 'new/tree', 1300, 'a');
  // The copy's content is on the server only as docs/kml.txt, which this same push rewrites: it must still go up.
  await copyFile(join(a!, 'docs', 'kml.txt'), join(a!, 'new', 'kml-copy.txt'));
  await writeFile(join(a!, 'docs', 'kml.txt'), 'rewritten while its old content was copied\n');
  await chmod(join(a!, 'bin', 'hello.sh'), 0o700);
  await symlink('tree/s0/f0.txt', join(a!, 'new', 'link'));
  const r = await imz(['push', '-C', a!, '--json']);
  assert.is(r.code, 0, out(r));
  const ev = pushed(r)!;
  assert.ok(ev.streamed >= 1300, `sent while scanning: ${JSON.stringify(ev)}`);
  assert.is(ev.applied, ev.logged, JSON.stringify(ev));
  assert.is(ev.rejected, 0, JSON.stringify(ev));
  assertSame(await snapshotTree(srv), await snapshotTree(a!), 'server after the push');
  // Once each: one journal record per path this push made, all from this replica.
  const recs = (await readJournal(server.address, since)).filter((x) => x.origin !== '');
  const perPath = await appliedPerPath(server.address, since);
  for (const p of paths) assert.is(perPath.get(p), 1, `${p} journalled once`);
  assert.is(perPath.get('new/kml-copy.txt'), 1);
  // A directory is journalled before anything in it.
  const at = new Map(recs.map((x, i) => [x.path, i]));
  for (const p of paths.filter((_, i) => i % 100 === 0)) assert.ok(at.get(p.slice(0, p.lastIndexOf('/')))! < at.get(p)!, `${p} after its directory`);
  assert.is((await readReintLog(a!)).length, 0, 'nothing left logged');
  const s = await imz(['status', '-C', a!, '--json']);
  assert.is(jsonLines(s.stdout).filter((e) => e.event === 'change').length, 0, `nothing left to push: ${s.stdout.slice(0, 500)}`);
  const p = await imz(['pull', '-C', b!]);
  assert.is(p.code, 0, out(p));
  assertSame(await snapshotTree(srv), await snapshotTree(b!), 'second replica after its pull');
});

T('a tracked file deleted: the push scans whole first (its content may reappear as a rename), and sends nothing while scanning', async () => {
  const { srv, server, replicas: [a] } = await sampleWorld(1);
  await manyFiles(a!, 'more', 600, 'b');
  await rm(join(a!, 'docs', 'notes', 'history.md'));
  await copyFile(join(a!, 'src', 'main.js'), join(a!, 'src', 'main-renamed.js'));
  await rm(join(a!, 'src', 'main.js'));
  const since = (await readJournal(server.address)).at(-1)?.seq ?? 0;
  const r = await imz(['push', '-C', a!, '--json']);
  assert.is(r.code, 0, out(r));
  assert.is(pushed(r)!.streamed, 0, JSON.stringify(pushed(r)));
  // Still told as a rename: one record removes the old name as the new one is made by the same operation.
  const recs = await readJournal(server.address, since);
  const moved = recs.filter((x) => x.path === 'src/main-renamed.js' || x.path === 'src/main.js');
  assert.is(new Set(moved.map((x) => x.originSeq)).size, 1, `one operation for the rename: ${JSON.stringify(moved)}`);
  assertSame(await snapshotTree(srv), await snapshotTree(a!), 'server after the push');
});

T('conflicts among streamed changes are settled after the scan, under manual (the other policies: push_stream_more_test)', async () => {
  const { srv, server, replicas: [a, b] } = await sampleWorld(2);
  // b makes the same paths first, with other content.
  await manyFiles(b!, 'clash', 120, 'b');
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await manyFiles(a!, 'clash', 120, 'a');
  await manyFiles(a!, 'mine', 700, 'a');
  const r = await imz(['push', '-C', a!, '--json']);
  assert.is(r.code, 3, `conflicts left for a person: ${out(r)}`);
  assert.ok(pushed(r)!.streamed >= 820, JSON.stringify(pushed(r)));
  // Under manual the replica keeps its version; the server's is kept aside.
  const list = await imz(['resolve', '--list', '-C', a!, '--json']);
  assert.is(jsonLines(list.stdout).filter((e) => e.event === 'conflict').length, 120, list.stdout.slice(0, 500));
  const r2 = await imz(['resolve', '--all', '--take', 'server', '-C', a!]);
  assert.is(r2.code, 0, out(r2));
  assert.is((await imz(['push', '-C', a!, '--quiet'])).code, 0);
  assertSame(await snapshotTree(srv), await snapshotTree(a!), 'server after resolving');
  void server;
});

T('a client killed while its groups are going up: the next push applies each operation exactly once', async () => {
  // Killed once the server has applied some of it (a group sent), before the push is over.
  const { srv, server, replicas: [a, b], since, paths, proc, done } = await pushUnderWay();
  const running = proc.exitCode === null;
  proc.kill('SIGKILL');
  await done;
  const applied = (await readJournal(server.address, since)).length;
  console.log(`  killed ${running ? 'mid-push' : 'after the push'} with ${applied} records journalled`);
  const r = await imz(['push', '-C', a!, '--json']);
  assert.is(r.code, 0, out(r));
  const perPath = await appliedPerPath(server.address, since);
  for (const p of paths) assert.is(perPath.get(p), 1, `${p} applied once`);
  assertSame(await snapshotTree(srv), await snapshotTree(a!), 'server after the second push');
  assert.is((await imz(['pull', '-C', b!])).code, 0);
  assertSame(await snapshotTree(srv), await snapshotTree(b!), 'second replica');
});

T.run();
