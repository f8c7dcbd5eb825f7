// A tracked directory replaced here by a symlink or a file, while another
// replica added inside it, under every policy, at pull and at push, against
// real `imz serve` and CLI processes. Before: the push sent the link, the
// server refused it as an error ("cannot replace directory d1: it is not
// empty", exit 1 at every push, never settled), and the pull left the
// conflict for a person under every policy.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cp, lutimes, mkdir, readFile, readdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { cleanupAll, diffTrees, diffTreesBut, imz, jsonLines, listedConflicts, makeTmp, snapshotTree, spawnImz, startServer, waitFor } from '../helpers.ts';

test.after(cleanupAll);

type Made = 'symlink' | 'file';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

interface World {
  srv: string;
  a: string;
  b: string;
  elsewhere: string;
}

/**
 * srv holds d1/f1, d1/d2/keep, top.txt; replica b adds d1/d2/new/z and
 * pushes; replica a has made d1 a symlink to a copy of it (or a file).
 */
async function world(made: Made, ours: 'newer' | 'older' = 'newer', opts: { many?: number; srv?: (srv: string) => Promise<void>; top?: string } = {}): Promise<World> {
  const tmp = await makeTmp('imz-retype-');
  const srv = join(tmp, 'srv');
  // (top: the directory d1 lies in, '' for the root.)
  const d1 = join(opts.top ?? '', 'd1');
  await mkdir(join(srv, d1, 'd2'), { recursive: true });
  await writeFile(join(srv, d1, 'f1'), '1\n');
  await writeFile(join(srv, d1, 'd2', 'keep'), 'k\n');
  await writeFile(join(srv, 'top.txt'), 't\n');
  await opts.srv?.(srv);
  const server = await startServer(srv);
  const a = join(tmp, 'a');
  const b = join(tmp, 'b');
  for (const r of [a, b]) await run(['clone', server.address, r, '--quiet'], 0);
  await mkdir(join(b, d1, 'd2', 'new'));
  await writeFile(join(b, d1, 'd2', 'new', 'z'), 'deep\n');
  // Many more (a pull that takes them takes a while: room to kill it).
  for (let i = 0; i < (opts.many ?? 0); i++) await writeFile(join(b, d1, 'd2', 'new', `m${i}`), `many ${i}\n`.repeat(200));
  await writeFile(join(b, 'top.txt'), 'edited by B\n');
  await run(['push', '-C', b, '--quiet'], 0);
  const elsewhere = join(tmp, 'elsewhere');
  await cp(join(a, d1), elsewhere, { recursive: true });
  await rm(join(a, d1), { recursive: true });
  if (made === 'symlink') await symlink(elsewhere, join(a, d1));
  else await writeFile(join(a, d1), 'x\n');
  // newest compares our replacement's time with the server's change inside.
  const t = ours === 'newer' ? Date.now() / 1000 + 3600 : Date.now() / 1000 - 3600;
  await lutimes(join(a, d1), t, t);
  return { srv, a, b, elsewhere };
}

/** A server on files (path → content, parents made) and five more beside them (the mass-delete guard stays quiet), cloned to a and b. */
async function smallWorld(prefix: string, files: Record<string, string>): Promise<{ srv: string; a: string; b: string }> {
  const tmp = await makeTmp(prefix);
  const srv = join(tmp, 'srv');
  for (const [p, c] of Object.entries({ ...files, o0: '0\n', o1: '1\n', o2: '2\n', o3: '3\n', o4: '4\n' })) {
    await mkdir(join(srv, p, '..'), { recursive: true });
    await writeFile(join(srv, p), c);
  }
  const server = await startServer(srv);
  const a = join(tmp, 'a');
  const b = join(tmp, 'b');
  for (const r of [a, b]) await run(['clone', server.address, r, '--quiet'], 0);
  return { srv, a, b };
}

/**
 * A world whose replica a ran a server-wins pull killed (SIGKILL) once ours
 * went aside (d1, a file, under top), before the pull was done.
 */
