// How conflicts are settled, against real `imz serve` and CLI processes: a
// second conflict on a path never replaces the copy an earlier one kept;
// `resolve --take local` swaps back a copy that newest (not only
// server-wins) left; `resolve --all --take server` brings back the whole of
// a directory removed here, whatever it settles inside it first.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmod, cp, mkdir, readFile, readdir, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type ServerHandle, cleanupAll, diffTrees, imz, listedConflicts, makeTmp, snapshotTree, startServer } from '../helpers.ts';

test.after(cleanupAll);

async function world(seed: Record<string, string>): Promise<{ srv: string; server: ServerHandle; a: string; b: string }> {
  const tmp = await makeTmp('imz-copies-');
  const srv = join(tmp, 'srv');
  await mkdir(srv, { recursive: true });
  for (const [p, c] of Object.entries(seed)) {
    await mkdir(join(srv, p, '..'), { recursive: true });
    await writeFile(join(srv, p), c);
  }
  const server = await startServer(srv);
  const a = join(tmp, 'a');
  const b = join(tmp, 'b');
  for (const r of [a, b]) assert.is((await imz(['clone', server.address, r, '--quiet'])).code, 0);
  return { srv, server, a, b };
}

const run = async (args: string[], code: number) => {
  const r = await imz(args);
  assert.is(r.code, code, `imz ${args.join(' ')}\n${r.stdout}\n${r.stderr}`);
  return r;
};

/** Contents of the conflict copies of f.txt in a replica, sorted. */
async function copies(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => n.startsWith('f.imz-conflict-'));
  return (await Promise.all(names.map((n) => readFile(join(dir, n), 'utf8')))).sort();
}

test('server-wins, the same update/remove conflict twice: the second copy takes a free name, both versions kept and listed', async () => {
  const { a, b } = await world({ 'f.txt': 'base\n', 'o1': 'o\n', 'o2': 'o\n' });
  await writeFile(join(a, 'f.txt'), 'A-edit-1\n');
  await rm(join(b, 'f.txt'));
  await run(['push', '-C', b, '--quiet'], 0);
  await run(['push', '-C', a, '--policy', 'server-wins', '--quiet'], 0);
  assert.equal(await copies(a), ['A-edit-1\n']);
  // The file comes back, A edits it again, B removes it again: the same conflict at the same version (0, removed).
  await writeFile(join(b, 'f.txt'), 'again\n');
  await run(['push', '-C', b, '--quiet'], 0);
  await run(['pull', '-C', a, '--quiet'], 0);
  await writeFile(join(a, 'f.txt'), 'A-edit-2\n');
  await run(['pull', '-C', b, '--quiet'], 0);
  await rm(join(b, 'f.txt'));
  await run(['push', '-C', b, '--quiet'], 0);
  await run(['push', '-C', a, '--policy', 'server-wins', '--quiet'], 0);
  assert.equal(await copies(a), ['A-edit-1\n', 'A-edit-2\n'], 'the first copy is not replaced');
  const listed = await listedConflicts(a);
  assert.is(listed.length, 1, JSON.stringify(listed));
  const c = listed[0]!;
  assert.is(c.resolvedBy, 'server-wins');
  const named = [c.localCopy, ...((c.earlierCopies as string[] | undefined) ?? [])] as string[];
  assert.equal((await Promise.all(named.map((n) => readFile(join(a, n), 'utf8')))).sort(), ['A-edit-1\n', 'A-edit-2\n'], 'both copies listed');
  // And neither copy is ever pushed.
  await run(['push', '-C', a, '--quiet'], 0);
  assert.equal(await copies(b), []);
});

