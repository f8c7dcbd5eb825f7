// Conflicts at push (reintegration), table-driven: every conflict class
// under every policy, against real `imz serve` and `imz push` processes
// (the bundled CLI, dist/imz.js: run `npm run build` first).
//
// For each policy one server and two replicas are set up once (lazily, by
// the first test of that policy): replica "other" pushes its side of every
// case, then replica "mine" pushes the conflicting side with the policy,
// pulls, and pushes again. Each (policy, case) pair is then its own test,
// which asserts the winner in place (server tree and replica) and the loser
// retrievable (conflict blob, conflict copy, displaced file, keep copy).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type RunResult, runReport as out, type SnapEntry,
  cleanupAll, conflictRecords, diffTrees, imz, jsonLines, makeTmp, replicaIdOf, snapshotTree, startServer,
} from '../helpers.ts';

const T = suite('push: conflicts under each policy');
// The per-policy worlds are shared by several tests: cleaned up at the end only.
T.after(cleanupAll);

const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
type Tree = Record<string, SnapEntry>;

// ---------- versions of a path ----------

/** A version of one path: a file's content, a symlink's target, a directory, or nothing. */
type V = { file: string } | { link: string } | 'dir' | 'absent';

const show = (v: V) => (typeof v === 'string' ? v : 'file' in v ? `file ${JSON.stringify(v.file)}` : `symlink -> ${v.link}`);

/** The version a snapshot holds at path, in the terms of want(). */
function stateOf(tree: Tree, path: string): string {
  const e = tree[path];
  if (!e) return 'absent';
  if (e.type === 'dir') return 'dir';
  if (e.type === 'symlink') return `symlink -> ${e.target}`;
  if (e.type === 'file') return `file sha ${e.sha256}`;
  return e.type;
}
function want(v: V): string {
  if (typeof v === 'string') return v;
  return 'file' in v ? `file sha ${sha(v.file)}` : `symlink -> ${v.link}`;
}

/** Makes path hold v (whatever was there is removed first). */
async function put(root: string, path: string, v: V): Promise<void> {
  const abs = join(root, path);
  await rm(abs, { recursive: true, force: true });
  if (v === 'absent') return;
  if (v === 'dir') return void (await mkdir(abs, { recursive: true }));
  if ('file' in v) return void (await writeFile(abs, v.file));
  await symlink(v.link, abs);
}

// ---------- the cases ----------

interface Case {
  key: string;
  path: string;
  /** The class the conflict record must carry ('' for no conflict). */
  cls: string;
  base?: V;
  /** The server's side (pushed first, by replica "other"). */
  other: V;
  /** This replica's side. */
  mine: V;
  /** Extra work on the other side (after `other` is in place). */
  otherExtra?: (root: string) => Promise<void>;
  /** mtime of mine: an hour in the future (default, so `newest` picks it) or in the past. */
  mineAge?: 'newer' | 'older';
}

const CASES: Case[] = [
  { key: 'update/update', path: 'uu.txt', cls: 'update/update', base: { file: 'base uu\n' }, other: { file: 'other side of uu\n' }, mine: { file: 'my side of uu\n' } },
  { key: 'update/update, mine older', path: 'uo.txt', cls: 'update/update', base: { file: 'base uo\n' }, other: { file: 'other side of uo\n' }, mine: { file: 'my older side of uo\n' }, mineAge: 'older' },
  { key: 'update/remove', path: 'ur.txt', cls: 'update/remove', base: { file: 'base ur\n' }, other: 'absent', mine: { file: 'my side of ur\n' } },
  { key: 'remove/update', path: 'ru.txt', cls: 'remove/update', base: { file: 'base ru\n' }, other: { file: 'other side of ru\n' }, mine: 'absent' },
  { key: 'create/create', path: 'cc.txt', cls: 'create/create', other: { file: 'other side of cc\n' }, mine: { file: 'my side of cc\n' } },
  { key: 'type change (file vs symlink)', path: 'tc.txt', cls: 'type-change', base: { file: 'base tc\n' }, other: { link: 'somewhere/else' }, mine: { file: 'my side of tc\n' } },
  {
    key: 'dir removed here, added to there', path: 'dr', cls: 'dir-removed', base: 'dir', other: 'dir', mine: 'absent',
    otherExtra: (root) => writeFile(join(root, 'dr', 'new.txt'), 'other added this to dr\n'),
  },
  { key: 'identical edits', path: 'same.txt', cls: '', base: { file: 'base same\n' }, other: { file: 'the same edit on both sides\n' }, mine: { file: 'the same edit on both sides\n' } },
];

