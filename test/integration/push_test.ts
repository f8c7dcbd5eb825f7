// Integration tests of `imz push` and `imz sync` (disconnected operation) as
// real processes on loopback TCP (the bundled CLI, dist/imz.js: run
// `npm run build` first): every operation type made offline and
// reintegrated, concurrent pushes, the mass-delete guard, the replica lock,
// .imzignore on the replica side, and sync's exit codes. Conflicts under each
// policy are in push_policy_test.ts, crashes in push_crash_test.ts.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, chmod, mkdir, readFile, readdir, rename, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type LogLine, type RunResult, runReport as out, type ServerHandle, type SnapEntry,
  REPO, cleanupAll, copyFixture, diffTrees, imz, jsonLines, listedConflicts, makeTmp, readJournal, readReintLog, replicaIdOf, sampleWorld, servedClone, setRemote, snapshotTree, spawnImz, startServer, waitFor,
} from '../helpers.ts';
import { loadIgnoreKeyed } from '../../core/ignore_rules.ts';
import { Replica } from '../../core/replica.ts';
import { ScanCache } from '../../core/scan_cache.ts';

const T = suite('push');
T.after.each(cleanupAll);
T.after(cleanupAll);

const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
const SAMPLE = join(REPO, 'fixtures', 'sample');
type Tree = Record<string, SnapEntry>;

const world = sampleWorld;

function assertSame(a: Tree, b: Tree, what: string, names?: string[]): void {
  const d = diffTrees(a, b, names);
  assert.ok(d.length === 0, `${what}: trees differ:\n  ${d.join('\n  ')}`);
}

/** The one event of a kind in --json output. */
function event(r: RunResult, name: string): Record<string, unknown> {
  const e = jsonLines(r.stdout).find((x) => x.event === name);
  assert.ok(e, `a ${name} event in:\n${out(r)}`);
  return e!;
}

/** The operations of a log still owed to the server (the rules of core/reint_log_model.ts pendingOps). */
function owed(lines: LogLine[]): { seq: number; kind: number; path: string }[] {
  let sent = 0, done = 0;
  const ops: { seq: number; kind: number; path: string }[] = [];
  const dropped = new Set<number>();
  for (const l of lines) {
    if (l.t === 'op') ops.push(l.op);
    else if (l.t === 'sent') sent = Math.max(sent, l.upto);
    else if (l.t === 'done') done = Math.max(done, l.upto);
    else for (const o of ops) if (o.seq <= l.upto && o.seq > sent) dropped.add(o.seq);
  }
  return ops.filter((o) => o.seq > done && !dropped.has(o.seq));
}

/** One line on stderr, `imz: cannot ...`. */
function assertOneErrorLine(stderr: string, what: string): void {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  assert.is(lines.length, 1, `${what}: exactly one line on stderr, got:\n${stderr}`);
  assert.match(lines[0]!, /^imz: cannot /, what);
}

// ---------- every operation type, offline, then reintegrated ----------

