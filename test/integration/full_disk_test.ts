// A full disk, for real: small tmpfs mounts, and one small ext4 image on a
// loop device (this suite runs as root; a process that may not mount says so
// and skips) under (a) a replica that receives a clone and a pull bigger than
// its space, (b) a served tree and its state dir that receive a push bigger
// than theirs (on ext4, where small uploads would be held in memory, too),
// including a journal that cannot be appended to, and (c) a replica whose .imz state cannot be
// written. Each time: one clear error line, exit 1, no temp file left, no
// state (HEAD, index, journal) ahead of the data on disk, and a re-run with
// room finishes the job. Real processes on loopback TCP (dist/imz.js: run
// `npm run build` first). Every mount is unmounted in cleanup.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { chmod, lstat, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeSegment } from '../../core/journal_model.ts';
import { Replica } from '../../core/replica.ts';
import {
  type RunResult, runReport as out, type ServerHandle,
  cleanupAll, diffTrees, findTemps, imz, jsonLines, makeTmp, readReintLog, setRemote, snapshotTree, startServer,
} from '../helpers.ts';
import { journalTree, journalVsTree, leaveFree, mountExt4, mountTmpfs, resizeTmpfs, unmountAll, waitJournalMatchesTree } from '../fault_helpers.ts';

const T = suite('full disk');
const servers: ServerHandle[] = [];
// Processes first (an open file keeps a mount busy), then the mounts, then the dirs.
async function teardown(): Promise<void> {
  await Promise.all(servers.splice(0).map((s) => s.stop('SIGKILL')));
  unmountAll();
  await cleanupAll();
}
T.after.each(teardown);
T.after(teardown);

const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

let skipNoted = false;
/** Mounts a tmpfs, or says once that this process may not and returns false (the test then skips). */
function tmpfs(dir: string, size: string): boolean {
  if (mountTmpfs(dir, size)) return true;
  if (!skipNoted) process.stderr.write('full disk: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN); these tests are skipped\n');
  skipNoted = true;
  return false;
}

async function serve(dir: string): Promise<ServerHandle> {
  const s = await startServer(dir);
  servers.push(s);
  return s;
}

/** Asserts stderr is one line matching re (the message a user reads). */
function assertOneLine(r: RunResult, re: RegExp, what: string): void {
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  assert.ok(lines.length === 1, `${what}: one line on stderr, no stack trace: ${out(r)}`);
  assert.ok(re.test(lines[0]!), `${what}: the message, got: ${lines[0]}\nexpected: ${re}`);
}

const headOf = (rep: string) => JSON.parse(readFileSync(join(rep, '.imz', 'HEAD'), 'utf8')) as { serverId: string; cursor: number; cloning?: boolean };

/** The replica's index, path → "version hash". */
async function indexOf(rep: string): Promise<Map<string, { version: number; hash: string; type: number }>> {
  const m = new Map<string, { version: number; hash: string; type: number }>();
  for (const [p, e] of await (await Replica.open(rep)).all()) m.set(p, { version: e.version, hash: e.hash, type: e.type });
  return m;
}

/**
 * Index entries that moved since `before` but whose data is not on disk: an
 * index ahead of the disk would make an old local file look like a local
 * edit of the newer version (and push it back over it).
 */
async function indexAhead(rep: string, before: Map<string, { version: number; hash: string; type: number }>): Promise<string[]> {
  const bad: string[] = [];
  for (const [p, e] of await indexOf(rep)) {
    const b = before.get(p);
    if (b && b.version === e.version && b.hash === e.hash) continue;
    const st = await lstat(join(rep, p)).catch(() => null);
    if (!st) bad.push(`${p}: indexed at version ${e.version}, absent on disk`);
    else if (e.type === 1 && (!st.isFile() || sha(await readFile(join(rep, p))) !== e.hash)) bad.push(`${p}: indexed at version ${e.version} with content the disk does not hold`);
  }
  return bad;
}

/** Temp files outside the state dirs (what a user or a reader of the tree would see). */
async function visibleTemps(dir: string): Promise<string[]> {
  return (await findTemps(dir)).filter((p) => !p.startsWith('.imz/') && !p.startsWith('.imz-server/'));
}

