// The scan's verdicts read eight at a time, with every row count mod 8 and a flag in every
// position; the tracked count read lazily; the worker's symlink list taken from the targets.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { appendFile, mkdir, readlink, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { scanChanges } from '../../core/changes.ts';
import { Replica } from '../../core/replica.ts';
import { runReport as out, cleanupAll, diffTrees, imz, jsonLines, makeTmp, snapshotTree, startServer } from '../helpers.ts';

const T = suite('scan: verdicts');
T.after.each(cleanupAll);
T.after(cleanupAll);

T('a flag in every row position is found, for every row count mod 8 (modify and delete, first and last rows)', async () => {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await mkdir(srv);
  for (let i = 0; i < 13; i++) await writeFile(join(srv, `f${String(i).padStart(2, '0')}.txt`), `${i}\n`);
  const server = await startServer(srv);
  const rep = join(tmp, 'rep');
  const c = await imz(['clone', server.address, rep, '--json']);
  assert.is(c.code, 0, out(c));
  for (let j = 0; j < 9; j++) {
    // One more tracked file each round: the row count goes through every value mod 8.
    await writeFile(join(rep, `z${j}.txt`), `extra ${j}\n`);
    const p = await imz(['push', '-C', rep, '--json']);
    assert.is(p.code, 0, out(p));
    const s0 = await scanChanges(await Replica.open(rep));
    assert.equal(s0.changes.map((x) => x.path), [], `round ${j}: clean`);
    const files = Object.keys(await snapshotTree(rep)).filter((f) => f.endsWith('.txt')).sort();
    assert.is(s0.tracked, files.length);
    // Modify from the last row back to the first, one more each scan.
    const modified: string[] = [];
    for (let k = files.length - 1; k >= 0; k--) {
      await appendFile(join(rep, files[k]!), 'more\n');
      modified.push(files[k]!);
      const s = await scanChanges(await Replica.open(rep));
      assert.equal(s.changes.map((x) => `${x.kind} ${x.path}`).sort(), modified.map((m) => `modify ${m}`).sort(), `round ${j}, ${modified.length} modified`);
    }
    const p2 = await imz(['push', '-C', rep, '--json']);
    assert.is(p2.code, 0, out(p2));
    // Delete the last row only, then the first only.
    for (const f of [files[files.length - 1]!, files[0]!]) {
      const keep = await snapshotTree(rep);
      await unlink(join(rep, f));
      const s = await scanChanges(await Replica.open(rep));
      assert.equal(s.changes.map((x) => `${x.kind} ${x.path}`), [`delete ${f}`], `round ${j}, delete ${f}`);
      assert.is(s.deleted, 1);
      assert.is(s.tracked, files.length);
      await writeFile(join(rep, f), 'back\n');
      void keep;
      const p3 = await imz(['push', '-C', rep, '--json']);
      assert.is(p3.code, 0, out(p3));
    }
  }
});

T('mass-delete guard still reads tracked lazily: half deleted refused, --allow-mass-delete pushes; tracked right after refresh rows', async () => {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await mkdir(srv);
  for (let i = 0; i < 6; i++) await writeFile(join(srv, `f${i}.txt`), `${i}\n`);
  const server = await startServer(srv);
  const rep = join(tmp, 'rep');
  assert.is((await imz(['clone', server.address, rep, '--json'])).code, 0);
  // A touched file (refresh row) and four deletions of six.
  const { utimes } = await import('node:fs/promises');
  await utimes(join(rep, 'f5.txt'), new Date(), new Date(Date.now() - 100_000));
  for (let i = 0; i < 4; i++) await unlink(join(rep, `f${i}.txt`));
  const r = await imz(['push', '-C', rep, '--json']);
  assert.is(r.code, 1, out(r));
  const e = jsonLines(r.stdout).find((x) => x.event === 'error');
  assert.is(e?.code, 'IMZ_MASS_DELETE', out(r));
  assert.match(String(e?.message), /4 of 6 tracked files/);
  const ok = await imz(['push', '-C', rep, '--json', '--allow-mass-delete']);
  assert.is(ok.code, 0, out(ok));
  assert.equal(Object.keys(await snapshotTree(srv)).sort(), ['f4.txt', 'f5.txt']);
});