T('every operation type made offline: push exits 4 and keeps the log; after the server returns push exits 0; a second replica pulls the same tree', async () => {
  const { srv, server, replicas: [a, b] } = await world(2, async (srv) => {
    await mkdir(join(srv, 'data'));
    await writeFile(join(srv, 'data', 'chmod-me.txt'), 'mode changes only\n');
    await writeFile(join(srv, 'data', 'to-link.txt'), 'becomes a symlink\n');
    await writeFile(join(srv, 'todir.txt'), 'becomes a directory\n');
    await mkdir(join(srv, 'tofile'));
    await writeFile(join(srv, 'tofile', 'a.txt'), 'inside a dir that becomes a file\n');
    await mkdir(join(srv, 'gone', 'sub'), { recursive: true });
    await writeFile(join(srv, 'gone', 'top.txt'), 'removed with its dir\n');
    await writeFile(join(srv, 'gone', 'sub', 'deep.txt'), 'removed with its dir\n');
    await symlink('README.txt', join(srv, 'link-old'));
  });
  const serverBefore = await snapshotTree(srv);
  assert.is((await server.stop()).code, 0);

  // Offline: one change of each kind.
  await writeFile(join(a, 'new.txt'), 'created offline\n');                          // create
  await mkdir(join(a, 'fresh', 'deeper'), { recursive: true });
  await writeFile(join(a, 'fresh', 'deeper', 'n.txt'), 'created in new dirs\n');       // create under mkdir -p
  await appendFile(join(a, 'README.txt'), 'modified offline\n');                      // modify
  const blob = await readFile(join(a, 'src', 'blob.bin'));
  blob[1000] ^= 0xff;
  await writeFile(join(a, 'src', 'blob.bin'), blob);                                  // modify, same size
  await unlink(join(a, 'src', 'main.js'));                                            // delete
  await rename(join(a, 'docs', 'kml.txt'), join(a, 'kml-moved.txt'));                 // rename (across dirs)
  await mkdir(join(a, 'made', 'inner'), { recursive: true });                         // mkdir (nested, empty)
  await mkdir(join(a, 'newempty'));                                                   // empty dir
  await rm(join(a, 'gone'), { recursive: true });                                     // rmdir with contents
  await chmod(join(a, 'data', 'chmod-me.txt'), 0o600);                                // chmod file
  await chmod(join(a, 'bin', 'hello.sh'), 0o700);
  await chmod(join(a, 'data'), 0o750);                                                // chmod dir
  await symlink('README.txt', join(a, 'link-new'));                                   // symlink create
  await symlink('no/such/target', join(a, 'dangling'));
  await unlink(join(a, 'link-old'));
  await symlink('docs', join(a, 'link-old'));                                         // symlink retarget
  await unlink(join(a, 'data', 'to-link.txt'));
  await symlink('chmod-me.txt', join(a, 'data', 'to-link.txt'));                      // file -> symlink
  await unlink(join(a, 'todir.txt'));
  await mkdir(join(a, 'todir.txt'));
  await writeFile(join(a, 'todir.txt', 'inside.txt'), 'file became a dir\n');          // file -> dir
  await rm(join(a, 'tofile'), { recursive: true });
  await writeFile(join(a, 'tofile'), 'dir became a file\n');                          // dir -> file
  await unlink(join(a, 'HISTORY'));
  await writeFile(join(a, 'HISTORY'), 'symlink became a file\n');                     // symlink -> file

  const p1 = await imz(['push', '-C', a, '--json']);
  assert.is(p1.code, 4, `push with the server down: ${out(p1)}`);
  assert.is(event(p1, 'error').code, 'IMZ_UNREACHABLE');
  assertOneErrorLine(p1.stderr, 'offline push');
  assert.match(p1.stderr, /stay logged/);
  const logged1 = owed(await readReintLog(a));
  assert.ok(logged1.length >= 18, `the operations are in .imz/log (${logged1.length}: ${logged1.map((o) => o.path).join(', ')})`);
  for (const p of ['new.txt', 'README.txt', 'src/main.js', 'kml-moved.txt', 'made/inner', 'gone', 'gone/sub/deep.txt', 'link-new', 'link-old', 'todir.txt', 'tofile', 'data/chmod-me.txt', 'data']) {
    assert.ok(logged1.some((o) => o.path === p), `.imz/log holds an operation on ${p}`);
  }

  // Still offline: more work, another push. The log is superseded, not doubled.
  await appendFile(join(a, 'new.txt'), 'and edited again offline\n');
  const p2 = await imz(['push', '-C', a, '--json']);
  assert.is(p2.code, 4, out(p2));
  const logged2 = owed(await readReintLog(a));
  assert.is(logged2.length, logged1.length, 'the second offline push replaces the unsent operations (one per change)');
  assert.is(logged2.filter((o) => o.path === 'new.txt').length, 1, 'new.txt is owed once');
  const st = await imz(['status', '-C', a, '--json']);
  assert.is(st.code, 0, out(st));
  assert.is(event(st, 'status').reachable, false);
  assert.is(event(st, 'status').changes, logged2.length, 'status counts the same changes as the log holds');
  assertSame(serverBefore, await snapshotTree(srv), 'the server dir while it was down', ['before', 'after']);

  // The server returns on a new port.
  const again = await startServer(srv);
  assert.is(again.serverId, server.serverId);
  await setRemote(a, again.address);
  await setRemote(b, again.address);
  const before = (await readJournal(again.address)).length;
  const p3 = await imz(['push', '-C', a, '--json']);
  assert.is(p3.code, 0, `push after the server came back: ${out(p3)}`);
  const pushed = event(p3, 'pushed');
  assert.is(pushed.rejected, 0);
  assert.is(pushed.conflicts, 0);
  assert.is(pushed.applied, pushed.logged, `every operation applied: ${p3.stdout}`);
  assert.equal(owed(await readReintLog(a)), [], 'nothing owed any more');

  const mine = await snapshotTree(a);
  assertSame(mine, await snapshotTree(srv), 'server after the push', ['replica', 'server']);
  assert.is(await readFile(join(srv, 'new.txt'), 'utf8'), 'created offline\nand edited again offline\n');
  assert.is(mine['data/chmod-me.txt']!.mode, 0o600);
  assert.is(mine.data!.mode, 0o750);
  assert.is(mine['todir.txt']!.type, 'dir');
  assert.is(mine.tofile!.type, 'file');
  assert.is(mine['link-old']!.target, 'docs');
  assert.not.ok('gone' in mine);
  assert.ok('newempty' in mine && 'made/inner' in mine);

  // The second replica replays the journal into the same tree (content, modes, mtimes, links, empty dirs).
  const pull = await imz(['pull', '-C', b, '--json']);
  assert.is(pull.code, 0, out(pull));
  assertSame(mine, await snapshotTree(b), 'second replica after pull', ['first', 'second']);

  // Each operation applied once: the journal holds one record per (replica op, path).
  const recs = (await readJournal(again.address)).slice(before);
  const id = await replicaIdOf(a);
  const seen = new Map<string, number>();
  for (const r of recs) {
    assert.is(r.origin, id, `every new record comes from the replica's push: ${JSON.stringify(r)}`);
    const k = `${r.originSeq} ${r.path}`;
    seen.set(k, (seen.get(k) ?? 0) + 1);
  }
  for (const [k, n] of seen) assert.is(n, 1, `journalled once: ${k}`);
  assert.is(recs.filter((r) => r.path === 'new.txt').length, 1, 'new.txt is journalled once');

  const p4 = await imz(['push', '-C', a]);
  assert.is(p4.code, 0, out(p4));
  assert.match(p4.stdout, /nothing to push/);
});

