// Integration tests of `imz resolve` with real servers and replicas (the
// bundled CLI, dist/imz.js: run `npm run build` first). Conflicts are made
// the way users make them: the same file edited in a replica and on the
// server, then `imz pull` (exit 3), or `imz push` against a newer server.
// Every test checks file contents, the kept versions and what the next
// push/pull does, not only exit codes.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type RunResult, type ServerHandle,
  cleanupAll, copyFixture, diffTrees, imz, jsonLines, listedConflicts, makeTmp, runReport, servedClone, snapshotTree, startServer, waitFor,
} from '../helpers.ts';

const T = suite('resolve');
T.after.each(cleanupAll);
T.after(cleanupAll);

const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

interface World {
  tmp: string;
  srv: string;
  replica: string;
  server: ServerHandle;
}

/** A server on a copy of fixtures/sample and a clone of it. */
async function world(): Promise<World> {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  const server = await startServer(srv);
  const replica = join(tmp, 'replica');
  await cloneInto(server, replica);
  return { tmp, srv, replica, server };
}

async function cloneInto(server: ServerHandle, dest: string): Promise<void> {
  const r = await imz(['clone', server.address, dest, '--json']);
  assert.is(r.code, 0, `clone exited ${r.code}\n${r.stderr}`);
}

/**
 * Pulls until every path in paths is a recorded conflict (the server
 * journals direct writes through a watcher, so it may take a moment).
 * Each pull must exit 0 or 3; the last one must exit 3.
 */
async function pullUntilConflicts(replica: string, paths: string[]): Promise<RunResult> {
  let last: RunResult | undefined;
  await waitFor(async () => {
    last = await imz(['pull', '-C', replica, '--json']);
    assert.ok(last.code === 0 || last.code === 3, `pull exited ${last.code}\n${last.stderr}`);
    const have = new Set((await listedConflicts(replica)).map((c) => c.path));
    return paths.every((p) => have.has(p as string));
  }, 8_000, `conflicts on ${paths.join(', ')}`, 150);
  assert.is(last!.code, 3, 'pull exits 3 while conflicts remain');
  return last!;
}


