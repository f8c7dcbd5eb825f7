// Integration tests of `imz serve`, `imz clone` and `imz pull` as real
// processes on loopback TCP (the bundled CLI, dist/imz.js: run `npm run build`
// first). Every test checks real tree contents, exit codes and error codes.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, chmod, lstat, mkdir, readFile, readdir, readlink, rename, rm, rmdir, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  type RunResult, type ServerHandle, type SnapEntry,
  cleanupAll, copyFixture, diffTrees, findTemps, imz, jsonLines, makeTmp, snapshotTree, spawnImz, startServer, waitFor,
} from '../helpers.ts';

const run = promisify(execFile);
const T = suite('clone and pull');
T.after.each(cleanupAll);
T.after(cleanupAll);

// ---------- local helpers ----------

/** A millisecond mtime that utimes(ms / 1000) sets 1 µs too early (see the round-trip test). */
const PRECISE_MS = 1795620528395;
const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A copy of fixtures/sample in a fresh temp dir, optionally extended, and a server on it. */
async function served(extend?: (srv: string, tmp: string) => Promise<void>, extraArgs: string[] = []): Promise<{ tmp: string; srv: string; server: ServerHandle }> {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  if (extend) await extend(srv, tmp);
  const server = await startServer(srv, extraArgs);
  return { tmp, srv, server };
}

/** `imz clone` that must succeed; returns the replica dir and the result. */
async function cloneOk(server: ServerHandle, dest: string): Promise<RunResult> {
  const r = await imz(['clone', server.address, dest, '--json']);
  assert.is(r.code, 0, `clone exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  const evs = jsonLines(r.stdout);
  assert.ok(evs.some((e) => e.event === 'cloned'), 'clone --json ends with a cloned event');
  return r;
}

/** Asserts that two trees are the same (snapshots) and prints the differences when not. */
function assertSame(a: Record<string, SnapEntry>, b: Record<string, SnapEntry>, what: string, names?: string[]): void {
  const d = diffTrees(a, b, names);
  assert.ok(d.length === 0, `${what}: trees differ:\n  ${d.join('\n  ')}`);
}

/**
 * Pulls repeatedly (the server journals direct writes through a watcher)
 * until the replica equals the server tree filtered by keep, or fails with
 * the difference after timeoutMs. Every pull must exit 0.
 */
async function pullUntilSame(srv: string, replica: string, opts: { keep?: (p: string, e: SnapEntry) => boolean; timeoutMs?: number; expectCode?: number } = {}): Promise<RunResult[]> {
  const end = Date.now() + (opts.timeoutMs ?? 6_000);
  const results: RunResult[] = [];
  for (;;) {
    const r = await imz(['pull', '-C', replica, '--json']);
    results.push(r);
    assert.is(r.code, opts.expectCode ?? 0, `pull exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    jsonLines(r.stdout);
    const want = filterTree(await snapshotTree(srv), opts.keep);
    const got = await snapshotTree(replica);
    const d = diffTrees(want, got);
    if (d.length === 0) return results;
    if (Date.now() > end) assert.unreachable(`replica did not converge after ${results.length} pulls:\n  ${d.join('\n  ')}`);
    await sleep(150);
  }
}

function filterTree(t: Record<string, SnapEntry>, keep?: (p: string, e: SnapEntry) => boolean): Record<string, SnapEntry> {
  if (!keep) return t;
  return Object.fromEntries(Object.entries(t).filter(([p, e]) => keep(p, e)));
}

async function readJson(p: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(p, 'utf8'));
}

/** Points a replica at another server address by editing .imz/config (the remote is kept there). */
async function setRemote(replica: string, address: string): Promise<void> {
  const cfgPath = join(replica, '.imz', 'config');
  const cfg = await readJson(cfgPath);
  cfg.remote = address;
  await writeFile(cfgPath, JSON.stringify(cfg, null, 2) + '\n');
}

/** One error line on stderr, of the form `imz: cannot ...`. */
function assertOneErrorLine(stderr: string, what: string): void {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  assert.is(lines.length, 1, `${what}: expected exactly one line on stderr, got:\n${stderr}`);
  assert.match(lines[0], /^imz: /, `${what}: the line starts with "imz: "`);
}

function errorEvent(stdout: string): Record<string, unknown> {
  const evs = jsonLines(stdout);
  const err = evs.find((e) => e.event === 'error');
  assert.ok(err, `an error event on stdout, got:\n${stdout}`);
  return err!;
}

// ---------- round trips ----------

