// Issue 5: a hostile server cannot make a client write or delete outside its
// replica (Invariant 3, Confinement). The REAL CLI (dist/imz.js: run
// `node scripts/build.mjs` first) clones, pulls, follows, pushes and asks
// for status against the fake server of test/hostile_server.ts, which lies
// in every way the wire allows: unsafe paths, symlinks to escape through,
// forged tar members, READ replies, numbers and identities, and frames that
// are broken below the session layer. For every attack the test checks that
//   - nothing outside the replica was created, changed or deleted (a
//     sentinel tree beside it is snapshotted before and after),
//   - nothing in .imz/ holds wire content where state belongs,
//   - the CLI exits as expected, failing with one "cannot ..." line,
//   - no .imz-tmp-* file is left anywhere,
//   - the replica still works: a pull from a REAL `imz serve` of a good tree
//     (or a clone, when the attack left no replica) then succeeds.
// Bugs this suite found are fixed; their checks run through knownBug(),
// which names them when one comes back.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { cp, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Codes, ImzError } from '../../protocol/errors.ts';
import { type Entry, EntryType, type Envelope, Op, OpStatus } from '../../protocol/messages.ts';
import type { ReplyChannel } from '../../protocol/session.ts';
import {
  type RunResult, type ServerHandle, type SnapEntry,
  cleanupAll, diffTrees, findTemps, imz, makeTmp, setRemote, snapshotTree, spawnImz, startServer, waitFor,
} from '../helpers.ts';
import {
  type Conn, FakeTree, HostileServer, type Script, bytes, closeAllHostile, honestTar, rec, records, sha256, tarEnd, tarMember,
} from '../hostile_server.ts';

const T = suite('hostile server');

// ---------- the good world every replica must still be able to reach ----------

let GOOD: ServerHandle;
let GOOD_TREE: Record<string, SnapEntry>;
const started = Date.now();

T.before(async () => {
  const tmp = await makeTmp('imz-hostile-good-');
  const srv = join(tmp, 'srv');
  await mkdir(join(srv, 'gdir', 'empty'), { recursive: true });
  await writeFile(join(srv, 'good.txt'), 'good\n');
  await writeFile(join(srv, 'gdir', 'inner.txt'), 'inner\n');
  await symlink('good.txt', join(srv, 'glink'));
  GOOD_TREE = await snapshotTree(srv);
  GOOD = await startServer(srv);
});

