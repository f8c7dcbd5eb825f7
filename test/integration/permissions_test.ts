// Permission errors, for real: root ignores mode bits, so the imz processes
// under test run as an unprivileged user (nobody, 65534) while the test
// (root) sets up and inspects. A replica with read-only directories (and an
// unwritable .imz/index) must not lose anything at pull, must say which path
// and exit 1, and must converge once the permissions are fixed. A server
// that may not write part of its tree must refuse those operations with a
// clear message, apply nothing half-way, keep serving, and take the same
// push once the permissions are fixed. Real processes on loopback TCP
// (dist/imz.js: run `npm run build` first).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Replica } from '../../core/replica.ts';
import {
  type ImzOptions, type RunResult, runReport as out, type ServerHandle,
  cleanupAll, diffTrees, findTemps, imz, imzBundle, makeTmp, snapshotTree, startServer,
} from '../helpers.ts';
import { journalTree, waitJournalMatchesTree } from '../fault_helpers.ts';

const T = suite('permissions');
T.after.each(cleanupAll);
T.after(cleanupAll);

const NOBODY = { uid: 65534, gid: 65534 };
const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
const headOf = (rep: string) => JSON.parse(readFileSync(join(rep, '.imz', 'HEAD'), 'utf8')) as { serverId: string; cursor: number };

let noted = false;
/**
 * True when imz can be run as nobody (the test runs as root); also makes the
 * private copy of the bundle readable to that user. Says once why not.
 */
async function canDropPrivileges(): Promise<boolean> {
  if (process.getuid?.() !== 0) {
    if (!noted) process.stderr.write('permissions: not running as root, so imz cannot be run as another user; these tests are skipped\n');
    noted = true;
    return false;
  }
  await chmod(dirname(await imzBundle()), 0o755);
  return true;
}

/** A temp dir that nobody may enter and create things in. */
async function sharedTmp(): Promise<string> {
  const tmp = await makeTmp('imz-perm-');
  await chown(tmp, NOBODY.uid, NOBODY.gid);
  await chmod(tmp, 0o755);
  return tmp;
}

/** imz run as nobody. */
const asNobody = (args: string[], opts: ImzOptions = {}) => imz(args, { ...opts, ...NOBODY });

/** Asserts every stderr line is a one-line message matching re, and there is at least one. */
function assertLines(r: RunResult, re: RegExp, what: string): void {
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  assert.ok(lines.length >= 1, `${what}: an error message: ${out(r)}`);
  for (const l of lines) assert.ok(re.test(l), `${what}: every line is a clear message (no stack trace), got: ${l}\nexpected: ${re}`);
}

/** Every file of the tree holds one of the known contents (old or new): nothing torn, nothing lost. */
async function assertKnownContents(dir: string, known: Set<string>, what: string): Promise<void> {
  for (const [p, e] of Object.entries(await snapshotTree(dir))) {
    if (e.type === 'file') assert.ok(known.has(e.sha256!), `${what}: ${p} holds content that is neither the old nor the new version`);
  }
}

/** Index entries (path → version) of a replica. */
async function indexVersions(rep: string): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  for (const [p, e] of await (await Replica.open(rep)).all()) m.set(p, `${e.version} ${e.hash}`);
  return m;
}

