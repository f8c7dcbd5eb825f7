// Damaged replica state, against a real `imz serve`. Index buckets: status
// and push name one and say to run `imz pull --resync` (exit 1), and that
// command does rebuild them once the server is reached (set aside, kept;
// their paths compared by hash). What the damaged index cannot tell (a file
// here the server lacks: new here, or removed there) is a conflict, never
// made again on the server behind the user's back. A state file that is a
// directory: one line naming it; once it is moved away the push goes through.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdir, readFile, readdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bucketOf } from '../../core/index_model.ts';
import { cleanupAll, diffTrees, imz, jsonLines, listedConflicts, makeTmp, servedClone, setRemote, snapshotTree, startServer } from '../helpers.ts';

test.after(cleanupAll);

for (const damage of ['truncated', 'a directory']) {
  test(`index buckets ${damage}: a clear error; pull --resync rebuilds them (offline: leaves them), nothing the server removed comes back`, async () => {
    const { tmp, srv, server, a } = await servedClone('imz-index-damage-', Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`f${i}.txt`, `server ${i}\n`])));
    const b = join(tmp, 'b');
    assert.is((await imz(['clone', server.address, b, '--quiet'])).code, 0);
    for (let i = 3; i <= 10; i++) await rm(join(b, `f${i}.txt`));
    assert.is((await imz(['push', '-C', b, '--quiet'])).code, 0);
    await writeFile(join(a, 'f20.txt'), 'mine\n');
    const dir = join(a, '.imz', 'index');
    // An old conflict copy (never tracked) whose bucket is one of those damaged.
    const had = new Set(await readdir(dir));
    let copy = '';
    for (let i = 1; !copy; i++) {
      const name = `f1.imz-conflict-0f88c04a-${i}.txt`;
      if (had.has(bucketOf(name).toString(16).padStart(2, '0'))) copy = name;
    }
    await writeFile(join(a, copy), 'an old conflict copy\n');
    // A link made here (not pushed yet) in a damaged bucket: unknown too, and never taken for clean.
    let link = '';
    for (let i = 1; !link; i++) if (had.has(bucketOf(`L${i}`).toString(16).padStart(2, '0'))) link = `L${i}`;
    await symlink('f1.txt', join(a, link));
    for (const n of await readdir(dir)) {
      if (damage === 'truncated') await truncate(join(dir, n), 20);
      else {
        await rm(join(dir, n));
        await mkdir(join(dir, n));
      }
    }
    for (const cmd of ['status', 'push']) {
      const r = await imz([cmd, '-C', a]);
      assert.is(r.code, 1, `${cmd}: ${r.stderr}`);
      assert.match(r.stderr, /cannot read replica index: .*index\/\w\w .*imz pull --resync/, r.stderr);
      assert.is(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    }
    // The server away: nothing set aside, the damage still said.
    await server.stop();
    assert.is((await imz(['pull', '--resync', '-C', a, '--quiet'])).code, 4);
    assert.is((await imz(['status', '-C', a])).code, 1, 'still refused');
    const again = await startServer(srv);
    await setRemote(a, again.address);
    const p = await imz(['pull', '--resync', '-C', a]);
    assert.is(p.code, 3, `pull --resync: what the damaged index cannot tell is a conflict: ${p.stderr}`);
    assert.ok((await readdir(dir)).some((n) => n.includes('.damaged-')), 'the damaged buckets are kept aside');
    assert.is(await readFile(join(a, 'f20.txt'), 'utf8'), 'mine\n', 'the local change is kept');
    const listed = await listedConflicts(a);
    assert.not.ok(listed.some((c) => String(c.path).includes('.imz-conflict-')), 'a conflict copy is no conflict');
    assert.ok(listed.some((c) => c.path === link && c.class === 'update/remove'), `the link is a conflict: ${JSON.stringify(listed.map((c) => c.path))}`);
    const st = await imz(['status', '-C', a, '--json']);
    assert.ok(jsonLines(st.stdout).some((e) => e.event === 'change' && e.path === link), `the link is a change to push, not clean: ${st.stdout}`);
    // Nothing the other replica removed is made again on the server, whatever runs next.
    assert.is((await imz(['sync', '-C', a, '--quiet'])).code, 3);
    for (let i = 3; i <= 10; i++) assert.not.ok(existsSync(join(srv, `f${i}.txt`)), `f${i}.txt stays removed on the server`);
    assert.is(await readFile(join(srv, 'f20.txt'), 'utf8'), 'server 20\n');
    // Settled by a person: the server's side everywhere, every local version kept.
    assert.is((await imz(['resolve', '--all', '--take', 'server', '-C', a, '--quiet'])).code, 0);
    assert.is((await imz(['sync', '-C', a, '--quiet'])).code, 0);
    assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(a)).filter((d) => !d.includes('.imz-conflict-')), []);
    const kept = await readdir(join(a, '.imz', 'conflicts', 'blobs'));
    assert.ok(kept.length >= 2, `local versions kept: ${kept.length}`);
  });
}