/** Pulls until the server's journal reached the replica (exit 0 each time) and the trees are the same. */
async function pullUntilSame(srv: string, replica: string, timeoutMs = 8_000): Promise<void> {
  await waitFor(async () => {
    const r = await imz(['pull', '-C', replica]);
    assert.is(r.code, 0, `pull exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    return diffTrees(await snapshotTree(srv), await snapshotTree(replica)).length === 0;
  }, timeoutMs, 'the replica to equal the server', 150).catch(async (err) => {
    const d = diffTrees(await snapshotTree(srv), await snapshotTree(replica));
    throw new Error(`${(err as Error).message}\n  ${d.join('\n  ')}`);
  });
}

/** The content of a kept blob (.imz/conflicts/blobs/<sha256>), checked against its name. */
async function blob(replica: string, hex: string): Promise<string> {
  const p = join(replica, '.imz', 'conflicts', 'blobs', hex);
  assert.ok(existsSync(p), `.imz/conflicts/blobs/${hex} exists`);
  const b = await readFile(p);
  assert.is(sha(b), hex, 'a blob is named by its SHA-256');
  return b.toString('utf8');
}

async function statusClean(replica: string): Promise<void> {
  const s = await imz(['status', '-C', replica, '--json']);
  assert.is(s.code, 0, `status exited ${s.code}\n${s.stderr}`);
  const changes = jsonLines(s.stdout).filter((e) => e.event === 'change');
  assert.is(changes.length, 0, `no local changes after the resolve and sync, got ${JSON.stringify(changes)}`);
}

/** Asserts nothing but one line, starting "imz: ", on stderr. */
function oneErrorLine(stderr: string, what: string): string {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  assert.is(lines.length, 1, `${what}: one line on stderr, got:\n${stderr}`);
  assert.match(lines[0]!, /^imz: /);
  return lines[0]!;
}

/** Waits until the server has journalled n direct writes the replica has not replayed (its watcher is asynchronous). */
async function serverJournalled(replica: string, n: number): Promise<void> {
  await waitFor(async () => {
    const s = await imz(['status', '-C', replica, '--json']);
    const ev = jsonLines(s.stdout).find((e) => e.event === 'status');
    return typeof ev?.behind === 'number' && ev.behind >= n;
  }, 8_000, `the server to journal ${n} direct writes`, 100);
}

const LOCAL = 'Kernel Modification Log: every change, in order.\nedited in the replica\n';
const SERVER = 'Kernel Modification Log: every change, in order.\nedited on the server\n';

/** The same text file edited on both sides, pulled into a conflict. */
async function textConflict(): Promise<World> {
  const w = await world();
  await writeFile(join(w.replica, 'docs/kml.txt'), LOCAL);
  await writeFile(join(w.srv, 'docs/kml.txt'), SERVER);
  await pullUntilConflicts(w.replica, ['docs/kml.txt']);
  assert.is(await readFile(join(w.replica, 'docs/kml.txt'), 'utf8'), LOCAL, 'pull left the local edit as it was');
  return w;
}

// ---------- listing and viewing ----------

T('--list (and no arguments) prints a table of the conflicts and exits 3; --json gives one object per conflict', async () => {
  const w = await world();
  await writeFile(join(w.replica, 'docs/kml.txt'), LOCAL);
  await writeFile(join(w.srv, 'docs/kml.txt'), SERVER);
  await writeFile(join(w.replica, 'src/main.js'), 'local main\n');
  await rm(join(w.srv, 'src/main.js'));
  await pullUntilConflicts(w.replica, ['docs/kml.txt', 'src/main.js']);

  for (const args of [['resolve'], ['resolve', '--list']]) {
    const r = await imz([...args, '-C', w.replica]);
    assert.is(r.code, 3, `imz ${args.join(' ')}: exit 3 while conflicts remain, got ${r.code}\n${r.stderr}`);
    const lines = r.stdout.split('\n');
    assert.match(lines[0]!, /^PATH\s+CLASS\s+AT\s+LOCAL\s+SERVER\s+LOCAL COPY$/, 'a header line');
    const kml = lines.find((l) => l.startsWith('docs/kml.txt '));
    const main = lines.find((l) => l.startsWith('src/main.js '));
    assert.ok(kml, `a row for docs/kml.txt in:\n${r.stdout}`);
    assert.ok(main, `a row for src/main.js in:\n${r.stdout}`);
    assert.match(kml!, /update\/update\s+pull\s+base v\d+ /, 'class, where found, the local base version');
    assert.match(kml!, new RegExp(`\\bv\\d+ ${Buffer.byteLength(SERVER)} B `), 'the server version and size');
    assert.match(main!, /update\/remove\s+pull\s+.*\bremoved\b/, 'a server removal shows as removed');
    assert.match(r.stdout, /2 conflicts/);
  }

  const list = await listedConflicts(w.replica);
  assert.equal(list.map((c) => c.path), ['docs/kml.txt', 'src/main.js']);
  const kml = list[0]!;
  assert.is(kml.class, 'update/update');
  assert.is(kml.at, 'pull');
  assert.is((kml.local as { size: number }).size, Buffer.byteLength(LOCAL));
  assert.is((kml.server as { size: number }).size, Buffer.byteLength(SERVER));
  assert.is((kml.server as { hash: string }).hash, sha(SERVER));
  assert.type((kml.server as { version: number }).version, 'number');
  assert.type(kml.base, 'number');
  assert.ok((kml.server as { version: number }).version > (kml.base as number), 'the server version is newer than the local base');
  assert.is(kml.serverContentKept, true);
  assert.is(list[1]!.server, null, 'a removal on the server has no server side');

  const j = await imz(['resolve', '--json', '-C', w.replica]);
  assert.is(j.code, 3);
  for (const e of jsonLines(j.stdout)) assert.is(e.event, 'conflict', 'only conflict objects on stdout');
});

T('no conflicts: resolve and resolve --list exit 0 and say so', async () => {
  const w = await world();
  const r = await imz(['resolve', '-C', w.replica]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /no conflicts/);
  const j = await imz(['resolve', '--list', '--json', '-C', w.replica]);
  assert.is(j.code, 0);
  assert.is(j.stdout, '', 'no conflict objects');
});

T('PATH alone shows both sides and a unified diff (server ---, local +++); binary files get a one-line description', async () => {
  const w = await world();
  await writeFile(join(w.replica, 'docs/kml.txt'), LOCAL);
  await writeFile(join(w.srv, 'docs/kml.txt'), SERVER);
  const binLocal = randomBytes(5000);
  const binServer = randomBytes(7000);
  binLocal[10] = 0;
  binServer[10] = 0;
  await writeFile(join(w.replica, 'src/blob.bin'), binLocal);
  await writeFile(join(w.srv, 'src/blob.bin'), binServer);
  await pullUntilConflicts(w.replica, ['docs/kml.txt', 'src/blob.bin']);

  const r = await imz(['resolve', 'docs/kml.txt', '-C', w.replica]);
  assert.is(r.code, 3, `exit 3: the conflict remains\n${r.stderr}`);
  assert.match(r.stdout, /docs\/kml\.txt: update\/update conflict, found at pull/);
  assert.match(r.stdout, /^--- server\/docs\/kml\.txt/m);
  assert.match(r.stdout, /^\+\+\+ local\/docs\/kml\.txt/m);
  assert.match(r.stdout, /^@@ -1,2 \+1,2 @@$/m);
  assert.match(r.stdout, /^ Kernel Modification Log: every change, in order\.$/m, 'the common line as context');
  assert.match(r.stdout, /^-edited on the server$/m);
  assert.match(r.stdout, /^\+edited in the replica$/m);
  assert.match(r.stdout, /--take local\|server\|both/, 'says how to settle it');

  // The same from a subdirectory, with the path relative to it (as a shell user types it).
  const sub = await imz(['resolve', 'kml.txt', '--json'], { cwd: join(w.replica, 'docs') });
  assert.is(sub.code, 3, sub.stderr);
  const ev = jsonLines(sub.stdout);
  assert.is(ev.length, 1);
  assert.is(ev[0]!.path, 'docs/kml.txt');
  assert.match(String(ev[0]!.diff), /^-edited on the server$/m);

  const b = await imz(['resolve', 'src/blob.bin', '-C', w.replica]);
  assert.is(b.code, 3, b.stderr);
  assert.match(b.stdout, /binary/);
  assert.match(b.stdout, /5000 bytes/, 'the local size');
  assert.match(b.stdout, /7000 bytes/, 'the server size');
  assert.match(b.stdout, new RegExp(sha(binLocal).slice(0, 12)), 'the local hash');
  assert.match(b.stdout, new RegExp(sha(binServer).slice(0, 12)), 'the server hash');
  assert.not.match(b.stdout, /^@@/m, 'no diff of binary content');
});

// ---------- taking a side ----------

T('--take local, then push: the server gets the local version; pull and status are clean afterwards', async () => {
  const w = await textConflict();
  const r = await imz(['resolve', 'docs/kml.txt', '--take', 'local', '-C', w.replica]);
  assert.is(r.code, 0, `exit 0: no conflicts remain\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /kept your version/);
  assert.is(await readFile(join(w.replica, 'docs/kml.txt'), 'utf8'), LOCAL, 'the local version stays in place');
  assert.is((await listedConflicts(w.replica)).length, 0, 'the conflict is cleared');
  assert.is(await readFile(join(w.srv, 'docs/kml.txt'), 'utf8'), SERVER, 'nothing sent yet');

  const p = await imz(['push', '-C', w.replica, '--json']);
  assert.is(p.code, 0, `push after take local: exit 0 without flags\n${p.stdout}\n${p.stderr}`);
  const ops = jsonLines(p.stdout).filter((e) => e.event === 'op');
  assert.equal(ops.map((o) => [o.path, o.status]), [['docs/kml.txt', 'applied']], 'one update, applied (based on the server version)');
  assert.is(await readFile(join(w.srv, 'docs/kml.txt'), 'utf8'), LOCAL, 'the server has the local version');

  await pullUntilSame(w.srv, w.replica);
  await statusClean(w.replica);
  const again = await imz(['push', '-C', w.replica, '--json']);
  assert.is(again.code, 0);
  assert.is(jsonLines(again.stdout).filter((e) => e.event === 'op').length, 0, 'a second push sends nothing');

  // Another replica sees the local version.
  const other = join(w.tmp, 'other');
  await cloneInto(w.server, other);
  assert.is(await readFile(join(other, 'docs/kml.txt'), 'utf8'), LOCAL);
});

T('--take server: the file becomes the server\'s; the local version is kept in .imz/conflicts/blobs; nothing to push', async () => {
  const w = await textConflict();
  const r = await imz(['resolve', 'docs/kml.txt', '--take', 'server', '-C', w.replica, '--json']);
  assert.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const ev = jsonLines(r.stdout);
  const done = ev.find((e) => e.event === 'resolved');
  assert.ok(done, r.stdout);
  assert.equal(done!.kept, [{ from: 'docs/kml.txt', as: 'blob', where: `conflicts/blobs/${sha(LOCAL)}`, hash: sha(LOCAL) }]);
  assert.equal(ev.find((e) => e.event === 'resolve-done'), { event: 'resolve-done', resolved: 1, failed: 0, remaining: 0 });

  assert.is(await readFile(join(w.replica, 'docs/kml.txt'), 'utf8'), SERVER, 'the server version is in place');
  assert.is(await blob(w.replica, sha(LOCAL)), LOCAL, 'the local version is retrievable');
  const log = (await readFile(join(w.replica, '.imz', 'conflicts', 'resolved.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  assert.is(log.length, 1);
  assert.is(log[0].path, 'docs/kml.txt');
  assert.is(log[0].take, 'server');
  assert.is(log[0].kept[0].hash, sha(LOCAL), 'the resolution log lists where the local version went');

  const p = await imz(['push', '-C', w.replica, '--json']);
  assert.is(p.code, 0, p.stderr);
  assert.is(jsonLines(p.stdout).filter((e) => e.event === 'op').length, 0, 'the path is clean: nothing pushed');
  assert.is(await readFile(join(w.srv, 'docs/kml.txt'), 'utf8'), SERVER, 'the server is untouched');
  await pullUntilSame(w.srv, w.replica);
  await statusClean(w.replica);
});

T('--take server fetches the server\'s version when it is not kept in .imz (blob removed)', async () => {
  const w = await textConflict();
  await rm(join(w.replica, '.imz', 'conflicts', 'blobs', sha(SERVER)));
  const r = await imz(['resolve', 'docs/kml.txt', '--take', 'server', '-C', w.replica]);
  assert.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /fetched/);
  assert.is(await readFile(join(w.replica, 'docs/kml.txt'), 'utf8'), SERVER);
  assert.is(await blob(w.replica, sha(LOCAL)), LOCAL);
  await pullUntilSame(w.srv, w.replica);
  await statusClean(w.replica);

  // With the blob gone and the server down, the resolve fails (exit 4) and changes nothing.
  const w2 = await textConflict();
  await rm(join(w2.replica, '.imz', 'conflicts', 'blobs', sha(SERVER)));
  await w2.server.stop();
  const down = await imz(['resolve', 'docs/kml.txt', '--take', 'server', '-C', w2.replica]);
  assert.is(down.code, 4, `exit 4 with the server down, got ${down.code}\n${down.stderr}`);
  oneErrorLine(down.stderr, 'resolve with the server down');
  assert.is(await readFile(join(w2.replica, 'docs/kml.txt'), 'utf8'), LOCAL, 'the local version is untouched');
  assert.is((await listedConflicts(w2.replica)).length, 1, 'the conflict is still recorded');
});

T('--take both: the server\'s version at the path, the local one under .imz-keep-, and push sends the keep copy', async () => {
  const w = await textConflict();
  const before = await listedConflicts(w.replica);
  const serverVersion = (before[0]!.server as { version: number }).version;
  const cfg = JSON.parse(await readFile(join(w.replica, '.imz', 'config'), 'utf8'));
  const keep = `docs/kml.imz-keep-${String(cfg.replicaId).slice(0, 8)}-${serverVersion}.txt`;

  const r = await imz(['resolve', 'docs/kml.txt', '--take', 'both', '-C', w.replica]);
  assert.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.ok(r.stdout.includes(keep), `names the keep copy ${keep}: ${r.stdout}`);
  assert.is(await readFile(join(w.replica, 'docs/kml.txt'), 'utf8'), SERVER);
  assert.is(await readFile(join(w.replica, keep), 'utf8'), LOCAL);

  const p = await imz(['push', '-C', w.replica, '--json']);
  assert.is(p.code, 0, `${p.stdout}\n${p.stderr}`);
  assert.equal(jsonLines(p.stdout).filter((e) => e.event === 'op').map((o) => [o.path, o.status]), [[keep, 'applied']], 'only the keep copy is sent');
  assert.is(await readFile(join(w.srv, 'docs/kml.txt'), 'utf8'), SERVER, 'the server keeps its version at the path');
  assert.is(await readFile(join(w.srv, keep), 'utf8'), LOCAL, 'and has the local one beside it');
  await pullUntilSame(w.srv, w.replica);
  await statusClean(w.replica);
});

T('--all --take server settles update/update, update/remove and remove/update at once; the local versions stay retrievable', async () => {
  const w = await world();
  const mainLocal = 'local rewrite of main\n';
  const mathServer = 'server rewrite of math\n';
  const mathLocalOld = await readFile(join(w.replica, 'src/lib/math.js'), 'utf8');
  await writeFile(join(w.replica, 'docs/kml.txt'), LOCAL);
  await writeFile(join(w.srv, 'docs/kml.txt'), SERVER);
  await writeFile(join(w.replica, 'src/main.js'), mainLocal); // update/remove
  await rm(join(w.srv, 'src/main.js'));
  await unlink(join(w.replica, 'src/lib/math.js')); // remove/update
  await writeFile(join(w.srv, 'src/lib/math.js'), mathServer);
  await writeFile(join(w.replica, 'untouched-local.txt'), 'a new local file, no conflict\n');
  await pullUntilConflicts(w.replica, ['docs/kml.txt', 'src/main.js', 'src/lib/math.js']);
  const classes = Object.fromEntries((await listedConflicts(w.replica)).map((c) => [c.path, c.class]));
  assert.equal(classes, { 'docs/kml.txt': 'update/update', 'src/lib/math.js': 'remove/update', 'src/main.js': 'update/remove' });

  const r = await imz(['resolve', '--all', '--take', 'server', '-C', w.replica]);
  assert.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.is(r.stdout.trim().split('\n').length, 3, `one line per resolution:\n${r.stdout}`);
  assert.is((await listedConflicts(w.replica)).length, 0);

  assert.is(await readFile(join(w.replica, 'docs/kml.txt'), 'utf8'), SERVER);
  assert.not.ok(existsSync(join(w.replica, 'src/main.js')), 'the server removed main.js: so is it here');
  assert.is(await readFile(join(w.replica, 'src/lib/math.js'), 'utf8'), mathServer);
  assert.is(await blob(w.replica, sha(LOCAL)), LOCAL);
  assert.is(await blob(w.replica, sha(mainLocal)), mainLocal);
  assert.ok(mathLocalOld.length > 0);

  // The local file that was not in conflict goes up with the next push; then both sides agree.
  const p = await imz(['push', '-C', w.replica, '--json']);
  assert.is(p.code, 0, `${p.stdout}\n${p.stderr}`);
  assert.equal(jsonLines(p.stdout).filter((e) => e.event === 'op').map((o) => o.path), ['untouched-local.txt']);
  await pullUntilSame(w.srv, w.replica);
  await statusClean(w.replica);
});

T('--take local on update/remove re-creates the file on the server; on remove/update it removes it there', async () => {
  const w = await world();
  await writeFile(join(w.replica, 'src/main.js'), 'main survives here\n');
  await rm(join(w.srv, 'src/main.js'));
  await unlink(join(w.replica, 'src/lib/math.js'));
  await writeFile(join(w.srv, 'src/lib/math.js'), 'server rewrite of math\n');
  await pullUntilConflicts(w.replica, ['src/main.js', 'src/lib/math.js']);

  const r = await imz(['resolve', '--all', '--take', 'local', '-C', w.replica, '--json']);
  assert.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const next = Object.fromEntries(jsonLines(r.stdout).filter((e) => e.event === 'resolved').map((e) => [e.path, e.next]));
  assert.equal(next, { 'src/main.js': 'create', 'src/lib/math.js': 'remove' });

  const p = await imz(['push', '-C', w.replica, '--json']);
  assert.is(p.code, 0, `${p.stdout}\n${p.stderr}`);
  assert.is(await readFile(join(w.srv, 'src/main.js'), 'utf8'), 'main survives here\n', 'main.js is back on the server');
  assert.not.ok(existsSync(join(w.srv, 'src/lib/math.js')), 'math.js is removed on the server');
  await pullUntilSame(w.srv, w.replica);
  await statusClean(w.replica);
});

T('conflicts found at push: manual keeps them for resolve (--take server); server-wins copies come back with --take local', async () => {
  const w = await world();
  // Manual policy: the push conflict is recorded, the file stays as the user left it.
  await writeFile(join(w.replica, 'docs/kml.txt'), LOCAL);
  await writeFile(join(w.srv, 'docs/kml.txt'), SERVER);
  await serverJournalled(w.replica, 1);
  const p1 = await imz(['push', '-C', w.replica, '--json']);
  assert.is(p1.code, 3, `push with a conflict exits 3\n${p1.stdout}\n${p1.stderr}`);
  const c1 = await listedConflicts(w.replica);
  assert.is(c1.length, 1);
  assert.is(c1[0]!.at, 'push');
  const d = await imz(['resolve', 'docs/kml.txt', '-C', w.replica]);
  assert.match(d.stdout, /^-edited on the server$/m, `the diff uses the server content kept at push:\n${d.stdout}`);
  const r1 = await imz(['resolve', 'docs/kml.txt', '--take', 'server', '-C', w.replica]);
  assert.is(r1.code, 0, `${r1.stdout}\n${r1.stderr}`);
  assert.is(await readFile(join(w.replica, 'docs/kml.txt'), 'utf8'), SERVER);
  assert.is(await blob(w.replica, sha(LOCAL)), LOCAL);
  await pullUntilSame(w.srv, w.replica);
  await statusClean(w.replica);

  // server-wins: the local version becomes a conflict copy; --take local puts it back and push sends it.
  const mine = 'main.js as this replica wants it\n';
  await writeFile(join(w.replica, 'src/main.js'), mine);
  await writeFile(join(w.srv, 'src/main.js'), 'main.js as the server has it\n');
  await serverJournalled(w.replica, 1);
  const p2 = await imz(['push', '--policy', 'server-wins', '-C', w.replica, '--json']);
  // (push decides whether a conflict settled by its policy is "remaining": 0 or 3 are both "done" here.)
  assert.ok(p2.code === 0 || p2.code === 3, `${p2.stdout}\n${p2.stderr}`);
  const c2 = await listedConflicts(w.replica);
  assert.is(c2.length, 1);
  const copy = String(c2[0]!.localCopy);
  assert.match(copy, /^src\/main\.imz-conflict-[0-9a-f]{8}-\d+\.js$/);
  assert.is(await readFile(join(w.replica, copy), 'utf8'), mine);
  const l = await imz(['resolve', '--list', '-C', w.replica]);
  assert.ok(l.stdout.includes(copy), `--list shows the local copy:\n${l.stdout}`);

  const r2 = await imz(['resolve', 'src/main.js', '--take', 'local', '-C', w.replica]);
  assert.is(r2.code, 0, `${r2.stdout}\n${r2.stderr}`);
  assert.is(await readFile(join(w.replica, 'src/main.js'), 'utf8'), mine, 'the local version is back at the path');
  assert.not.ok(existsSync(join(w.replica, copy)), 'the copy was moved back');
  assert.is(await blob(w.replica, sha('main.js as the server has it\n')), 'main.js as the server has it\n', 'the server version it replaced is kept');
  const p3 = await imz(['push', '-C', w.replica, '--json']);
  assert.is(p3.code, 0, `${p3.stdout}\n${p3.stderr}`);
  assert.is(await readFile(join(w.srv, 'src/main.js'), 'utf8'), mine, 'the server has the local version');
  await pullUntilSame(w.srv, w.replica);
  await statusClean(w.replica);
});

// ---------- usage and exit codes ----------

T('exit codes: 2 for bad usage, 1 for an unknown PATH, 3 while other conflicts remain', async () => {
  const w = await world();
  await writeFile(join(w.replica, 'docs/kml.txt'), LOCAL);
  await writeFile(join(w.srv, 'docs/kml.txt'), SERVER);
  await writeFile(join(w.replica, 'src/main.js'), 'local main\n');
  await writeFile(join(w.srv, 'src/main.js'), 'server main\n');
  await pullUntilConflicts(w.replica, ['docs/kml.txt', 'src/main.js']);
  const tree = await snapshotTree(w.replica);

  const usage: string[][] = [
    ['resolve', '--take', 'server'],
    ['resolve', '--all'],
    ['resolve', 'docs/kml.txt', '--all', '--take', 'local'],
    ['resolve', '--list', '--take', 'local', 'docs/kml.txt'],
    ['resolve', 'docs/kml.txt', '--take', 'mine'],
    ['resolve', 'docs/kml.txt', '--take'],
  ];
  for (const args of usage) {
    const r = await imz([...args, '-C', w.replica]);
    assert.is(r.code, 2, `imz ${args.join(' ')}: exit 2, got ${r.code}\n${r.stderr}`);
    oneErrorLine(r.stderr, `imz ${args.join(' ')}`);
  }

  const u = await imz(['resolve', 'no/such.txt', '--take', 'local', '-C', w.replica, '--json']);
  assert.is(u.code, 1, `unknown path: exit 1, got ${u.code}\n${u.stderr}`);
  assert.match(oneErrorLine(u.stderr, 'unknown path'), /cannot resolve no\/such\.txt: no conflict recorded for it/);
  assert.is(jsonLines(u.stdout)[0]!.code, 'IMZ_NOT_FOUND');
  const v = await imz(['resolve', 'README.txt', '-C', w.replica]);
  assert.is(v.code, 1, 'viewing a path without a conflict fails too');
  assert.equal(diffTrees(tree, await snapshotTree(w.replica)), [], 'refused commands changed nothing');
  assert.is((await listedConflicts(w.replica)).length, 2);

  const one = await imz(['resolve', 'src/main.js', '--take', 'server', '-C', w.replica]);
  assert.is(one.code, 3, `one of two resolved: exit 3, got ${one.code}\n${one.stderr}`);
  assert.match(one.stdout, /1 conflicts remain/);
  const two = await imz(['resolve', 'docs/kml.txt', '--take', 'server', '-C', w.replica]);
  assert.is(two.code, 0, two.stderr);
  const again = await imz(['resolve', 'docs/kml.txt', '--take', 'server', '-C', w.replica]);
  assert.is(again.code, 1, 'a settled path has no conflict any more');
  const all = await imz(['resolve', '--all', '--take', 'local', '-C', w.replica]);
  assert.is(all.code, 0, '--all with nothing to do exits 0');
});

T('--all keeps going past a conflict it cannot settle: the others are resolved, the failure is reported, the exit code says why', async () => {
  const w = await world();
  await writeFile(join(w.replica, 'docs/kml.txt'), LOCAL);
  await writeFile(join(w.srv, 'docs/kml.txt'), SERVER);
  await writeFile(join(w.replica, 'src/main.js'), 'local main\n');
  await writeFile(join(w.srv, 'src/main.js'), 'server main\n');
  await pullUntilConflicts(w.replica, ['docs/kml.txt', 'src/main.js']);
  // main.js's server content is gone from .imz and the server is down: that one cannot be taken.
  await rm(join(w.replica, '.imz', 'conflicts', 'blobs', sha('server main\n')));
  await w.server.stop();
  const r = await imz(['resolve', '--all', '--take', 'server', '-C', w.replica, '--json']);
  assert.is(r.code, 4, `the failure was an unreachable server: exit 4, got ${r.code}\n${r.stdout}\n${r.stderr}`);
  const ev = jsonLines(r.stdout);
  assert.equal(ev.filter((e) => e.event === 'resolved').map((e) => e.path), ['docs/kml.txt']);
  const failed = ev.filter((e) => e.event === 'unresolved');
  assert.equal(failed.map((e) => [e.path, e.code]), [['src/main.js', 'IMZ_UNREACHABLE']]);
  assert.equal(ev.find((e) => e.event === 'resolve-done'), { event: 'resolve-done', resolved: 1, failed: 1, remaining: 1 });
  assert.is(await readFile(join(w.replica, 'docs/kml.txt'), 'utf8'), SERVER);
  assert.is(await readFile(join(w.replica, 'src/main.js'), 'utf8'), 'local main\n', 'the unresolved path is untouched');
  assert.equal((await listedConflicts(w.replica)).map((c) => c.path), ['src/main.js']);
});

T('resolve takes the replica lock: a concurrent run fails clearly and changes nothing', async () => {
  const w = await textConflict();
  await writeFile(join(w.replica, '.imz', 'lock'), JSON.stringify({ pid: process.pid, since: new Date().toISOString() }));
  const r = await imz(['resolve', 'docs/kml.txt', '--take', 'server', '-C', w.replica]);
  assert.is(r.code, 1, `locked: exit 1, got ${r.code}\n${r.stderr}`);
  assert.match(oneErrorLine(r.stderr, 'locked'), /lock/);
  assert.is(await readFile(join(w.replica, 'docs/kml.txt'), 'utf8'), LOCAL);
  await rm(join(w.replica, '.imz', 'lock'));
  const ok = await imz(['resolve', 'docs/kml.txt', '--take', 'server', '-C', w.replica]);
  assert.is(ok.code, 0, ok.stderr);
  assert.ok(!(await readdir(join(w.replica, '.imz'))).includes('lock'), 'the lock is released');
});

T('a damaged conflict record (null, no path) is named by status and resolve --list, and push, pull and sync still work (each failed on a TypeError)', async () => {
  const { srv, a } = await servedClone('imz-resolve-damaged-', { 'f.txt': 'one\n' });
  await writeFile(join(a, '.imz', 'conflicts', '0'.repeat(32) + '.json'), 'null\n');
  await writeFile(join(a, '.imz', 'conflicts', '1'.repeat(32) + '.json'), '{"class":"update/update"}\n');
  await writeFile(join(a, 'f.txt'), 'two\n');
  await writeFile(join(srv, 'g.txt'), 'server\n');
  for (const args of [['status'], ['resolve', '--list'], ['push'], ['pull'], ['sync']]) {
    const r = await imz([...args, '-C', a]);
    assert.is(r.code, 0, `${args.join(' ')}: ${runReport(r)}`);
    if (args[0] === 'status' || args[0] === 'resolve') {
      for (const n of ['0', '1']) assert.match(r.stderr, `conflict record .imz/conflicts/${n.repeat(32)}.json is damaged`, args.join(' '));
    }
  }
  assert.is(await readFile(join(srv, 'f.txt'), 'utf8'), 'two\n');
  await waitFor(() => existsSync(join(a, 'g.txt')), 5_000, 'the server file pulled');
});

for (const [name, damage] of [
  ['serverBlob a number', (r: Record<string, unknown>) => ({ ...r, serverBlob: 5 })],
  ['server.hash a number', (r: Record<string, unknown>) => ({ ...r, server: { ...(r.server as object), hash: 7 } })],
  ['earlierCopies an object', (r: Record<string, unknown>) => ({ ...r, earlierCopies: {} })],
] as const) {
  T(`a real conflict whose record has ${name}: named as damaged, and the next push records the conflict anew (review: push, or resolve, failed)`, async () => {
    const { srv, a } = await servedClone('imz-resolve-damaged-field-', { 'f.txt': 'one\n' });
    await writeFile(join(srv, 'f.txt'), 'server two\n');
    await writeFile(join(a, 'f.txt'), 'local two\n');
    assert.is((await imz(['pull', '-C', a])).code, 3);
    const dir = join(a, '.imz', 'conflicts');
    const file = join(dir, (await readdir(dir)).find((n) => n.endsWith('.json'))!);
    await writeFile(file, JSON.stringify(damage(JSON.parse(await readFile(file, 'utf8')))));
    for (const args of [['status'], ['resolve', '--list']]) {
      const r = await imz([...args, '-C', a]);
      assert.is(r.code, 0, `${args.join(' ')}: ${runReport(r)}`);
      assert.match(r.stderr, 'is damaged and was left out');
    }
    const p = await imz(['push', '-C', a]);
    assert.is(p.code, 3, `the push meets the conflict again: ${runReport(p)}`);
    assert.is(await readFile(join(srv, 'f.txt'), 'utf8'), 'server two\n');
    assert.equal((await listedConflicts(a)).map((c) => c.path), ['f.txt'], 'recorded anew');
    assert.is(await readFile(join(a, 'f.txt'), 'utf8'), 'local two\n');
  });
}

T.run();