T('a replica with read-only directories: pull names the path, exits 1, destroys nothing, keeps HEAD and the index; converges once the permissions are fixed', async () => {
  if (!(await canDropPrivileges())) return;
  const tmp = await sharedTmp();
  const srv = join(tmp, 'srv');
  const known = new Set<string>();
  const put = async (p: string, c: string) => {
    known.add(sha(c));
    await writeFile(join(srv, p), c);
  };
  await mkdir(join(srv, 'docs'), { recursive: true });
  await mkdir(join(srv, 'lib'), { recursive: true });
  await put('docs/a.txt', 'a\n');
  await put('docs/b.txt', 'b\n');
  await put('top.txt', 'top\n');
  await put('lib/x.txt', 'x\n');
  const server = await startServer(srv);
  const rep = join(tmp, 'rep');
  const c = await asNobody(['clone', server.address, rep]);
  assert.is(c.code, 0, `clone as nobody: ${out(c)}`);
  await writeFile(join(rep, 'mine.txt'), 'a local file of mine\n');
  known.add(sha('a local file of mine\n'));
  await chown(join(rep, 'mine.txt'), NOBODY.uid, NOBODY.gid);

  // 1. New content for a read-only directory (the user made docs/ read-only).
  await chmod(join(rep, 'docs'), 0o555);
  await put('docs/a.txt', 'a, edited on the server\n');
  await put('docs/new.txt', 'new in docs\n');
  await put('top.txt', 'top, edited on the server\n');
  await put('lib/y.txt', 'y\n');
  await waitJournalMatchesTree(server.address, srv);
  let head = headOf(rep);
  let idx = await indexVersions(rep);
  const r1 = await asNobody(['pull', '-C', rep]);
  assert.is(r1.code, 1, `pull into a read-only directory: ${out(r1)}`);
  assertLines(r1, new RegExp(`^imz: cannot pull: permission denied on directory ${rep}/docs \\(open\\); fix its permissions \\(or run imz as its owner\\), then run the command again \\(it resumes where it stopped\\)$`), 'pull');
  assert.equal(headOf(rep), head, 'HEAD did not move');
  assert.equal(await indexVersions(rep), idx, 'the index did not move');
  assert.is(await readFile(join(rep, 'docs', 'a.txt'), 'utf8'), 'a\n', 'docs/a.txt keeps the version it had');
  assert.is(await readFile(join(rep, 'docs', 'b.txt'), 'utf8'), 'b\n');
  await assertKnownContents(rep, known, 'after the refused pull');
  assert.equal(await findTemps(rep), [], 'no temp file left');

  await chmod(join(rep, 'docs'), 0o755);
  const r2 = await asNobody(['pull', '-C', rep]);
  assert.is(r2.code, 0, `pull once docs/ is writable again: ${out(r2)}`);
  const mine = await readFile(join(rep, 'mine.txt'), 'utf8');
  await rm(join(rep, 'mine.txt'));
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), [], 'the replica converged');
  assert.is(mine, 'a local file of mine\n', 'the local file was never touched');
  assert.is(headOf(rep).cursor, (await journalTree(server.address)).last);

  // 2. A removal in a read-only directory.
  await chmod(join(rep, 'docs'), 0o555);
  await rm(join(srv, 'docs', 'b.txt'));
  await put('docs/c.txt', 'c\n');
  await waitJournalMatchesTree(server.address, srv);
  head = headOf(rep);
  idx = await indexVersions(rep);
  const r3 = await asNobody(['pull', '-C', rep]);
  assert.is(r3.code, 1, `pull removing from a read-only directory: ${out(r3)}`);
  assertLines(r3, new RegExp(`^imz: cannot pull: permission denied on ${rep}/docs/b\\.txt \\(unlink\\); fix its permissions`), 'pull (removal)');
  assert.equal(headOf(rep), head, 'HEAD did not move');
  assert.equal(await indexVersions(rep), idx, 'the index did not move');
  assert.ok(existsSync(join(rep, 'docs', 'b.txt')), 'docs/b.txt is still there');
  assert.equal(await findTemps(rep), []);
  await chmod(join(rep, 'docs'), 0o755);
  const r4 = await asNobody(['pull', '-C', rep]);
  assert.is(r4.code, 0, `pull once fixed: ${out(r4)}`);
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), []);

  // 3. The replica's own state (.imz/index) made read-only: the data may land, the state does not move.
  await put('top.txt', 'top, edited again\n');
  await waitJournalMatchesTree(server.address, srv);
  head = headOf(rep);
  idx = await indexVersions(rep);
  await chmod(join(rep, '.imz', 'index'), 0o555);
  const r5 = await asNobody(['pull', '-C', rep]);
  assert.is(r5.code, 1, `pull with .imz/index read-only: ${out(r5)}`);
  assertLines(r5, new RegExp(`^imz: cannot pull: permission denied on directory ${rep}/\\.imz/index \\(open\\); fix its permissions`), 'pull (state)');
  assert.equal(headOf(rep), head, 'HEAD did not move');
  assert.equal(await indexVersions(rep), idx, 'the index did not move');
  await assertKnownContents(rep, known, 'after the refused state write');
  assert.equal(await findTemps(rep), []);
  await chmod(join(rep, '.imz', 'index'), 0o755);
  const r6 = await asNobody(['pull', '-C', rep]);
  assert.is(r6.code, 0, `pull once fixed: ${out(r6)}`);
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), []);
  const r7 = await asNobody(['push', '-C', rep]);
  assert.match(r7.stdout, /nothing to push/, `the replica has nothing of its own to push (the pulled content was not mistaken for a local edit): ${out(r7)}`);
});