T.after.each(closeAllHostile);
T.after(async () => {
  await closeAllHostile();
  await cleanupAll();
  if (knownBugs.length > 0) process.stderr.write(`hostile server suite: ${knownBugs.length} fixed bugs came back:\n  ${knownBugs.join('\n  ')}\n`);
  process.stderr.write(`hostile server suite: ${attacks} hostile inputs in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
});

// ---------- a box: the replica and a sentinel world beside it ----------

/** tmp/replica is the replica; tmp/outside and tmp/neighbour.txt must never change. */
interface Box {
  label: string;
  tmp: string;
  replica: string;
  outside: string;
  before: Record<string, SnapEntry>;
}

let attacks = 0;

async function makeBox(label: string, counts = true): Promise<Box> {
  if (counts) attacks++;
  const tmp = await makeTmp('imz-hostile-');
  const outside = join(tmp, 'outside');
  await mkdir(join(outside, 'keep'), { recursive: true });
  await writeFile(join(outside, 'victim'), 'VICTIM\n');
  await writeFile(join(outside, 'keep', 'deep.txt'), 'deep\n');
  await writeFile(join(tmp, 'neighbour.txt'), 'next door\n');
  const box = { label, tmp, replica: join(tmp, 'replica'), outside, before: {} };
  box.before = await outsideState(box);
  return box;
}

/** Everything in the box but the replica itself (an escaping '../x' lands in tmp). */
async function outsideState(b: Box): Promise<Record<string, SnapEntry>> {
  const all = await snapshotTree(b.tmp);
  return Object.fromEntries(Object.entries(all).filter(([p]) => p !== 'replica' && !p.startsWith('replica/')));
}

// scan-cache: derived from the index by the scan (core/scan_cache.ts), checked before use. placing: what a pull
// that failed was putting in the tree, for the next run to index where the disk holds just that (never through a
// link: Replica.sweepTemps).
const STATE_NAMES = new Set(['config', 'HEAD', 'index', 'conflicts', 'log', 'opseq', 'inflight', 'scan-cache', 'placing']);

/**
 * The confinement checks: the world outside unchanged, no temp file
 * anywhere, .imz/ holding only its own well-formed state. remote is the
 * address .imz/config must still name.
 */
async function assertConfined(b: Box, remote: string | undefined, when = 'after the attack', opts: { killed?: boolean } = {}): Promise<void> {
  const d = diffTrees(b.before, await outsideState(b), ['before', 'after']);
  assert.ok(d.length === 0, `${b.label}: outside the replica changed ${when}:\n  ${d.join('\n  ')}`);
  const temps = await findTemps(b.tmp);
  assert.equal(temps, [], `${b.label}: temp files left ${when}`);
  const state = join(b.replica, '.imz');
  if (!existsSync(state)) return;
  // A killed run leaves its lock (the next run takes it over); a run that ended never does.
  for (const n of await readdir(state)) assert.ok(STATE_NAMES.has(n) || (opts.killed && n === 'lock'), `${b.label}: unexpected .imz/${n} ${when}`);
  const config = JSON.parse(await readFile(join(state, 'config'), 'utf8'));
  assert.is(config.format, 1, `${b.label}: .imz/config format`);
  if (remote) assert.is(config.remote, remote, `${b.label}: .imz/config remote`);
  const head = JSON.parse(await readFile(join(state, 'HEAD'), 'utf8'));
  for (const k of Object.keys(head)) assert.ok(['serverId', 'cursor', 'cloning', 'owed'].includes(k), `${b.label}: .imz/HEAD has ${k}`);
  // Content that did not match its hash is owed to the next pull: by the path it was asked for, a safe one.
  for (const p of head.owed ?? []) assert.ok(typeof p === 'string' && p !== '' && !p.startsWith('/') && !p.split('/').includes('..') && !p.startsWith('.imz'), `${b.label}: .imz/HEAD owes ${JSON.stringify(p)}`);
  assert.ok(Number.isSafeInteger(head.cursor) && head.cursor >= 0, `${b.label}: .imz/HEAD cursor ${head.cursor}`);
  // Wire content (every hostile file holds PWNED) never lands in state; the
  // server's side of a conflict is kept in conflicts/blobs by design.
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(state, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (p === 'conflicts/blobs') continue;
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) assert.not.match(await readFile(join(state, p), 'latin1'), 'PWNED', `${b.label}: wire content in .imz/${p}`);
      else assert.unreachable(`${b.label}: .imz/${p} is not a file or directory`);
    }
  };
  await walk('');
}

/** The CLI failed as it should: the expected status, one "imz: cannot ..." line, warnings before it, nothing else. */
function expectFail(b: Box, r: RunResult, re: RegExp, code = 1): void {
  const lines = r.stderr.trimEnd().split('\n');
  const last = lines[lines.length - 1] ?? '';
  assert.is(r.code, code, `${b.label}: exit status ${r.code}, expected ${code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(last, /^imz: cannot \S[^\n]*$/, `${b.label}: the error is one "cannot ..." line: ${r.stderr}`);
  assert.match(last, re, `${b.label}: error line`);
  for (const l of lines.slice(0, -1)) assert.match(l, /^warning: /, `${b.label}: stray stderr line ${JSON.stringify(l)}`);
  plainText(b, r);
}

/** The CLI finished (or skipped what was bad with a warning). */
function expectOk(b: Box, r: RunResult, codes: number[] = [0], warn?: RegExp): void {
  assert.ok(codes.includes(r.code ?? -1), `${b.label}: exit status ${r.code}, expected ${codes}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  for (const l of r.stderr.split('\n').filter((x) => x)) assert.match(l, /^warning: /, `${b.label}: stray stderr line ${JSON.stringify(l)}`);
  if (warn) assert.match(r.stderr, warn, `${b.label}: warning`);
  plainText(b, r);
}

/** No stack trace and no control character (other than newline) reaches the terminal. */
function plainText(b: Box, r: RunResult): void {
  assert.not.match(r.stderr, /\n\s+at /, `${b.label}: a stack trace: ${r.stderr}`);
  // eslint-disable-next-line no-control-regex
  assert.not.match(r.stderr + r.stdout, /[\u0000-\u0009\u000b-\u001f\u007f]/, `${b.label}: control characters in the output: ${JSON.stringify(r.stderr)}`);
}

/**
 * The replica still works: repointed at the real server, a resync pull
 * (or a clone, when the attack left no replica) brings the good tree.
 */
async function assertRecovers(b: Box): Promise<void> {
  let r: RunResult;
  if (existsSync(join(b.replica, '.imz'))) {
    await setRemote(b.replica, GOOD.address);
    r = await imz(['pull', '-C', b.replica, '--resync']);
  } else {
    r = await imz(['clone', GOOD.address, b.replica]);
  }
  assert.is(r.code, 0, `${b.label}: the replica does not recover from a real server\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  const got = await snapshotTree(b.replica);
  for (const [p, e] of Object.entries(GOOD_TREE)) assert.equal(got[p], e, `${b.label}: after recovery, ${p}`);
  const head = JSON.parse(await readFile(join(b.replica, '.imz', 'HEAD'), 'utf8'));
  assert.is(head.serverId, GOOD.serverId, `${b.label}: HEAD follows the real server after recovery`);
  assert.not.ok(head.cloning, `${b.label}: HEAD still cloning after recovery`);
  await assertConfined(b, GOOD.address, 'after recovery');
}

// ---------- known bugs (in files this suite may not change) ----------

const knownBugs: string[] = [];

/** Runs the check that guards against a bug this suite found (since fixed); id names it in a failure. */
async function knownBug(id: string, check: () => void | Promise<void>): Promise<void> {
  try {
    await check();
  } catch (err) {
    knownBugs.push(JSON.stringify(`${id}: ${String((err as Error).message).split('\n')[0]!.slice(0, 200)}`));
    throw err;
  }
}

// ---------- running many attacks ----------

/** Runs fn over cases, `limit` at a time; reports every failure, named. */
async function each<C>(cases: C[], limit: number, fn: (c: C) => Promise<void>): Promise<void> {
  const failures: string[] = [];
  let i = 0;
  const worker = async () => {
    while (i < cases.length) {
      const c = cases[i++]!;
      try {
        await fn(c);
      } catch (err) {
        failures.push(String((err as Error).message ?? err));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, cases.length) }, worker));
  if (failures.length > 0) assert.unreachable(`${failures.length} of ${cases.length} failed:\n- ${failures.join('\n- ')}`);
}

/**
 * Attacks one replica case after case, in `groups` replicas side by side:
 * each attack is checked on its own (confinement, exit, state), and each
 * replica must then still work (recovery from the real server) after all
 * the attacks it took. A group stops at its first failure.
 */
async function chains<C>(cases: C[], groups: number, name: (c: C) => string, attack: (b: Box, c: C, i: number) => Promise<void>): Promise<void> {
  const g: C[][] = Array.from({ length: Math.min(groups, cases.length) }, () => []);
  cases.forEach((c, i) => g[i % g.length]!.push(c));
  await each(g, g.length, async (list) => {
    const b = await makeBox(name(list[0]!), false);
    for (const [i, c] of list.entries()) {
      b.label = name(c);
      attacks++;
      await attack(b, c, i);
    }
    b.label = `${b.label} (and ${list.length - 1} attacks before it)`;
    await assertRecovers(b);
  });
}

/** A fresh fake server for a script. */
function serve(script: Script): Promise<HostileServer> {
  return HostileServer.start(script);
}

/** `imz clone` from a fake server into the box. */
function cloneFrom(b: Box, srv: HostileServer, opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return imz(['clone', srv.address, b.replica], opts);
}

/**
 * Makes the box's replica fetch the fake server's whole tree: a clone when
 * there is no replica yet, else a resync pull repointed at this server (the
 * same listing, reconcile and fetch path as a clone, resumed or not).
 */
async function fetchAll(b: Box, srv: HostileServer): Promise<RunResult> {
  if (!existsSync(join(b.replica, '.imz'))) return cloneFrom(b, srv);
  await setRemote(b.replica, srv.address);
  return imz(['pull', '--resync', '-C', b.replica]);
}

/** The tree a replica first gets from a fake server before a journal attack. */
function baseTree(): FakeTree {
  const t = new FakeTree();
  t.file('a.txt', 'alpha\n');
  t.dir('d');
  t.file('d/old.txt', 'old\n');
  return t;
}

/** A fake server holding baseTree() at cursor 3 (plus journal records later). */
function baseScript(extra: Partial<Script> = {}): Script {
  const t = baseTree();
  return { entries: t.entries, contents: t.contents, cursor: 3, records: [], ...extra };
}

let template: Promise<string> | undefined;

/** A replica of baseTree() cloned from a fake server (made once, copied per box), pointed at srv. */
async function replicaOfBase(b: Box, srv: HostileServer): Promise<void> {
  template ??= (async () => {
    const tmp = await makeTmp('imz-hostile-template-');
    const t = await serve(baseScript());
    const dir = join(tmp, 'replica');
    const r = await imz(['clone', t.address, dir]);
    assert.is(r.code, 0, `template clone: ${r.stderr}`);
    await t.close();
    return dir;
  })();
  await cp(await template, b.replica, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  await setRemote(b.replica, srv.address);
}

/** Adds journal records (seq from, from+1...) to a script; file contents go to its contents. */
function journal(s: Script, from: number, t: FakeTree): void {
  s.records = [...(s.records ?? []), ...records(from, t.entries)];
  for (const [p, c] of t.contents) s.contents!.set(p, c);
}

async function headOf(replica: string): Promise<{ serverId: string; cursor: number }> {
  return JSON.parse(await readFile(join(replica, '.imz', 'HEAD'), 'utf8'));
}

/** Every hostile file holds this (assertConfined looks for it in .imz/). */
const HOSTILE = 'PWNED by a hostile server\n';

// ---------- 1. unsafe paths in LIST ----------

/** Paths no server may send: each could escape the replica or overwrite its state. */
const UNSAFE = [
  '../escape', '/abs/path', 'OUTSIDE/absolute-pwned', 'a/../../b', '..', '.', '', 'a/', './a', 'a/./b', 'a//b',
  '.imz/config', '.imz/HEAD', '.imz', 'x/.imz/y', '.imz-server/x', '.imz-tmp-foo', 'd/.imz-tmp-foo',
  'a\u0000b', 'a\u0001b', 'a\nb', 'a\u001b[2Jb', 'a\u007fb', 'n'.repeat(256), `${'d/'.repeat(2049)}f`,
];

T('clone: a LIST entry with an unsafe path is refused before anything is written', async () => {
  const kinds = ['file', 'dir', 'link'] as const;
  const cases = UNSAFE.map((p, i) => ({ p, kind: kinds[i % 3]! }));
  cases.push({ p: '../escape-dir', kind: 'dir' }, { p: '../escape-link', kind: 'link' }, { p: '.imz/HEAD', kind: 'link' }, { p: '.imz/config', kind: 'dir' });
  await chains(cases, 5, (c) => `LIST ${c.kind} ${JSON.stringify(c.p).slice(0, 40)}`, async (b, c) => {
    const p = c.p.replace('OUTSIDE', b.outside);
    const t = new FakeTree();
    t.file('ok.txt', HOSTILE);
    if (c.kind === 'file') t.file(p, HOSTILE);
    else if (c.kind === 'dir') t.dir(p);
    else t.link(p, b.outside);
    const srv = await serve({ entries: t.entries, contents: t.contents, cursor: 2 });
    const r = await fetchAll(b, srv);
    if (c.p.includes('\u007f')) {
      // Fixed, guarded here: core/paths.ts checkPath quotes the refused path with JSON.stringify, which leaves DEL (and C1 controls such
      // as U+009B, which pathProblem does not refuse at all) unescaped: they reach the terminal as they came.
      await knownBug('checkPath prints DEL raw in its message', () => expectFail(b, r, /unsafe path/));
      assert.is(r.code, 1, `${b.label}: still refused`);
    } else expectFail(b, r, /unsafe path/);
    assert.equal(Object.keys(await snapshotTree(b.replica)), [], `${b.label}: nothing is written before the paths are checked`);
    await assertConfined(b, srv.address);
  });
});

// ---------- 2. unsafe paths in JOURNAL records ----------

T('pull: a JOURNAL record with an unsafe path is refused and HEAD stays', async () => {
  const cases = ['../escape', '/abs/path', 'OUTSIDE/absolute-pwned', 'a/../../b', '.imz/config', '.imz/HEAD', 'x/.imz/y', 'a//b', './a',
    'a\u0000b', 'a\u0002b', 'n'.repeat(300), '.imz-tmp-foo'].map((p) => ({ p, remove: false }));
  // Removals with escaping paths: nothing outside may be deleted.
  cases.push({ p: '../outside/victim', remove: true }, { p: 'OUTSIDE/victim', remove: true }, { p: 'd/../../outside/keep/deep.txt', remove: true }, { p: '.imz/config', remove: true });
  await chains(cases, 4, (c) => `JOURNAL ${c.remove ? 'remove' : 'create'} ${JSON.stringify(c.p).slice(0, 40)}`, async (b, c, i) => {
    const s = baseScript();
    const srv = await serve(s);
    if (i === 0) await replicaOfBase(b, srv);
    else await setRemote(b.replica, srv.address);
    const config = await readFile(join(b.replica, '.imz', 'config'), 'utf8');
    const t = new FakeTree();
    t.file('new.txt', HOSTILE);
    const p = c.p.replace('OUTSIDE', b.outside);
    if (c.remove) t.gone(p);
    else t.file(p, HOSTILE);
    journal(s, 4, t);
    expectFail(b, await imz(['pull', '-C', b.replica]), /unsafe path/);
    assert.is((await headOf(b.replica)).cursor, 3, `${b.label}: HEAD must not move past a refused record`);
    assert.not.ok(existsSync(join(b.replica, 'new.txt')), `${b.label}: nothing of the batch is applied`);
    assert.is(await readFile(join(b.replica, '.imz', 'config'), 'utf8'), config, `${b.label}: .imz/config unchanged`);
    await assertConfined(b, srv.address);
  });
});

// ---------- 3. symlinks to escape through ----------

T('symlinks in one LIST: a link to outside, then something under it, is refused', async () => {
  const cases: [string, (t: FakeTree, b: Box) => void, RegExp][] = [
    ['LIST link -> /abs/outside, link/pwned', (t, b) => { t.link('link', b.outside); t.file('link/pwned', HOSTILE); }, /lies under link/],
    ['LIST sub/link -> ../../outside, sub/link/pwned', (t) => { t.dir('sub'); t.link('sub/link', '../../outside'); t.file('sub/link/pwned', HOSTILE); }, /lies under sub\/link/],
    ['LIST link -> outside, link/victim (an overwrite)', (t, b) => { t.link('link', b.outside); t.file('link/victim', HOSTILE); }, /lies under link/],
    ['LIST link -> outside, link/newdir/, link/newdir/f', (t, b) => { t.link('link', b.outside); t.dir('link/newdir'); t.file('link/newdir/f', HOSTILE); }, /lies under link/],
    ['LIST x/ and x -> outside (the same path twice), x/pwned', (t, b) => { t.dir('x'); t.link('x', b.outside); t.file('x/pwned', HOSTILE); }, /lies under x/],
    ['LIST file f, f/pwned', (t) => { t.file('f', HOSTILE); t.file('f/pwned', HOSTILE); }, /lies under f/],
    ['LIST link with an empty target', (t) => { t.link('ln', ''); }, /link target/],
    ['LIST link with a NUL in its target', (t) => { t.link('ln', 'a\u0000b'); }, /link target/],
    ['LIST link with a 5000-byte target', (t) => { t.link('ln', 'x'.repeat(5000)); }, /link target/],
  ];
  await chains(cases, 3, (c) => c[0], async (b, [, build, re]) => {
    const t = new FakeTree();
    build(t, b);
    const srv = await serve({ entries: t.entries, contents: t.contents, cursor: t.entries.length });
    expectFail(b, await fetchAll(b, srv), re);
    await assertConfined(b, srv.address);
  });
});

T('symlinks in the journal: a directory swapped for a link to outside never lets anything through it', async () => {
  const oneBatch = async () => {
    // One batch: the directory goes, a link to outside takes its name, files go under it.
    const b = await makeBox('JOURNAL d/old removed, d -> outside, d/pwned, d/victim (one batch)');
    const s = baseScript();
    const srv = await serve(s);
    await replicaOfBase(b, srv);
    const t = new FakeTree();
    t.gone('d/old.txt');
    t.link('d', b.outside);
    t.file('d/pwned', HOSTILE);
    t.file('d/victim', HOSTILE);
    journal(s, 4, t);
    expectFail(b, await imz(['pull', '-C', b.replica]), /lies under d/);
    assert.is((await headOf(b.replica)).cursor, 3, `${b.label}: HEAD stays`);
    await assertConfined(b, srv.address);
    await assertRecovers(b);
  };
  const linkMode = async () => {
    // A link has no mode of its own: a META record on it must not chmod what it points to.
    const b = await makeBox('JOURNAL mode changes on links to outside/victim and to outside/');
    const t = new FakeTree();
    const ln = t.link('ln', join(b.outside, 'victim'));
    const lnd = t.link('lnd', b.outside);
    const s: Script = { entries: t.entries, contents: t.contents, cursor: 2 };
    const srv = await serve(s);
    expectOk(b, await cloneFrom(b, srv));
    s.records = [rec(3, { ...ln, mode: 0o600, version: 3 }), rec(4, { ...lnd, mode: 0o700, version: 4 })];
    expectOk(b, await imz(['pull', '-C', b.replica]));
    await assertConfined(b, srv.address);
    await assertRecovers(b);
  };
  // Two pulls: the link lands first (a link is replicated as a link), then what goes under it, under each policy.
  const second: [string, string, (t: FakeTree) => void, RegExp | undefined][] = [
    ['d/pwned', 'manual', (t) => t.file('d/pwned', HOSTILE), /cannot write d\/pwned: d in the replica is not a directory/],
    ['d/victim (server-wins would rename it)', 'server-wins', (t) => t.file('d/victim', HOSTILE, { mtimeMs: 9e12 }), /cannot write d\/victim/],
    ['d/victim (keep-both would rename it)', 'keep-both', (t) => t.file('d/victim', HOSTILE), /cannot write d\/victim/],
    ['d/victim (newest would rename it)', 'newest', (t) => t.file('d/victim', HOSTILE, { mtimeMs: 9e12 }), /cannot write d\/victim/],
    ['mkdir d/keep/sub', 'manual', (t) => t.dir('d/keep/sub'), /cannot write d\/keep\/sub/],
    ['remove d/victim', 'manual', (t) => t.gone('d/victim'), undefined],
    ['remove d/keep/deep.txt and d/keep', 'server-wins', (t) => { t.gone('d/keep/deep.txt'); t.gone('d/keep'); }, undefined],
    ['chmod d/victim', 'manual', (t) => t.file('d/victim', 'VICTIM\n', { mode: 0o600 }), /cannot write d\/victim/],
  ];
  const twoPulls = () => chains(second, 2, (c) => `JOURNAL d -> outside, then ${c[0]} (--policy ${c[1]})`, async (b, [, policy, build, expect], i) => {
    const s = baseScript();
    const srv = await serve(s);
    if (i === 0) await replicaOfBase(b, srv);
    else await setRemote(b.replica, srv.address);
    const t1 = new FakeTree();
    t1.gone('d/old.txt');
    t1.link('d', b.outside);
    journal(s, 4, t1);
    // Earlier attacks moved HEAD on (removals apply): this server's records continue from there.
    const from = (await headOf(b.replica)).cursor + 1;
    if (i === 0) expectOk(b, await imz(['pull', '-C', b.replica]));
    const t2 = new FakeTree();
    build(t2);
    journal(s, Math.max(6, from), t2);
    const before = (await headOf(b.replica)).cursor;
    const r = await imz(['pull', '-C', b.replica, '--policy', policy]);
    if (expect) {
      expectFail(b, r, expect);
      assert.is((await headOf(b.replica)).cursor, before, `${b.label}: HEAD stays`);
    } else {
      // Nothing of the replica lies under a link: the removal is a no-op, not a conflict.
      expectOk(b, r);
      const conflicts = existsSync(join(b.replica, '.imz', 'conflicts')) ? await readdir(join(b.replica, '.imz', 'conflicts')) : [];
      assert.not.ok(conflicts.some((n) => n.endsWith('.json')), `${b.label}: no conflict recorded for a path outside`);
    }
    await assertConfined(b, srv.address);
  });
  await each([oneBatch, linkMode, twoPulls], 3, (f) => f());
});

T('pull --follow: a directory swapped for a link, then files under it, never escape', async () => {
  const b = await makeBox('SUBSCRIBE d -> outside, then d/pwned and d/victim');
  const s = baseScript();
  const srv = await serve(s);
  await replicaOfBase(b, srv);
  // The catch-up JOURNAL is empty: everything comes by SUBSCRIBE, in two frames.
  s.on = {
    [Op.JOURNAL]: async (_req, reply) => reply.send({ journalReply: { records: [], last: 3, more: false } }, true),
    [Op.SUBSCRIBE]: async (_req, reply, conn) => {
      const t1 = new FakeTree();
      t1.gone('d/old.txt');
      t1.link('d', b.outside);
      await reply.send({ journalReply: { records: records(4, t1.entries), last: 5, more: false } }, false);
      await new Promise((r) => setTimeout(r, 150));
      const t2 = new FakeTree();
      t2.file('d/pwned', HOSTILE);
      t2.file('d/victim', HOSTILE);
      for (const [p, c] of t2.contents) s.contents!.set(p, c);
      await reply.send({ journalReply: { records: records(6, t2.entries), last: 7, more: false } }, false);
      await conn.closed;
    },
  };
  const { proc, done } = await spawnImz(['pull', '--follow', '--json', '-C', b.replica], { env: { IMZ_HEARTBEAT_MS: '500' } });
  let out = '';
  proc.stdout!.on('data', (d: string) => { out += d; });
  await waitFor(() => /"event":"disconnected"/.test(out), 8_000, 'follow to refuse the batch');
  proc.kill('SIGTERM');
  const r = await done;
  assert.is(r.code, 0, `follow stops cleanly on SIGTERM: ${r.stderr}`);
  assert.match(out, /"disconnected","message":"cannot write d\/pwned: d in the replica is not a directory/, `the refusal is said: ${out}`);
  assert.is((await headOf(b.replica)).cursor, 5, 'HEAD has the link, not the batch under it');
  await assertConfined(b, srv.address);
  await assertRecovers(b);
});

// ---------- 4. SNAPSHOT tar streams that lie ----------

T('SNAPSHOT: members named otherwise, escaping, links, bad content, truncated or overlong tar', async () => {
  const content = 'alpha content\n';
  const wrong = 'PWNED content\n'; // same length, another hash
  // One lie goes through every retry round to the final warning; the others are cut short after one retry (the server
  // then says the file is gone), which keeps the suite fast and still shows each lie is skipped and asked for again.
  type Case = { label: string; tar: (b: Box) => Uint8Array; fails?: RegExp; allRounds?: boolean };
  const m = (x: Partial<Parameters<typeof tarMember>[0]>) => tarMember({ name: 'a.txt', data: content, ...x });
  const cases: Case[] = [
    { label: 'a member named b.txt instead of a.txt', tar: () => Buffer.concat([m({ name: 'b.txt', data: wrong }), tarEnd()]) },
    { label: 'a member named ../escape', tar: () => Buffer.concat([m({ name: '../escape', data: wrong }), tarEnd()]) },
    { label: 'a member with an absolute name', tar: (b) => Buffer.concat([m({ name: `${b.outside}/tar-abs`, data: wrong }), tarEnd()]) },
    { label: 'a member named .imz/config', tar: () => Buffer.concat([m({ name: '.imz/config', data: wrong }), tarEnd()]) },
    { label: 'a symlink member a.txt -> outside/victim', tar: (b) => Buffer.concat([m({ type: '2', linkname: join(b.outside, 'victim'), data: '' }), tarEnd()]) },
    { label: 'a hard link member a.txt -> outside/victim', tar: (b) => Buffer.concat([m({ type: '1', linkname: join(b.outside, 'victim'), data: '' }), tarEnd()]) },
    { label: 'a directory member a.txt', tar: () => Buffer.concat([m({ type: '5', data: '' }), tarEnd()]) },
    { label: 'content not matching the SHA-256', tar: () => Buffer.concat([m({ data: wrong }), tarEnd()]), allRounds: true },
    { label: 'a pax path ../escape on member a.txt', tar: () => Buffer.concat([m({ data: wrong, paxPath: '../escape' }), tarEnd()]) },
    { label: 'a pax path .imz/HEAD on member a.txt', tar: () => Buffer.concat([m({ data: wrong, paxPath: '.imz/HEAD' }), tarEnd()]) },
    { label: 'a declared size other than the entry size', tar: () => Buffer.concat([m({ data: `${content}PWNED` }), tarEnd()]) },
    { label: 'a truncated tar (the stream ends inside the member)', tar: () => m({}).subarray(0, 512 + 5) },
    { label: 'an empty SNAPSHOT reply', tar: () => new Uint8Array(0) },
    { label: 'more bytes than the member announces', tar: () => Buffer.concat([m({}).subarray(0, 512 + content.length), bytes(HOSTILE.repeat(40)), tarEnd()]), fails: /cannot read tar stream/ },
    { label: 'a broken header checksum', tar: () => Buffer.concat([m({ badChecksum: true }), tarEnd()]), fails: /cannot read tar stream/ },
    { label: 'a base-256 size field', tar: () => Buffer.concat([m({ sizeField: Uint8Array.from([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 14]) }), tarEnd()]), fails: /cannot read tar stream/ },
    { label: 'a size field that is not octal', tar: () => Buffer.concat([m({ sizeField: bytes('99999999999\0') }), tarEnd()]), fails: /cannot read tar stream/ },
  ];
  await chains(cases, 8, (c) => `SNAPSHOT ${c.label}`, async (b, c) => {
    const t = new FakeTree();
    t.file('a.txt', content);
    const srv = await serve({ entries: t.entries, contents: t.contents, cursor: 1, tar: () => c.tar(b), statGoneAfter: c.allRounds ? undefined : 1 });
    const r = await fetchAll(b, srv);
    if (c.fails) expectFail(b, r, c.fails);
    else {
      // Not what was asked for: skipped, asked for again, and (when the server keeps lying) reported.
      expectOk(b, r, [0], c.allRounds ? /kept changing on the server/ : undefined);
      assert.ok(srv.ops().filter((o) => o === Op.SNAPSHOT).length > 1, `${b.label}: the file is asked for again`);
    }
    assert.not.ok(existsSync(join(b.replica, 'a.txt')), `${b.label}: no unverified content becomes visible`);
    assert.not.ok(existsSync(join(b.replica, 'b.txt')), `${b.label}: nothing that was not asked for appears`);
    await assertConfined(b, srv.address);
  });
});

T('SNAPSHOT: a forged member first, the true one after it: only the true content lands', async () => {
  const b = await makeBox('SNAPSHOT a forged member, then the true one');
  const t = new FakeTree();
  const content = 'alpha content\n';
  t.file('a.txt', content);
  const srv = await serve({
    entries: t.entries, contents: t.contents, cursor: 1,
    tar: () => Buffer.concat([tarMember({ name: 'a.txt', data: 'PWNED content\n' }), tarMember({ name: 'a.txt', data: content }), tarEnd()]),
  });
  expectOk(b, await cloneFrom(b, srv));
  assert.is(await readFile(join(b.replica, 'a.txt'), 'utf8'), content);
  await assertConfined(b, srv.address);
  await assertRecovers(b);
});

// ---------- 5. READ replies that lie ----------

T('READ: wrong data, too much data, a shifted offset, no data, absurd sizes', async () => {
  const big = Buffer.alloc(1536 * 1024, 0x61);
  type Case = { label: string; entry?: Partial<Entry>; read: (req: Envelope) => NonNullable<Envelope['readReply']> | ImzError; allRounds?: boolean };
  const at = (req: Envelope, delta = 0) => big.subarray(Number(req.read!.offset) + delta, Number(req.read!.offset) + delta + req.read!.length);
  const cases: Case[] = [
    { label: 'data that does not hash to the entry', read: (req) => ({ data: Buffer.from(at(req)).fill(0x62, 0, 10), offset: Number(req.read!.offset) }), allRounds: true },
    { label: 'more data than asked', read: (req) => ({ data: Buffer.concat([at(req), bytes(HOSTILE)]), offset: Number(req.read!.offset) }) },
    { label: 'the data of the next offset', read: (req) => ({ data: Buffer.concat([at(req, 1), bytes('P')]).subarray(0, at(req).length), offset: Number(req.read!.offset) + 1 }) },
    { label: 'no data at all', read: () => ({ data: new Uint8Array(0), offset: 0 }) },
    { label: 'an IMZ_STALE error', read: () => new ImzError(Codes.STALE, 'cannot read: it changed') },
    { label: 'size 2^50 (never allocated)', entry: { size: 2 ** 50 }, read: (req) => ({ data: at(req).subarray(0, 1000), offset: Number(req.read!.offset) }) },
  ];
  await chains(cases, 4, (c) => `READ ${c.label}`, async (b, c) => {
    const t = new FakeTree();
    t.file('big.bin', big, c.entry);
    const srv = await serve({
      entries: t.entries, contents: t.contents, cursor: 1, statGoneAfter: c.allRounds ? undefined : 1,
      on: {
        [Op.READ]: async (req, reply) => {
          const x = c.read(req);
          if (x instanceof ImzError) throw x;
          await reply.send({ readReply: x }, true);
        },
      },
    });
    expectOk(b, await fetchAll(b, srv), [0], c.allRounds ? /kept changing on the server/ : undefined);
    assert.ok(srv.ops().filter((o) => o === Op.READ).length > 1, `${b.label}: the file is asked for again`);
    assert.not.ok(existsSync(join(b.replica, 'big.bin')), `${b.label}: no unverified content becomes visible`);
    await assertConfined(b, srv.address);
  });
});

// ---------- 6. forged numbers and identities ----------

T('forged versions, sizes, times, types, hashes, cursors, sequence numbers and HELLOs are refused', async () => {
  type Case = { label: string; script: () => Script; re: RegExp };
  const entryCase = (label: string, o: Partial<Entry>, re: RegExp, kind: 'file' | 'dir' | 'link' = 'file'): Case => ({
    label,
    script: () => {
      const t = new FakeTree();
      if (kind === 'file') t.file('f.txt', HOSTILE, o);
      else if (kind === 'dir') t.dir('f.txt', o);
      else t.link('f.txt', 'target', o);
      return { entries: t.entries, contents: t.contents, cursor: 1 };
    },
    re,
  });
  const seqCase = (seq: number): Case => ({
    label: `JOURNAL record seq ${seq}`,
    script: () => {
      const s = baseScript({ journalIgnoresSince: true, journalLast: 4 });
      const t = new FakeTree();
      t.file('f.txt', HOSTILE);
      s.records = [{ ...rec(4, t.entries[0]!), seq }];
      s.contents!.set('f.txt', bytes(HOSTILE));
      return s;
    },
    re: /invalid journal record number/,
  });
  const cases: Case[] = [
    entryCase('version -1', { version: -1 }, /invalid version/),
    entryCase('version NaN', { version: NaN }, /invalid version/),
    entryCase('version Infinity', { version: Infinity }, /invalid version/, 'dir'),
    entryCase('version 2^60', { version: 2 ** 60 }, /invalid version/, 'link'),
    entryCase('version 1.5', { version: 1.5 }, /invalid version/),
    entryCase('size -1', { size: -1 }, /invalid size/),
    entryCase('size NaN', { size: NaN }, /invalid size/),
    entryCase('size Infinity', { size: Infinity }, /invalid size/),
    entryCase('size 2^60', { size: 2 ** 60 }, /invalid size/),
    entryCase('size 0.5', { size: 0.5 }, /invalid size/),
    entryCase('mtime NaN', { mtimeMs: NaN }, /invalid modification time/),
    entryCase('mtime -Infinity', { mtimeMs: -Infinity }, /invalid modification time/, 'dir'),
    entryCase('entry type 7', { type: 7 as never }, /unknown entry type/),
    entryCase('a 5-byte hash', { hash: Uint8Array.of(1, 2, 3, 4, 5) }, /content hash/),
    entryCase('no hash', { hash: new Uint8Array(0) }, /content hash/),
    { label: 'LIST cursor 2^60', script: () => baseScript({ cursor: 2 ** 60 }), re: /invalid journal cursor/ },
    { label: 'LIST cursor -5', script: () => baseScript({ cursor: -5, journalLast: 0 }), re: /invalid journal cursor/ },
    { label: 'LIST cursor 1.5', script: () => baseScript({ cursor: 1.5, journalLast: 0 }), re: /invalid journal cursor/ },
    seqCase(NaN), seqCase(-3), seqCase(2 ** 60), seqCase(4.5),
    { label: 'HELLO with an empty serverId', script: () => baseScript({ serverId: '' }), re: /did not answer HELLO like an imz server/ },
    {
      label: 'HELLO max frame 4096, then a large file',
      script: () => { const t = new FakeTree(); t.file('f.txt', Buffer.alloc(1100 * 1024, 1)); return { entries: t.entries, contents: t.contents, cursor: 1, maxFrame: 4096 }; },
      re: /offers frames of only 4096 bytes/,
    },
    { label: 'HELLO max frame 100', script: () => baseScript({ maxFrame: 100 }), re: /offers frames of only 100 bytes/ },
  ];
  await chains(cases, 5, (c) => c.label, async (b, c) => {
    const srv = await serve(c.script());
    expectFail(b, await fetchAll(b, srv), c.re);
    if (existsSync(join(b.replica, '.imz'))) {
      const { cursor } = await headOf(b.replica);
      assert.ok(cursor === 0 || cursor === 3, `${b.label}: HEAD keeps no forged cursor (${cursor})`);
    }
    assert.not.ok(existsSync(join(b.replica, 'f.txt')), `${b.label}: nothing applied`);
    await assertConfined(b, srv.address);
  });
});

T('a replaced server identity, or a journal that no longer reaches the cursor, is refused on pull', async () => {
  const cases: { label: string; change: (s: Script) => void; re: RegExp }[] = [
    { label: 'another serverId', change: (s) => { s.serverId = 'another-server-id'; }, re: /is not the one this replica follows/ },
    { label: 'journal_first above the cursor', change: (s) => { s.journalFirst = 10; s.journalLast = 12; }, re: /journal starts at record 10/ },
    { label: 'a serverId with control characters', change: (s) => { s.serverId = 'evil\nid\u001b[2J'; }, re: /its identity is not a valid server id/ },
  ];
  await chains(cases, 1, (c) => c.label, async (b, c, i) => {
    const s = baseScript();
    const srv = await serve(s);
    if (i === 0) await replicaOfBase(b, srv);
    else await setRemote(b.replica, srv.address);
    c.change(s);
    const t = new FakeTree();
    t.file('new.txt', HOSTILE);
    journal(s, 11, t);
    const r = await imz(['pull', '-C', b.replica]);
    // A serverId with control characters is refused at HELLO, before it can reach a message or HEAD.
    expectFail(b, r, c.re);
    assert.is((await headOf(b.replica)).cursor, 3, `${b.label}: HEAD stays`);
    assert.not.ok(existsSync(join(b.replica, 'new.txt')), `${b.label}: nothing applied`);
    await assertConfined(b, srv.address);
  });
});

// ---------- 7. frames that break the session ----------

T('unexpected frames: unknown xids, wrong ops, error frames, oversized lengths, garbage, requests to the client', async () => {
  type Case = { label: string; list: (req: Envelope, reply: ReplyChannel, conn: Conn) => Promise<void>; ok?: boolean; re?: RegExp; code?: number };
  const t = new FakeTree();
  t.file('a.txt', 'alpha\n');
  const honest = { entries: { entries: t.entries, cursor: 1, skipped: [] } };
  const cases: Case[] = [
    {
      label: 'a reply to an unknown xid (with an unsafe path) first', ok: true,
      list: async (req, reply, conn) => {
        conn.raw(conn.frame({ xid: req.xid + 1000, op: Op.LIST, reply: true, last: true, entries: { entries: [{ ...t.entries[0]!, path: '../escape' }], cursor: 1, skipped: [] } }));
        await reply.send(honest, true);
      },
    },
    {
      label: 'the reply carrying the wrong op (READ)', ok: true,
      list: async (req, _reply, conn) => {
        conn.raw(conn.frame({ xid: req.xid, op: Op.READ, reply: true, last: true, ...honest }));
        await conn.closed;
      },
    },
    {
      label: 'an unsolicited xid-0 JOURNAL push with an unsafe path', ok: true,
      list: async (_req, reply, conn) => {
        conn.raw(conn.frame({ xid: 0, op: Op.JOURNAL, journalReply: { records: [rec(9, { ...t.entries[0]!, path: '../escape' })], last: 9, more: false } }));
        await reply.send(honest, true);
      },
    },
    {
      label: 'an ERROR frame with xid 0 mid-stream', re: /cannot list: the hostile server gave up/,
      list: async (_req, reply, conn) => {
        await reply.send({ entries: { entries: t.entries, cursor: 1, skipped: [] } }, false);
        conn.raw(conn.frame({ xid: 0, op: Op.ERROR, last: true, error: { code: Codes.PROTOCOL, message: 'cannot list: the hostile server gave up' } }));
        await conn.closed;
      },
    },
    {
      label: 'a length prefix of 4 GiB', re: /cannot read frame: it declares 4294967280 bytes/,
      list: async (_req, _reply, conn) => { conn.raw(Uint8Array.of(0xff, 0xff, 0xff, 0xf0, 1, 2, 3)); await conn.closed; },
    },
    {
      label: 'garbage bytes (an HTTP request)', re: /cannot (read|decode) frame/,
      list: async (_req, _reply, conn) => { conn.raw(Buffer.from('GET / HTTP/1.1\r\nHost: imz\r\n\r\n')); await conn.closed; },
    },
    {
      label: 'a frame whose body is not protobuf', re: /cannot decode frame/,
      list: async (_req, _reply, conn) => { conn.raw(Uint8Array.of(0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff)); await conn.closed; },
    },
    {
      label: 'a request sent to the client (READ .imz/config)', re: /cannot accept request/,
      list: async (_req, _reply, conn) => {
        conn.raw(conn.frame({ xid: 77, op: Op.READ, read: { path: '.imz/config', hash: new Uint8Array(0), offset: 0, length: 100 } }));
        await conn.closed;
      },
    },
    {
      label: 'the server closes mid-LIST', re: /connection closed/, code: 4,
      list: async (_req, reply, conn) => {
        await reply.send({ entries: { entries: t.entries, cursor: 1, skipped: [] } }, false);
        conn.socket.destroy();
      },
    },
    {
      label: 'a LIST reply that is an error frame', re: /cannot list: refused by a hostile server/,
      list: async () => { throw new ImzError(Codes.PROTOCOL, 'cannot list: refused by a hostile server'); },
    },
  ];
  await chains(cases, 4, (c) => `frames: ${c.label}`, async (b, c) => {
    const srv = await serve({ entries: t.entries, contents: t.contents, cursor: 1, on: { [Op.LIST]: c.list } });
    const r = await fetchAll(b, srv);
    if (c.ok) {
      expectOk(b, r);
      assert.is(await readFile(join(b.replica, 'a.txt'), 'utf8'), 'alpha\n', `${b.label}: the true reply is what counts`);
    } else expectFail(b, r, c.re!, c.code);
    await assertConfined(b, srv.address);
  });
});

T('a server that closes mid-SNAPSHOT leaves no temp file, and the next run resumes', async () => {
  const b = await makeBox('the server closes mid-SNAPSHOT');
  const t = new FakeTree();
  for (let i = 0; i < 20; i++) t.file(`f${i}.txt`, `file ${i}\n`.repeat(500));
  const srv = await serve({
    entries: t.entries, contents: t.contents, cursor: 20,
    on: {
      [Op.SNAPSHOT]: async (req, reply, conn) => {
        const tar = honestTar(req.snapshot!.paths, t.contents);
        await reply.send({ snapshotReply: { tar: tar.subarray(0, Math.floor(tar.length / 2) + 100) } }, false);
        await new Promise((r) => setTimeout(r, 50));
        conn.socket.destroy();
      },
    },
  });
  expectFail(b, await cloneFrom(b, srv), /connection closed/, 4);
  await assertConfined(b, srv.address);
  // The server turns honest: the same clone resumes and finishes.
  delete srv.script.on;
  expectOk(b, await cloneFrom(b, srv));
  assert.is(Object.keys(await snapshotTree(b.replica)).length, 20);
  await assertConfined(b, srv.address);
  await assertRecovers(b);
});

T('wire error codes and messages: the server cannot choose the exit status or write to the terminal', async () => {
  const t = new FakeTree();
  t.file('a.txt', 'alpha\n');
  const cases = [
    { label: 'an error frame with code IMZ_CONFLICT (exit 3: "conflicts remain")', code: 'IMZ_CONFLICT', message: 'cannot list: hostile' },
    { label: 'an error frame with code IMZ_USAGE (exit 2: "bad usage")', code: 'IMZ_USAGE', message: 'cannot list: hostile' },
    { label: 'an error message with a newline and an ESC', code: Codes.PROTOCOL, message: 'cannot list: first line\nimz: a forged second line\u001b[2J' },
    { label: 'an error message that does not say "cannot"', code: Codes.PROTOCOL, message: 'everything is fine, nothing to see' },
  ];
  await chains(cases, 2, (c) => `wire error: ${c.label}`, async (b, c) => {
    const srv = await serve({
      entries: t.entries, contents: t.contents, cursor: 1,
      on: { [Op.LIST]: async (_req, _reply, conn) => { conn.raw(conn.frame({ xid: 0, op: Op.ERROR, last: true, error: { code: c.code, message: c.message } })); await conn.closed; } },
    });
    const r = await fetchAll(b, srv);
    assert.ok(r.code !== 0, `${b.label}: the clone fails`);
    // Fixed, guarded here: protocol/session.ts turns an error frame into ImzError(code, message) as the server wrote them, and cli/run.ts maps
    // that code to the exit status and prints the message: the server picks the exit status (3, 2...) and writes raw text
    // (newlines, escape sequences) to the user's terminal. Wire codes should be mapped to known ones, messages made one printable line.
    await knownBug(`a wire error is taken as it came: ${c.label}`, () => expectFail(b, r, /cannot/, 1));
    await assertConfined(b, srv.address);
  });
});

// ---------- 8. stalls: what gives up, and when ----------

T('stalls: status and follow give up on a server that stops mid-frame; clone and pull have no deadline', async () => {
  const t = new FakeTree();
  t.file('a.txt', 'alpha\n');
  const stall = async (_req: Envelope, _reply: ReplyChannel, conn: Conn) => { conn.raw(Uint8Array.of(0, 0)); await conn.closed; };
  const silent = async (_req: Envelope, _reply: ReplyChannel, conn: Conn) => { await conn.closed; };
  await each([
    {
      label: 'clone: the server stalls mid-frame in LIST',
      run: async (b: Box) => {
        const srv = await serve({ entries: t.entries, contents: t.contents, cursor: 1, on: { [Op.LIST]: stall } });
        let killed = false;
        // Once greeted, a request that gets nothing at all for IMZ_REPLY_TIMEOUT_MS fails with IMZ_TIMEOUT (exit 4).
        let r: RunResult;
        try {
          r = await cloneFrom(b, srv, { timeoutMs: 20_000, env: { IMZ_REPLY_TIMEOUT_MS: '1000' } });
        } catch (err) {
          killed = true;
          throw err;
        }
        expectFail(b, r, /nothing received for 1 s/, 4);
        await assertConfined(b, srv.address, 'after the stalled clone was killed', { killed });
      },
    },
    {
      label: 'status: the server stalls mid-HELLO',
      run: async (b: Box) => {
        const s = baseScript();
        const srv = await serve(s);
        await replicaOfBase(b, srv);
        // Timed from the stalled HELLO, not from the spawn: a loaded machine may take seconds to start a process.
        let t0 = 0;
        s.on = { [Op.HELLO]: (req, reply, conn) => { t0 = Date.now(); return stall(req, reply, conn); } };
        const r = await imz(['status', '-C', b.replica], { timeoutMs: 20_000 });
        expectOk(b, r, [0]);
        assert.ok(t0 > 0 && Date.now() - t0 < 4_500, `${b.label}: status gives up on HELLO within its 2 s deadline`);
        assert.match(r.stdout, /offline/, `${b.label}: status says the server is not answering`);
        await assertConfined(b, srv.address);
      },
    },
    {
      label: 'pull --follow: the server stalls mid-frame in the catch-up and stops answering pings',
      run: async (b: Box) => {
        const s = baseScript();
        const srv = await serve(s);
        await replicaOfBase(b, srv);
        let t0 = 0; // the stall's start, not the spawn's (see the status case)
        s.on = { [Op.JOURNAL]: (req, reply, conn) => { t0 ||= Date.now(); return stall(req, reply, conn); }, [Op.PING]: silent };
        const { proc, done } = await spawnImz(['pull', '--follow', '--json', '-C', b.replica], { env: { IMZ_HEARTBEAT_MS: '300' } });
        let out = '';
        proc.stdout!.on('data', (d: string) => { out += d; });
        await waitFor(() => /"event":"disconnected"/.test(out), 15_000, 'follow to give up on the stalled server');
        assert.ok(t0 > 0 && Date.now() - t0 < 3_000, `${b.label}: heartbeats detect the stall`);
        proc.kill('SIGTERM');
        const r = await done;
        assert.is(r.code, 0, `${b.label}: stops cleanly: ${r.stderr}`);
        await assertConfined(b, srv.address);
      },
    },
  ], 3, async (c) => {
    const b = await makeBox(c.label);
    await c.run(b);
    await assertRecovers(b);
  });
});

// ---------- 9. frame limits negotiated by the server ----------

T('HELLO max frame 2^32-1: the client keeps its own 16 MiB limit', async () => {
  const b = await makeBox('HELLO max frame 2^32-1, then a 20 MiB frame');
  const t = new FakeTree();
  t.file('a.txt', 'alpha\n');
  const srv = await serve({
    entries: t.entries, contents: t.contents, cursor: 1, maxFrame: 0xffffffff,
    on: {
      [Op.LIST]: async (_req, reply) => {
        await reply.send({ entries: { entries: t.entries, cursor: 1, skipped: [{ path: 'pad', reason: 'P'.repeat(20 * 1024 * 1024) }] } }, true);
      },
    },
  });
  const r = await cloneFrom(b, srv);
  // Fixed, guarded here: core/remote.ts takes the server's max_frame as it is (session.maxFrame = h.maxFrame): a hostile server lifts the
  // client's frame limit to 4 GiB and can make it buffer that much. It should be clamped to the client's own limit.
  await knownBug('HELLO max_frame is not clamped by the client', () => expectFail(b, r, /cannot read frame/));
  await assertConfined(b, srv.address);
  await assertRecovers(b);
});

// ---------- 10. what a server shows the user ----------

T('skipped paths and reasons from the server reach the terminal escaped', async () => {
  const b = await makeBox('LIST skipped with control characters');
  const t = new FakeTree();
  t.file('a.txt', 'alpha\n');
  const srv = await serve({
    entries: t.entries, contents: t.contents, cursor: 1,
    skipped: [{ path: 'evil\u001b[2J\nimz: forged line', reason: 'a socket\r\u009b31m\u202e' }],
  });
  expectOk(b, await cloneFrom(b, srv), [0], /not replicated: evil\\u001b\[2J\\u000aimz: forged line \(a socket\\u000d\\u009b31m\\u202e/);
  await assertConfined(b, srv.address);
  await assertRecovers(b);
});

T('status: a server identity with control characters', async () => {
  const b = await makeBox('status: HELLO serverId with control characters');
  const s = baseScript();
  const srv = await serve(s);
  await replicaOfBase(b, srv);
  s.serverId = 'evil\u001b[2J\nforged line';
  const r = await imz(['status', '-C', b.replica]);
  assert.is(r.code, 0, r.stderr);
  // Fixed, guarded here: core/status.ts puts the server's identity in its report as it came, and cli/commands/status.ts prints it: the terminal gets the ESC.
  await knownBug('status prints the wire serverId raw', () => plainText(b, r));
  await assertConfined(b, srv.address);
  await assertRecovers(b);
});

// ---------- 11. push against a lying server ----------

T('push: forged REINTEGRATE results cannot move a local file out of the replica', async () => {
  type Case = { label: string; policy: string; result: (b: Box) => Record<string, unknown>; re?: RegExp; escapes?: boolean; results?: number };
  const serverEntry = (path: string) => ({ path, type: EntryType.FILE, size: HOSTILE.length, mode: 0o644, mtimeMs: 1, hash: sha256(HOSTILE), target: '', version: 9 });
  const cases: Case[] = [
    { label: 'fewer results than operations', policy: 'manual', results: 0, result: () => ({}), re: /answered 0 of 1 operations/ },
    { label: 'keep-both with kept_as ../escape', policy: 'keep-both', result: () => ({ status: OpStatus.CONFLICT, keptAs: '../escape', conflictClass: 'update/update' }), re: /unsafe path/ },
    { label: 'keep-both with kept_as .imz/HEAD', policy: 'keep-both', result: () => ({ status: OpStatus.CONFLICT, keptAs: '.imz/HEAD', conflictClass: 'update/update' }), re: /unsafe path/ },
    { label: 'keep-both with an absolute kept_as', policy: 'keep-both', result: (b) => ({ status: OpStatus.CONFLICT, keptAs: `${b.outside}/stolen`, conflictClass: 'update/update' }), re: /unsafe path/ },
    { label: 'server-wins with a server entry at ../escape', policy: 'server-wins', result: () => ({ status: OpStatus.CONFLICT, conflictClass: 'update/update', server: serverEntry('../escape') }), re: /unsafe path/ },
    { label: 'server-wins with a server entry under link -> outside', policy: 'server-wins', result: () => ({ status: OpStatus.CONFLICT, conflictClass: 'update/update', server: serverEntry('link/pwned') }), re: /link in the replica is not a directory/ },
    { label: 'keep-both with kept_as link/stolen, link -> outside', policy: 'keep-both', result: () => ({ status: OpStatus.CONFLICT, keptAs: 'link/stolen', conflictClass: 'update/update' }), escapes: true },
  ];
  // The replica holds a.txt and link -> ../outside (the box's sentinel directory): cloned once, copied per attack.
  const script = (): Script => {
    const t = new FakeTree();
    t.file('a.txt', 'alpha\n');
    t.link('link', '../outside');
    const s: Script = { entries: t.entries, contents: t.contents, cursor: 2 };
    s.contents!.set('link/pwned', bytes(HOSTILE));
    s.contents!.set('../escape', bytes(HOSTILE));
    return s;
  };
  const tmp = await makeTmp('imz-hostile-template-');
  const template = join(tmp, 'replica');
  const first = await serve(script());
  assert.is((await imz(['clone', first.address, template])).code, 0, 'template clone');
  await each(cases, 4, async (c) => {
    const b = await makeBox(`push: ${c.label}`);
    const s = script();
    const srv = await serve(s);
    await cp(template, b.replica, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
    await setRemote(b.replica, srv.address);
    await writeFile(join(b.replica, 'a.txt'), 'my local edit\n');
    s.on = {
      [Op.REINTEGRATE]: async (req, reply) => {
        const ops = (req.reintegrate?.ops ?? []).slice(0, c.results ?? Infinity);
        await reply.send({ reintegrateReply: { results: ops.map((o) => ({ seq: o.seq, status: OpStatus.APPLIED, version: 50, server: null, conflictClass: '', keptAs: '', displaced: '', error: null, ...c.result(b) })) } }, true);
      },
    };
    const r = await imz(['push', '-C', b.replica, '--policy', c.policy]);
    if (c.escapes) {
      // Fixed, guarded here: core/push.ts (keep-both) renames the local file to kept_as after checkPath only: a kept_as under a symlink of the
      // replica moves the user's file OUT of the replica (here to outside/stolen). It must refuse parents that are not real
      // directories, as reconcile's _ensureParents does.
      await knownBug('push keep-both renames a local file through a symlink, out of the replica', () => assertConfined(b, srv.address));
      return; // the file left the replica: recovering the rest is not the point here
    }
    expectFail(b, r, c.re!);
    // The local edit is kept: in place, or (server-wins) as a conflict copy beside it.
    const kept = Object.entries(await snapshotTree(b.replica)).filter(([, e]) => e.type === 'file');
    assert.ok(await Promise.all(kept.map(([p]) => readFile(join(b.replica, p), 'utf8'))).then((xs) => xs.includes('my local edit\n')), `${b.label}: the local edit is kept`);
    await assertConfined(b, srv.address);
    await assertRecovers(b);
  });
});

T.run();
