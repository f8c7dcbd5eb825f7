// A push moves HEAD past its own journal records only when they hold what the replica indexed:
// after each scenario the replica pulls, and must hold exactly the server's tree, count nothing
// behind, and match a fresh clone (renames with chmod or touch, wide mkdir, retypes, races).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { appendFile, chmod, mkdir, rename, rm, stat, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { waitJournalMatchesTree } from '../fault_helpers.ts';
import {
  type RunResult, runReport as out, type SnapEntry, cleanupAll, diffTrees, diffTreesBut, imz, jsonLines, makeTmp, readJournal, sampleWorld, snapshotTree, spawnImz, startServer, waitFor,
} from '../helpers.ts';

const T = suite('push: cursor');
T.after.each(cleanupAll);
T.after(cleanupAll);

type Tree = Record<string, SnapEntry>;
const ok = (r: RunResult, what = 'imz') => assert.ok(r.code === 0, `${what}: ${out(r)}`);
const modeOf = (p: string) => execFileSync('stat', ['-c', '%a', p]).toString().trim();
const cursorOf = (rep: string) => JSON.parse(readFileSync(join(rep, '.imz', 'HEAD'), 'utf8')).cursor as number;

function assertSame(a: Tree, b: Tree, what: string, names?: string[]): void {
  const d = diffTreesBut(a, b, names);
  assert.ok(d.length === 0, `${what}: trees differ:\n  ${d.join('\n  ')}`);
}

async function behind(rep: string): Promise<number> {
  const r = await imz(['status', '-C', rep, '--json']);
  assert.ok(r.code === 0 || r.code === 3, out(r));
  return jsonLines(r.stdout).at(-1)!.behind as number;
}

/** Pull each replica; every one must match the server, count 0 behind, and a fresh clone must match too. */
async function converged(tmp: string, srv: string, address: string, replicas: string[], what: string): Promise<void> {
  // The server's watcher may still be journalling its own writes: wait until its journal describes its tree.
  await waitJournalMatchesTree(address, srv, 15_000);
  // Anything still owed (a watcher stopped before pushing) goes up first.
  for (const rep of replicas) {
    const r = await imz(['push', '-C', rep, '--quiet', '--policy', 'server-wins']);
    assert.ok(r.code === 0 || r.code === 3, `${what}: push ${rep}: ${out(r)}`);
  }
  for (const rep of replicas) {
    const p = await imz(['pull', '-C', rep, '--json', '--policy', 'server-wins']);
    assert.ok(p.code === 0 || p.code === 3, `${what}: pull ${rep}: ${out(p)}`);
    // A push with nothing to send must not change anything either.
    const s = await imz(['status', '-C', rep, '--json']);
    const local = jsonLines(s.stdout).filter((e) => e.event !== 'summary' && e.event !== 'status');
    assertSame(await snapshotTree(srv), await snapshotTree(rep), `${what}: ${rep} after pull (status: ${s.stdout.slice(0, 600)})`);
    assert.is(await behind(rep), 0, `${what}: ${rep} behind after pull`);
    void local;
  }
  const fresh = join(tmp, `fresh-${Math.random().toString(36).slice(2)}`);
  ok(await imz(['clone', address, fresh, '--quiet']), `${what}: fresh clone`);
  assertSame(await snapshotTree(srv), await snapshotTree(fresh), `${what}: fresh clone`);
  for (const rep of replicas) assertSame(await snapshotTree(fresh), await snapshotTree(rep), `${what}: fresh clone vs ${rep}`, ['fresh', 'replica']);
}

T('rename + chmod in one push: the server takes the new mode with the move, and a pull keeps it', async () => {
  const { tmp, srv, server, replicas: [rep] } = await sampleWorld(1);
  await writeFile(join(rep!, 'm.txt'), 'move me\n');
  ok(await imz(['push', '-C', rep!, '--quiet']));
  await rename(join(rep!, 'm.txt'), join(rep!, 'm2.txt'));
  await chmod(join(rep!, 'm2.txt'), 0o600);
  const before = cursorOf(rep!);
  ok(await imz(['push', '-C', rep!, '--quiet']));
  console.log(`  rename+chmod: cursor ${before} -> ${cursorOf(rep!)}; server mode ${modeOf(join(srv, 'm2.txt'))}`);
  await converged(tmp, srv, server.address, [rep!], 'rename+chmod');
  // The user's chmod survives the round trip: the server took it with the move, and the pull did not undo it.
  assert.is(modeOf(join(srv, 'm2.txt')), '600', 'server mode after a rename + chmod');
  assert.is(modeOf(join(rep!, 'm2.txt')), '600', 'replica mode after the pull');
});