async function killedTake(top = '', when: 'aside' | 'made' = 'aside'): Promise<World> {
  const tries: string[] = [];
  for (let k = 0; k < 4; k++) {
    const w = await world('file', 'older', { many: 1500, top });
    const { proc, done } = await spawnImz(['pull', '-C', w.a, '--policy', 'server-wins', '--quiet']);
    // made: once the server's directories are made here (its files still coming).
    const ready = async () => (await asideCopies(join(w.a, top))).length > 0 && (when === 'aside' || existsSync(join(w.a, top, 'd1', 'd2', 'new')));
    await waitFor(async () => proc.exitCode !== null || (await ready()), 20_000, 'ours to go aside', 1);
    if (proc.exitCode === null) proc.kill('SIGKILL');
    const r = await done;
    tries.push(r.signal ?? `exit ${r.code}`);
    if (r.signal === 'SIGKILL') return w;
  }
  assert.unreachable(`a pull killed in the middle of the take (${tries.join(', ')})`);
  throw new Error('unreachable');
}

const run = async (args: string[], code: number) => {
  const r = await imz(args);
  assert.is(r.code, code, `imz ${args.join(' ')}\n${r.stdout}\n${r.stderr}`);
  return r;
};

/** The names of the copies of d1 kept beside it. */
async function asideCopies(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => /^d1\.imz-(conflict|keep)-/.test(n));
}

/** Ours, as we made it, at rel. */
async function assertOurs(w: World, rel: string, made: Made, where: string): Promise<void> {
  if (made === 'symlink') assert.is(await readlink(join(where, rel)), w.elsewhere, `${rel} is our symlink`);
  else assert.is(await readFile(join(where, rel), 'utf8'), 'x\n', `${rel} is our file`);
}

/** Nothing was written through our symlink: the copy holds what it held. */
async function assertElsewhereUntouched(w: World): Promise<void> {
  assert.equal((await readdir(w.elsewhere)).sort(), ['d2', 'f1']);
  assert.equal(await readdir(join(w.elsewhere, 'd2')), ['keep'], 'nothing written through the symlink');
}