T('clone round-trips every entry type: files (content, exec bit, mtime), empty and nested dirs, symlinks never followed', async () => {
  let outside = '';
  const { tmp, srv, server } = await served(async (srv, tmp) => {
    outside = join(tmp, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'secret.txt'), 'SECRET OUTSIDE THE TREE\n');
    await writeFile(join(srv, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    await chmod(join(srv, 'run.sh'), 0o755);
    await writeFile(join(srv, 'private.txt'), 'only me\n');
    await chmod(join(srv, 'private.txt'), 0o600);
    await writeFile(join(srv, 'zero.bin'), '');
    await writeFile(join(srv, 'old.txt'), 'old file\n');
    await utimes(join(srv, 'old.txt'), new Date('2001-02-03T04:05:06.789Z'), new Date('2001-02-03T04:05:06.789Z'));
    // An mtime whose milliseconds, written back as fractional seconds, fall
    // just below the millisecond (1795620528.395 s is 1795620528.39499998 as a
    // double): the replica must still show ...395 ms, not ...394.
    await writeFile(join(srv, 'precise.txt'), 'mtime on a millisecond boundary\n');
    await utimes(join(srv, 'precise.txt'), (PRECISE_MS + 0.5) / 1000, (PRECISE_MS + 0.5) / 1000);
    await writeFile(join(srv, 'naïve – ü name.txt'), 'unicode name\n');
    await mkdir(join(srv, 'deep', 'a', 'b', 'c'), { recursive: true });
    await writeFile(join(srv, 'deep', 'a', 'mid.txt'), 'mid\n');
    await symlink('no/such/file', join(srv, 'dangling'));
    await symlink(join(outside, 'secret.txt'), join(srv, 'abs-file'));
    await symlink(outside, join(srv, 'abs-dir'));
    await symlink('docs', join(srv, 'rel-dir'));
    await symlink('../../outside', join(srv, 'deep', 'escape'));
  });
  const replica = join(tmp, 'replica');
  await cloneOk(server, replica);

  const want = await snapshotTree(srv);
  const got = await snapshotTree(replica);
  assertSame(want, got, 'after clone');

  // Spot checks, so the test does not rest on the snapshot code alone.
  assert.is(await readFile(join(replica, 'README.txt'), 'utf8'), await readFile(join(srv, 'README.txt'), 'utf8'));
  assert.is(sha(await readFile(join(replica, 'src/blob.bin'))), sha(await readFile(join(srv, 'src/blob.bin'))));
  assert.is((await lstat(join(replica, 'bin/hello.sh'))).mode & 0o111, 0o111, 'bin/hello.sh stays executable');
  assert.is((await lstat(join(replica, 'run.sh'))).mode & 0o777, 0o755);
  assert.is((await lstat(join(replica, 'private.txt'))).mode & 0o777, 0o600);
  assert.is((await lstat(join(replica, 'README.txt'))).mode & 0o111, 0, 'README.txt is not executable');
  assert.is(Math.trunc((await lstat(join(replica, 'old.txt'))).mtimeMs), Date.parse('2001-02-03T04:05:06.789Z'), 'mtime kept to the millisecond');
  assert.is(Math.trunc((await lstat(join(srv, 'precise.txt'))).mtimeMs), PRECISE_MS);
  assert.is(Math.trunc((await lstat(join(replica, 'precise.txt'))).mtimeMs), PRECISE_MS, 'mtime kept to the millisecond (not 1 ms early)');
  assert.ok((await lstat(join(replica, 'empty'))).isDirectory(), 'empty dir replicated');
  assert.equal(await readdir(join(replica, 'empty')), []);
  assert.equal(await readdir(join(replica, 'deep/a/b/c')), [], 'nested empty dir replicated');
  for (const [name, target] of [['HISTORY', 'docs/notes/history.md'], ['dangling', 'no/such/file'], ['abs-file', join(outside, 'secret.txt')], ['abs-dir', outside], ['rel-dir', 'docs'], ['deep/escape', '../../outside']]) {
    const st = await lstat(join(replica, name));
    assert.ok(st.isSymbolicLink(), `${name} is a symlink in the replica`);
    assert.is(await readlink(join(replica, name)), target, `${name} keeps its target`);
  }
  // Nothing from outside the tree travelled, and the outside was not touched.
  const secretHash = sha('SECRET OUTSIDE THE TREE\n');
  assert.not.ok(Object.values(got).some((e) => e.sha256 === secretHash), 'the content behind an absolute symlink was not copied');
  assert.equal(await readdir(outside), ['secret.txt']);
  assert.is(await readFile(join(outside, 'secret.txt'), 'utf8'), 'SECRET OUTSIDE THE TREE\n');
  assert.equal(await findTemps(replica), [], 'no temp files left');
});

T('a FIFO on the server is skipped and reported; server and clone carry on', async () => {
  const { tmp, srv, server } = await served(async (srv) => {
    await run('mkfifo', [join(srv, 'pipe')]);
    await run('mkfifo', [join(srv, 'docs', 'pipe2')]);
  });
  const replica = join(tmp, 'replica');
  const cloned = await cloneOk(server, replica);
  // The clone says what it did not get, as JSON events and a warning line.
  const skippedEvents = jsonLines(cloned.stdout).filter((e) => e.event === 'skipped').map((e) => e.path).sort();
  assert.equal(skippedEvents, ['docs/pipe2', 'pipe']);
  assert.match(cloned.stderr, /not replicated: pipe \(named pipe/);
  assert.not.ok(existsSync(join(replica, 'pipe')), 'the FIFO is not replicated');
  assert.not.ok(existsSync(join(replica, 'docs', 'pipe2')), 'the nested FIFO is not replicated');
  assertSame(filterTree(await snapshotTree(srv), (_p, e) => e.type !== 'other'), await snapshotTree(replica), 'after clone');
  await waitFor(() => /pipe/.test(server.output().stderr) || /pipe/.test(server.output().stdout), 3_000, 'the server to report the skipped FIFO');

  // One made while the server runs: skipped too, and the files beside it still arrive.
  await run('mkfifo', [join(srv, 'live.fifo')]);
  await writeFile(join(srv, 'after-fifo.txt'), 'still flowing\n');
  await pullUntilSame(srv, replica, { keep: (_p, e) => e.type !== 'other' });
  assert.ok(existsSync(join(replica, 'after-fifo.txt')));
  assert.not.ok(existsSync(join(replica, 'live.fifo')));
  await waitFor(() => /live\.fifo/.test(server.output().stderr + server.output().stdout), 3_000, 'the server to report the FIFO made while running');
  assert.is(server.proc.exitCode, null, 'the server is still running');
  assert.is(server.proc.signalCode, null, 'the server is still running');
  const r = await imz(['pull', '-C', replica]);
  assert.is(r.code, 0, `a later pull works: ${r.stderr}`);
});

// ---------- pull of direct writes ----------

T('direct writes on the server reach the replica by pull (create, modify, delete, rename, chmod, mkdir/rmdir, symlinks, type changes)', async () => {
  const { tmp, srv, server } = await served(async (srv) => {
    await mkdir(join(srv, 'olddir'));
    await writeFile(join(srv, 'olddir', 'x.txt'), 'x\n');
    await symlink('README.txt', join(srv, 'link-to-file'));
  });
  const replica = join(tmp, 'replica');
  await cloneOk(server, replica);
  assertSame(await snapshotTree(srv), await snapshotTree(replica), 'after clone');

  // Phase A.
  await writeFile(join(srv, 'new.txt'), 'brand new\n');
  await appendFile(join(srv, 'README.txt'), 'one more line\n');
  const math = await readFile(join(srv, 'src/lib/math.js'), 'utf8');
  const mathSameSize = math.replace(/./, (c) => (c === 'X' ? 'Y' : 'X'));
  assert.is(mathSameSize.length, math.length);
  await writeFile(join(srv, 'src/lib/math.js'), mathSameSize); // same size, new content
  await unlink(join(srv, 'src/blob.bin'));
  await rename(join(srv, 'src/main.js'), join(srv, 'src/entry.js'));
  await chmod(join(srv, 'docs/kml.txt'), 0o755);
  await mkdir(join(srv, 'made', 'inner'), { recursive: true });
  await rmdir(join(srv, 'empty'));
  await symlink('README.txt', join(srv, 'link-new'));
  await unlink(join(srv, 'HISTORY'));
  await symlink('docs/kml.txt', join(srv, 'HISTORY')); // retarget
  await unlink(join(srv, 'docs/notes/history.md'));
  await mkdir(join(srv, 'docs/notes/history.md'));
  await writeFile(join(srv, 'docs/notes/history.md/part1.txt'), 'file became a dir\n');
  await rm(join(srv, 'bin'), { recursive: true });
  await writeFile(join(srv, 'bin'), 'dir became a file\n');
  await pullUntilSame(srv, replica);

  assert.is(await readFile(join(replica, 'new.txt'), 'utf8'), 'brand new\n');
  assert.match(await readFile(join(replica, 'README.txt'), 'utf8'), /one more line\n$/);
  assert.is(await readFile(join(replica, 'src/lib/math.js'), 'utf8'), mathSameSize);
  assert.not.ok(existsSync(join(replica, 'src/blob.bin')));
  assert.not.ok(existsSync(join(replica, 'src/main.js')));
  assert.ok(existsSync(join(replica, 'src/entry.js')));
  assert.is((await lstat(join(replica, 'docs/kml.txt'))).mode & 0o777, 0o755);
  assert.ok((await lstat(join(replica, 'made/inner'))).isDirectory());
  assert.not.ok(existsSync(join(replica, 'empty')));
  assert.is(await readlink(join(replica, 'link-new')), 'README.txt');
  assert.is(await readlink(join(replica, 'HISTORY')), 'docs/kml.txt');
  assert.ok((await lstat(join(replica, 'docs/notes/history.md'))).isDirectory());
  assert.ok((await lstat(join(replica, 'bin'))).isFile());
  assert.equal(await findTemps(replica), []);

  // Phase B: moves across directories, symlink→file, dir removed with its contents, a directory renamed, a burst of writes.
  await rename(join(srv, 'new.txt'), join(srv, 'made/inner/new.txt'));
  await unlink(join(srv, 'link-to-file'));
  await writeFile(join(srv, 'link-to-file'), 'symlink became a file\n');
  await rm(join(srv, 'docs/notes'), { recursive: true });
  await rename(join(srv, 'src/lib'), join(srv, 'src/library'));
  await rename(join(srv, 'olddir'), join(srv, 'newdir'));
  for (let i = 0; i < 20; i++) await writeFile(join(srv, 'burst.txt'), `version ${i}\n`.repeat(i + 1));
  await pullUntilSame(srv, replica);

  assert.is(await readFile(join(replica, 'made/inner/new.txt'), 'utf8'), 'brand new\n');
  assert.not.ok(existsSync(join(replica, 'new.txt')));
  assert.ok((await lstat(join(replica, 'link-to-file'))).isFile());
  assert.not.ok(existsSync(join(replica, 'docs/notes')));
  assert.not.ok(existsSync(join(replica, 'src/lib')));
  assert.is(await readFile(join(replica, 'src/library/math.js'), 'utf8'), mathSameSize);
  assert.is(await readFile(join(replica, 'newdir/x.txt'), 'utf8'), 'x\n');
  assert.is(await readFile(join(replica, 'burst.txt'), 'utf8'), 'version 19\n'.repeat(20));
  assert.equal(await findTemps(replica), []);
});

T('SIGTERM right after the listening line stops the server cleanly (exit 0, a stopped event)', async () => {
  // A supervisor may stop the server as soon as it says where it listens.
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  const outcomes: string[] = [];
  for (let i = 0; i < 5; i++) {
    const s = await startServer(srv);
    const st = await s.stop('SIGTERM');
    outcomes.push(`code ${st.code} signal ${st.signal}${s.output().stdout.includes('"stopped"') ? ' stopped' : ''}`);
  }
  assert.equal(outcomes, Array(5).fill('code 0 signal null stopped'), 'every start/stop was clean');
});

T('a server restart with changes made while it was down (replica re-pointed to the new port through .imz/config)', async () => {
  // A fresh --port 0 is the reliable choice: getting the old port back is a race
  // with every other process on the machine. The replica keeps its address in
  // .imz/config "remote", so the test edits that; the server identity must not change.
  const { tmp, srv, server } = await served();
  const replica = join(tmp, 'replica');
  await cloneOk(server, replica);
  const stopped = await server.stop('SIGTERM');
  assert.is(stopped.code, 0, `SIGTERM stops the server cleanly (exit ${stopped.code}, signal ${stopped.signal})`);
  assert.ok(server.output().stdout.split('\n').some((l) => l.includes('"stopped"')), 'the server says it stopped');

  await writeFile(join(srv, 'while-down.txt'), 'written while the server was down\n');
  await appendFile(join(srv, 'docs/kml.txt'), 'changed while down\n');
  await unlink(join(srv, 'src/main.js'));
  await chmod(join(srv, 'README.txt'), 0o700);
  await mkdir(join(srv, 'down-dir'));
  await unlink(join(srv, 'HISTORY'));
  await writeFile(join(srv, 'HISTORY'), 'symlink became a file while down\n');

  const again = await startServer(srv);
  assert.is(again.serverId, server.serverId, 'the restarted server keeps its identity');
  await setRemote(replica, again.address);
  const results = await pullUntilSame(srv, replica);
  const pulled = results.flatMap((r) => jsonLines(r.stdout)).filter((e) => e.event === 'pulled');
  const records = pulled.reduce((n, e) => n + Number(e.records), 0);
  assert.ok(records >= 6, `the start-up scan journalled the changes (${records} records)`);
  assert.ok(records < 15, `only the changes are replayed, not the whole tree again (${records} records)`);
  assert.is(await readFile(join(replica, 'while-down.txt'), 'utf8'), 'written while the server was down\n');
  assert.not.ok(existsSync(join(replica, 'src/main.js')));
  assert.is((await lstat(join(replica, 'README.txt'))).mode & 0o777, 0o700);
  assert.ok((await lstat(join(replica, 'HISTORY'))).isFile());
  const head = await readJson(join(replica, '.imz', 'HEAD'));
  assert.is(head.serverId, server.serverId);
});

// ---------- interrupted clone ----------

T('an interrupted clone (SIGKILL, twice) re-run with the same command ends with an exact replica and no temp files', async () => {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await mkdir(srv);
  // 40 MiB of incompressible data, written in chunks, and 2000 small files.
  const chunk = randomBytes(1 << 20);
  const big = await (await import('node:fs/promises')).open(join(srv, 'big.bin'), 'w');
  for (let i = 0; i < 40; i++) {
    chunk[0] = i;
    await big.write(chunk);
  }
  await big.close();
  for (let d = 0; d < 20; d++) {
    await mkdir(join(srv, 'many', `d${d}`), { recursive: true });
    await Promise.all(Array.from({ length: 100 }, (_, i) => writeFile(join(srv, 'many', `d${d}`, `f${i}.txt`), `file ${d}/${i}\n`.repeat(1 + (i % 7)))));
  }
  const server = await startServer(srv, [], { timeoutMs: 20_000 });
  const replica = join(tmp, 'replica');

  const kills: string[] = [];
  for (const delay of [150, 700]) {
    const { proc, done } = await spawnImz(['clone', server.address, replica, '--json']);
    await waitFor(() => existsSync(join(replica, '.imz')) || proc.exitCode !== null, 10_000, '.imz to appear', 10);
    await sleep(delay);
    proc.kill('SIGKILL');
    const r = await done;
    kills.push(`${delay} ms: code ${r.code} signal ${r.signal}`);
    if (delay === 150) assert.is(r.signal, 'SIGKILL', `the first clone was killed mid-way (it took longer than ${delay} ms), got code ${r.code}\n${r.stderr}`);
    if (r.signal !== 'SIGKILL') break;
  }

  const r = await imz(['clone', server.address, replica, '--json'], { timeoutMs: 30_000 });
  assert.is(r.code, 0, `the re-run clone finished (after ${kills.join(', ')})\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr}`);
  jsonLines(r.stdout);
  assertSame(await snapshotTree(srv), await snapshotTree(replica), 'after the re-run');
  assert.equal(await findTemps(replica), [], 'no .imz-tmp- files anywhere in the replica');
  assert.equal(await findTemps(srv), [], 'no .imz-tmp- files on the server');
  const head = await readJson(join(replica, '.imz', 'HEAD'));
  assert.not.ok(head.cloning, 'HEAD no longer says the clone is unfinished');
  const p = await imz(['pull', '-C', replica]);
  assert.is(p.code, 0, p.stderr);
  assert.match(p.stdout, /up to date/);
  // The finished replica is a replica: cloning into it again is refused.
  const again = await imz(['clone', server.address, replica, '--json']);
  assert.is(again.code, 1);
  assert.is(errorEvent(again.stdout).code, 'IMZ_NOT_EMPTY');
});

// ---------- conflicts ----------

T('pull over a locally modified file keeps the local version, exits 3, keeps the server version in .imz/conflicts/blobs', async () => {
  const { tmp, srv, server } = await served();
  const replica = join(tmp, 'replica');
  await cloneOk(server, replica);

  const local = 'my local edit, not pushed\n';
  const remote = 'the server changed it too\n';
  await writeFile(join(replica, 'README.txt'), local);
  await writeFile(join(srv, 'README.txt'), remote);
  await writeFile(join(srv, 'unrelated.txt'), 'arrives anyway\n');

  let r: RunResult | undefined;
  await waitFor(async () => {
    r = await imz(['pull', '-C', replica, '--json']);
    assert.ok(r.code === 0 || r.code === 3, `pull exited ${r.code}: ${r.stderr}`);
    return r.code === 3;
  }, 6_000, 'pull to report the conflict (exit 3)');
  const evs = jsonLines(r!.stdout);
  assert.ok(evs.some((e) => e.event === 'conflict' && e.path === 'README.txt'), `a conflict event for README.txt:\n${r!.stdout}`);
  assert.match(r!.stderr, /README\.txt/, 'the conflict is reported on stderr');

  assert.is(await readFile(join(replica, 'README.txt'), 'utf8'), local, 'the local version is kept');
  const blob = join(replica, '.imz', 'conflicts', 'blobs', sha(remote));
  assert.ok(existsSync(blob), `the server version is kept at .imz/conflicts/blobs/${sha(remote)}`);
  assert.is(await readFile(blob, 'utf8'), remote);
  const records = (await readdir(join(replica, '.imz', 'conflicts'))).filter((n) => n.endsWith('.json'));
  const recs = await Promise.all(records.map((n) => readJson(join(replica, '.imz', 'conflicts', n))));
  const rec = recs.find((c) => c.path === 'README.txt');
  assert.ok(rec, `a conflict record for README.txt in .imz/conflicts/ (found ${JSON.stringify(recs)})`);
  assert.is(rec!.class, 'update/update');
  await waitFor(() => existsSync(join(replica, 'unrelated.txt')) || imz(['pull', '-C', replica]).then(() => false), 5_000, 'the unrelated change to arrive');
  assert.is(await readFile(join(replica, 'unrelated.txt'), 'utf8'), 'arrives anyway\n');

  // Pulling again does not overwrite it and still says a conflict remains.
  const again = await imz(['pull', '-C', replica]);
  assert.is(again.code, 3, `the conflict is still outstanding: ${again.stderr}`);
  assert.is(await readFile(join(replica, 'README.txt'), 'utf8'), local);
});

// ---------- refusals and failures ----------

T('clone into a non-empty directory is refused (exit 1, IMZ_NOT_EMPTY) and the directory is untouched', async () => {
  const { tmp, server } = await served();
  const dest = join(tmp, 'busy');
  await mkdir(join(dest, 'sub'), { recursive: true });
  await writeFile(join(dest, 'keep.txt'), 'mine\n');
  await writeFile(join(dest, 'sub', 'README.txt'), 'also mine\n');
  const before = await snapshotTree(dest);
  const r = await imz(['clone', server.address, dest, '--json']);
  assert.is(r.code, 1, `exit 1, got ${r.code}\n${r.stderr}`);
  assert.is(errorEvent(r.stdout).code, 'IMZ_NOT_EMPTY');
  assertOneErrorLine(r.stderr, 'clone into a non-empty dir');
  assert.match(r.stderr, /^imz: cannot /);
  assertSame(before, await snapshotTree(dest), 'the directory', ['before', 'after']);
  assert.equal((await readdir(dest)).sort(), ['keep.txt', 'sub'], 'no .imz was created');

  // A directory holding only a hidden file is not empty either.
  const hidden = join(tmp, 'hidden');
  await mkdir(hidden);
  await writeFile(join(hidden, '.keep'), '');
  const h = await imz(['clone', server.address, hidden]);
  assert.is(h.code, 1);
  assert.equal(await readdir(hidden), ['.keep']);
});

T('pull with the server down exits 4 and changes nothing', async () => {
  const { tmp, srv, server } = await served();
  const replica = join(tmp, 'replica');
  await cloneOk(server, replica);
  await writeFile(join(srv, 'never-seen.txt'), 'the server dies before anyone pulls this\n');
  await sleep(300);
  assert.is((await server.stop()).code, 0);
  const tree = await snapshotTree(replica);
  const head = await readFile(join(replica, '.imz', 'HEAD'), 'utf8');
  const stateFiles = (await readdir(join(replica, '.imz'))).sort();

  const r = await imz(['pull', '-C', replica, '--json']);
  assert.is(r.code, 4, `exit 4, got ${r.code}\n${r.stderr}`);
  assert.is(errorEvent(r.stdout).code, 'IMZ_UNREACHABLE');
  assertOneErrorLine(r.stderr, 'pull with the server down');
  const plain = await imz(['pull', '-C', replica]);
  assert.is(plain.code, 4);
  assert.is(plain.stdout, '', 'nothing on stdout without --json');
  assertOneErrorLine(plain.stderr, 'pull with the server down');

  assertSame(tree, await snapshotTree(replica), 'the replica', ['before', 'after']);
  assert.is(await readFile(join(replica, '.imz', 'HEAD'), 'utf8'), head, 'HEAD unchanged');
  assert.equal((await readdir(join(replica, '.imz'))).sort(), stateFiles, 'no lock or other state left behind');
  assert.not.ok(existsSync(join(replica, 'never-seen.txt')));
});

T('a no-op pull exits 0 and says it is up to date', async () => {
  const { tmp, server } = await served();
  const replica = join(tmp, 'replica');
  await cloneOk(server, replica);
  const tree = await snapshotTree(replica);
  const r = await imz(['pull', '-C', replica]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /up to date/);
  const j = await imz(['pull', '--json'], { cwd: join(replica, 'docs') }); // found from a subdirectory, like git
  assert.is(j.code, 0, j.stderr);
  const ev = jsonLines(j.stdout).find((e) => e.event === 'pulled');
  assert.ok(ev, j.stdout);
  assert.is(ev!.changed, 0);
  assertSame(tree, await snapshotTree(replica), 'the replica', ['before', 'after']);
});

T('pull --resync on an up-to-date replica of the same server changes nothing, twice', async () => {
  const { tmp, server } = await served(async (srv) => {
    // Files with the kernel's own nanosecond mtimes, as most files have.
    for (let i = 0; i < 5; i++) await writeFile(join(srv, `fresh-${i}.txt`), `written now ${i}\n`);
    await writeFile(join(srv, 'precise.txt'), 'mtime on a millisecond boundary\n');
    await utimes(join(srv, 'precise.txt'), (PRECISE_MS + 0.5) / 1000, (PRECISE_MS + 0.5) / 1000);
  });
  const replica = join(tmp, 'replica');
  await cloneOk(server, replica);
  const tree = await snapshotTree(replica);
  for (let i = 0; i < 2; i++) {
    const r = await imz(['pull', '-C', replica, '--resync', '--json']);
    assert.is(r.code, 0, r.stderr);
    const ev = jsonLines(r.stdout).find((e) => e.event === 'pulled');
    assert.ok(ev, r.stdout);
    const touched = jsonLines(r.stdout).filter((e) => e.event === 'change').map((e) => e.path);
    assert.is(ev!.changed, 0, `resync #${i + 1} of an up-to-date replica changed ${ev!.changed} entries (${touched.join(', ')})`);
  }
  assertSame(tree, await snapshotTree(replica), 'the replica', ['before', 'after']);
});

T('a replica pointed at a different server is refused (IMZ_SERVER_IDENTITY); pull --resync then works and keeps local changes', async () => {
  const { tmp, server } = await served();
  const srv2 = join(tmp, 'srv2');
  await copyFixture('sample', srv2);
  await writeFile(join(srv2, 'only-on-2.txt'), 'server two has this\n');
  const server2 = await startServer(srv2);
  assert.is.not(server2.serverId, server.serverId, 'two servers have two identities');

  const replica = join(tmp, 'replica');
  await cloneOk(server, replica);
  await writeFile(join(replica, 'docs/kml.txt'), 'edited locally before the switch\n');
  await writeFile(join(replica, 'local-only.txt'), 'never on any server\n');
  await setRemote(replica, server2.address);
  const tree = await snapshotTree(replica);
  const head = await readFile(join(replica, '.imz', 'HEAD'), 'utf8');

  const r = await imz(['pull', '-C', replica, '--json']);
  assert.is(r.code, 1, `exit 1, got ${r.code}\n${r.stderr}`);
  assert.is(errorEvent(r.stdout).code, 'IMZ_SERVER_IDENTITY');
  assertOneErrorLine(r.stderr, 'pull from another server');
  assert.match(r.stderr, /--resync/, 'the message says how to resynchronise');
  assertSame(tree, await snapshotTree(replica), 'the refused replica', ['before', 'after']);
  assert.is(await readFile(join(replica, '.imz', 'HEAD'), 'utf8'), head);

  const rs = await imz(['pull', '-C', replica, '--resync', '--json']);
  assert.ok(rs.code === 0 || rs.code === 3, `resync exits 0 (or 3 for the kept local edit), got ${rs.code}\n${rs.stderr}`);
  jsonLines(rs.stdout);
  assert.is(await readFile(join(replica, 'docs/kml.txt'), 'utf8'), 'edited locally before the switch\n', 'the local modification is kept');
  assert.is(await readFile(join(replica, 'local-only.txt'), 'utf8'), 'never on any server\n', 'the local file is kept');
  assert.is(await readFile(join(replica, 'only-on-2.txt'), 'utf8'), 'server two has this\n', 'what server two has arrived');
  assert.is((await readJson(join(replica, '.imz', 'HEAD'))).serverId, server2.serverId, 'HEAD follows server two');

  // From now on it follows server two without --resync.
  await writeFile(join(srv2, 'later-on-2.txt'), 'after the switch\n');
  await waitFor(async () => {
    const p = await imz(['pull', '-C', replica]);
    assert.ok(p.code === 0 || p.code === 3, `pull after resync exited ${p.code}: ${p.stderr}`);
    return existsSync(join(replica, 'later-on-2.txt'));
  }, 6_000, 'later-on-2.txt to arrive from server two');
  assert.is(await readFile(join(replica, 'docs/kml.txt'), 'utf8'), 'edited locally before the switch\n');
});

// ---------- .imzignore ----------

T('.imzignore (*.tmp, build/) excludes matching paths on the server side, at clone and at pull', async () => {
  const ignored = (p: string, e: SnapEntry) => {
    const segs = p.split('/');
    if (segs[segs.length - 1].endsWith('.tmp')) return true;
    return segs.some((s, i) => s === 'build' && (i < segs.length - 1 || e.type === 'dir'));
  };
  const { tmp, srv, server } = await served(async (srv) => {
    await writeFile(join(srv, 'scratch.tmp'), 'x');
    await mkdir(join(srv, 'src', 'deep'), { recursive: true });
    await writeFile(join(srv, 'src', 'deep', 'x.tmp'), 'x');
    await writeFile(join(srv, 'src', 'deep', 'kept.txt'), 'kept');
    await mkdir(join(srv, 'build', 'sub'), { recursive: true });
    await writeFile(join(srv, 'build', 'out.o'), 'o');
    await writeFile(join(srv, 'build', 'sub', 'y.txt'), 'y');
    await mkdir(join(srv, 'src', 'build'));
    await writeFile(join(srv, 'src', 'build', 'z.o'), 'z');
    await writeFile(join(srv, 'building.txt'), 'not ignored: only a directory named build is');
  });
  const replica = join(tmp, 'replica');
  await cloneOk(server, replica);
  const got = await snapshotTree(replica);
  for (const p of ['scratch.tmp', 'src/deep/x.tmp', 'build', 'build/out.o', 'src/build', 'src/build/z.o']) assert.not.ok(p in got, `${p} is ignored`);
  for (const p of ['.imzignore', 'src/deep/kept.txt', 'building.txt']) assert.ok(p in got, `${p} is replicated`);
  assertSame(filterTree(await snapshotTree(srv), (p, e) => !ignored(p, e)), got, 'after clone');

  await writeFile(join(srv, 'late.tmp'), 'late');
  await writeFile(join(srv, 'build', 'late.o'), 'late');
  await mkdir(join(srv, 'docs', 'build'));
  await writeFile(join(srv, 'docs', 'build', 'gen.html'), 'late');
  await writeFile(join(srv, 'visible.txt'), 'late but visible');
  await pullUntilSame(srv, replica, { keep: (p, e) => !ignored(p, e) });
  assert.ok(existsSync(join(replica, 'visible.txt')));
  await sleep(300);
  const p = await imz(['pull', '-C', replica]);
  assert.is(p.code, 0, p.stderr);
  for (const x of ['late.tmp', 'build', 'docs/build']) assert.not.ok(existsSync(join(replica, x)), `${x} is ignored at pull`);
});

// ---------- output conventions ----------

T('--json output: every stdout line of serve, clone, pull (and their errors) is a JSON object with an event', async () => {
  const { tmp, srv, server } = await served();
  const replica = join(tmp, 'replica');
  const outs: [string, string][] = [];
  const c = await imz(['clone', server.address, replica, '--json']);
  assert.is(c.code, 0, c.stderr);
  outs.push(['clone', c.stdout]);
  await writeFile(join(srv, 'more.txt'), 'more\n');
  const pulls = await pullUntilSame(srv, replica);
  for (const p of pulls) outs.push(['pull', p.stdout]);
  outs.push(['pull (no-op)', (await imz(['pull', '-C', replica, '--json'])).stdout]);
  outs.push(['clone (refused)', (await imz(['clone', server.address, replica, '--json'])).stdout]);
  outs.push(['usage error', (await imz(['pull', '--json', '--no-such-option'])).stdout]);
  await server.stop();
  outs.push(['serve', server.output().stdout]);
  outs.push(['pull (unreachable)', (await imz(['pull', '-C', replica, '--json'])).stdout]);
  for (const [what, out] of outs) {
    assert.ok(out.length > 0, `${what} printed JSON lines`);
    assert.ok(out.endsWith('\n'), `${what}: the last line is complete`);
    for (const e of jsonLines(out)) {
      assert.type(e, 'object', `${what}: ${JSON.stringify(e)}`);
      assert.type(e.event, 'string', `${what}: each line has an event: ${JSON.stringify(e)}`);
    }
  }
  const changes = jsonLines(c.stdout).filter((e) => e.event === 'change').map((e) => e.path);
  assert.ok(changes.includes('src/blob.bin'), 'clone --json lists the paths it wrote');
});

T('bad usage (unknown command, missing arguments, unknown option) exits 2 with one line on stderr', async () => {
  const tmp = await makeTmp();
  const cases: string[][] = [
    ['frobnicate'],
    [],
    ['clone'],
    ['clone', '127.0.0.1:1'],
    ['serve'],
    ['pull', '--no-such-option'],
    ['clone', 'no-port-here', join(tmp, 'x')],
  ];
  for (const args of cases) {
    const r = await imz(args, { cwd: tmp });
    assert.is(r.code, 2, `imz ${args.join(' ')}: exit 2, got ${r.code}\nstderr: ${r.stderr}`);
    assertOneErrorLine(r.stderr, `imz ${args.join(' ')}`);
    assert.is(r.stdout, '', `imz ${args.join(' ')}: nothing on stdout`);
  }
  assert.not.ok(existsSync(join(tmp, 'x')), 'a refused clone created nothing');
});

T('a usage error message is clean: the help hint is not repeated', async () => {
  const r = await imz([]);
  assert.is(r.code, 2);
  const hints = r.stderr.match(/see imz --help/g) ?? [];
  assert.is(hints.length, 1, `one "see imz --help" hint, got: ${r.stderr}`);
});

T.run();