T('rename + touch in one push: the server takes the new mtime with the move, and a pull keeps it', async () => {
  const { tmp, srv, server, replicas: [rep] } = await sampleWorld(1);
  await writeFile(join(rep!, 't.txt'), 'move me\n');
  ok(await imz(['push', '-C', rep!, '--quiet']));
  await rename(join(rep!, 't.txt'), join(rep!, 't2.txt'));
  await utimes(join(rep!, 't2.txt'), 1_600_000_000, 1_600_000_000);
  ok(await imz(['push', '-C', rep!, '--quiet']));
  await converged(tmp, srv, server.address, [rep!], 'rename+touch');
  assert.is(statSync(join(srv, 't2.txt')).mtimeMs, 1_600_000_000_000, 'server mtime after a rename + touch');
  assert.is(statSync(join(rep!, 't2.txt')).mtimeMs, 1_600_000_000_000, 'replica mtime after the pull');
});

T('mkdir 0777 (wider than the server umask) keeps its mode on both sides, and mkdir -p with files', async () => {
  const { tmp, srv, server, replicas: [rep] } = await sampleWorld(1);
  await mkdir(join(rep!, 'wide'));
  await chmod(join(rep!, 'wide'), 0o777);
  await mkdir(join(rep!, 'a', 'b', 'c'), { recursive: true });
  await writeFile(join(rep!, 'a', 'b', 'c', 'f.txt'), 'deep\n');
  const before = cursorOf(rep!);
  ok(await imz(['push', '-C', rep!, '--quiet']));
  console.log(`  mkdir: cursor ${before} -> ${cursorOf(rep!)}; server mode of wide ${modeOf(join(srv, 'wide'))}`);
  await converged(tmp, srv, server.address, [rep!], 'mkdir');
  // Not narrowed by the server's umask: the replica keeps the mode it was given.
  assert.is(modeOf(join(srv, 'wide')), '777', 'server mode of a mkdir 0777');
  assert.is(modeOf(join(rep!, 'wide')), '777', 'replica mode of it after the pull');
});

T('retypes (file->dir, dir->symlink, symlink->file), rmdir with contents, .imzignore', async () => {
  const { tmp, srv, server, replicas: [rep, rep2] } = await sampleWorld(2);
  await writeFile(join(rep!, 'f'), 'file\n');
  await mkdir(join(rep!, 'd'));
  await writeFile(join(rep!, 'd', 'x'), 'x\n');
  await symlink('f', join(rep!, 'l'));
  await mkdir(join(rep!, 'tree', 'sub'), { recursive: true });
  await writeFile(join(rep!, 'tree', 'sub', 'y'), 'y\n');
  await writeFile(join(rep!, 'tree', 'z'), 'z\n');
  ok(await imz(['push', '-C', rep!, '--quiet']));
  await converged(tmp, srv, server.address, [rep!, rep2!], 'setup');
  // Retypes in one push.
  await unlink(join(rep!, 'f'));
  await mkdir(join(rep!, 'f'));
  await writeFile(join(rep!, 'f', 'inner'), 'inner\n');
  await rm(join(rep!, 'd'), { recursive: true });
  await symlink('f', join(rep!, 'd'));
  await unlink(join(rep!, 'l'));
  await writeFile(join(rep!, 'l'), 'now a file\n');
  await rm(join(rep!, 'tree'), { recursive: true });
  await writeFile(join(rep!, '.imzignore'), '*.tmp\n');
  await writeFile(join(rep!, 'junk.tmp'), 'ignored\n');
  const before = cursorOf(rep!);
  ok(await imz(['push', '-C', rep!, '--quiet']));
  console.log(`  retypes: cursor ${before} -> ${cursorOf(rep!)}`);
  await rm(join(rep!, 'junk.tmp'));
  await converged(tmp, srv, server.address, [rep!, rep2!], 'retypes');
});