test('newest, ours older: resolve --take local swaps the conflict copy back, and the next push sends it', async () => {
  const { srv, a, b } = await world({ 'f.txt': 'base\n', 'o1': 'o\n' });
  await writeFile(join(a, 'f.txt'), 'A-version\n');
  await utimes(join(a, 'f.txt'), new Date('2001-01-01'), new Date('2001-01-01'));
  await writeFile(join(b, 'f.txt'), 'B-version\n');
  await run(['push', '-C', b, '--quiet'], 0);
  await run(['push', '-C', a, '--policy', 'newest', '--quiet'], 0);
  assert.is(await readFile(join(a, 'f.txt'), 'utf8'), 'B-version\n');
  assert.equal(await copies(a), ['A-version\n']);
  const r = await run(['resolve', 'f.txt', '--take', 'local', '-C', a, '--json'], 0);
  assert.is(await readFile(join(a, 'f.txt'), 'utf8'), 'A-version\n', r.stdout);
  assert.equal(await copies(a), [], 'the copy went back to its path');
  assert.equal(await listedConflicts(a), []);
  await run(['push', '-C', a, '--quiet'], 0);
  assert.is(await readFile(join(srv, 'f.txt'), 'utf8'), 'A-version\n');
  await run(['pull', '-C', b, '--quiet'], 0);
  assert.is(await readFile(join(b, 'f.txt'), 'utf8'), 'A-version\n');
});

test('resolve --all --take server after a pull met a directory removed here: the whole server directory comes back, no stale removal goes up', async () => {
  const { srv, a, b } = await world({ 'd/a.txt': 'a\n', 'd/b.txt': 'b\n', 'o1': 'o\n', 'o2': 'o\n', 'o3': 'o\n' });
  await rm(join(a, 'd'), { recursive: true });
  await writeFile(join(b, 'd', 'b.txt'), 'B-EDIT\n');
  await writeFile(join(b, 'd', 'new.txt'), 'B-NEW\n');
  await run(['push', '-C', b, '--quiet'], 0);
  await run(['pull', '-C', a, '--quiet'], 3);
  assert.equal((await listedConflicts(a)).map((c) => c.path).sort(), ['d', 'd/b.txt']);
  await run(['resolve', '--all', '--take', 'server', '-C', a, '--quiet'], 0);
  await run(['sync', '-C', a, '--quiet'], 0);
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(a)), [], 'the replica is the server');
  assert.is(await readFile(join(srv, 'd', 'a.txt'), 'utf8'), 'a\n', 'the old removal of d/a.txt was not pushed');
  assert.is(await readFile(join(a, 'd', 'new.txt'), 'utf8'), 'B-NEW\n');
});

/** A world where replica a made f.txt a directory (f.txt/sub/in.txt holding inside) and replica b edited the file. */
async function fileBecameDir(inside: string): Promise<Awaited<ReturnType<typeof world>>> {
  const w = await world({ 'f.txt': 'base\n', 'o1': 'o\n', 'o2': 'o\n' });
  await rm(join(w.a, 'f.txt'));
  await mkdir(join(w.a, 'f.txt', 'sub'), { recursive: true });
  await writeFile(join(w.a, 'f.txt', 'sub', 'in.txt'), inside);
  await writeFile(join(w.b, 'f.txt'), 'B-edit\n');
  return w;
}