for (const name of ['log', 'opseq']) {
  test(`.imz/${name} a directory: push names it in one line (exit 1); moved away, the push goes through`, async () => {
    const { srv, a } = await servedClone('imz-state-dir-', { 'seed.txt': 'seed\n' });
    await writeFile(join(a, 'new.txt'), 'new\n');
    const file = join(a, '.imz', name);
    await rm(file, { force: true });
    await mkdir(file);
    const r = await imz(['push', '-C', a]);
    assert.is(r.code, 1, r.stderr);
    assert.is(r.stderr, `imz: cannot push: ${file} is a directory where imz keeps a file; move it away, then run the command again (it resumes where it stopped)\n`);
    await rm(file, { recursive: true });
    assert.is((await imz(['push', '-C', a, '--quiet'])).code, 0);
    assert.is(await readFile(join(srv, 'new.txt'), 'utf8'), 'new\n');
  });
}

for (const damage of ['null', 'missing']) {
  test(`HEAD ${damage}: every command says to run pull --resync (exit 1, a TypeError before), which rebuilds it; the push then goes up`, async () => {
    const { srv, a } = await servedClone('imz-head-damage-', { 'f.txt': 'one\n' });
    await writeFile(join(a, 'mine.txt'), 'mine\n');
    await writeFile(join(srv, 'theirs.txt'), 'theirs\n');
    if (damage === 'null') await writeFile(join(a, '.imz', 'HEAD'), 'null\n');
    else await rm(join(a, '.imz', 'HEAD'));
    for (const cmd of ['status', 'push', 'pull', 'sync']) {
      const r = await imz([cmd, '-C', a]);
      assert.is(r.code, 1, `${cmd}: ${r.stderr}`);
      assert.match(r.stderr, /\.imz\/HEAD is (damaged|unreadable).*run `imz pull --resync` to rebuild it/, cmd);
      assert.not.match(r.stderr, /Cannot read properties/, cmd);
    }
    const p = await imz(['pull', '--resync', '-C', a]);
    assert.is(p.code, 0, p.stderr);
    assert.is(await readFile(join(a, 'theirs.txt'), 'utf8'), 'theirs\n');
    const q = await imz(['push', '-C', a]);
    assert.is(q.code, 0, q.stderr);
    assert.is(await readFile(join(srv, 'mine.txt'), 'utf8'), 'mine\n');
    const st = jsonLines((await imz(['status', '-C', a, '--json'])).stdout).at(-1)!;
    assert.is(st.changes, 0);
  });
}

test('config damaged: one line naming it, exit 1; a damaged list of temp-file directories (inflight) is ignored, the pull goes on', async () => {
  const { srv, a } = await servedClone('imz-config-damage-', { 'f.txt': 'one\n' });
  await writeFile(join(srv, 'g.txt'), 'g\n');
  await writeFile(join(a, '.imz', 'inflight'), '{"not":"a list"}');
  const p = await imz(['pull', '-C', a]);
  assert.is(p.code, 0, p.stderr);
  assert.ok(existsSync(join(a, 'g.txt')));
  const config = await readFile(join(a, '.imz', 'config'), 'utf8');
  await writeFile(join(a, '.imz', 'config'), '[]');
  const r = await imz(['status', '-C', a]);
  assert.is(r.code, 1);
  assert.match(r.stderr, '.imz/config is damaged; restore it');
  await writeFile(join(a, '.imz', 'config'), config);
  assert.is((await imz(['status', '-C', a])).code, 0);
});