T('server-side writes racing pushes of the same and other paths', async () => {
  const { tmp, srv, server, replicas: [rep] } = await sampleWorld(1);
  let stop = false;
  let n = 0;
  const writer = (async () => {
    while (!stop) {
      await writeFile(join(srv, `srv-${n % 7}.txt`), `server ${n}\n`).catch(() => undefined);
      if (n % 3 === 0) await writeFile(join(srv, 'shared.txt'), `server shared ${n}\n`).catch(() => undefined);
      n++;
      await new Promise((r) => setTimeout(r, n % 10 === 0 ? 400 : 5));
    }
  })();
  let advanced = 0;
  for (let i = 0; i < 15; i++) {
    await writeFile(join(rep!, `rep-${i % 5}.txt`), `replica ${i}\n`);
    await mkdir(join(rep!, `dir${i}`), { recursive: true });
    if (i % 2 === 0) assert.ok([0, 3].includes((await imz(['pull', '-C', rep!, '--quiet', '--policy', 'server-wins'])).code!));
    const before = cursorOf(rep!);
    const r = await imz(['push', '-C', rep!, '--json', '--policy', 'server-wins']);
    assert.ok(r.code === 0 || r.code === 3 || r.code === 5, out(r));
    if (cursorOf(rep!) !== before) advanced++;
    if (i % 4 === 0) assert.ok([0, 3].includes((await imz(['pull', '-C', rep!, '--quiet', '--policy', 'server-wins'])).code!));
  }
  stop = true;
  await writer;
  console.log(`  server writes ${n}; pushes that moved the cursor: ${advanced}`);
  await converged(tmp, srv, server.address, [rep!], 'server writes');
});

T('two replicas pushing in loops at once (disjoint and shared paths), plus server writes', async () => {
  const { tmp, srv, server, replicas } = await sampleWorld(2);
  let stop = false;
  let n = 0;
  const writer = (async () => {
    while (!stop) {
      await writeFile(join(srv, `srv-${n % 5}.txt`), `server ${n}\n`).catch(() => undefined);
      n++;
      await new Promise((r) => setTimeout(r, n % 5 === 0 ? 500 : 15));
    }
  })();
  const stats = { advanced: 0, pushes: 0 };
  const loop = async (rep: string, k: number) => {
    for (let i = 0; i < 12; i++) {
      await writeFile(join(rep, `r${k}-${i % 4}.txt`), `r${k} ${i}\n`);
      if (i % 3 === 0) {
        await mkdir(join(rep, `r${k}d`, `s${i}`), { recursive: true });
        await writeFile(join(rep, `r${k}d`, `s${i}`, 'f'), `${i}\n`);
      }
      if (i % 5 === 4) await rename(join(rep, `r${k}-${(i + 1) % 4}.txt`), join(rep, `r${k}-mv${i}.txt`)).catch(() => undefined);
      if (i % 2 === 0) assert.ok([0, 3].includes((await imz(['pull', '-C', rep, '--quiet', '--policy', 'server-wins'])).code!));
      const before = cursorOf(rep);
      const r = await imz(['push', '-C', rep, '--json', '--policy', 'server-wins']);
      assert.ok(r.code === 0 || r.code === 3 || r.code === 5, out(r));
      stats.pushes++;
      if (cursorOf(rep) !== before) stats.advanced++;
      if (i % 6 === 5) assert.ok([0, 3].includes((await imz(['pull', '-C', rep, '--quiet', '--policy', 'server-wins'])).code!));
    }
  };
  try {
    await Promise.all([loop(replicas[0]!, 0), loop(replicas[1]!, 1)]);
  } finally {
    stop = true;
    await writer;
  }
  console.log(`  two replicas: pushes ${stats.pushes}, cursor moved by ${stats.advanced}; server writes ${n}`);
  await converged(tmp, srv, server.address, replicas, 'two replicas');
});

T('imz sync (pull then push) in loops from two replicas', async () => {
  const { tmp, srv, server, replicas } = await sampleWorld(2);
  let syncMoved = 0;
  const loop = async (rep: string, k: number) => {
    for (let i = 0; i < 10; i++) {
      await writeFile(join(rep, `s${k}-${i % 3}.txt`), `s${k} ${i}\n`);
      await appendFile(join(rep, 'shared.txt'), `s${k} ${i}\n`);
      const before = cursorOf(rep);
      const r = await imz(['sync', '-C', rep, '--json', '--policy', 'server-wins']);
      assert.ok(r.code === 0 || r.code === 3, out(r));
      if (cursorOf(rep) !== before) syncMoved++;
    }
  };
  await Promise.all([loop(replicas[0]!, 0), loop(replicas[1]!, 1)]);
  console.log(`  sync loops: cursor moved in ${syncMoved} of 20`);
  await converged(tmp, srv, server.address, replicas, 'sync loops');
});

