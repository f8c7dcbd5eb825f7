// Conflict policies at pull (replay over a locally modified file): the
// winner is in place, the loser is kept, and settled conflicts don't make
// the exit status 3.
import { access, mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cleanupAll, conflictRecords, imz, jsonLines, listedConflicts, sampleWorld, waitFor } from '../helpers.ts';

const T = suite('pull: conflict policies');
T.after.each(cleanupAll);
T.after(cleanupAll);

async function conflicted(): Promise<{ srv: string; a: string; address: string }> {
  const { srv, server, replicas: [a] } = await sampleWorld(1);
  await writeFile(join(a!, 'docs', 'kml.txt'), 'mine\n');
  await writeFile(join(srv, 'docs', 'kml.txt'), 'theirs\n');
  // Wait until the server has journalled its side.
  await waitFor(async () => (await imz(['status', '-C', a!])).stdout.includes('1 record behind'), 20_000, 'the server to journal its write');
  return { srv, a: a!, address: server.address };
}

T('server-wins: the server version is in place, mine is a conflict copy that is never pushed', async () => {
  const { srv, a } = await conflicted();
  const r = await imz(['pull', '-C', a, '--policy', 'server-wins']);
  assert.is(r.code, 0, r.stderr);
  assert.is(await readFile(join(a, 'docs', 'kml.txt'), 'utf8'), 'theirs\n');
  const copy = (await readdir(join(a, 'docs'))).find((n) => n.includes('.imz-conflict-'));
  assert.ok(copy, 'a conflict copy');
  assert.is(await readFile(join(a, 'docs', copy!), 'utf8'), 'mine\n');
  assert.is((await imz(['push', '-C', a])).code, 0);
  assert.not.ok((await readdir(join(srv, 'docs'))).some((n) => n.includes('.imz-conflict-')), 'the copy stays local');
});

T('keep-both: mine moves to a keep name that the next push replicates', async () => {
  const { srv, a } = await conflicted();
  const r = await imz(['pull', '-C', a, '--policy', 'keep-both']);
  assert.is(r.code, 0, r.stderr);
  assert.is(await readFile(join(a, 'docs', 'kml.txt'), 'utf8'), 'theirs\n');
  const keep = (await readdir(join(a, 'docs'))).find((n) => n.includes('.imz-keep-'));
  assert.ok(keep, 'a keep copy');
  assert.is((await imz(['push', '-C', a])).code, 0);
  assert.is(await readFile(join(srv, 'docs', keep!), 'utf8'), 'mine\n', 'both versions on the server');
});

T('client-wins: mine stays; the next push wins and the server keeps its version displaced', async () => {
  const { srv, a } = await conflicted();
  const r = await imz(['pull', '-C', a, '--policy', 'client-wins']);
  assert.is(r.code, 0, r.stderr);
  assert.is(await readFile(join(a, 'docs', 'kml.txt'), 'utf8'), 'mine\n');
  assert.is((await imz(['push', '-C', a, '--policy', 'client-wins'])).code, 0);
  assert.is(await readFile(join(srv, 'docs', 'kml.txt'), 'utf8'), 'mine\n');
  const displaced = await readdir(join(srv, '.imz-server', 'displaced'));
  assert.ok(displaced.some((n) => n.endsWith('kml.txt')), 'the server version is kept');
});

T('manual (default): mine stays, the server version is kept in blobs, exit 3', async () => {
  const { a } = await conflicted();
  const r = await imz(['pull', '-C', a]);
  assert.is(r.code, 3);
  assert.is(await readFile(join(a, 'docs', 'kml.txt'), 'utf8'), 'mine\n');
  const blobs = await readdir(join(a, '.imz', 'conflicts', 'blobs'));
  assert.ok(await Promise.any(blobs.map(async (b) => (await readFile(join(a, '.imz', 'conflicts', 'blobs', b), 'utf8')) === 'theirs\n')), 'theirs is kept');
});

// A directory removed here (not pushed yet) to which the server added
// entries: a dir-removed conflict at pull too, as at push.
async function removedHere(): Promise<{ srv: string; a: string }> {
  const { srv, replicas: [a] } = await sampleWorld(1);
  await rm(join(a!, 'src'), { recursive: true });
  await mkdir(join(srv, 'src', 'lib', 'more'));
  await writeFile(join(srv, 'src', 'lib', 'more', 'added.js'), 'added on the server\n');
  await waitFor(async () => (await imz(['status', '-C', a!])).stdout.includes('2 records behind'), 20_000, 'the server to journal its side');
  return { srv, a: a! };
}