/** Files present at the start beside the case paths. */
async function makeBase(srv: string): Promise<void> {
  await mkdir(srv, { recursive: true });
  for (const c of CASES) if (c.base) await put(srv, c.path, c.base);
  await writeFile(join(srv, 'dr', 'x.txt'), 'x in dr\n');
  await writeFile(join(srv, 'untouched.txt'), 'nobody changes this\n');
}

// ---------- what each policy must do ----------

const POLICIES = ['manual', 'server-wins', 'client-wins', 'newest', 'keep-both'] as const;
type Policy = (typeof POLICIES)[number];

/** Which side a policy keeps at the path itself. */
function winner(p: Policy, c: Case): 'other' | 'mine' {
  if (p === 'client-wins') return 'mine';
  if (p === 'newest') return c.mine !== 'absent' && c.other !== 'absent' && c.mineAge !== 'older' ? 'mine' : 'other';
  return 'other'; // manual (on the server), server-wins, keep-both
}

/** Everything one policy's run left behind, read once. */
interface World {
  policy: Policy;
  replicaId: string;
  srv: string;
  mine: string;
  otherPush: RunResult;
  push1: RunResult;
  pull: RunResult;
  push2: RunResult;
  serverAfterPush: Tree;
  mineAfterPush: Tree;
  mineAfterPull: Tree;
  serverAfterPush2: Tree;
  otherAfterPull: Tree;
  records: Record<string, unknown>[];
  displacedIndex: Record<string, unknown>[];
}