T('large content the server already holds is not uploaded again; an edit identical to the server\'s is no conflict', async () => {
  const { srv, replicas: [a, b] } = await world(2);
  const bad = await imz(['push', '-C', a, '--policy', 'bogus', '--json']);
  assert.is(bad.code, 2, `an unknown policy is bad usage: ${out(bad)}`);
  assert.is(event(bad, 'error').code, 'IMZ_USAGE');
  const big = Buffer.alloc(3 << 20, 1);
  for (let i = 0; i < big.length; i += 512) big[i] = (i / 512) & 0xff;
  await writeFile(join(a, 'big.bin'), big);
  const r1 = await imz(['push', '-C', a, '--json']);
  assert.is(r1.code, 0, out(r1));
  assert.is(event(r1, 'pushed').uploadedBytes, big.length);
  // The same content under two new names, elsewhere: nothing to upload.
  await writeFile(join(b, 'copy1.bin'), big);
  await writeFile(join(b, 'copy2.bin'), big);
  // And the same edit on both sides.
  await writeFile(join(a, 'README.txt'), 'the very same edit\n');
  assert.is((await imz(['push', '-C', a])).code, 0);
  await writeFile(join(b, 'README.txt'), 'the very same edit\n');
  const r2 = await imz(['push', '-C', b, '--json']);
  assert.is(r2.code, 0, `identical edits are not a conflict: ${out(r2)}`);
  // (Small content may go in one request without asking first; large content is asked about.)
  assert.ok((event(r2, 'pushed').uploadedBytes as number) < 1024, `the 3 MiB the server had is not uploaded again: ${r2.stdout}`);
  assert.is(event(r2, 'pushed').conflicts, 0);
  const op = jsonLines(r2.stdout).find((e) => e.event === 'op' && e.path === 'README.txt');
  assert.is(op?.status, 'same');
  assert.is(sha(await readFile(join(srv, 'copy2.bin'))), sha(big));
  assert.equal((await readdir(join(b, '.imz', 'conflicts'))).filter((n) => n.endsWith('.json')), []);
});

T('small content the server holds anywhere in its tree is not uploaded again (a copy, a retried push)', async () => {
  const { srv, replicas: [a] } = await world(1);
  const before = await readFile(join(a, 'docs', 'kml.txt'));
  await writeFile(join(a, 'copy-of-kml.txt'), before);
  await writeFile(join(a, 'brand-new.txt'), 'new bytes\n');
  const r = await imz(['push', '-C', a, '--json']);
  assert.is(r.code, 0, out(r));
  assert.is(event(r, 'pushed').uploadedBytes, 'new bytes\n'.length, `only the new content travels: ${r.stdout}`);
  assert.equal(await readFile(join(srv, 'copy-of-kml.txt')), before);
  // Applied content lives in the tree: nothing stays behind in the staging area.
  const staged = await readdir(join(srv, '.imz-server', 'staging')).catch(() => [] as string[]);
  assert.equal(staged, [], 'the staging area is empty after the push');
});