T('imz sync --watch on two replicas while both are written and the server too', async () => {
  const { tmp, srv, server, replicas } = await sampleWorld(2);
  const watchers = await Promise.all(replicas.map((rep) => spawnImz(['sync', '--watch', '-C', rep, '--json', '--policy', 'server-wins'], { env: { ...process.env, IMZ_VERIFY_MS: '700' } })));
  await new Promise((r) => setTimeout(r, 800));
  for (let i = 0; i < 30; i++) {
    await writeFile(join(replicas[0]!, `w0-${i % 6}.txt`), `w0 ${i}\n`);
    await writeFile(join(replicas[1]!, `w1-${i % 6}.txt`), `w1 ${i}\n`);
    if (i % 5 === 0) await mkdir(join(replicas[i % 2]!, `wd${i}`));
    if (i % 4 === 0) await writeFile(join(srv, `ws-${i % 3}.txt`), `srv ${i}\n`);
    await new Promise((r) => setTimeout(r, 60));
  }
  // Quiet: let everything flow both ways.
  await waitFor(async () => {
    const s = await snapshotTree(srv);
    for (const rep of replicas) if (diffTrees(s, await snapshotTree(rep)).length > 0) return false;
    return true;
  }, 15_000, 'watchers to converge').catch((e) => console.log(`  ${(e as Error).message}`));
  for (const w of watchers) w.proc.kill('SIGTERM');
  await Promise.all(watchers.map((w) => w.done));
  await converged(tmp, srv, server.address, replicas, 'sync --watch');
});

T('on-demand replica pushes (new files, edits, renames)', async () => {
  const tmp = await makeTmp();
  const { srv, server } = await sampleWorld(0).then((w) => ({ ...w }));
  const rep = join(tmp, 'od');
  ok(await imz(['clone', '--on-demand', server.address, rep, '--quiet']));
  await writeFile(join(rep, 'od-new.txt'), 'new\n');
  await mkdir(join(rep, 'od-dir'));
  await writeFile(join(rep, 'od-dir', 'x'), 'x\n');
  ok(await imz(['push', '-C', rep, '--quiet']));
  await rename(join(rep, 'od-new.txt'), join(rep, 'od-renamed.txt'));
  ok(await imz(['push', '-C', rep, '--quiet']));
  ok(await imz(['pull', '-C', rep, '--quiet']));
  assert.is(await behind(rep), 0);
  const s = await snapshotTree(srv);
  const r = await snapshotTree(rep);
  for (const p of ['od-renamed.txt', 'od-dir', 'od-dir/x']) assert.equal(r[p], s[p], p);
  assert.not.ok(s['od-new.txt']);
  const fresh = join(tmp, 'fresh');
  ok(await imz(['clone', server.address, fresh, '--quiet']));
  assertSame(s, await snapshotTree(fresh), 'fresh clone');
});

T('lock-step: two replicas pull right before each push, racing each other (cursor moves often)', async () => {
  const { tmp, srv, server, replicas } = await sampleWorld(2);
  let stop = false;
  let n = 0;
  const writer = (async () => {
    while (!stop) {
      await writeFile(join(srv, `ls-${n % 3}.txt`), `server ${n}\n`).catch(() => undefined);
      n++;
      await new Promise((r) => setTimeout(r, 350));
    }
  })();
  const stats = { advanced: 0, pushes: 0 };
  const loop = async (rep: string, k: number) => {
    for (let i = 0; i < 15; i++) {
      await writeFile(join(rep, `k${k}-${i % 3}.txt`), `k${k} ${i}\n`);
      if (i % 4 === 1) await mkdir(join(rep, `k${k}dir${i}`, 'deep'), { recursive: true });
      if (i % 5 === 2) await rename(join(rep, `k${k}-${(i + 1) % 3}.txt`), join(rep, `k${k}-mv${i}.txt`)).catch(() => undefined);
      if (i % 6 === 3) await writeFile(join(rep, 'both.txt'), `k${k} ${i}\n`);
      assert.ok([0, 3].includes((await imz(['pull', '-C', rep, '--quiet', '--policy', 'server-wins'])).code!));
      const before = cursorOf(rep);
      const r = await imz(['push', '-C', rep, '--json', '--policy', 'server-wins']);
      assert.ok(r.code === 0 || r.code === 3 || r.code === 5, out(r));
      stats.pushes++;
      if (cursorOf(rep) !== before) stats.advanced++;
    }
  };
  try {
    await Promise.all([loop(replicas[0]!, 0), loop(replicas[1]!, 1)]);
  } finally {
    stop = true;
    await writer;
  }
  console.log(`  lock-step: pushes ${stats.pushes}, cursor moved by ${stats.advanced}; server writes ${n}`);
  await converged(tmp, srv, server.address, replicas, 'lock-step');
});