for (const how of [['push', '--policy', 'server-wins'], ['sync', '--policy', 'client-wins']]) {
  const clientWins = how[2] === 'client-wins';
  test(`a file here against the server's non-empty directory (type change), then ${how.join(' ')}: ${clientWins ? 'our file goes in, the directory and all it holds displaced on the server' : 'what the server holds inside comes too'}`, async () => {
    const { srv, a, b } = await fileBecameDir('INSIDE-A\n');
    await run(['push', '-C', a, '--quiet'], 0);
    if (how[0] === 'push') await run(['pull', '-C', b, '--quiet'], 3); // the cursor moves past f.txt/sub/*
    const r = await imz([how[0]!, '-C', b, ...how.slice(1), '--quiet']);
    assert.ok(r.code === 0 || r.code === 3, `${how.join(' ')} exited ${r.code}\n${r.stderr}`);
    await run(['sync', '-C', b, '--quiet'], 0);
    const diff = diffTrees(await snapshotTree(srv), await snapshotTree(b)).filter((d) => !d.includes('.imz-conflict-'));
    assert.equal(diff, [], 'the replica has all the server has');
    if (clientWins) {
      // (Before, a directory holding entries could not be displaced as one version: our file lost, as under server-wins.)
      assert.is(await readFile(join(srv, 'f.txt'), 'utf8'), 'B-edit\n');
      const idx = (await readFile(join(srv, '.imz-server', 'displaced', 'index.jsonl'), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l));
      const inner = idx.find((e: Record<string, unknown>) => e.path === 'f.txt/sub/in.txt');
      assert.ok(inner && idx.some((e: Record<string, unknown>) => e.path === 'f.txt' && e.kind === 'dir'), JSON.stringify(idx));
      assert.is(await readFile(join(srv, '.imz-server', 'displaced', inner.savedAs), 'utf8'), 'INSIDE-A\n');
      return;
    }
    assert.is(await readFile(join(b, 'f.txt', 'sub', 'in.txt'), 'utf8'), 'INSIDE-A\n');
    const kept = (await readdir(b)).filter((n) => n.startsWith('f.imz-conflict-'));
    assert.is(kept.length, 1, 'B\'s file is kept as a conflict copy');
    assert.is(await readFile(join(b, kept[0]!), 'utf8'), 'B-edit\n');
  });
}

for (const chmodFirst of [false, true]) {
  test(`the same new content pushed from two replicas, one of them with a chmod, pushed ${chmodFirst ? 'first' : 'second'}: the mode reaches the server and stays`, async () => {
    const { srv, a, b } = await world({ 'f.sh': 'base\n', 'o1': 'o\n' });
    await writeFile(join(a, 'f.sh'), 'new\n');
    await chmod(join(a, 'f.sh'), 0o755);
    await writeFile(join(b, 'f.sh'), 'new\n');
    await chmod(join(b, 'f.sh'), 0o644);
    for (const r of chmodFirst ? [a, b] : [b, a]) await run(['push', '-C', r, '--quiet'], 0);
    const mode = async (p: string) => (await stat(p)).mode & 0o777;
    assert.is(await mode(join(srv, 'f.sh')), 0o755, 'the chmod reached the server');
    const st = await imz(['status', '-C', a, '--json']);
    assert.ok(!st.stdout.includes('"change"'), `nothing left to push: ${st.stdout}`);
    await run(['pull', '-C', a, '--quiet'], 0);
    await run(['pull', '-C', b, '--quiet'], 0);
    assert.is(await mode(join(a, 'f.sh')), 0o755, 'a pull does not take the chmod back');
    assert.is(await mode(join(b, 'f.sh')), 0o755);
    assert.is(await readFile(join(b, 'f.sh'), 'utf8'), 'new\n');
  });
}

for (const policy of ['manual', 'server-wins']) {
  test(`a chmod here against a content change there, met at a pull (sync, ${policy}): both apply, no conflict`, async () => {
    const { srv, a, b } = await world({ 'run.sh': 'base\n', 'o1': 'o\n' });
    await chmod(join(srv, 'run.sh'), 0o644);
    await run(['pull', '-C', a, '--quiet'], 0);
    await run(['pull', '-C', b, '--quiet'], 0);
    await chmod(join(a, 'run.sh'), 0o755);
    await writeFile(join(b, 'run.sh'), 'B-content\n');
    await run(['push', '-C', b, '--quiet'], 0);
    await run(['sync', '-C', a, '--policy', policy, '--quiet'], 0);
    const mode = async (p: string) => (await stat(p)).mode & 0o777;
    for (const [where, root] of [['replica', a], ['server', srv]] as const) {
      assert.is(await readFile(join(root, 'run.sh'), 'utf8'), 'B-content\n', `${where}: the server's content`);
      assert.is(await mode(join(root, 'run.sh')), 0o755, `${where}: our mode`);
    }
    assert.equal((await readdir(a)).filter((n) => n.includes('.imz-conflict-')), [], 'no conflict copy');
    assert.equal(await listedConflicts(a), []);
    await run(['pull', '-C', b, '--quiet'], 0);
    assert.is(await mode(join(b, 'run.sh')), 0o755);
  });
}