T('many new small files in new directories (uploaded while the scan hashes, sent in several batches): each lands once, each content travels once, the index holds them all', async () => {
  const { srv, replicas: [a, b] } = await world(2);
  const contents = new Set<string>();
  let files = 0;
  for (let d = 0; d < 13; d++) {
    await mkdir(join(a, 'many', `d${d}`, 'sub'), { recursive: true });
    for (let i = 0; i < 100; i++) {
      // Every fifth content repeats one from another directory: it is uploaded once.
      const text = `many ${(d * 100 + i) % 5 === 0 ? i : d * 100 + i}\n`.repeat(1 + (i % 7) * 40);
      contents.add(text);
      await writeFile(join(a, 'many', `d${d}`, i % 2 ? 'sub' : '', `f${i}.txt`), text);
      files++;
    }
  }
  const r = await imz(['push', '-C', a, '--json']);
  assert.is(r.code, 0, out(r));
  const pushed = event(r, 'pushed');
  assert.is(pushed.applied, files + 13 * 2 + 1, `every file and directory applied: ${r.stdout.slice(-400)}`);
  assert.is(pushed.uploadedBytes, [...contents].reduce((n, t) => n + Buffer.byteLength(t), 0), 'each distinct content uploaded once');
  const mine = await snapshotTree(a);
  assertSame(mine, await snapshotTree(srv), 'server after the push', ['replica', 'server']);
  // The push left the scan cache current (the new rows merged in, no bucket parsed for it): the next scan reads it as is.
  const cache = ScanCache.load(await Replica.open(a), (await loadIgnoreKeyed(a)).key);
  assert.ok(cache.rowsAsLoaded, 'the scan cache needs no rebuild after the push');
  assert.ok(cache.lookup('many/d3/sub/f3.txt') >= 0 && cache.lookup('many/d12') >= 0, 'it holds the new paths');
  assert.is(cache.trackedFiles(), Object.values(mine).filter((e) => e.type === 'file').length);
  // The index took every new path: nothing is left to push, and status sees a clean tree.
  const again = await imz(['push', '-C', a, '--json']);
  assert.is(again.code, 0, out(again));
  assert.is(event(again, 'pushed').logged, 0, `a second push has nothing to send: ${again.stdout}`);
  const st = await imz(['status', '-C', a, '--json']);
  assert.is(st.code, 0, out(st));
  assert.is(event(st, 'status').changes, 0, `status: no local changes: ${st.stdout}`);
  // A file of the new tree edited afterwards is told apart from the rest.
  await writeFile(join(a, 'many', 'd3', 'f4.txt'), 'edited\n');
  const st2 = await imz(['status', '-C', a, '--json']);
  assert.equal(jsonLines(st2.stdout).filter((e) => e.event === 'change').map((e) => e.path), ['many/d3/f4.txt']);
  assert.is((await imz(['pull', '-C', b])).code, 0);
  assertSame(mine, await snapshotTree(b), 'second replica after pull', ['first', 'second']);
});

T('a copy of a file and an edit of the original in one push: the copy\'s content, which the server holds only as the original, is uploaded, and both land', async () => {
  const { srv, replicas: [a] } = await world(1, async (srv) => {
    await writeFile(join(srv, 'orig.txt'), 'the original content\n');
    await writeFile(join(srv, 'big-orig.bin'), Buffer.alloc(3 << 20, 7));
  });
  // The copies sort after the originals: stored once those have changed (small content, and content uploaded in pieces).
  await writeFile(join(a, 'z-copy.txt'), 'the original content\n');
  await writeFile(join(a, 'orig.txt'), 'edited since\n');
  await writeFile(join(a, 'z-big-copy.bin'), Buffer.alloc(3 << 20, 7));
  await writeFile(join(a, 'big-orig.bin'), Buffer.alloc(3 << 20, 8));
  const r = await imz(['push', '-C', a, '--json']);
  assert.is(r.code, 0, out(r));
  assert.is(event(r, 'pushed').uploadedBytes, 'the original content\n'.length + 'edited since\n'.length + 2 * (3 << 20));
  assert.is(await readFile(join(srv, 'z-copy.txt'), 'utf8'), 'the original content\n');
  assert.is(await readFile(join(srv, 'orig.txt'), 'utf8'), 'edited since\n');
  assert.equal(await readFile(join(srv, 'z-big-copy.bin')), Buffer.alloc(3 << 20, 7));
  assert.equal(await readFile(join(srv, 'big-orig.bin')), Buffer.alloc(3 << 20, 8));
});

// ---------- two replicas at once ----------

T('two replicas pushing at the same time, different files: the server serialises them and both land', async () => {
  const { srv, server, replicas: [p, q] } = await world(2);
  for (const [d, tag] of [[p, 'p'], [q, 'q']] as const) {
    await mkdir(join(d, `from-${tag}`));
    for (let i = 0; i < 30; i++) await writeFile(join(d, `from-${tag}`, `f${i}.txt`), `${tag} ${i}\n`);
  }
  await appendFile(join(p, 'README.txt'), 'p was here\n');
  await appendFile(join(q, 'docs', 'kml.txt'), 'q was here\n');
  const before = (await readJournal(server.address)).length;
  const [rp, rq] = await Promise.all([p, q].map(async (d) => (await spawnImz(['push', '-C', d, '--json'])).done));
  assert.is(rp!.code, 0, `p: ${out(rp!)}`);
  assert.is(rq!.code, 0, `q: ${out(rq!)}`);
  assert.is(event(rp!, 'pushed').applied, 32);
  assert.is(event(rq!, 'pushed').applied, 32);
  assert.match(await readFile(join(srv, 'README.txt'), 'utf8'), /p was here\n$/);
  assert.match(await readFile(join(srv, 'docs', 'kml.txt'), 'utf8'), /q was here\n$/);
  for (const tag of ['p', 'q']) for (let i = 0; i < 30; i++) assert.is(await readFile(join(srv, `from-${tag}`, `f${i}.txt`), 'utf8'), `${tag} ${i}\n`);
  const recs = (await readJournal(server.address)).slice(before);
  assert.is(recs.length, 64, `one record per change (2 × (mkdir + 30 files + 1 edit)): ${recs.length}`);
  const seqs = recs.map((x) => x.seq);
  assert.equal(seqs, [...seqs].sort((x, y) => x - y), 'in increasing order');
  // Each replica's operations are journalled in its own order (interleaving between them is fine).
  const pid = await replicaIdOf(p);
  const ps = recs.filter((x) => x.origin === pid).map((x) => x.originSeq);
  assert.equal(ps, [...ps].sort((x, y) => x - y));
  // Both converge on the server's tree.
  const want = await snapshotTree(srv);
  for (const d of [p, q]) {
    const pl = await imz(['pull', '-C', d]);
    assert.is(pl.code, 0, out(pl));
    assertSame(want, await snapshotTree(d), `replica ${d}`);
  }
});