/** Where the server keeps what a winning client displaced: d1/d2/new/z's content is there. */
async function assertDisplacedZ(srv: string): Promise<void> {
  const idx = (await readFile(join(srv, '.imz-server', 'displaced', 'index.jsonl'), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const z = idx.find((e: Record<string, unknown>) => e.path === 'd1/d2/new/z');
  assert.ok(z, `d1/d2/new/z is displaced: ${JSON.stringify(idx)}`);
  assert.is(await readFile(join(srv, '.imz-server', 'displaced', z.savedAs), 'utf8'), 'deep\n');
}

async function d1Record(a: string): Promise<Record<string, unknown>> {
  const rec = (await listedConflicts(a)).find((c) => c.path === 'd1');
  assert.ok(rec, 'a record lists the conflict on d1');
  assert.is(rec!.class, 'type-change');
  return rec!;
}

for (const made of ['symlink', 'file'] as const) {
  for (const policy of ['server-wins', 'keep-both', 'newest'] as const) {
    if (made === 'file' && policy !== 'server-wins') continue;
    test(`pull --policy ${policy}${policy === 'newest' ? ' (ours older)' : ''}, d1 made a ${made} here and added to there: ours aside, the server's whole directory here (exit 0)`, async () => {
      const w = await world(made, 'older');
      await run(['pull', '-C', w.a, '--policy', policy, '--quiet'], 0);
      assert.is(await readFile(join(w.a, 'd1', 'd2', 'new', 'z'), 'utf8'), 'deep\n', 'what the server added');
      assert.is(await readFile(join(w.a, 'd1', 'f1'), 'utf8'), '1\n', 'and what it had, unchanged there, comes too');
      assert.is(await readFile(join(w.a, 'd1', 'd2', 'keep'), 'utf8'), 'k\n');
      assert.is(await readFile(join(w.a, 'top.txt'), 'utf8'), 'edited by B\n');
      const aside = await asideCopies(w.a);
      assert.is(aside.length, 1, aside.join(', '));
      assert.ok(aside[0]!.startsWith(policy === 'keep-both' ? 'd1.imz-keep-' : 'd1.imz-conflict-'), aside[0]);
      await assertOurs(w, aside[0]!, made, w.a);
      const rec = await d1Record(w.a);
      assert.is(rec.resolvedBy, policy);
      assert.is(rec.localCopy, aside[0]);
      if (made === 'symlink') await assertElsewhereUntouched(w);
      await run(['sync', '-C', w.a, '--policy', policy, '--quiet'], 0);
      const srvT = await snapshotTree(w.srv);
      const aT = await snapshotTree(w.a);
      if (policy === 'keep-both') {
        assert.equal(diffTrees(srvT, aT), [], 'the keep copy is pushed');
      } else {
        assert.equal(diffTreesBut(srvT, aT), []);
        assert.not.ok(srvT[aside[0]!], 'a conflict copy is never pushed');
      }
      assert.is(srvT['d1/f1']?.type, 'file', 'nothing of the server\'s directory removed');
    });
  }
}

for (const made of ['symlink', 'file'] as const) {
  for (const policy of ['client-wins', 'newest'] as const) {
    if (made === 'file' && policy !== 'client-wins') continue;
    test(`pull --policy ${policy}${policy === 'newest' ? ' (ours newer)' : ''}, d1 made a ${made} here and added to there: ours stays (exit 0), the next push puts it there and the server keeps what it displaces`, async () => {
      const w = await world(made, 'newer');
      await run(['pull', '-C', w.a, '--policy', policy, '--quiet'], 0);
      await assertOurs(w, 'd1', made, w.a);
      assert.is(await readFile(join(w.a, 'top.txt'), 'utf8'), 'edited by B\n', 'the rest arrived');
      assert.is((await d1Record(w.a)).resolvedBy, policy);
      if (made === 'symlink') await assertElsewhereUntouched(w);
      await run(['push', '-C', w.a, '--policy', policy, '--quiet'], 0);
      await assertOurs(w, 'd1', made, w.srv);
      await assertDisplacedZ(w.srv);
      await run(['sync', '-C', w.a, '--quiet'], 0);
      assert.equal(diffTrees(await snapshotTree(w.srv), await snapshotTree(w.a)), []);
    });
  }
}

test('push (manual), d1 made a symlink here and added to there: a type-change conflict, exit 3 at every push (was exit 1: the server refused the link as an error); resolve --take server settles it', async () => {
  const w = await world('symlink');
  const first = await run(['push', '-C', w.a, '--json'], 3);
  assert.ok(first.stdout.includes('"type-change"'), first.stdout);
  assert.ok(lstatSync(join(w.srv, 'd1')).isDirectory(), 'the server keeps its directory');
  assert.is(await readFile(join(w.srv, 'd1', 'd2', 'new', 'z'), 'utf8'), 'deep\n');
  await assertOurs(w, 'd1', 'symlink', w.a);
  assert.is((await d1Record(w.a)).resolvedBy, undefined, 'left for a person');
  await run(['push', '-C', w.a, '--quiet'], 3);
  await run(['pull', '-C', w.a, '--quiet'], 3);
  await assertElsewhereUntouched(w);
  // (Exit 3: the removal of d1/d2 that met the addition inside it is still listed.)
  await run(['resolve', 'd1', '--take', 'server', '-C', w.a, '--quiet'], 3);
  await run(['resolve', '--all', '--take', 'server', '-C', w.a, '--quiet'], 0);
  await run(['sync', '-C', w.a, '--quiet'], 0);
  assert.equal(diffTrees(await snapshotTree(w.srv), await snapshotTree(w.a)), []);
  assert.is(await readFile(join(w.a, 'd1', 'd2', 'new', 'z'), 'utf8'), 'deep\n');
  await assertElsewhereUntouched(w);
});

for (const made of ['symlink', 'file'] as const) {
  for (const policy of ['server-wins', 'keep-both'] as const) {
    if (made === 'file' && policy !== 'server-wins') continue;
    test(`push --policy ${policy}, d1 made a ${made} here and added to there: settled (exit 0), ours aside, the server's directory here`, async () => {
      const w = await world(made);
      await run(['push', '-C', w.a, '--policy', policy, '--quiet'], 0);
      assert.ok(lstatSync(join(w.srv, 'd1')).isDirectory(), 'the server keeps its directory');
      assert.is(await readFile(join(w.a, 'd1', 'd2', 'new', 'z'), 'utf8'), 'deep\n', 'and it is here, with what was added to it');
      const aside = await asideCopies(w.a);
      assert.is(aside.length, 1, aside.join(', '));
      await assertOurs(w, aside[0]!, made, w.a);
      assert.is((await d1Record(w.a)).resolvedBy, policy);
      if (made === 'symlink') await assertElsewhereUntouched(w);
      await run(['sync', '-C', w.a, '--policy', policy, '--quiet'], 0);
      const srvT = await snapshotTree(w.srv);
      const aT = await snapshotTree(w.a);
      if (policy === 'keep-both') {
        assert.equal(diffTrees(srvT, aT), []);
        await assertOurs(w, aside[0]!, made, w.srv);
      } else {
        assert.equal(diffTreesBut(srvT, aT), []);
        assert.not.ok(existsSync(join(w.srv, aside[0]!)), 'a conflict copy is never pushed');
      }
    });
  }
}

for (const policy of ['client-wins', 'newest'] as const) {
  test(`push --policy ${policy}${policy === 'newest' ? ' (ours newer)' : ''}, d1 made a symlink here and added to there: ours goes in (exit 0), the server keeps what it displaces`, async () => {
    const w = await world('symlink', 'newer');
    await run(['push', '-C', w.a, '--policy', policy, '--quiet'], 0);
    await assertOurs(w, 'd1', 'symlink', w.srv);
    await assertDisplacedZ(w.srv);
    await assertElsewhereUntouched(w);
    await run(['sync', '-C', w.a, '--quiet'], 0);
    assert.equal(diffTrees(await snapshotTree(w.srv), await snapshotTree(w.a)), []);
  });
}

test('push --policy newest (ours older), d1 made a symlink here and added to there: the server\'s directory stays and comes here, ours aside', async () => {
  const w = await world('symlink', 'older');
  await run(['push', '-C', w.a, '--policy', 'newest', '--quiet'], 0);
  assert.ok(lstatSync(join(w.srv, 'd1')).isDirectory());
  assert.is(await readFile(join(w.a, 'd1', 'd2', 'new', 'z'), 'utf8'), 'deep\n');
  const aside = await asideCopies(w.a);
  assert.is(aside.length, 1, aside.join(', '));
  await assertOurs(w, aside[0]!, 'symlink', w.a);
  await assertElsewhereUntouched(w);
});

test('a server-wins pull killed after ours went aside: nothing of the server\'s directory reads as removed here (the next push removed its unchanged files there), a push meanwhile waits for the pull, and the next pull, under any policy, takes the whole directory', async () => {
  const w = await killedTake('', 'made');
  assert.match((await run(['status', '-C', w.a], 0)).stderr, /interrupted pull is still bringing d1 whole/);
  const st = jsonLines((await run(['status', '-C', w.a, '--json'], 0)).stdout);
  assert.not.ok(st.some((e) => e.event === 'change' && String(e.path).startsWith('d1/') && (e.kind === 'delete' || e.kind === 'rmdir')), `no removal under d1 to push: ${JSON.stringify(st)}`);
  // What the killed pull placed under d1 is no change of ours: the push keeps it back until the pull is done.
  // (What it placed is indexed as the server's by the next locked run, from .imz/placing: mostly nothing to push.)
  const pushed = await imz(['push', '-C', w.a]);
  assert.ok(pushed.code === 0 || (pushed.code === 3 && /interrupted pull is still bringing d1 whole/.test(pushed.stdout)), `${pushed.code}\n${pushed.stdout}\n${pushed.stderr}`);
  assert.is(await readFile(join(w.srv, 'd1', 'f1'), 'utf8'), '1\n', 'the server\'s unchanged file is still there');
  assert.is(await readFile(join(w.srv, 'd1', 'd2', 'keep'), 'utf8'), 'k\n');
  await run(['pull', '-C', w.a, '--quiet'], 0);
  await run(['sync', '-C', w.a, '--quiet'], 0);
  assert.equal(diffTreesBut(await snapshotTree(w.srv), await snapshotTree(w.a)), [], 'the whole directory is here');
  const aside = await asideCopies(w.a);
  assert.is(aside.length, 1, aside.join(', '));
  await assertOurs(w, aside[0]!, 'file', w.a);
  const rec = await d1Record(w.a);
  assert.is(rec.takingWhole, undefined, 'the take is done');
  assert.is(rec.localCopy, aside[0]);
  assert.is(jsonLines((await run(['status', '-C', w.a, '--json'], 0)).stdout).at(-1)!.changes, 0);
});

test('a server-wins pull killed in the middle of the take, then resolve d1 --take server: the whole directory is brought (it took what the killed run had placed for all of it, for good)', async () => {
  const w = await killedTake('', 'made');
  await run(['resolve', 'd1', '--take', 'server', '-C', w.a, '--quiet'], 0);
  await run(['sync', '-C', w.a, '--quiet'], 0);
  assert.equal(diffTreesBut(await snapshotTree(w.srv), await snapshotTree(w.a)), [], 'the whole directory is here');
  assert.is(await readFile(join(w.a, 'd1', 'f1'), 'utf8'), '1\n');
  assert.is(jsonLines((await run(['status', '-C', w.a, '--json'], 0)).stdout).at(-1)!.changes, 0);
});

test('a take killed in the middle, then the directory above it made a symlink to elsewhere: the next pull moves nothing through it (it renamed a file out there)', async () => {
  const w = await killedTake('p');
  const outside = join(w.a, '..', 'outside');
  await rename(join(w.a, 'p'), join(w.a, '..', 'p-moved'));
  await mkdir(outside);
  await writeFile(join(outside, 'd1'), 'OUTSIDE\n');
  await symlink(outside, join(w.a, 'p'));
  const r = await imz(['pull', '-C', w.a]);
  assert.ok(r.code === 0 || r.code === 3, `${r.code}\n${r.stderr}`);
  assert.equal(await readdir(outside), ['d1'], 'nothing renamed or made out there');
  assert.is(await readFile(join(outside, 'd1'), 'utf8'), 'OUTSIDE\n');
});

test('push (manual) meets the conflicts, then pull --policy server-wins takes the whole directory: what waited under it (a removal that met an addition) is settled too, exit 0', async () => {
  const w = await world('symlink');
  await run(['push', '-C', w.a, '--quiet'], 3);
  await run(['pull', '-C', w.a, '--policy', 'server-wins', '--quiet'], 0);
  assert.equal((await listedConflicts(w.a)).filter((c) => !c.resolvedBy).map((c) => c.path), [], 'nothing left for a person');
  await run(['sync', '-C', w.a, '--policy', 'server-wins', '--quiet'], 0);
  assert.equal(diffTreesBut(await snapshotTree(w.srv), await snapshotTree(w.a)), []);
  await assertElsewhereUntouched(w);
});

test('push --policy newest: ours against what was added inside, not the directory\'s own mtime (an addition deep down leaves it old): ours older than the addition loses, as at pull', async () => {
  const old = Date.now() / 1000 - 7200;
  const w = await world('symlink', 'older', {
    srv: async (srv) => {
      for (const p of ['d1/f1', 'd1/d2/keep', 'd1/d2', 'd1']) await lutimes(join(srv, p), old, old);
      for (let i = 0; i < 4; i++) await writeFile(join(srv, `more${i}`), 'so that the mass-delete guard stays quiet\n');
    },
  });
  // Ours: half an hour ago, later than the directory itself, earlier than what b added in it just now.
  const t = Date.now() / 1000 - 1800;
  await lutimes(join(w.a, 'd1'), t, t);
  await run(['push', '-C', w.a, '--policy', 'newest', '--quiet'], 0);
  assert.ok(lstatSync(join(w.srv, 'd1')).isDirectory(), 'the server\'s directory stays');
  assert.is(await readFile(join(w.srv, 'd1', 'd2', 'new', 'z'), 'utf8'), 'deep\n', 'and what was added in it');
  assert.is((await asideCopies(w.a)).length, 1);
});

test('push --policy client-wins over a directory holding something the server does not track (ignored): nothing displaced, ours aside, exit 0 (was: the addition displaced, then exit 1 at every push)', async () => {
  const w = await world('symlink', 'newer', {
    srv: async (srv) => {
      await writeFile(join(srv, '.imzignore'), '*.tmp\n');
      await writeFile(join(srv, 'd1', 'd2', 'scratch.tmp'), 'ignored, the server\'s own\n');
    },
  });
  await run(['push', '-C', w.a, '--policy', 'client-wins', '--quiet'], 0);
  assert.is(await readFile(join(w.srv, 'd1', 'd2', 'new', 'z'), 'utf8'), 'deep\n', 'the addition stays in place');
  assert.is(await readFile(join(w.srv, 'd1', 'd2', 'scratch.tmp'), 'utf8'), 'ignored, the server\'s own\n');
  assert.not.ok(existsSync(join(w.srv, '.imz-server', 'displaced', 'index.jsonl')), 'nothing displaced');
  assert.is((await asideCopies(w.a)).length, 1, 'ours is kept aside here');
  await run(['push', '-C', w.a, '--policy', 'client-wins', '--quiet'], 0);
  await assertElsewhereUntouched(w);
});

for (const policy of ['manual', 'server-wins'] as const) {
  test(`pull --policy ${policy}, d1 made a symlink here and a file there: one type-change conflict on d1, and what the server removed under it is no removal left to push here (it read as one)`, async () => {
    const { a, b } = await smallWorld('imz-retype-both-', { 'd1/f1': '1\n', 'd1/d2/keep': 'k\n' });
    await rm(join(b, 'd1'), { recursive: true });
    await writeFile(join(b, 'd1'), 'a file there\n');
    await run(['push', '-C', b, '--quiet'], 0);
    await rm(join(a, 'd1'), { recursive: true });
    await symlink('o1', join(a, 'd1'));
    const pulled = await run(['pull', '-C', a, '--policy', policy, '--json'], policy === 'manual' ? 3 : 0);
    const conflicts = jsonLines(pulled.stdout).filter((e) => e.event === 'conflict');
    assert.equal(conflicts.map((c) => [c.path, c.class]), [['d1', 'type-change']], pulled.stdout);
    const st = jsonLines((await imz(['status', '-C', a, '--json'])).stdout);
    assert.equal(st.filter((e) => e.event === 'change').map((e) => `${e.kind} ${e.path}`), policy === 'manual' ? ['retype d1'] : [], JSON.stringify(st));
    if (policy === 'server-wins') {
      assert.is(await readFile(join(a, 'd1'), 'utf8'), 'a file there\n');
      assert.is(await readlink(join(a, (await asideCopies(a))[0]!)), 'o1');
    }
  });
}

test('push --policy keep-both, a directory replaced twice while entries were added inside it each time: the second keep copy takes a free name, the first stays (it was written over: the first version lost)', async () => {
  const { srv, a, b } = await smallWorld('imz-retype-keep2-', { 'd1/f1': '1\n' });
  for (const [k, mine] of [[1, 'FIRST\n'], [2, 'SECOND\n']] as const) {
    await run(['pull', '-C', b, '--quiet'], 0);
    await mkdir(join(b, 'd1', `new${k}`));
    await writeFile(join(b, 'd1', `new${k}`, 'z'), `z${k}\n`);
    await run(['push', '-C', b, '--quiet'], 0);
    // a replaces d1 without having seen the addition: the server keeps its directory and ours beside it.
    await rm(join(a, 'd1'), { recursive: true });
    await writeFile(join(a, 'd1'), mine);
    await run(['push', '-C', a, '--policy', 'keep-both', '--quiet', '--allow-mass-delete'], 0);
    await run(['pull', '-C', a, '--quiet'], 0);
  }
  // (The second: d1-2.imz-keep-..., the number before what reads as the extension, as every free name takes it.)
  const kept = (await readdir(srv)).filter((n) => /^d1(-2)?\.imz-keep-/.test(n)).sort((x, y) => x.length - y.length);
  assert.equal(await Promise.all(kept.map((n) => readFile(join(srv, n), 'utf8'))), ['FIRST\n', 'SECOND\n'], kept.join(', '));
  await run(['sync', '-C', a, '--quiet'], 0);
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(a)), []);
});

