// `imz sync --watch` on two replicas: a burst of edits on both converges,
// each user change is journalled once (no echo loops), and the watchers
// cost nothing while idle.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cleanupAll, diffTrees, readJournal, sampleWorld, snapshotTree, spawnImz, startServer, waitFor } from '../helpers.ts';

const T = suite('sync --watch');
T.after.each(cleanupAll);
T.after(cleanupAll);

function cpuSeconds(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/stat`, 'utf8').then((s) => {
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks of 1/100 s
  });
}

T('two replicas converge after a burst of edits on both, each change journalled once, idle CPU near zero', async () => {
  const { srv, server, replicas } = await sampleWorld(2);
  const [a, b] = replicas as [string, string];
  const before = (await readJournal(server.address)).length;
  const wa = await spawnImz(['sync', '--watch', '-C', a, '--json'], { timeoutMs: 60_000 });
  const wb = await spawnImz(['sync', '--watch', '-C', b, '--json'], { timeoutMs: 60_000 });
  await new Promise((r) => setTimeout(r, 1500));

  const changes: string[] = [];
  for (let i = 0; i < 25; i++) {
    await writeFile(join(a, `from-a-${i}.txt`), `a ${i}\n`);
    await writeFile(join(b, `from-b-${i}.txt`), `b ${i}\n`);
    changes.push(`from-a-${i}.txt`, `from-b-${i}.txt`);
  }
  await mkdir(join(b, 'made', 'deep'), { recursive: true });
  await writeFile(join(b, 'made', 'deep', 'x.txt'), 'deep\n');
  await writeFile(join(a, 'docs', 'kml.txt'), 'edited on a\n');
  changes.push('made', 'made/deep', 'made/deep/x.txt', 'docs/kml.txt');

  await waitFor(async () => {
    const [sa, sb, ss] = await Promise.all([snapshotTree(a), snapshotTree(b), snapshotTree(srv)]);
    return diffTrees(sa, ss).length === 0 && diffTrees(sb, ss).length === 0;
  }, 20_000, 'both replicas and the server to converge', 250);

  // No echo: every user change appears exactly once in the journal.
  await new Promise((r) => setTimeout(r, 1500));
  const recs = (await readJournal(server.address)).slice(before);
  const counts = new Map<string, number>();
  for (const r of recs) counts.set(r.path, (counts.get(r.path) ?? 0) + 1);
  for (const p of changes) assert.is(counts.get(p), 1, `${p} journalled once (${counts.get(p)})`);
  assert.is(recs.length, changes.length, `no extra records: ${recs.map((r) => r.path).join(', ')}`);

  // Idle: no busy polling (heartbeats only).
  const pid = wa.proc.pid!;
  const c0 = await cpuSeconds(pid);
  await new Promise((r) => setTimeout(r, 6000));
  const c1 = await cpuSeconds(pid);
  // (Busy polling burns seconds here; heartbeats and a late echo check, tenths at most on a loaded machine.)
  assert.ok(c1 - c0 < 0.3, `idle CPU over 6 s: ${(c1 - c0).toFixed(2)} s`);

  wa.proc.kill('SIGINT');
  wb.proc.kill('SIGINT');
  const [ra, rb] = await Promise.all([wa.done, wb.done]);
  assert.is(ra.code, 0, ra.stderr);
  assert.is(rb.code, 0, rb.stderr);
});

T('while the server is away local writes are logged, and pushed when it returns', async () => {
  const world = await sampleWorld(1);
  const { srv } = world;
  let server = world.server;
  const a = world.replicas[0]!;
  const port = server.address.split(':')[1]!;
  const w = await spawnImz(['sync', '--watch', '-C', a], { timeoutMs: 60_000, env: { ...process.env, IMZ_HEARTBEAT_MS: '500' } });
  await new Promise((r) => setTimeout(r, 1000));
  await server.stop('SIGKILL');
  await writeFile(join(a, 'offline.txt'), 'written while the server was away\n');
  await waitFor(async () => (await readFile(join(a, '.imz', 'log'), 'utf8')).includes('offline.txt'), 10_000, 'the write to be logged');
  server = await startServer(srv, ['--port', port]);
  await waitFor(async () => (await readFile(join(srv, 'offline.txt'), 'utf8').catch(() => '')) === 'written while the server was away\n', 20_000, 'the logged write to reach the server');
  w.proc.kill('SIGINT');
  assert.is((await w.done).code, 0);
});

T('thousands of files created at once still converge (watch events plus the verification push)', async () => {
  const { srv, replicas: [a] } = await sampleWorld(1);
  const w = await spawnImz(['sync', '--watch', '-C', a!], { timeoutMs: 90_000, env: { ...process.env, IMZ_VERIFY_MS: '2000' } });
  await new Promise((r) => setTimeout(r, 1000));
  // A burst far beyond what one debounce window sees file by file.
  for (let d = 0; d < 10; d++) {
    await mkdir(join(a, 'burst', `d${d}`), { recursive: true });
    await Promise.all(Array.from({ length: 400 }, (_, i) => writeFile(join(a, 'burst', `d${d}`, `f${i}.txt`), `${d}/${i}\n`)));
  }
  await waitFor(async () => diffTrees(await snapshotTree(a), await snapshotTree(srv)).length === 0, 40_000, 'the burst to reach the server', 500);
  w.proc.kill('SIGINT');
  assert.is((await w.done).code, 0);
});

T.run();