T('two replicas pushing the same file at the same time (manual): one wins, the other gets exactly one conflict', async () => {
  const { srv, replicas: [p, q] } = await world(2);
  await writeFile(join(p, 'README.txt'), 'p\'s version\n');
  await writeFile(join(q, 'README.txt'), 'q\'s version, longer\n');
  await writeFile(join(p, 'p-only.txt'), 'p\n');
  await writeFile(join(q, 'q-only.txt'), 'q\n');
  const [rp, rq] = await Promise.all([p, q].map(async (d) => (await spawnImz(['push', '-C', d, '--json'])).done));
  const codes = [rp!.code, rq!.code].sort();
  assert.equal(codes, [0, 3], `one push exits 0, the other 3:\np: ${out(rp!)}\nq: ${out(rq!)}`);
  const [win, lose, winR, loseR] = rp!.code === 0 ? [p, q, rp!, rq!] : [q, p, rq!, rp!];
  const conflicts = [...jsonLines(winR.stdout), ...jsonLines(loseR.stdout)].filter((e) => e.event === 'conflict');
  assert.is(conflicts.length, 1, `exactly one conflict: ${JSON.stringify(conflicts)}`);
  assert.is(conflicts[0]!.path, 'README.txt');
  assert.is(conflicts[0]!.class, 'update/update');
  const winText = await readFile(join(win, 'README.txt'), 'utf8');
  const loseText = await readFile(join(lose, 'README.txt'), 'utf8');
  assert.is(await readFile(join(srv, 'README.txt'), 'utf8'), winText, 'the server holds the first one in');
  assert.is(loseText, lose === p ? 'p\'s version\n' : 'q\'s version, longer\n', 'the other is left as written');
  assert.is(await readFile(join(lose, '.imz', 'conflicts', 'blobs', sha(winText)), 'utf8'), winText, 'and keeps the winner\'s version in .imz/conflicts/blobs');
  // Both sides' other files landed.
  assert.is(await readFile(join(srv, 'p-only.txt'), 'utf8'), 'p\n');
  assert.is(await readFile(join(srv, 'q-only.txt'), 'utf8'), 'q\n');
});

// ---------- safety nets ----------

T('mass-delete guard: more than half of the tracked files deleted, or the root emptied → exit 1, IMZ_MASS_DELETE, nothing pushed; --allow-mass-delete pushes', async () => {
  const { srv, server, replicas: [a, b] } = await world(2);
  // An emptied replica root is refused.
  for (const n of await readdir(b)) if (n !== '.imz') await rm(join(b, n), { recursive: true });
  const wiped = await imz(['push', '-C', b, '--json']);
  assert.is(wiped.code, 1, out(wiped));
  assert.is(event(wiped, 'error').code, 'IMZ_MASS_DELETE');
  assert.ok(existsSync(join(srv, 'src', 'blob.bin')), 'the server tree is intact');

  // 8 tracked files; deleting exactly half is allowed.
  for (const f of ['src/main.js', 'src/lib/math.js', 'docs/kml.txt', 'bin/hello.sh']) await unlink(join(a, f));
  const half = await imz(['push', '-C', a]);
  assert.is(half.code, 0, `half of the files (4 of 8) is not "more than half": ${out(half)}`);
  assert.not.ok(existsSync(join(srv, 'src/main.js')));

  // 3 of the remaining 4: refused.
  for (const f of ['README.txt', 'src/blob.bin', 'docs/notes/history.md']) await unlink(join(a, f));
  const serverBefore = await snapshotTree(srv);
  const journalBefore = (await readJournal(server.address)).length;
  const r = await imz(['push', '-C', a, '--json']);
  assert.is(r.code, 1, out(r));
  const err = event(r, 'error');
  assert.is(err.code, 'IMZ_MASS_DELETE');
  assert.match(String(err.message), /3 of 4/);
  assertOneErrorLine(r.stderr, 'mass delete');
  assert.match(r.stderr, /--allow-mass-delete/);
  assertSame(serverBefore, await snapshotTree(srv), 'the server', ['before', 'after']);
  assert.is((await readJournal(server.address)).length, journalBefore, 'no journal record');
  assert.equal(owed(await readReintLog(a)), [], 'nothing logged either');
  const s = await imz(['sync', '-C', a, '--json']);
  assert.is(s.code, 1, `sync applies the guard too: ${out(s)}`);
  assert.is(event(s, 'error').code, 'IMZ_MASS_DELETE');
  assert.ok(existsSync(join(srv, 'README.txt')));

  const ok = await imz(['push', '-C', a, '--allow-mass-delete', '--json']);
  assert.is(ok.code, 0, out(ok));
  assert.is(event(ok, 'pushed').applied, 3);
  for (const f of ['README.txt', 'src/blob.bin', 'docs/notes/history.md']) assert.not.ok(existsSync(join(srv, f)), `${f} is gone from the server`);
});