for (const policy of ['server-wins', 'keep-both'] as const) {
  test(`pull --policy ${policy}, d1 made a symlink here, and there only a chmod of d1 itself: the whole directory comes (it came empty, and the next push removed what it held there)`, async () => {
    const { srv, a, b } = await smallWorld('imz-retype-chmod-', { 'd1/f1': '1\n', 'd1/d2/keep': 'k\n' });
    const { chmod } = await import('node:fs/promises');
    await chmod(join(b, 'd1'), 0o700);
    await run(['push', '-C', b, '--quiet'], 0);
    await rm(join(a, 'd1'), { recursive: true });
    await symlink('o1', join(a, 'd1'));
    const t = Date.now() / 1000 - 3600;
    await lutimes(join(a, 'd1'), t, t);
    await run(['pull', '-C', a, '--policy', policy, '--quiet'], 0);
    assert.is(await readFile(join(a, 'd1', 'f1'), 'utf8'), '1\n');
    assert.is(await readFile(join(a, 'd1', 'd2', 'keep'), 'utf8'), 'k\n');
    assert.is(await readlink(join(a, (await asideCopies(a))[0]!)), 'o1', 'ours aside');
    await run(['sync', '-C', a, '--policy', policy, '--quiet'], 0);
    assert.is(await readFile(join(srv, 'd1', 'f1'), 'utf8'), '1\n', 'nothing removed there');
    assert.is(await readFile(join(srv, 'd1', 'd2', 'keep'), 'utf8'), 'k\n');
    assert.equal(diffTreesBut(await snapshotTree(srv), await snapshotTree(a)).filter((d) => !d.includes('.imz-keep-')), []);
  });
}