test('our new directory where the server has a file (type change): manual holds it (exit 3, not 1), server-wins moves it aside whole and converges', async () => {
  const { srv, a, b } = await fileBecameDir('INSIDE\n');
  await run(['push', '-C', b, '--quiet'], 0);
  // manual: a conflict for a person; what lies inside the directory waits with it.
  await run(['push', '-C', a, '--quiet'], 3);
  await run(['sync', '-C', a, '--quiet'], 3);
  assert.is(await readFile(join(a, 'f.txt', 'sub', 'in.txt'), 'utf8'), 'INSIDE\n', 'left as the user made it');
  assert.is(await readFile(join(srv, 'f.txt'), 'utf8'), 'B-edit\n');
  // server-wins: the directory goes aside (a conflict copy, never pushed), the server's file comes.
  await run(['sync', '-C', a, '--policy', 'server-wins', '--quiet'], 0);
  assert.is(await readFile(join(a, 'f.txt'), 'utf8'), 'B-edit\n');
  const kept = (await readdir(a)).filter((n) => n.startsWith('f.imz-conflict-'));
  assert.is(kept.length, 1);
  assert.is(await readFile(join(a, kept[0]!, 'sub', 'in.txt'), 'utf8'), 'INSIDE\n', 'our directory, whole');
  await run(['sync', '-C', a, '--quiet'], 0);
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(a)).filter((d) => !d.includes('.imz-conflict-')), []);
  await run(['pull', '-C', b, '--quiet'], 0);
  assert.equal((await readdir(b)).filter((n) => n.includes('.imz-conflict-')), [], 'the copy was never pushed');
});

test('a removal here against an update there, met at a pull under server-wins: the server\'s version comes back, nothing left for a person', async () => {
  const { a, b } = await world({ 'f.txt': 'base\n', 'o1': 'o\n' });
  await rm(join(a, 'f.txt'));
  await writeFile(join(b, 'f.txt'), 'B-edit\n');
  await run(['push', '-C', b, '--quiet'], 0);
  await run(['pull', '-C', a, '--policy', 'server-wins', '--quiet'], 0);
  assert.is(await readFile(join(a, 'f.txt'), 'utf8'), 'B-edit\n');
  const listed = await listedConflicts(a);
  assert.equal(listed.map((c) => [c.path, c.class, c.resolvedBy]), [['f.txt', 'remove/update', 'server-wins']]);
  await run(['push', '-C', a, '--quiet'], 0);
  await run(['pull', '-C', b, '--quiet'], 0);
  assert.is(await readFile(join(b, 'f.txt'), 'utf8'), 'B-edit\n', 'the removal never went up');
});