T('the lock: a live holder (a pid in .imz/lock, or a running push) makes push, pull and sync fail with IMZ_LOCKED (exit 1, clear message); a stale lock is taken over', async () => {
  const { srv, replicas: [a] } = await world(1);
  await writeFile(join(a, 'new.txt'), 'waiting for the lock\n');
  const lock = join(a, '.imz', 'lock');
  const held = JSON.stringify({ pid: process.pid, since: '2020-01-01T00:00:00.000Z' });
  await writeFile(lock, held);
  for (const cmd of ['push', 'pull', 'sync']) {
    const r = await imz([cmd, '-C', a, '--json']);
    assert.is(r.code, 1, `${cmd}: ${out(r)}`);
    assert.is(event(r, 'error').code, 'IMZ_LOCKED', cmd);
    assertOneErrorLine(r.stderr, cmd);
    assert.match(r.stderr, new RegExp(`another imz \\(pid ${process.pid}\\b`), `${cmd}: the message names the holder`);
    assert.ok(r.stderr.includes(lock), `${cmd}: the message names the lock file`);
  }
  assert.is(await readFile(lock, 'utf8'), held, 'the lock is left alone');
  assert.not.ok(existsSync(join(srv, 'new.txt')), 'nothing was pushed');
  // A lock file just created, its holder's pid not written yet, is held too.
  await writeFile(lock, '');
  const young = await imz(['push', '-C', a, '--json']);
  assert.is(young.code, 1, `a lock being written: ${out(young)}`);
  assert.is(event(young, 'error').code, 'IMZ_LOCKED');
  assert.not.ok(existsSync(join(srv, 'new.txt')), 'nothing was pushed');

  // Damaged: JSON that is no lock (held until it is old, as an unreadable one), or a directory (never removed).
  await writeFile(lock, 'null');
  const junk = await imz(['push', '-C', a, '--json']);
  assert.is(junk.code, 1, `a lock holding null: ${out(junk)}`);
  assert.is(event(junk, 'error').code, 'IMZ_LOCKED');
  assertOneErrorLine(junk.stderr, 'null lock');
  await rm(lock);
  await mkdir(lock);
  const dir = await imz(['push', '-C', a, '--json']);
  assert.is(dir.code, 1, `a lock that is a directory: ${out(dir)}`);
  assert.is(event(dir, 'error').code, 'IMZ_LOCKED');
  assert.match(dir.stderr, /is a directory, not a lock imz made/);
  assertOneErrorLine(dir.stderr, 'directory lock');
  await rm(lock, { recursive: true });
  assert.not.ok(existsSync(join(srv, 'new.txt')), 'nothing was pushed');

  // The holder died: its lock is stale and taken over.
  const dead = spawn(process.execPath, ['-e', '']);
  const deadPid = dead.pid!;
  await new Promise((res) => dead.once('exit', res));
  await writeFile(lock, JSON.stringify({ pid: deadPid, since: new Date().toISOString() }));
  const r = await imz(['push', '-C', a]);
  assert.is(r.code, 0, `stale lock (pid ${deadPid}) taken over: ${out(r)}`);
  assert.is(await readFile(join(srv, 'new.txt'), 'utf8'), 'waiting for the lock\n');
  assert.not.ok(existsSync(lock), 'the lock is released at the end');

  // A real holder: a push that is still working.
  const big = Buffer.alloc(16 << 20);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
  await writeFile(join(a, 'big.bin'), big);
  const first = await spawnImz(['push', '-C', a, '--json']);
  // (Wait for the holder's pid in it: the file is created first, then written.)
  const holds = async () => { try { return JSON.parse(await readFile(lock, 'utf8')).pid === first.proc.pid; } catch { return false; } };
  await waitFor(async () => (await holds()) || first.proc.exitCode !== null, 10_000, 'the first push to take the lock', 2);
  // Frozen while it holds the lock, so the second one surely meets it.
  first.proc.kill('SIGSTOP');
  try {
    assert.ok(existsSync(lock), 'the first push holds the lock');
    const second = await imz(['push', '-C', a, '--json']);
    assert.is(second.code, 1, `the second push, while the first held the lock: ${out(second)}`);
    assert.is(event(second, 'error').code, 'IMZ_LOCKED');
    assert.match(second.stderr, new RegExp(`another imz \\(pid ${first.proc.pid}\\b`));
    assert.ok(existsSync(lock), 'the second push left the lock alone');
  } finally {
    first.proc.kill('SIGCONT');
  }
  const r1 = await first.done;
  assert.is(r1.code, 0, `the first push: ${out(r1)}`);
  assert.is(sha(await readFile(join(srv, 'big.bin'))), sha(big));
  assert.not.ok(existsSync(lock));
});