test('pull --policy server-wins, d1 made a symlink here and only a removal inside it there: the same result, ours stays and goes up (it was moved aside and the directory came back)', async () => {
  const { srv, a, b } = await smallWorld('imz-retype-rm-', { 'd1/f1': '1\n', 'd1/f2': '2\n' });
  await rm(join(b, 'd1', 'f1'));
  await run(['push', '-C', b, '--quiet'], 0);
  await rm(join(a, 'd1'), { recursive: true });
  await symlink('o1', join(a, 'd1'));
  await run(['pull', '-C', a, '--policy', 'server-wins', '--quiet'], 0);
  assert.is(await readlink(join(a, 'd1')), 'o1');
  assert.equal(await asideCopies(a), []);
  await run(['push', '-C', a, '--policy', 'server-wins', '--quiet'], 0);
  assert.is(await readlink(join(srv, 'd1')), 'o1');
});

test('resolve d1 --take local on a directory made a symlink here while added to there: the next push removes the server\'s entries (kept in .imz/conflicts/blobs) and puts ours (it met the same conflict at every push)', async () => {
  const w = await world('symlink');
  await run(['pull', '-C', w.a, '--quiet'], 3);
  await run(['resolve', 'd1', '--take', 'local', '-C', w.a, '--quiet'], 0);
  await run(['push', '-C', w.a, '--quiet', '--allow-mass-delete'], 0);
  assert.is(await readlink(join(w.srv, 'd1')), w.elsewhere);
  assert.is(await readFile(join(w.a, '.imz', 'conflicts', 'blobs', sha256('deep\n')), 'utf8'), 'deep\n', 'what the server had inside is kept here');
  await run(['sync', '-C', w.a, '--quiet'], 0);
  assert.equal(diffTrees(await snapshotTree(w.srv), await snapshotTree(w.a)), []);
  await assertElsewhereUntouched(w);
});

