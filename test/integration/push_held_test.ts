// A push holds back what changed under a directory whose dir-removed
// conflict waits for a person (manual): the resolve that settles it, found
// at pull or at push, must then lead the next push to the state chosen; a
// push under another policy decides it as that policy says; the mass-delete
// guard still weighs what goes. Real `imz serve` processes and the CLI.
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type RunResult, runReport as out, cleanupAll, conflictRecords, imz, jsonLines, listedConflicts, sampleWorld, snapshotTree, waitFor } from '../helpers.ts';

const T = suite('push: held back under a dir-removed conflict');
T.after.each(cleanupAll);
T.after(cleanupAll);

const event = (r: RunResult, name: string) => jsonLines(r.stdout).find((e) => e.event === name);

async function blobsHold(replica: string, text: string): Promise<boolean> {
  const dir = join(replica, '.imz', 'conflicts', 'blobs');
  if (!existsSync(dir)) return false;
  for (const b of await readdir(dir)) if ((await readFile(join(dir, b), 'utf8').catch(() => '')) === text) return true;
  return false;
}

// src removed here (rm -r) and pushed without a pull, while another replica had added src/x.txt: the server refuses
// the directory's removal (dir-removed, at push). --take local used to index the directory alone at the server's
// version: the next push sent its removal again and met the same conflict, every time (the server's x.txt was never
// in the index); the pushes in between hold it back.
T('a dir-removed conflict found by a push: --take local has the next push remove what the server holds inside too', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await writeFile(join(b!, 'src', 'x.txt'), 'added by b\n');
  assert.is((await imz(['push', '-C', b!])).code, 0);
  await rm(join(a!, 'src'), { recursive: true });
  const p1 = await imz(['push', '-C', a!, '--json']);
  assert.is(p1.code, 3, out(p1));
  const [c] = await listedConflicts(a!);
  assert.is(c?.path, 'src');
  assert.is(c?.class, 'dir-removed');
  assert.is(c?.at, 'push');
  const p2 = await imz(['push', '-C', a!, '--json']);
  assert.is(p2.code, 3, out(p2));
  assert.is(event(p2, 'pushed')?.held, 1, 'the removal of src is held back');
  assert.is(event(p2, 'pushed')?.logged, 0);
  const t = await imz(['resolve', 'src', '--take', 'local', '-C', a!]);
  assert.is(t.code, 0, out(t));
  assert.ok(await blobsHold(a!, 'added by b\n'), 'what the server added is kept here');
  const p3 = await imz(['push', '-C', a!, '--json']);
  assert.is(p3.code, 0, `the resolve converges: ${out(p3)}`);
  assert.not.ok(existsSync(join(srv, 'src')), 'removed on the server, what b added inside too');
  assert.is((await listedConflicts(a!)).length, 0);
  assert.is((await imz(['pull', '-C', a!])).code, 0);
  assert.ok((await imz(['status', '-C', a!])).stdout.includes('0 local changes, 0 conflicts'));
});

// On demand, `rm -r` of a directory holding never-fetched files is pushed as dir-removed conflicts (README, Limits).
// --take local left the never-fetched files indexed as remote: the next push met the same conflicts again, forever.
T('on demand, rm -r of never-fetched files: --all --take local keeps them in the blobs and the next push removes them', async () => {
  const { srv, server, replicas: [b] } = await sampleWorld(1);
  const a = join(srv, '..', 'ondemand');
  assert.is((await imz(['clone', server.address, a, '--on-demand'])).code, 0);
  await rm(join(a, 'src'), { recursive: true });
  const p1 = await imz(['push', '-C', a]);
  assert.is(p1.code, 3, out(p1));
  assert.ok((await listedConflicts(a)).every((c) => c.class === 'dir-removed' && c.at === 'push'));
  const t = await imz(['resolve', '--all', '--take', 'local', '-C', a]);
  assert.is(t.code, 0, out(t));
  assert.ok(await blobsHold(a, await readFile(join(srv, 'src', 'main.js'), 'utf8')), 'content never fetched is kept in the blobs first');
  // (Every tracked file with content here is one the resolve indexed to remove: the guard asks for the flag.)
  const p2 = await imz(['push', '-C', a, '--allow-mass-delete']);
  assert.is(p2.code, 0, `the resolve converges: ${out(p2)}`);
  assert.not.ok(existsSync(join(srv, 'src')), 'removed on the server');
  assert.is((await listedConflicts(a)).length, 0);
  assert.is((await imz(['pull', '-C', b!])).code, 0);
  assert.not.ok(existsSync(join(b!, 'src')));
});