const exists = (p: string) => access(p).then(() => true, () => false);

T('dir removed here, added to there (manual): it stays removed, exit 3; --take server brings the whole directory back', async () => {
  const { srv, a } = await removedHere();
  const r = await imz(['pull', '-C', a]);
  assert.is(r.code, 3, r.stderr);
  assert.not.ok(await exists(join(a, 'src')), 'left as the user left it');
  const [c, ...more] = await listedConflicts(a);
  assert.is(more.length, 0, 'one conflict, on the directory removed');
  assert.is(c!.path, 'src');
  assert.is(c!.class, 'dir-removed');
  assert.is(c!.at, 'pull');
  assert.ok(await exists(join(srv, 'src', 'lib', 'more', 'added.js')), 'theirs is still on the server');
  const t = await imz(['resolve', 'src', '--take', 'server', '-C', a]);
  assert.is(t.code, 0, t.stderr);
  assert.is(await readFile(join(a, 'src', 'lib', 'more', 'added.js'), 'utf8'), 'added on the server\n');
  assert.ok(await exists(join(a, 'src', 'main.js')), 'what was removed inside comes back too');
  const s = await imz(['status', '-C', a]);
  assert.ok(s.stdout.includes('0 local changes, 0 conflicts'), s.stdout);
});

T('dir removed here, added to there (manual): a push or sync before the resolve keeps the removal here (exit 3), so --take server still brings back all of it', async () => {
  const { srv, a } = await removedHere();
  assert.is((await imz(['pull', '-C', a])).code, 3);
  const p = await imz(['push', '-C', a, '--json']);
  assert.is(p.code, 3, `${p.stdout}\n${p.stderr}`);
  const pushed = jsonLines(p.stdout).find((e) => e.event === 'pushed')!;
  assert.is(pushed.logged, 0, 'nothing under src logged');
  assert.ok(Number(pushed.held) > 0, 'the removals under src kept here');
  const s = await imz(['sync', '-C', a]);
  assert.is(s.code, 3, s.stderr);
  assert.ok(await exists(join(srv, 'src', 'main.js')), 'the server keeps what was removed here, until the resolve');
  assert.is((await listedConflicts(a)).length, 1, 'one conflict still, the pull\'s');
  const t = await imz(['resolve', 'src', '--take', 'server', '-C', a]);
  assert.is(t.code, 0, t.stderr);
  assert.ok(await exists(join(a, 'src', 'main.js')), 'what was removed inside comes back');
  assert.is(await readFile(join(a, 'src', 'lib', 'more', 'added.js'), 'utf8'), 'added on the server\n');
  const after = await imz(['push', '-C', a]);
  assert.is(after.code, 0, after.stderr);
  assert.ok((await imz(['status', '-C', a])).stdout.includes('0 local changes, 0 conflicts'));
});

T('dir removed there, added to here (manual): until the resolve the new files stay here, a file moved in goes only as its removal outside; --take local then pushes them', async () => {
  const { srv, replicas: [a] } = await sampleWorld(1);
  await rm(join(srv, 'src'), { recursive: true });
  await waitFor(async () => (await imz(['status', '-C', a!])).stdout.includes('records behind'), 20_000, 'the server to journal the removal');
  await writeFile(join(a!, 'src', 'new.txt'), 'added here\n');
  const pulled = await imz(['pull', '-C', a!]);
  assert.is(pulled.code, 3, pulled.stderr);
  const [c] = await listedConflicts(a!);
  assert.equal([c?.path, c?.class], ['src', 'dir-removed']);
  // A tracked file moved into the held directory: a rename across its edge.
  await rename(join(a!, 'README.txt'), join(a!, 'src', 'README.txt'));
  const p = await imz(['push', '-C', a!, '--json']);
  assert.is(p.code, 3, `${p.stdout}\n${p.stderr}`);
  const pushed = jsonLines(p.stdout).find((e) => e.event === 'pushed')!;
  assert.ok(Number(pushed.held) >= 2);
  assert.is(pushed.uploadedBytes, 0, 'nothing kept back is uploaded either');
  assert.not.ok(await exists(join(srv, 'README.txt')), 'the removal outside the directory goes');
  assert.not.ok(await exists(join(srv, 'src')), 'nothing under it is made on the server before the resolve');
  const t = await imz(['resolve', 'src', '--take', 'local', '-C', a!]);
  assert.is(t.code, 0, t.stderr);
  const after = await imz(['push', '-C', a!]);
  assert.is(after.code, 0, after.stderr);
  assert.is(await readFile(join(srv, 'src', 'new.txt'), 'utf8'), 'added here\n');
  assert.ok(await exists(join(srv, 'src', 'README.txt')));
  assert.ok((await imz(['status', '-C', a!])).stdout.includes('0 local changes, 0 conflicts'));
});