test('resolve d1 --take local after server-wins took the directory, another replica editing in it since: the push meets those edits as conflicts (they were removed there unseen)', async () => {
  const w = await world('symlink', 'older');
  await run(['pull', '-C', w.a, '--policy', 'server-wins', '--quiet'], 0);
  await run(['pull', '-C', w.b, '--quiet'], 0);
  await writeFile(join(w.b, 'd1', 'f1'), 'B-EDIT\n');
  await writeFile(join(w.b, 'd1', 'd2', 'bnew'), 'added by b since\n');
  await run(['push', '-C', w.b, '--quiet'], 0);
  // Ours back from its copy: the directory the take brought moved away first (resolve will not remove it).
  await rename(join(w.a, 'd1'), join(w.a, '..', 'taken-d1'));
  await run(['resolve', 'd1', '--take', 'local', '-C', w.a, '--quiet'], 0);
  const pushed = await imz(['push', '-C', w.a, '--json', '--allow-mass-delete']);
  assert.is(pushed.code, 3, `${pushed.stdout}\n${pushed.stderr}`);
  assert.is(await readFile(join(w.srv, 'd1', 'f1'), 'utf8'), 'B-EDIT\n', 'b\'s edit is still there');
  assert.is(await readFile(join(w.srv, 'd1', 'd2', 'bnew'), 'utf8'), 'added by b since\n');
});