/** Every file of the tree holds one of the known contents: nothing torn or mixed. */
async function assertNoTornFiles(dir: string, known: Set<string>, what: string): Promise<void> {
  for (const [p, e] of Object.entries(await snapshotTree(dir))) {
    if (e.type === 'file') assert.ok(known.has(e.sha256!), `${what}: ${p} holds content that is neither the old nor the new version (torn?)`);
  }
}

T('(a) a replica on a full disk: a clone and a pull bigger than the space fail with one line and exit 1, leave no temp file, do not advance HEAD or the index; with room, the same command finishes', async () => {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await mkdir(join(srv, 'data'), { recursive: true });
  const known = new Set<string>();
  const put = async (root: string, p: string, c: Buffer | string) => {
    known.add(sha(c));
    await writeFile(join(root, p), c);
  };
  for (let i = 0; i < 6; i++) await put(srv, `data/big${i}.bin`, randomBytes(600_000));
  for (let i = 0; i < 20; i++) await put(srv, `note${i}.txt`, `note ${i}\n`);
  const server = await serve(srv);
  const rep = join(tmp, 'rep');
  if (!tmpfs(rep, '2m')) return;

  // 1. A clone of 3.6 MB into 2 MB.
  const r1 = await imz(['clone', server.address, rep]);
  assert.is(r1.code, 1, `clone onto a full disk: ${out(r1)}`);
  assertOneLine(r1, /^imz: cannot clone: no space left on device \(the disk is full\) writing .+; free some space there, then run the command again \(it resumes where it stopped\)$/, 'clone');
  const r1j = await imz(['clone', server.address, rep, '--json']);
  assert.is(r1j.code, 1, out(r1j));
  assert.is(jsonLines(r1j.stdout).find((e) => e.event === 'error')?.code, 'IMZ_NO_SPACE', 'the JSON error event says IMZ_NO_SPACE');
  assert.equal(await findTemps(rep), [], 'no temp file left (in the tree or in .imz)');
  assert.ok(headOf(rep).cloning === true && headOf(rep).cursor === 0, `HEAD still says the clone is unfinished: ${JSON.stringify(headOf(rep))}`);
  assert.equal(await indexAhead(rep, new Map()), [], 'the index lists only what is on disk');
  await assertNoTornFiles(rep, known, 'after the failed clone');

  // 2. More room: the same command resumes and finishes.
  resizeTmpfs(rep, '16m');
  const r2 = await imz(['clone', server.address, rep]);
  assert.is(r2.code, 0, `clone re-run with room: ${out(r2)}`);
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), [], 'the clone is complete');
  const cursor = headOf(rep).cursor;

  // 3. A pull of 1.8 MB into 700 kB: new large files, edits, a removal, a new directory.
  for (let i = 0; i < 3; i++) await put(srv, `data/new${i}.bin`, randomBytes(600_000));
  await put(srv, 'note1.txt', 'note 1, edited on the server\n');
  await put(srv, 'note2.txt', 'note 2, edited on the server\n');
  await rm(join(srv, 'note3.txt'));
  await mkdir(join(srv, 'fresh'));
  await waitJournalMatchesTree(server.address, srv);
  leaveFree(rep, 700_000);
  const idxBefore = await indexOf(rep);
  const r3 = await imz(['pull', '-C', rep]);
  assert.is(r3.code, 1, `pull onto a full disk: ${out(r3)}`);
  assertOneLine(r3, /^imz: cannot pull: no space left on device \(the disk is full\) writing .+; free some space there, then run the command again \(it resumes where it stopped\)$/, 'pull');
  assert.equal(await findTemps(rep), [], 'no temp file left');
  assert.is(headOf(rep).cursor, cursor, 'HEAD did not move');
  assert.equal(await indexAhead(rep, idxBefore), [], 'the index is not ahead of the disk');
  await assertNoTornFiles(rep, known, 'after the failed pull');

  // 4. Room again: the same pull finishes.
  resizeTmpfs(rep, '16m');
  const r4 = await imz(['pull', '-C', rep]);
  assert.is(r4.code, 0, `pull re-run with room: ${out(r4)}`);
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), [], 'the replica caught up');
  assert.is(headOf(rep).cursor, (await journalTree(server.address)).last, 'HEAD at the end of the journal');
  assert.equal(await findTemps(rep), []);
});