test('HEAD lost and the server replaced by one that lacks a tracked file: pull --resync keeps it, as a conflict (review: it was removed, maybe the last copy)', async () => {
  const { tmp, server, a } = await servedClone('imz-head-lost-', { 'keep.txt': 'k\n', 'only-here.txt': 'the last copy\n' });
  await server.stop();
  const srv2 = join(tmp, 'srv2');
  await mkdir(srv2);
  await writeFile(join(srv2, 'keep.txt'), 'k\n');
  const s2 = await startServer(srv2);
  await setRemote(a, s2.address);
  await rm(join(a, '.imz', 'HEAD'));
  const p = await imz(['pull', '--resync', '-C', a]);
  assert.is(p.code, 3, p.stderr);
  assert.is(await readFile(join(a, 'only-here.txt'), 'utf8'), 'the last copy\n');
  assert.equal((await listedConflicts(a)).map((c) => [c.path, c.class]), [['only-here.txt', 'update/remove']]);
  const q = await imz(['push', '-C', a]);
  assert.is(q.code, 3, `the push meets the conflict, not a create: ${q.stderr}`);
  assert.not.ok(existsSync(join(srv2, 'only-here.txt')));
  const t = await imz(['resolve', 'only-here.txt', '--take', 'local', '-C', a]);
  assert.is(t.code, 0, t.stderr);
  assert.is((await imz(['push', '-C', a])).code, 0);
  assert.is(await readFile(join(srv2, 'only-here.txt'), 'utf8'), 'the last copy\n');
});

test('the list of temp-file directories (inflight) is never followed through a symlink out of the replica; a real directory in it is swept (review)', async () => {
  const { tmp, a } = await servedClone('imz-inflight-link-', { 'f.txt': 'one\n', 'd/g.txt': 'g\n' });
  const outside = join(tmp, 'outside');
  await mkdir(outside);
  await writeFile(join(outside, '.imz-tmp-precious'), "not imz's\n");
  await symlink(outside, join(a, 'lnk'));
  await writeFile(join(a, 'd', '.imz-tmp-left-by-a-kill'), 'partial');
  await writeFile(join(a, '.imz', 'inflight'), JSON.stringify(['lnk', 'd']));
  const r = await imz(['pull', '-C', a]);
  assert.is(r.code, 0, r.stderr);
  assert.ok(existsSync(join(outside, '.imz-tmp-precious')), 'nothing outside the replica is removed');
  assert.not.ok(existsSync(join(a, 'd', '.imz-tmp-left-by-a-kill')), 'the temp file in the replica is swept');
});

for (const onDemand of [false, true]) test(`resync to a replaced server holding other content at the same version number (${onDemand ? 'on demand, a file written over one never fetched' : 'a removal here'}): a conflict there, never a silent removal or overwrite (review)`, async () => {
  const tmp = await makeTmp('imz-resync-versions-');
  const [s1, s2] = [join(tmp, 's1'), join(tmp, 's2')];
  for (const [d, f] of [[s1, 'old content\n'], [s2, 'the new server\'s, never seen here\n']] as const) {
    await mkdir(d, { recursive: true });
    await writeFile(join(d, 'a.txt'), 'a\n');
    await writeFile(join(d, 'f.txt'), f);
  }
  const srv1 = await startServer(s1);
  const srv2 = await startServer(s2);
  const a = join(tmp, 'a');
  assert.is((await imz(['clone', ...(onDemand ? ['--on-demand'] : []), srv1.address, a, '--quiet'])).code, 0);
  if (onDemand) await writeFile(join(a, 'f.txt'), 'mine\n');
  else await rm(join(a, 'f.txt'));
  await srv1.stop();
  await setRemote(a, srv2.address);
  const p = await imz(['pull', '--resync', '-C', a]);
  assert.is(p.code, 3, p.stderr);
  assert.equal((await listedConflicts(a)).map((c) => [c.path, c.class]), [['f.txt', onDemand ? 'update/update' : 'remove/update']]);
  const q = await imz(['push', '-C', a]);
  assert.is(q.code, 3, q.stderr);
  assert.is(await readFile(join(s2, 'f.txt'), 'utf8'), 'the new server\'s, never seen here\n');
});

test('sync --resync: compares by hash (rebuilding a lost HEAD), then pushes; with --watch it is a usage error', async () => {
  const { srv, a } = await servedClone('imz-sync-resync-', { 'f.txt': 'one\n' });
  await writeFile(join(a, 'mine.txt'), 'mine\n');
  await writeFile(join(srv, 'theirs.txt'), 'theirs\n');
  await rm(join(a, '.imz', 'HEAD'));
  const w = await imz(['sync', '--resync', '--watch', '-C', a]);
  assert.is(w.code, 2, w.stderr);
  const r = await imz(['sync', '--resync', '-C', a]);
  assert.is(r.code, 0, r.stderr);
  assert.is(await readFile(join(a, 'theirs.txt'), 'utf8'), 'theirs\n');
  assert.is(await readFile(join(srv, 'mine.txt'), 'utf8'), 'mine\n');
  assert.is((await imz(['status', '-C', a])).code, 0);
});

test.run();