// Replica.lock creates .imz/lock (open 'wx') and then writes the holder's
// pid into it: a process killed between the two leaves an empty lock file.
// (It used to be held forever: "another imz (pid ?, since ?)" at every run.)
T('an old empty lock file left by a crash (created, pid never written) is taken over, not held forever', async () => {
  const { srv, replicas: [a] } = await world(1);
  await writeFile(join(a, 'new.txt'), 'after the crash\n');
  const lock = join(a, '.imz', 'lock');
  await writeFile(lock, '');
  const old = new Date(Date.now() - 3600_000);
  await utimes(lock, old, old);
  const r = await imz(['push', '-C', a, '--json']);
  assert.is(r.code, 0, `an hour-old empty lock is stale: ${out(r)}`);
  assert.is(await readFile(join(srv, 'new.txt'), 'utf8'), 'after the crash\n');
});


T('.imzignore on the replica side: ignored files are never pushed, ignored tracked files are not deleted', async () => {
  const { srv, replicas: [a] } = await world(1);
  // fixtures/sample/.imzignore: *.tmp and build/
  await writeFile(join(a, 'scratch.tmp'), 'ignored\n');
  await mkdir(join(a, 'build', 'sub'), { recursive: true });
  await writeFile(join(a, 'build', 'sub', 'out.o'), 'ignored\n');
  await mkdir(join(a, 'src', 'build'));
  await writeFile(join(a, 'src', 'build', 'z.o'), 'ignored\n');
  await writeFile(join(a, 'src', 'x.tmp'), 'ignored\n');
  await writeFile(join(a, 'building.txt'), 'not ignored: only directories named build are\n');
  const r1 = await imz(['push', '-C', a, '--json']);
  assert.is(r1.code, 0, out(r1));
  const paths1 = jsonLines(r1.stdout).filter((e) => e.event === 'op').map((e) => e.path);
  assert.equal(paths1, ['building.txt'], `only building.txt is pushed: ${r1.stdout}`);
  for (const p of ['scratch.tmp', 'build', 'src/build', 'src/x.tmp']) assert.not.ok(existsSync(join(srv, p)), `${p} is not on the server`);
  assert.ok(existsSync(join(srv, 'building.txt')));

  // New rules in the replica's .imzignore apply to the same push that sends the file.
  await appendFile(join(a, '.imzignore'), '*.log\nsecret/\ndocs/kml.txt\n');
  await writeFile(join(a, 'debug.log'), 'ignored\n');
  await mkdir(join(a, 'secret'));
  await writeFile(join(a, 'secret', 'key'), 'ignored\n');
  await writeFile(join(a, 'docs', 'kml.txt'), 'tracked, now ignored: this edit stays here\n');
  await unlink(join(a, 'docs', 'notes', 'history.md'));
  await writeFile(join(a, 'visible.txt'), 'pushed\n');
  const st = await imz(['status', '-C', a, '--json']);
  const changed = jsonLines(st.stdout).filter((e) => e.event === 'change').map((e) => e.path).sort();
  assert.equal(changed, ['.imzignore', 'docs/notes/history.md', 'visible.txt'], `status shows only what is not ignored: ${st.stdout}`);
  const r2 = await imz(['push', '-C', a, '-v']);
  assert.is(r2.code, 0, out(r2));
  assert.match(r2.stdout, /^applied\s+store\s+visible\.txt$/m, `-v prints each operation: ${r2.stdout}`);
  assert.not.match(r2.stdout, /debug\.log|secret|kml/);
  assert.match(await readFile(join(srv, '.imzignore'), 'utf8'), /secret\//);
  assert.ok(existsSync(join(srv, 'visible.txt')));
  assert.not.ok(existsSync(join(srv, 'debug.log')));
  assert.not.ok(existsSync(join(srv, 'secret')));
  assert.not.ok(existsSync(join(srv, 'docs', 'notes', 'history.md')));
  assert.is(await readFile(join(srv, 'docs', 'kml.txt'), 'utf8'), await readFile(join(SAMPLE, 'docs', 'kml.txt'), 'utf8'), 'a tracked file that became ignored is neither updated nor deleted on the server');
  const r3 = await imz(['push', '-C', a]);
  assert.match(r3.stdout, /nothing to push/);
});

// ---------- sync ----------

T('sync: pull then push in one run (exit 0); offline it exits 4 and keeps the changes logged; back online it sends them', async () => {
  const { srv, server, replicas: [a, b] } = await world(2);
  await writeFile(join(b, 'from-b.txt'), 'b pushed this\n');
  assert.is((await imz(['push', '-C', b])).code, 0);
  await writeFile(join(a, 'from-a.txt'), 'a syncs this\n');
  const s1 = await imz(['sync', '-C', a, '--json']);
  assert.is(s1.code, 0, out(s1));
  const ev = event(s1, 'synced');
  assert.ok((ev.pulled as number) >= 1, `pulled: ${s1.stdout}`);
  assert.is(ev.pushed, 1);
  assert.is(ev.conflicts, 0);
  assert.is(await readFile(join(a, 'from-b.txt'), 'utf8'), 'b pushed this\n');
  assert.is(await readFile(join(srv, 'from-a.txt'), 'utf8'), 'a syncs this\n');

  await server.stop();
  // Offline with nothing to send: no failure, nothing logged.
  const idle = await imz(['push', '-C', a, '--json']);
  assert.ok(idle.code === 0 || idle.code === 4, `offline push with nothing to send: ${out(idle)}`);
  assert.equal(owed(await readReintLog(a)), []);
  await writeFile(join(a, 'offline.txt'), 'made offline\n');
  await unlink(join(a, 'src', 'main.js'));
  const s2 = await imz(['sync', '-C', a, '--json']);
  assert.is(s2.code, 4, out(s2));
  assert.is(event(s2, 'error').code, 'IMZ_UNREACHABLE');
  assertOneErrorLine(s2.stderr, 'offline sync');
  const logged = owed(await readReintLog(a)).map((o) => o.path).sort();
  assert.equal(logged, ['offline.txt', 'src/main.js'], 'sync logged the local changes');

  const again = await startServer(srv);
  await setRemote(a, again.address);
  const s3 = await imz(['sync', '-C', a, '--json']);
  assert.is(s3.code, 0, out(s3));
  assert.is(event(s3, 'synced').pushed, 2);
  assert.is(await readFile(join(srv, 'offline.txt'), 'utf8'), 'made offline\n');
  assert.not.ok(existsSync(join(srv, 'src', 'main.js')));
  assert.equal(owed(await readReintLog(a)), []);
  await setRemote(b, again.address);
  assert.is((await imz(['pull', '-C', b])).code, 0);
  assertSame(await snapshotTree(srv), await snapshotTree(b), 'b after a pull');
});

T('sync: a conflicting edit leaves both versions and exits 3 (manual)', async () => {
  const { srv, replicas: [a, b] } = await world(2);
  await writeFile(join(b, 'README.txt'), 'b got there first\n');
  await writeFile(join(b, 'other.txt'), 'unrelated\n');
  assert.is((await imz(['push', '-C', b])).code, 0);
  await writeFile(join(a, 'README.txt'), 'a edited it too\n');
  await writeFile(join(a, 'a-only.txt'), 'no conflict here\n');
  const s = await imz(['sync', '-C', a, '--json']);
  assert.is(s.code, 3, out(s));
  assert.is(event(s, 'synced').conflicts, 1);
  assert.ok(jsonLines(s.stdout).some((e) => e.event === 'conflict' && e.path === 'README.txt'), s.stdout);
  assert.is(await readFile(join(a, 'README.txt'), 'utf8'), 'a edited it too\n', 'the local version is left');
  assert.is(await readFile(join(srv, 'README.txt'), 'utf8'), 'b got there first\n', 'the server keeps its version');
  assert.is(await readFile(join(a, '.imz', 'conflicts', 'blobs', sha('b got there first\n')), 'utf8'), 'b got there first\n');
  assert.is(await readFile(join(a, 'other.txt'), 'utf8'), 'unrelated\n', 'the rest was pulled');
  assert.is(await readFile(join(srv, 'a-only.txt'), 'utf8'), 'no conflict here\n', 'and the rest pushed');
  const st = await imz(['status', '-C', a]);
  assert.is(st.code, 3, out(st));
  assert.match(st.stdout, /C {2}README\.txt \(update\/update\)/);
  const s2 = await imz(['sync', '-C', a]);
  assert.is(s2.code, 3, `still outstanding: ${out(s2)}`);
});


T('pushed, then removed here, then a pull that reads the push back (another write came first): no conflict, the removal goes up (review: remove/update, exit 3)', async () => {
  const { srv, server, a } = await servedClone('imz-push-own-removed-', { 'a.txt': 'a\n' });
  // A server write first: the push cannot move HEAD past its own record, so the pull reads it back.
  await writeFile(join(srv, 'g.txt'), 'server\n');
  await waitFor(async () => (await readJournal(server.address)).some((j) => j.path === 'g.txt'), 8_000, 'the server to journal g.txt');
  await writeFile(join(a, 'f.txt'), 'mine\n');
  assert.is((await imz(['push', '-C', a, '--quiet'])).code, 0);
  await rm(join(a, 'f.txt'));
  const p = await imz(['pull', '-C', a]);
  assert.is(p.code, 0, p.stderr);
  assert.equal(await listedConflicts(a), []);
  assert.ok(existsSync(join(a, 'g.txt')));
  assert.not.ok(existsSync(join(a, 'f.txt')), 'the removal stays');
  const q = await imz(['push', '-C', a]);
  assert.is(q.code, 0, q.stderr);
  assert.not.ok(existsSync(join(srv, 'f.txt')));
});

T.run();