T('symlinks in a big tree with the scan worker forced (IMZ_SCAN_WORKER_MIN=0): retargets, retypes both ways, all pushed; status clean after', async () => {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await mkdir(join(srv, 'files'), { recursive: true });
  await mkdir(join(srv, 'links'));
  await mkdir(join(srv, 'mixed'));
  // Past one chunk of the worker's pass (1,024) each, files and links.
  const N = 1300;
  const L = 1300;
  for (let i = 0; i < N; i++) await writeFile(join(srv, 'files', `f${String(i).padStart(5, '0')}`), `${i}\n`);
  for (let i = 0; i < L; i++) await symlink(`../files/f${String(i).padStart(5, '0')}`, join(srv, 'links', `l${String(i).padStart(5, '0')}`));
  for (let i = 0; i < 20; i++) {
    if (i % 2) await symlink(`target-${i}`, join(srv, 'mixed', `m${i}`));
    else await writeFile(join(srv, 'mixed', `m${i}`), `file ${i}\n`);
  }
  await mkdir(join(srv, 'mixed', 'adir'));
  const server = await startServer(srv);
  const rep = join(tmp, 'rep');
  const env = { IMZ_SCAN_WORKER_MIN: '0' };
  const c = await imz(['clone', server.address, rep, '--json'], { env, timeoutMs: 60_000 });
  assert.is(c.code, 0, out(c));
  // Twice: the second push runs over a scan cache updated by the first.
  for (let round = 0; round < 2; round++) {
    const want: string[] = [];
    for (let i = round; i < L; i += 97) {
      const p = join(rep, 'links', `l${String(i).padStart(5, '0')}`);
      await unlink(p);
      // Same length as before (only the target differs), and longer.
      await symlink(i % 2 ? `../files/g${String(i).padStart(5, '0')}` : `../files/f${String((i + 1) % N).padStart(5, '0')}-r${round}`, p);
      want.push(`links/l${String(i).padStart(5, '0')}`);
    }
    // Retypes: symlink -> file, file -> symlink, dir -> symlink.
    for (let i = round; i < 20; i += 4) {
      const p = join(rep, 'mixed', `m${i}`);
      const wasLink = await readlink(p).then(() => true, () => false);
      await rm(p);
      if (wasLink) await writeFile(p, `now a file ${round}\n`);
      else await symlink(`now-a-link-${round}`, p);
    }
    if (round === 0) {
      await rm(join(rep, 'mixed', 'adir'), { recursive: true });
      await symlink('../files', join(rep, 'mixed', 'adir'));
    }
    const st = await imz(['status', '-C', rep, '--json', '--offline'], { env, timeoutMs: 60_000 });
    const seen = jsonLines(st.stdout).filter((x) => x.event === 'change' && String(x.path).startsWith('links/')).map((x) => String(x.path)).sort();
    assert.equal(seen, want.sort(), `status round ${round}`);
    const p = await imz(['push', '-C', rep, '--json'], { env, timeoutMs: 60_000 });
    assert.is(p.code, 0, out(p));
    assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), [], `round ${round}: server and replica`);
    const st2 = await imz(['status', '-C', rep, '--json', '--offline'], { env, timeoutMs: 60_000 });
    assert.equal(jsonLines(st2.stdout).filter((x) => x.event === 'change'), [], `clean after round ${round}`);
    // And a push finds nothing more either (worker pass under the lock).
    const p2 = await imz(['push', '-C', rep, '--json'], { env, timeoutMs: 60_000 });
    assert.is(jsonLines(p2.stdout).find((x) => x.event === 'pushed')?.logged, 0, out(p2));
  }
  // Retarget with the lstat pass only in the worker and the main thread: a push alone must see it.
  const p = join(rep, 'links', `l${String(L - 1).padStart(5, '0')}`);
  await unlink(p);
  await symlink('../files/f00000', p);
  const last = await imz(['push', '-C', rep, '--json'], { env, timeoutMs: 60_000 });
  assert.is(jsonLines(last.stdout).find((x) => x.event === 'pushed')?.logged, 1, out(last));
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(rep)), []);
});

T.run();