T('(b) a served tree on a full disk: a push bigger than the space fails with one line and exit 1, nothing half-applied, the server keeps serving; with room the re-run finishes', async () => {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  if (!tmpfs(srv, '2m')) return;
  await mkdir(join(srv, 'docs'));
  await writeFile(join(srv, 'a.txt'), 'a, first version\n');
  await writeFile(join(srv, 'b.txt'), 'b, to be deleted\n');
  await writeFile(join(srv, 'docs', 'readme.txt'), 'docs\n');
  let server = await serve(srv);
  const rep = join(tmp, 'rep');
  const c = await imz(['clone', server.address, rep]);
  assert.is(c.code, 0, out(c));

  const big = randomBytes(3 << 20);
  await writeFile(join(rep, 'big.bin'), big);
  await writeFile(join(rep, 'big2.bin'), big); // the same content: uploaded once, placed twice
  await writeFile(join(rep, 'a.txt'), 'a, edited in the replica\n');
  await writeFile(join(rep, 'c.txt'), 'c, new in the replica\n');
  await rm(join(rep, 'b.txt'));
  const treeBefore = await snapshotTree(srv);
  const jBefore = await journalTree(server.address);

  // 1. 3 MB into 2 MB: the upload cannot be staged; no operation is sent.
  const r1 = await imz(['push', '-C', rep]);
  assert.is(r1.code, 1, `push onto a full server disk: ${out(r1)}`);
  assertOneLine(r1, /^imz: cannot stage the upload: no space left on the server's disk; free space on the server, then push again$/, 'push (upload)');
  assert.equal(diffTrees(treeBefore, await snapshotTree(srv), ['before', 'after']), [], 'the served tree did not change');
  assert.is((await journalTree(server.address)).last, jBefore.last, 'the journal did not move');
  assert.equal(await findTemps(srv), [], 'no temp file on the server (tree or state dir)');
  assert.ok((await readReintLog(rep)).some((l) => l.t === 'op' && l.op.path === 'big.bin'), 'the operations stay logged');

  // 2. Room for one copy of the content, not two: the staged upload is
  // renamed into place as big.bin; big2.bin, the same content, needs a copy,
  // which is refused; the others go through, nothing is half-applied.
  resizeTmpfs(srv, '4m');
  const r2 = await imz(['push', '-C', rep]);
  assert.is(r2.code, 1, `push with room for one copy only: ${out(r2)}`);
  assertOneLine(r2, /^warning: store big2\.bin was refused: cannot apply big2\.bin: no space left on the server's disk; free space on the server, then push again$/, 'push (apply)');
  assert.is(sha(await readFile(join(srv, 'big.bin'))), sha(big), 'big.bin was placed from the staged upload');
  assert.not.ok(existsSync(join(srv, 'big2.bin')), 'big2.bin is not on the server');
  assert.is(await readFile(join(srv, 'a.txt'), 'utf8'), 'a, edited in the replica\n', 'the other operations were applied');
  assert.is(await readFile(join(srv, 'c.txt'), 'utf8'), 'c, new in the replica\n');
  assert.not.ok(existsSync(join(srv, 'b.txt')));
  assert.equal(await visibleTemps(srv), [], 'no temp file in the served tree');
  await waitJournalMatchesTree(server.address, srv, 5_000); // the server kept serving, and journalled exactly what it applied

  // 3. Room: the re-run finishes; a restart after SIGKILL agrees.
  resizeTmpfs(srv, '16m');
  const r3 = await imz(['push', '-C', rep]);
  assert.is(r3.code, 0, `push re-run with room: ${out(r3)}`);
  assert.is(sha(await readFile(join(srv, 'big2.bin'))), sha(big), 'big2.bin arrived whole');
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), []);
  await server.stop('SIGKILL');
  server = await serve(srv);
  await setRemote(rep, server.address);
  await waitJournalMatchesTree(server.address, srv);
  assert.equal(await findTemps(srv), []);
  const p = await imz(['pull', '-C', rep]);
  assert.is(p.code, 0, out(p));
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), []);
});