async function build(policy: Policy): Promise<World> {
  const tmp = await makeTmp(`imz-policy-${policy}-`);
  const srv = join(tmp, 'srv');
  await makeBase(srv);
  const server = await startServer(srv);
  const other = join(tmp, 'other');
  const mine = join(tmp, 'mine');
  for (const d of [other, mine]) {
    const r = await imz(['clone', server.address, d]);
    if (r.code !== 0) throw new Error(`clone ${d} exited ${r.code}: ${r.stderr}`);
  }
  // The server side, pushed by the other replica.
  for (const c of CASES) {
    if (c.other !== 'dir' || !c.base) await put(other, c.path, c.other);
    await c.otherExtra?.(other);
  }
  const otherPush = await imz(['push', '-C', other, '--json']);
  if (otherPush.code !== 0) throw new Error(`the other replica's push exited ${otherPush.code}: ${otherPush.stdout}${otherPush.stderr}`);

  // This side, made without pulling first.
  const hour = 3600_000;
  for (const c of CASES) {
    if (c.mine !== 'dir' || !c.base) await put(mine, c.path, c.mine);
    if (typeof c.mine === 'object' && 'file' in c.mine) {
      const t = new Date(Date.now() + (c.mineAge === 'older' ? -hour : hour));
      await utimes(join(mine, c.path), t, t);
    }
  }
  // `newest` is taken from .imz/config (the default policy), every other one from --policy.
  let policyArgs = ['--policy', policy];
  if (policy === 'newest') {
    const cfgPath = join(mine, '.imz', 'config');
    const cfg = JSON.parse(await readFile(cfgPath, 'utf8'));
    cfg.policy = 'newest';
    await writeFile(cfgPath, JSON.stringify(cfg, null, 2) + '\n');
    policyArgs = [];
  }
  const push1 = await imz(['push', '-C', mine, '--json', ...policyArgs]);
  const serverAfterPush = await snapshotTree(srv);
  const mineAfterPush = await snapshotTree(mine);
  const records = await conflictRecords(mine);
  const pull = await imz(['pull', '-C', mine, '--json']);
  const mineAfterPull = await snapshotTree(mine);
  const push2 = await imz(['push', '-C', mine, '--json', ...policyArgs]);
  const serverAfterPush2 = await snapshotTree(srv);
  await imz(['pull', '-C', other]);
  const otherAfterPull = await snapshotTree(other);
  const idxFile = join(srv, '.imz-server', 'displaced', 'index.jsonl');
  const displacedIndex = existsSync(idxFile) ? (await readFile(idxFile, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  const replicaId = await replicaIdOf(mine);
  await server.stop();
  return { policy, replicaId, srv, mine, otherPush, push1, pull, push2, serverAfterPush, mineAfterPush, mineAfterPull, serverAfterPush2, otherAfterPull, records, displacedIndex };
}

// Built on first use, two at a time (each run is mostly process start-ups).
const worlds = new Map<Policy, Promise<World>>();
const world = (p: Policy): Promise<World> => {
  if (worlds.size === 0) {
    const lanes = [POLICIES.filter((_, i) => i % 2 === 0), POLICIES.filter((_, i) => i % 2 === 1)];
    for (const lane of lanes) {
      let prev: Promise<unknown> = Promise.resolve();
      for (const q of lane) {
        const w = prev.then(() => build(q));
        w.catch(() => {}); // reported by the tests that await it
        worlds.set(q, w);
        prev = w.catch(() => {});
      }
    }
  }
  return worlds.get(p)!;
};

const recordOf = (w: World, path: string) => w.records.find((r) => r.path === path);

/** Asserts a file in a tree holds content. */
function assertFile(tree: Tree, path: string, content: string, what: string): void {
  assert.is(stateOf(tree, path), want({ file: content }), `${what}: ${path} holds ${JSON.stringify(content)}`);
}

/** stem.MARK-<replica8>-<version>.ext of path, as a regexp. */
function markedName(path: string, mark: string, replicaId: string): RegExp {
  const dot = path.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [path.slice(0, dot), path.slice(dot)] : [path, ''];
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${esc(stem)}\\.${mark}-${replicaId.slice(0, 8)}-(\\d+)${esc(ext)}$`);
}

// ---------- per-policy checks (exit codes, convergence) ----------

for (const policy of POLICIES) {
  T(`${policy}: exit codes; conflict copies are never pushed; the other replica converges with the server`, async () => {
    const w = await world(policy);
    assert.is(w.push1.code, policy === 'manual' ? 3 : 0, `the conflicting push: ${out(w.push1)}`);
    const evs = jsonLines(w.push1.stdout);
    const pushed = evs.find((e) => e.event === 'pushed');
    assert.ok(pushed, `a pushed event: ${w.push1.stdout}`);
    assert.is(pushed!.rejected, 0, `nothing rejected: ${out(w.push1)}`);
    if (policy === 'manual') {
      assert.is(pushed!.conflicts, CASES.filter((c) => c.cls).length, `one conflict per case: ${out(w.push1)}`);
      assert.is(w.pull.code, 3, `the pull after it still reports the conflicts: ${out(w.pull)}`);
      assert.is(w.push2.code, 3, `so does the next push: ${out(w.push2)}`);
    } else {
      assert.is(pushed!.conflicts, 0, 'no conflict left for a person');
      assert.is(w.pull.code, 0, `the pull after it: ${out(w.pull)}`);
      assert.is(w.push2.code, 0, `the next push: ${out(w.push2)}`);
      const again = jsonLines(w.push2.stdout).find((e) => e.event === 'pushed');
      assert.is(again?.logged, 0, `the next push has nothing to send (conflict copies stay local): ${w.push2.stdout}`);
    }
    for (const p of Object.keys(w.serverAfterPush2)) assert.not.match(p, /\.imz-conflict-/, `no conflict copy reached the server: ${p}`);
    assertFile(w.serverAfterPush2, 'untouched.txt', 'nobody changes this\n', 'server');
    assertFile(w.mineAfterPull, 'untouched.txt', 'nobody changes this\n', 'replica');
    // The other replica ends with exactly the server's tree.
    const d = diffTrees(w.serverAfterPush2, w.otherAfterPull);
    assert.ok(d.length === 0, `the other replica, after a pull, equals the server:\n  ${d.join('\n  ')}`);
    if (policy !== 'manual') {
      // This replica too, but for its own conflict copies.
      const mineTree = Object.fromEntries(Object.entries(w.mineAfterPull).filter(([p]) => !/\.imz-conflict-/.test(p)));
      const d2 = diffTrees(w.serverAfterPush2, mineTree);
      assert.ok(d2.length === 0, `this replica, after a pull, equals the server but for its conflict copies:\n  ${d2.join('\n  ')}`);
    }
  });
}

// ---------- one test per (policy, case) ----------

for (const policy of POLICIES) {
  for (const c of CASES) {
    T(`${policy}: ${c.key}`, async () => {
      const w = await world(policy);
      const rec = recordOf(w, c.path);
      const id8 = w.replicaId.slice(0, 8);
      const version = (v: V, side: string) => `${side} (${show(v)})`;

      if (!c.cls) {
        // Identical results on both sides are not conflicts, under any policy.
        const op = jsonLines(w.push1.stdout).find((e) => e.event === 'op' && e.path === c.path);
        assert.is(op?.status, 'same', `the server answers "same": ${JSON.stringify(op)}`);
        assert.is(rec, undefined, 'no conflict record');
        assertFile(w.serverAfterPush, c.path, (c.other as { file: string }).file, 'server');
        assertFile(w.mineAfterPull, c.path, (c.mine as { file: string }).file, 'replica');
        assert.not.ok(Object.keys(w.mineAfterPull).some((p) => p.startsWith('same.imz-')), 'no copy of it');
        return;
      }

      const win = winner(policy, c);
      const winV = win === 'mine' ? c.mine : c.other;
      const loseV = win === 'mine' ? c.other : c.mine;
      if (policy === 'manual') {
        // The server keeps its version; the replica is left as the user made it.
        assert.is(stateOf(w.serverAfterPush, c.path), want(c.other), `server keeps ${version(c.other, 'its side')}`);
        assert.is(stateOf(w.mineAfterPush, c.path), want(c.mine), `replica keeps ${version(c.mine, 'my side')}`);
        // (A pull may bring back a directory this replica removed, when the
        // other side added to it: nothing of mine is lost by that.)
        if (c.other !== 'dir') assert.is(stateOf(w.mineAfterPull, c.path), want(c.mine), `a pull does not overwrite ${version(c.mine, 'my side')}`);
        assert.ok(rec, `a conflict record for ${c.path} in .imz/conflicts/ (have ${w.records.map((r) => r.path).join(', ')})`);
        assert.is(rec!.class, c.cls);
        assert.is(rec!.at, 'push', 'found at push');
        assert.is(rec!.resolvedBy, undefined, 'left for a person');
        if (typeof c.other === 'object' && 'file' in c.other) {
          const blob = join(w.mine, '.imz', 'conflicts', 'blobs', sha(c.other.file));
          assert.ok(existsSync(blob), `the server's version is kept in .imz/conflicts/blobs/${sha(c.other.file)}`);
          assert.is(await readFile(blob, 'utf8'), c.other.file);
        }
        if (c.other === 'dir') assertFile(w.serverAfterPush, 'dr/new.txt', 'other added this to dr\n', 'server (what the other side added)');
        return;
      }

      // Every other policy settles it: the winner in place on both ends.
      assert.is(stateOf(w.serverAfterPush, c.path), want(winV), `server holds the winner, ${version(winV, win === 'mine' ? 'my side' : 'the other side')}`);
      assert.is(stateOf(w.mineAfterPull, c.path), want(winV), `replica holds the winner, ${version(winV, win)}`);
      if (c.other === 'dir' && win === 'other') assertFile(w.mineAfterPull, 'dr/new.txt', 'other added this to dr\n', 'replica (what the other side added)');

      const keepBoth = policy === 'keep-both' && c.mine !== 'absent' && c.other !== 'absent';
      if (keepBoth) {
        // Mine is kept beside the other on the server and here, under name.imz-keep-<replica8>-<version>.ext.
        const re = markedName(c.path, 'imz-keep', w.replicaId);
        const onServer = Object.keys(w.serverAfterPush).filter((p) => re.test(p));
        assert.is(onServer.length, 1, `one keep copy of ${c.path} on the server (${re}), found ${onServer.join(', ') || 'none'}`);
        assert.is(stateOf(w.serverAfterPush, onServer[0]!), want(c.mine), 'the keep copy on the server holds my side');
        assert.is(stateOf(w.mineAfterPull, onServer[0]!), want(c.mine), 'the replica holds my side under the same keep name');
        assert.ok(rec, 'a record lists it');
        assert.is(rec!.class, c.cls);
        assert.is(rec!.localCopy, onServer[0]);
        assert.is(rec!.resolvedBy, 'keep-both');
        const v = Number(re.exec(onServer[0]!)![1]);
        assert.is(v, (rec!.server as { version: number }).version, 'the version in the name is the server\'s version of the path');
        return;
      }

      if (win === 'other') {
        // server-wins (or newest/keep-both leaving the server's side): mine kept as a local conflict copy, never pushed.
        if (loseV === 'absent') {
          assert.not.ok(Object.keys(w.mineAfterPull).some((p) => p.startsWith(`${c.path.replace(/\.txt$/, '')}.imz-`)), 'a removal leaves no copy');
          assert.ok(rec, 'a record says my removal lost');
          assert.is(rec!.class, c.cls);
          assert.is(rec!.resolvedBy, policy);
          return;
        }
        const re = markedName(c.path, 'imz-conflict', w.replicaId);
        const copies = Object.keys(w.mineAfterPull).filter((p) => re.test(p));
        assert.is(copies.length, 1, `one conflict copy of ${c.path} (${re}) in the replica, found ${copies.join(', ') || 'none'}`);
        assert.is(stateOf(w.mineAfterPull, copies[0]!), want(loseV), 'the conflict copy holds my side');
        assert.not.ok(copies[0]! in w.serverAfterPush2, 'the conflict copy is not on the server');
        assert.ok(rec, 'a record lists it');
        assert.is(rec!.class, c.cls);
        assert.is(rec!.localCopy, copies[0]);
        assert.is(rec!.resolvedBy, policy);
        assert.ok(copies[0]!.includes(`-${id8}-`));
        return;
      }

      // client-wins (or newest with mine newer): the server's version is displaced into its state dir, listed in index.jsonl.
      if (loseV === 'absent') return;
      if (c.other === 'dir') {
        // The directory went, and what the other side had added to it is kept.
        const entry = w.displacedIndex.find((e) => e.path === 'dr/new.txt');
        assert.ok(entry, `dr/new.txt is listed in .imz-server/displaced/index.jsonl (${JSON.stringify(w.displacedIndex)})`);
        assert.is(await readFile(join(w.srv, '.imz-server', 'displaced', String(entry!.savedAs)), 'utf8'), 'other added this to dr\n');
        return;
      }
      const entry = w.displacedIndex.find((e) => e.path === c.path);
      assert.ok(entry, `${c.path} is listed in .imz-server/displaced/index.jsonl (${JSON.stringify(w.displacedIndex)})`);
      if (typeof loseV === 'object' && 'file' in loseV) {
        const saved = join(w.srv, '.imz-server', 'displaced', String(entry!.savedAs));
        assert.is(await readFile(saved, 'utf8'), loseV.file, 'the displaced file holds the server\'s old version');
        assert.is(entry!.hash, sha(loseV.file));
        assert.ok(rec, 'the replica keeps a record of it');
        assert.is(rec!.resolvedBy, policy);
        assert.is(rec!.serverDisplaced, `displaced/${entry!.savedAs}`);
        assert.is(rec!.class, c.cls);
      } else {
        assert.is(entry!.target ?? entry!.linkTarget, (loseV as { link: string }).link, 'the symlink target is kept');
      }
    });
  }
}