T('a new directory in a setgid (group-shared) directory of the server keeps the setgid bit it inherits, its mode given or not', async () => {
  const { srv, server, replicas: [a] } = await sampleWorld(1);
  await chmod(join(srv, 'docs'), 0o2755);
  void server;
  await mkdir(join(a!, 'docs', 'narrowed'));
  await chmod(join(a!, 'docs', 'narrowed'), 0o775); // a client umask of 002 (the server's is 022)
  await mkdir(join(a!, 'docs', 'plain'));
  await chmod(join(a!, 'docs', 'plain'), 0o755);
  const r = await imz(['push', '-C', a!, '--json']);
  assert.is(r.code, 0, out(r));
  const plain = (await stat(join(srv, 'docs', 'plain'))).mode;
  const narrowed = (await stat(join(srv, 'docs', 'narrowed'))).mode;
  console.log(`  plain ${(plain & 0o7777).toString(8)}, narrowed ${(narrowed & 0o7777).toString(8)}`);
  assert.ok(plain & 0o2000, 'the directory made with the mode asked keeps setgid');
  assert.ok(narrowed & 0o2000, `the directory whose mode the umask narrowed keeps setgid too (mode ${(narrowed & 0o7777).toString(8)})`);
  // Journalled with a mode the replica does not have: not claimed, so a pull reads the records back.
  assert.ok(await behind(a!) >= 1, 'the push left its setgid mkdirs for a pull to read');
});

T('a new setgid file: its record (the server gives mode & 0o777) is left for the pull, which makes both sides alike', async () => {
  const { srv, replicas: [rep] } = await sampleWorld(1);
  await writeFile(join(rep!, 'tool.sh'), '#!/bin/sh\n');
  await chmod(join(rep!, 'tool.sh'), 0o2755);
  ok(await imz(['push', '-C', rep!, '--quiet']));
  assert.ok(await behind(rep!) >= 1, 'not claimed');
  ok(await imz(['pull', '-C', rep!, '--quiet']));
  assert.is(modeOf(join(rep!, 'tool.sh')), modeOf(join(srv, 'tool.sh')), 'replica and server modes');
  assert.is(await behind(rep!), 0);
});

T('a push of new directories, a chmod, a rename and a rename + chmod claims its records: nothing behind without a pull', async () => {
  const { tmp, srv, server, replicas: [a, b] } = await sampleWorld(2);
  await writeFile(join(a!, 'mv.txt'), 'move me\n');
  await writeFile(join(a!, 'mv2.txt'), 'move me too\n');
  await writeFile(join(a!, 'ch.txt'), 'chmod me\n');
  ok(await imz(['push', '-C', a!, '--quiet']));
  ok(await imz(['pull', '-C', b!, '--quiet']));
  await mkdir(join(a!, 'n1', 'n2', 'n3'), { recursive: true });
  await writeFile(join(a!, 'n1', 'n2', 'n3', 'deep.txt'), 'deep\n');
  await mkdir(join(a!, 'wide'));
  await chmod(join(a!, 'wide'), 0o777);
  await chmod(join(a!, 'ch.txt'), 0o600);
  await rename(join(a!, 'mv.txt'), join(a!, 'n1', 'moved.txt'));
  await rename(join(a!, 'mv2.txt'), join(a!, 'moved2.txt'));
  await chmod(join(a!, 'moved2.txt'), 0o640);
  const before = cursorOf(a!);
  const r = await imz(['push', '-C', a!, '--json']);
  ok(r);
  const last = (await readJournal(server.address)).at(-1)!.seq;
  console.log(`  cursor ${before} -> ${cursorOf(a!)}, journal at ${last}`);
  assert.is(cursorOf(a!), last, 'HEAD passed over every record the push made');
  assert.is(await behind(a!), 0, 'status: nothing behind');
  await converged(tmp, srv, server.address, [a!, b!], 'claimed mkdir, chmod, move');
});

T.run();