/** src removed here while the server added src/lib/more/added.js; the pull finds the conflict (manual). */
async function removedHere(extend?: (srv: string) => Promise<void>): Promise<{ srv: string; a: string }> {
  const { srv, replicas: [a] } = await sampleWorld(1, extend);
  await rm(join(a!, 'src'), { recursive: true });
  await mkdir(join(srv, 'src', 'lib', 'more'));
  await writeFile(join(srv, 'src', 'lib', 'more', 'added.js'), 'added on the server\n');
  await waitFor(async () => (await imz(['status', '-C', a!])).stdout.includes('2 records behind'), 20_000, 'the server to journal its side');
  assert.is((await imz(['pull', '-C', a!])).code, 3);
  return { srv, a: a! };
}

// The hold is for a conflict left to a person: a push under client-wins is the person's decision, as the README says
// ("Under client-wins it stays removed and the next push (under client-wins) removes it there").
T('a pull\'s dir-removed conflict (manual), then push --policy client-wins: the removal goes, the server keeping what it displaces', async () => {
  const { srv, a } = await removedHere();
  const s = await imz(['sync', '-C', a, '--json']);
  assert.is(s.code, 3, out(s));
  assert.ok(Number(event(s, 'synced')?.held) > 0, `sync (manual) holds the removals under src, and says so: ${s.stdout}`);
  assert.ok(existsSync(join(srv, 'src', 'main.js')));
  const p = await imz(['push', '-C', a, '--policy', 'client-wins', '--json']);
  assert.is(p.code, 0, out(p));
  assert.is(event(p, 'pushed')?.held, 0);
  assert.not.ok(existsSync(join(srv, 'src')), 'removed on the server');
  const index = await readFile(join(srv, '.imz-server', 'displaced', 'index.jsonl'), 'utf8');
  assert.ok(index.includes('src/lib/more/added.js'), 'the server keeps what it had added');
  assert.ok((await conflictRecords(a)).every((c) => c.resolvedBy === 'client-wins'), 'settled by the policy');
});

// The guard counted the held directory's files among the tracked ones but not among the deleted: with most of the
// tree in it, a wiped replica pushed the removal of everything else.
T('a wiped replica with held directories: the mass-delete guard still refuses', async () => {
  const { srv, a } = await removedHere(async (s) => {
    await mkdir(join(s, 'big'));
    for (let i = 0; i < 12; i++) await writeFile(join(s, 'big', `f${i}.txt`), `file ${i}\n`);
  });
  // big is held too: a second dir-removed conflict (big removed here, the server added to it).
  await rm(join(a, 'big'), { recursive: true });
  await writeFile(join(srv, 'big', 'new.txt'), 'new on the server\n');
  await waitFor(async () => (await imz(['status', '-C', a])).stdout.includes('1 record behind'), 20_000, 'the server to journal big/new.txt');
  assert.is((await imz(['pull', '-C', a])).code, 3);
  assert.is((await listedConflicts(a)).length, 2);
  for (const n of await readdir(a)) if (n !== '.imz') await rm(join(a, n), { recursive: true });
  const before = await snapshotTree(srv);
  const p = await imz(['push', '-C', a, '--json']);
  assert.is(p.code, 1, out(p));
  assert.is(event(p, 'error')?.code, 'IMZ_MASS_DELETE');
  assert.match(String(event(p, 'error')?.message), /outside directories held back/);
  assert.equal(Object.keys(await snapshotTree(srv)).sort(), Object.keys(before).sort(), 'nothing removed on the server');
  assert.ok(existsSync(join(srv, 'README.txt')));
});

T.run();