T('dir removed here, added to there (manual): --take local keeps the server\'s files in the blobs, and the next push removes them there', async () => {
  const { srv, a } = await removedHere();
  assert.is((await imz(['pull', '-C', a])).code, 3);
  // Changed on the server after the conflict was found: kept too.
  await writeFile(join(srv, 'src', 'main.js'), 'edited on the server later\n');
  await waitFor(async () => (await imz(['status', '-C', a])).stdout.includes('1 record behind'), 20_000, 'the server to journal the edit');
  const t = await imz(['resolve', 'src', '--take', 'local', '-C', a]);
  assert.is(t.code, 0, t.stderr);
  const blobs = join(a, '.imz', 'conflicts', 'blobs');
  const kept = await Promise.all((await readdir(blobs)).map((b) => readFile(join(blobs, b), 'utf8')));
  assert.ok(kept.includes('added on the server\n'), 'what the server added is kept here');
  assert.ok(kept.includes('edited on the server later\n'), 'and what it changed since');
  const p = await imz(['push', '-C', a]);
  assert.is(p.code, 0, p.stderr);
  assert.not.ok(await exists(join(srv, 'src')), 'removed on the server, what it added inside too');
  assert.ok((await imz(['status', '-C', a, '--offline'])).stdout.includes('0 local changes, 0 conflicts'));
});

T('dir removed here, added to there: found by a manual pull, then a sync under server-wins or keep-both brings what the server added (the pull skipped it; the push that loses the removal takes the whole directory)', async () => {
  for (const policy of ['keep-both', 'server-wins']) {
    const { srv, a } = await removedHere();
    assert.is((await imz(['pull', '-C', a])).code, 3);
    const s = await imz(['sync', '-C', a, '--policy', policy]);
    assert.is(s.code, 0, `${policy}: ${s.stderr}`);
    assert.is(await readFile(join(a, 'src', 'lib', 'more', 'added.js'), 'utf8'), 'added on the server\n', `${policy}: the server's addition is here`);
    assert.ok(await exists(join(srv, 'src', 'lib', 'more', 'added.js')));
    const p = await imz(['pull', '-C', a]);
    assert.is(p.code, 0, p.stderr);
    const st = await imz(['status', '-C', a]);
    assert.ok(st.stdout.includes('0 local changes, 0 conflicts'), `${policy}: ${st.stdout}`);
  }
});

T('dir removed here, added to there (client-wins): it stays removed; the next push removes it there, the server keeping what it added', async () => {
  const { srv, a } = await removedHere();
  const r = await imz(['pull', '-C', a, '--policy', 'client-wins']);
  assert.is(r.code, 0, r.stderr);
  assert.not.ok(await exists(join(a, 'src')));
  assert.is((await conflictRecords(a))[0]?.resolvedBy, 'client-wins', 'listed, settled by the policy');
  assert.is((await listedConflicts(a))[0]?.path, 'src');
  const p = await imz(['push', '-C', a, '--policy', 'client-wins']);
  assert.is(p.code, 0, p.stderr);
  assert.not.ok(await exists(join(srv, 'src')));
  const index = await readFile(join(srv, '.imz-server', 'displaced', 'index.jsonl'), 'utf8');
  assert.ok(index.includes('src/lib/more/added.js'), 'the server keeps what it had added');
});

T('dir removed here, added to there (server-wins): what the server added is in place, the rest of the removal is pushed', async () => {
  const { srv, a } = await removedHere();
  const r = await imz(['pull', '-C', a, '--policy', 'server-wins']);
  assert.is(r.code, 0, r.stderr);
  assert.is(await readFile(join(a, 'src', 'lib', 'more', 'added.js'), 'utf8'), 'added on the server\n');
  assert.not.ok(await exists(join(a, 'src', 'main.js')), 'the files removed here stay removed');
  assert.is((await conflictRecords(a))[0]?.resolvedBy, 'server-wins');
  const p = await imz(['push', '-C', a, '--policy', 'server-wins']);
  assert.is(p.code, 0, p.stderr);
  assert.ok(await exists(join(srv, 'src', 'lib', 'more', 'added.js')));
  assert.not.ok(await exists(join(srv, 'src', 'main.js')));
});

T.run();