// ---------- file against a non-empty directory ----------

/** A server where "other" turned file t.txt into a directory holding t.txt/in.txt, and "mine" edited t.txt. */
async function fileVersusDir(policy: string): Promise<{ srv: string; mine: string; push: RunResult }> {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await mkdir(srv);
  await writeFile(join(srv, 't.txt'), 'base t\n');
  await writeFile(join(srv, 'other.txt'), 'other\n');
  const server = await startServer(srv);
  const other = join(tmp, 'other');
  const mine = join(tmp, 'mine');
  for (const d of [other, mine]) assert.is((await imz(['clone', server.address, d])).code, 0);
  await unlink(join(other, 't.txt'));
  await mkdir(join(other, 't.txt'));
  await writeFile(join(other, 't.txt', 'in.txt'), 'inside the new dir\n');
  await writeFile(join(other, 'other.txt'), 'changed beside it\n');
  const o = await imz(['push', '-C', other]);
  assert.is(o.code, 0, out(o));
  await writeFile(join(mine, 't.txt'), 'my edit of t\n');
  const push = await imz(['push', '-C', mine, '--json', '--policy', policy]);
  return { srv, mine, push };
}

// (Pull used to fail here with IMZ_BAD_PATH, exit 1, on t.txt/in.txt: the
// replica could pull nothing until the conflict was resolved.)
T('manual, file here vs non-empty dir there: exit 3, both kept; the next pull exits 3 too (not 1) and still brings other changes', async () => {
  const { srv, mine, push } = await fileVersusDir('manual');
  assert.is(push.code, 3, out(push));
  const c = jsonLines(push.stdout).find((e) => e.event === 'conflict');
  assert.is(c?.path, 't.txt');
  assert.is(c?.class, 'type-change');
  assert.is(await readFile(join(mine, 't.txt'), 'utf8'), 'my edit of t\n', 'my version is left in place');
  assert.ok(existsSync(join(srv, 't.txt', 'in.txt')), 'the server keeps its directory');
  const pull = await imz(['pull', '-C', mine, '--json']);
  assert.is(pull.code, 3, `pull reports the outstanding conflict: ${out(pull)}`);
  assert.is(await readFile(join(mine, 't.txt'), 'utf8'), 'my edit of t\n');
  assert.is(await readFile(join(mine, 'other.txt'), 'utf8'), 'changed beside it\n', 'the unrelated change arrived');
  const pull2 = await imz(['pull', '-C', mine]);
  assert.is(pull2.code, 3, `and again: ${out(pull2)}`);
});