T('a server that may not write part of its tree: push gets one clear line per refused operation and exit 1, nothing half-applied, the server keeps serving; the same push goes through once fixed', async () => {
  if (!(await canDropPrivileges())) return;
  const tmp = await sharedTmp();
  const srv = join(tmp, 'srv');
  await mkdir(join(srv, 'open'), { recursive: true });
  await mkdir(join(srv, 'locked'), { recursive: true });
  await writeFile(join(srv, 'top.txt'), 'top\n');
  await writeFile(join(srv, 'open', 'o.txt'), 'o\n');
  await writeFile(join(srv, 'locked', 'keep.txt'), 'keep\n');
  await writeFile(join(srv, 'tool.sh'), '#!/bin/sh\necho tool\n');
  // The server runs as nobody and owns its tree, except locked/ (and what is
  // in it) and tool.sh, which stay root's: it can read them, not change them.
  for (const p of ['', 'open', 'open/o.txt', 'top.txt']) await chown(join(srv, p), NOBODY.uid, NOBODY.gid);
  const server = await startServer(srv, [], NOBODY);
  const rep = join(tmp, 'rep');
  assert.is((await imz(['clone', server.address, rep])).code, 0);

  await writeFile(join(rep, 'locked', 'keep.txt'), 'keep, edited in the replica\n');
  await writeFile(join(rep, 'locked', 'new.txt'), 'new in locked\n');
  await chmod(join(rep, 'tool.sh'), 0o755);
  await writeFile(join(rep, 'top.txt'), 'top, edited in the replica\n');
  await writeFile(join(rep, 'open', 'n.txt'), 'new in open\n');
  const before = await snapshotTree(srv);

  const r1 = await imz(['push', '-C', rep, '-v']);
  assert.is(r1.code, 1, `push into a tree the server may not write: ${out(r1)}`);
  assertLines(r1, /^warning: (store|setattr) (locked\/keep\.txt|locked\/new\.txt|tool\.sh) was refused: cannot apply \2: the server may not write there \(permission denied on (directory locked|tool\.sh)\); fix that on the server, then push again$/, 'push');
  assert.is(r1.stderr.trim().split('\n').length, 3, `one line for each of the three refused operations: ${out(r1)}`);
  // Nothing half-applied: the refused paths are as they were, the others applied.
  const after = await snapshotTree(srv);
  for (const p of ['locked/keep.txt', 'tool.sh']) assert.equal(after[p], before[p], `${p} unchanged on the server`);
  assert.not.ok(existsSync(join(srv, 'locked', 'new.txt')), 'locked/new.txt not created');
  assert.is(await readFile(join(srv, 'top.txt'), 'utf8'), 'top, edited in the replica\n', 'the permitted operations were applied');
  assert.is(await readFile(join(srv, 'open', 'n.txt'), 'utf8'), 'new in open\n');
  assert.equal(await findTemps(srv), [], 'no temp file in the served tree or the state dir');
  await waitJournalMatchesTree(server.address, srv, 5_000);
  // Still serving: a new replica is made and matches.
  assert.is(server.proc.exitCode, null, 'the server is still running');
  const other = join(tmp, 'other');
  assert.is((await imz(['clone', server.address, other])).code, 0);
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(other)), []);

  // Fixed on the server: the same push goes through.
  await chown(join(srv, 'locked'), NOBODY.uid, NOBODY.gid);
  await chown(join(srv, 'locked', 'keep.txt'), NOBODY.uid, NOBODY.gid);
  await chown(join(srv, 'tool.sh'), NOBODY.uid, NOBODY.gid);
  const r2 = await imz(['push', '-C', rep]);
  assert.is(r2.code, 0, `push once fixed: ${out(r2)}`);
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), [], 'the server has every change');
  await waitJournalMatchesTree(server.address, srv, 5_000);
  const p = await imz(['pull', '-C', other]);
  assert.is(p.code, 0, out(p));
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(other)), [], 'the other replica gets them');
  assert.is(sha(await readFile(join(srv, 'locked', 'keep.txt'))), sha('keep, edited in the replica\n'));
});

T.run();