T('(b) a served tree on a small ext4 disk: a push of many small files bigger than the space fails with one line at the upload (not a refusal per file), and nothing is applied', async () => {
  const tmp = await makeTmp();
  const disk = join(tmp, 'disk');
  if (!mountExt4(disk, '12M')) {
    process.stderr.write('full disk: cannot mount an ext4 image here (needs root and a loop device); the ext4 test is skipped\n');
    return;
  }
  const srv = join(disk, 'srv'); // (beside the file system's lost+found)
  await mkdir(srv);
  await writeFile(join(srv, 'a.txt'), 'a\n');
  const server = await serve(srv);
  const rep = join(tmp, 'rep');
  const c = await imz(['clone', server.address, rep]);
  assert.is(c.code, 0, out(c));
  // 80 files of 200 KB (16 MB) into ~10 MB: small enough to be held in memory, were there room on the disk.
  await mkdir(join(rep, 'many'));
  for (let i = 0; i < 80; i++) await writeFile(join(rep, 'many', `f${i}.bin`), randomBytes(200_000));
  const treeBefore = await snapshotTree(srv);
  const jBefore = await journalTree(server.address);
  const r = await imz(['push', '-C', rep]);
  assert.is(r.code, 1, `push onto a full server disk: ${out(r)}`);
  assertOneLine(r, /^imz: cannot stage the upload: no space left on the server's disk; free space on the server, then push again$/, 'push');
  assert.equal(diffTrees(treeBefore, await snapshotTree(srv), ['before', 'after']), [], 'the served tree did not change');
  assert.is((await journalTree(server.address)).last, jBefore.last, 'the journal did not move');
  assert.equal(await visibleTemps(srv), [], 'no temp file in the served tree');
  assert.ok((await readReintLog(rep)).some((l) => l.t === 'op' && l.op.path === 'many/f0.bin'), 'the operations stay logged');
});

T('(b) a journal that cannot be appended to (the server\'s disk full): push fails with one line and exit 1, the segment is not torn; with room the re-run is answered and the records survive a SIGKILL', async () => {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  if (!tmpfs(srv, '2m')) return;
  await writeFile(join(srv, 'a.txt'), 'a\n');
  let server = await serve(srv);
  const rep = join(tmp, 'rep');
  assert.is((await imz(['clone', server.address, rep])).code, 0);
  // Directories take no data pages on a tmpfs; their 60 journal records (several kB) do.
  for (let i = 0; i < 60; i++) await mkdir(join(rep, `dir${String(i).padStart(2, '0')}-with-a-longer-name-for-a-bigger-record`));
  leaveFree(srv, 0);

  const r1 = await imz(['push', '-C', rep]);
  assert.is(r1.code, 1, `push with the journal's disk full: ${out(r1)}`);
  assertOneLine(r1, /^imz: cannot journal the changes: no space left on the server's disk; free space on the server, then push again \(the changes stay logged\)$/, 'push');
  const segDir = join(srv, '.imz-server', 'journal');
  for (const n of readdirSync(segDir).filter((x) => x.endsWith('.seg'))) {
    assert.not.ok(decodeSegment(new Uint8Array(readFileSync(join(segDir, n))), n).torn, `${n}: no torn record left by the short write`);
  }
  assert.ok((await readReintLog(rep)).some((l) => l.t === 'sent'), 'the operations stay logged as sent');
  assert.equal(await findTemps(srv), []);

  // Room again: the re-run is answered (the server applied them once), and the records reach the disk.
  resizeTmpfs(srv, '16m');
  const r2 = await imz(['push', '-C', rep, '--json']);
  assert.is(r2.code, 0, `push re-run with room: ${out(r2)}`);
  assert.is(jsonLines(r2.stdout).find((e) => e.event === 'pushed')?.rejected, 0);
  const seen = await journalTree(server.address);
  await server.stop('SIGKILL');
  server = await serve(srv);
  await setRemote(rep, server.address);
  const after = await journalTree(server.address);
  const lost = [...seen.seqs].filter(([seq, what]) => after.seqs.get(seq) !== what).map(([seq, what]) => `#${seq} ${what} became ${after.seqs.get(seq) ?? 'nothing'}`);
  assert.equal(lost, [], 'every record served before the SIGKILL is still in the journal, unchanged');
  assert.equal(await journalVsTree(server.address, srv), []);
  const p = await imz(['pull', '-C', rep]);
  assert.is(p.code, 0, out(p));
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), []);
});