T('server-wins and keep-both, file here vs non-empty dir there: the directory wins, my file is kept', async () => {
  const runs = await Promise.all(['server-wins', 'keep-both'].map(async (policy) => ({ policy, ...(await fileVersusDir(policy)) })));
  for (const { policy, srv, mine, push } of runs) {
    assert.is(push.code, 0, `${policy}: ${out(push)}`);
    const pull = await imz(['pull', '-C', mine]);
    assert.is(pull.code, 0, `${policy}: ${out(pull)}`);
    assert.is(await readFile(join(mine, 't.txt', 'in.txt'), 'utf8'), 'inside the new dir\n', `${policy}: the server's directory is here`);
    assert.is(await readFile(join(srv, 't.txt', 'in.txt'), 'utf8'), 'inside the new dir\n', `${policy}: and stays on the server`);
    const copies = (await readdir(mine)).filter((n) => /^t\.imz-(conflict|keep)-/.test(n));
    assert.is(copies.length, 1, `${policy}: my file is kept once (${copies.join(', ')})`);
    assert.is(await readFile(join(mine, copies[0]!), 'utf8'), 'my edit of t\n');
  }
});

// (client-wins used to send the file, which the server refused forever:
// "cannot replace directory t.txt: it is not empty", exit 1 at every push.)
T('client-wins, file here vs non-empty dir there: settled, not refused; nothing lost either way', async () => {
  const { srv, mine, push } = await fileVersusDir('client-wins');
  assert.ok(push.code === 0 || push.code === 3, `client-wins settles or leaves the conflict, it does not fail: ${out(push)}`);
  const again = await imz(['push', '-C', mine, '--policy', 'client-wins', '--json']);
  assert.ok(again.code === 0 || again.code === 3, `the next push does not fail either: ${out(again)}`);
  const pull = await imz(['pull', '-C', mine]);
  assert.ok(pull.code === 0 || pull.code === 3, out(pull));
  const srvT = await snapshotTree(srv);
  const mineT = await snapshotTree(mine);
  const records = await conflictRecords(mine);
  const rec = records.find((r) => r.path === 't.txt');
  assert.ok(rec, `a record lists the conflict on t.txt: ${JSON.stringify(records)}`);
  assert.is(rec!.class, 'type-change');
  if (srvT['t.txt']?.type === 'file') {
    // My file went in: the server's directory (and what is in it) is kept in its state dir.
    assertFile(srvT, 't.txt', 'my edit of t\n', 'server');
    const idx = (await readFile(join(srv, '.imz-server', 'displaced', 'index.jsonl'), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const inner = idx.find((e: Record<string, unknown>) => e.path === 't.txt/in.txt');
    assert.ok(inner, `t.txt/in.txt is displaced: ${JSON.stringify(idx)}`);
    assert.is(await readFile(join(srv, '.imz-server', 'displaced', inner.savedAs), 'utf8'), 'inside the new dir\n');
  } else {
    // The directory stayed: my file is kept here under a listed conflict name, never pushed.
    assertFile(srvT, 't.txt/in.txt', 'inside the new dir\n', 'server');
    assertFile(mineT, 't.txt/in.txt', 'inside the new dir\n', 'replica');
    const copies = Object.keys(mineT).filter((p) => /^t\.imz-conflict-[0-9a-f]{8}-\d+\.txt$/.test(p));
    assert.is(copies.length, 1, `my file kept once as a conflict copy: ${Object.keys(mineT).join(', ')}`);
    assertFile(mineT, copies[0]!, 'my edit of t\n', 'replica');
    assert.is(rec!.localCopy, copies[0]);
    assert.not.ok(copies[0]! in srvT, 'the copy is not pushed');
    assert.is(jsonLines(again.stdout).find((e) => e.event === 'pushed')?.logged, 0, `nothing left to push: ${again.stdout}`);
  }
});

T.run();