for (const made of ['symlink', 'file']) {
  test(`a tracked directory made a ${made} here, the server adding inside it: a type-change conflict at pull (exit 3), the rest arrives, resolve --take server brings the whole directory`, async () => {
    const { srv, a, b } = await world({ 'd1/f1': '1\n', 'd1/d2/keep': 'k\n', 'top.txt': 't\n' });
    const elsewhere = join(a, '..', 'elsewhere');
    await mkdir(join(b, 'd1', 'd2', 'new'));
    await writeFile(join(b, 'd1', 'd2', 'new', 'z'), 'deep\n');
    await writeFile(join(b, 'top.txt'), 'edited by B\n');
    await run(['push', '-C', b, '--quiet'], 0);
    if (made === 'symlink') {
      await cp(join(a, 'd1'), elsewhere, { recursive: true });
      await rm(join(a, 'd1'), { recursive: true });
      await symlink(elsewhere, join(a, 'd1'));
    } else {
      await rm(join(a, 'd1'), { recursive: true });
      await writeFile(join(a, 'd1'), 'x\n');
    }
    for (let k = 0; k < 2; k++) await run(['pull', '-C', a, '--quiet'], 3);
    assert.is(await readFile(join(a, 'top.txt'), 'utf8'), 'edited by B\n', 'the rest of the journal arrived');
    assert.equal((await listedConflicts(a)).map((c) => [c.path, c.class]), [['d1', 'type-change']]);
    if (made === 'symlink') assert.equal((await readdir(join(elsewhere, 'd2'))).sort(), ['keep'], 'nothing written through the symlink');
    await run(['resolve', 'd1', '--take', 'server', '-C', a, '--quiet'], 0);
    await run(['sync', '-C', a, '--quiet'], 0);
    assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(a)), []);
    assert.is(await readFile(join(srv, 'd1', 'f1'), 'utf8'), '1\n', 'nothing of the server\'s directory removed');
    assert.is(await readFile(join(a, 'd1', 'd2', 'new', 'z'), 'utf8'), 'deep\n');
  });
}

test('resolve --take both run again after a kill that left ours moved and the server\'s in place: no second keep copy', async () => {
  const { srv, a, b } = await world({ 'f.txt': 'base\n', 'o1': 'o\n' });
  await writeFile(join(b, 'f.txt'), 'server\n');
  await run(['push', '-C', b, '--quiet'], 0);
  await writeFile(join(a, 'f.txt'), 'local\n');
  await run(['push', '-C', a, '--quiet'], 3);
  // Where a kill between the move and the end of the first run leaves it: ours under the keep name (the name
  // resolve gives it), the server's at the path, the record still there.
  const c = (await listedConflicts(a))[0]!;
  const keep = `f.imz-keep-${(await readFile(join(a, '.imz', 'config'), 'utf8')).match(/"replicaId":\s*"([0-9a-f]{8})/)![1]}-${(c.server as { version: number }).version}.txt`;
  await writeFile(join(a, keep), 'local\n');
  await writeFile(join(a, 'f.txt'), 'server\n');
  await run(['resolve', 'f.txt', '--take', 'both', '-C', a, '--quiet'], 0);
  const keeps = (await readdir(a)).filter((n) => n.includes('.imz-keep-'));
  assert.equal(keeps, [keep], 'one keep copy: ours');
  await run(['sync', '-C', a, '--quiet'], 0);
  assert.is(await readFile(join(srv, keep), 'utf8'), 'local\n');
  assert.is(await readFile(join(srv, 'f.txt'), 'utf8'), 'server\n');
});

for (const how of ['push', 'sync']) {
  test(`two replicas make the same new file, the second with its own mode (${how}): that mode reaches the server and every replica, status clean`, async () => {
    const { srv, a, b } = await world({ 'o1': 'o\n' });
    await writeFile(join(a, 'f.sh'), 'x\n');
    await chmod(join(a, 'f.sh'), 0o644);
    await run(['push', '-C', a, '--quiet'], 0);
    await writeFile(join(b, 'f.sh'), 'x\n');
    await chmod(join(b, 'f.sh'), 0o755);
    await run([how, '-C', b, '--quiet'], 0);
    await run(['sync', '-C', b, '--quiet'], 0);
    await run(['pull', '-C', a, '--quiet'], 0);
    const mode = async (p: string) => (await stat(p)).mode & 0o777;
    for (const [where, root] of [['server', srv], ['a', a], ['b', b]] as const) assert.is(await mode(join(root, 'f.sh')), 0o755, where);
    const st = await imz(['status', '-C', b, '--json']);
    assert.ok(!st.stdout.includes('"change"'), st.stdout);
  });
}

test.run();