T('(c) a replica whose .imz state cannot be written: pull and push fail with one line and exit 1, HEAD, index and server untouched; with room they finish', async () => {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await mkdir(join(srv, 'sub'), { recursive: true });
  for (let i = 0; i < 5; i++) await writeFile(join(srv, `f${i}.txt`), `file ${i}\n`);
  await writeFile(join(srv, 'sub', 'x.txt'), 'x\n');
  const server = await serve(srv);
  const rep = join(tmp, 'rep');
  if (!tmpfs(rep, '2m')) return;
  assert.is((await imz(['clone', server.address, rep])).code, 0);

  // 1. pull: the server's changes need no data page here (a mode, a directory,
  // a symlink), but the index and HEAD do; one page is left, which the lock takes.
  await chmod(join(srv, 'f2.txt'), 0o600);
  await mkdir(join(srv, 'newdir'));
  await symlink('f0.txt', join(srv, 'link'));
  await waitJournalMatchesTree(server.address, srv);
  const head = headOf(rep);
  const idx = await indexOf(rep);
  leaveFree(rep, 4096);
  const r1 = await imz(['pull', '-C', rep]);
  assert.is(r1.code, 1, `pull with .imz unwritable: ${out(r1)}`);
  assertOneLine(r1, /^imz: cannot pull: no space left on device \(the disk is full\) writing .+; free some space there, then run the command again \(it resumes where it stopped\)$/, 'pull');
  assert.equal(headOf(rep), head, 'HEAD did not move');
  assert.equal(await indexAhead(rep, idx), [], 'the index is not ahead of the disk');
  assert.equal(await visibleTemps(rep), [], 'no temp file in the tree');
  // A bucket whose write fails (ENOSPC) leaves no temp file in .imz/index/.
  assert.equal((await findTemps(rep)).filter((p) => p.startsWith('.imz/index/')), [], 'no bucket temp file left');
  resizeTmpfs(rep, '16m');
  const r2 = await imz(['pull', '-C', rep]);
  assert.is(r2.code, 0, `pull re-run with room: ${out(r2)}`);
  assert.equal(await findTemps(rep), [], 'the re-run swept every temp file, in .imz too');
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), [], 'the replica caught up');
  assert.is(headOf(rep).cursor, (await journalTree(server.address)).last);

  // 2. push: the reintegration log cannot be written; nothing reaches the server.
  await chmod(join(rep, 'f3.txt'), 0o600);
  await mkdir(join(rep, 'mine'));
  await symlink('f1.txt', join(rep, 'mylink'));
  const jLast = (await journalTree(server.address)).last;
  const srvTree = await snapshotTree(srv);
  leaveFree(rep, 4096);
  const r3 = await imz(['push', '-C', rep]);
  assert.is(r3.code, 1, `push with .imz unwritable: ${out(r3)}`);
  assertOneLine(r3, /^imz: cannot push: no space left on device \(the disk is full\) writing .+; free some space there, then run the command again \(it resumes where it stopped\)$/, 'push');
  assert.is((await journalTree(server.address)).last, jLast, 'nothing was sent');
  assert.equal(diffTrees(srvTree, await snapshotTree(srv), ['before', 'after']), []);
  assert.equal(await visibleTemps(rep), []);
  resizeTmpfs(rep, '16m');
  const r4 = await imz(['push', '-C', rep]);
  assert.is(r4.code, 0, `push re-run with room: ${out(r4)}`);
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), [], 'the server has the changes');

  // 3. Not a byte free: not even the lock can be written.
  await writeFile(join(srv, 'f4.txt'), 'file 4, edited on the server\n');
  await waitJournalMatchesTree(server.address, srv);
  leaveFree(rep, 0);
  const r5 = await imz(['pull', '-C', rep]);
  assert.is(r5.code, 1, out(r5));
  assertOneLine(r5, /^imz: cannot pull: no space left on device \(the disk is full\) writing .+; free some space there, then run the command again/, 'pull (no lock)');
  resizeTmpfs(rep, '16m');
  // The lock that could not be written is not left behind (no 5 s wait for it to go stale).
  assert.not.ok(existsSync(join(rep, '.imz', 'lock')), 'no empty lock left');
  const r6 = await imz(['pull', '-C', rep]);
  assert.is(r6.code, 0, `pull re-run with room: ${out(r6)}`);
  assert.is(await readFile(join(rep, 'f4.txt'), 'utf8'), 'file 4, edited on the server\n');
});

T.run();