test('resolve d1 --take local of a conflict found at pull, a chmod of d1 made there since: the push removes what the conflict held back and puts ours, not half of it (d1 was left empty there)', async () => {
  const w = await world('symlink');
  await run(['pull', '-C', w.a, '--quiet'], 3);
  await run(['pull', '-C', w.b, '--quiet'], 0);
  const { chmod } = await import('node:fs/promises');
  await chmod(join(w.b, 'd1'), 0o700);
  await run(['push', '-C', w.b, '--quiet'], 0);
  await run(['resolve', 'd1', '--take', 'local', '-C', w.a, '--quiet'], 0);
  await run(['push', '-C', w.a, '--quiet', '--allow-mass-delete'], 0);
  assert.is(await readlink(join(w.srv, 'd1')), w.elsewhere);
});

test('newest at pull weighs ours against all the server\'s directory holds, as the push does: a file there with a later mtime than ours, unchanged, makes ours the older (pull kept ours, and the push then decided the other way)', async () => {
  const later = Date.now() / 1000 + 7200;
  const w = await world('symlink', 'newer', { srv: async (srv) => { await lutimes(join(srv, 'd1', 'f1'), later, later); } });
  await run(['pull', '-C', w.a, '--policy', 'newest', '--quiet'], 0);
  assert.is(await readFile(join(w.a, 'd1', 'd2', 'new', 'z'), 'utf8'), 'deep\n', 'the server\'s directory is here');
  assert.is((await asideCopies(w.a)).length, 1, 'ours aside');
  await run(['sync', '-C', w.a, '--policy', 'newest', '--quiet'], 0);
  assert.ok(lstatSync(join(w.srv, 'd1')).isDirectory(), 'and it stays there');
});

test('pull --follow and sync --watch with a policy that does not exist: exit 2 at once (follow retried forever, as if the server were away; sync --watch warned at every push round)', async () => {
  const w = await world('file');
  for (const args of [['pull', '--follow'], ['sync', '--watch']]) {
    const r = await imz([...args, '--policy', 'bogus', '-C', w.a], { timeoutMs: 10_000 });
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /conflict policy "bogus"/);
  }
});

test.run();
