// Watches of directories a real server made or removed itself (a client's
// pushed mkdir or rmdir), its periodic rescan off: a directory made in place
// of one moved away, or of one removed, is watched, so files written on the
// server into it are journalled (from the review of bea54fe).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { chmod, mkdir, rename, rm, rmdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupAll, copyFixture, imz, makeTmp, readJournal, startServer, waitFor } from '../helpers.ts';

const T = suite('server: watches of directories it made or removed');
T.after.each(cleanupAll);
T.after(cleanupAll);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function world() {
  const tmp = await makeTmp('imz-r14w-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  const server = await startServer(srv, ['--rescan-interval', '0']);
  const a = join(tmp, 'a');
  const c = await imz(['clone', server.address, a, '--json']);
  assert.is(c.code, 0, c.stderr);
  return { srv, server, a };
}

async function journalled(address: string, path: string, ms: number): Promise<boolean> {
  return waitFor(async () => (await readJournal(address)).some((r) => r.path === path && r.type === 1), ms, path).then(() => true, () => false);
}

T('control: a directory made on the server by a local program, moved away and made again: a file written into the new one is journalled', async () => {
  const { srv, server } = await world();
  await mkdir(join(srv, 'logs'));
  await writeFile(join(srv, 'logs', 'a.txt'), 'a\n');
  assert.ok(await journalled(server.address, 'logs/a.txt', 5000));
  await rename(join(srv, 'logs'), join(srv, 'logs.1'));
  await mkdir(join(srv, 'logs'));
  assert.ok(await journalled(server.address, 'logs.1/a.txt', 5000));
  await sleep(500);
  await writeFile(join(srv, 'logs', 'b.txt'), 'b\n');
  assert.ok(await journalled(server.address, 'logs/b.txt', 4000), 'logs/b.txt journalled');
});

T('a directory a client pushed (made by the server), moved away on the server and made again: a file written into the new one is journalled', async () => {
  const { srv, server, a } = await world();
  await mkdir(join(a, 'logs'));
  await writeFile(join(a, 'logs', 'a.txt'), 'a\n');
  const p = await imz(['push', '-C', a, '--json']);
  assert.is(p.code, 0, p.stderr);
  await sleep(300);
  await rename(join(srv, 'logs'), join(srv, 'logs.1'));
  await mkdir(join(srv, 'logs'));
  assert.ok(await journalled(server.address, 'logs.1/a.txt', 5000), 'the move journalled');
  await sleep(500);
  await writeFile(join(srv, 'logs', 'b.txt'), 'b\n');
  assert.ok(await journalled(server.address, 'logs/b.txt', 4000), 'logs/b.txt, written into the new logs/, journalled within 4 s');
});

T('a directory a client pushed, removed by a pushed rmdir, then pushed again: a file written into it on the server is journalled', async () => {
  const { srv, server, a } = await world();
  await mkdir(join(a, 'g'));
  assert.is((await imz(['push', '-C', a, '--quiet'])).code, 0);
  await rmdir(join(a, 'g'));
  assert.is((await imz(['push', '-C', a, '--quiet'])).code, 0);
  await mkdir(join(a, 'g'));
  assert.is((await imz(['push', '-C', a, '--quiet'])).code, 0);
  await sleep(500);
  await writeFile(join(srv, 'g', 'f.txt'), 'f\n');
  assert.ok(await journalled(server.address, 'g/f.txt', 4000), 'g/f.txt journalled within 4 s');
});

T('files and a directory a client\'s push removed, made again at once on the server by a local program: journalled (the server announces only its own removals to its watcher)', async () => {
  const { srv, server, a } = await world();
  await mkdir(join(a, 'gone'));
  for (let i = 0; i < 20; i++) await writeFile(join(a, 'gone', `f${i}.txt`), `${i}\n`);
  await writeFile(join(a, 'x.txt'), 'x\n');
  assert.is((await imz(['push', '-C', a, '--quiet'])).code, 0);
  await sleep(300);
  const before = (await readJournal(server.address)).length;
  await rm(join(a, 'gone'), { recursive: true });
  await rm(join(a, 'x.txt'));
  const pushed = await imz(['push', '-C', a, '--quiet', '--allow-mass-delete']);
  assert.is(pushed.code, 0, pushed.stderr);
  const removed = (await readJournal(server.address)).length;
  // Within the time an announced event is waited for (5 s).
  // (Written outside the tree and renamed in: exactly one event, which an event announced once too often swallows.)
  await writeFile(join(srv, '..', 'x.txt'), 'made again\n');
  await rename(join(srv, '..', 'x.txt'), join(srv, 'x.txt'));
  await mkdir(join(srv, 'gone'));
  await writeFile(join(srv, 'gone', 'f3.txt'), 'made again\n');
  const madeAgain = async (path: string) => (await readJournal(server.address)).slice(removed).some((r) => r.path === path && r.type === 1);
  await waitFor(async () => (await madeAgain('x.txt')) && (await madeAgain('gone/f3.txt')), 4000, 'x.txt and gone/f3.txt, written again, journalled');
  const recs = (await readJournal(server.address)).slice(before);
  // The pushed removals journalled once each, by the push alone (the watcher found nothing of its own to add).
  for (let i = 0; i < 20; i++) assert.is(recs.filter((r) => r.path === `gone/f${i}.txt` && r.type === 0).length, 1, `gone/f${i}.txt removed once`);
  assert.is(recs.filter((r) => r.path === 'x.txt' && r.type === 0).length, 1, 'x.txt removed once');
});

T('files a client\'s push chmodded, touched or moved (with a new mode and time), written at once on the server by a local program: journalled (the server announces only the events of its own changes)', async () => {
  const { srv, server, a } = await world();
  const names = ['chmod', 'touch', 'moved', 'moved-chmod'];
  for (const n of names) await writeFile(join(a, `${n}.txt`), `${n}\n`);
  assert.is((await imz(['push', '-C', a, '--quiet'])).code, 0);
  await sleep(300);
  await chmod(join(a, 'chmod.txt'), 0o755);
  await utimes(join(a, 'touch.txt'), new Date(1.6e12), new Date(1.6e12));
  await rename(join(a, 'moved.txt'), join(a, 'moved-to.txt'));
  await rename(join(a, 'moved-chmod.txt'), join(a, 'moved-chmod-to.txt'));
  await chmod(join(a, 'moved-chmod-to.txt'), 0o700);
  await utimes(join(a, 'moved-chmod-to.txt'), new Date(1.5e12), new Date(1.5e12));
  const pushed = await imz(['push', '-C', a, '--json']);
  assert.is(pushed.code, 0, pushed.stderr);
  const applied = (await readJournal(server.address)).length;
  const kinds = pushed.stdout.split('\n').filter((l) => l.includes('"op"')).map((l) => JSON.parse(l) as { path: string; kind: string });
  for (const [path, kind] of [['chmod.txt', 'setattr'], ['touch.txt', 'setattr'], ['moved-to.txt', 'move'], ['moved-chmod-to.txt', 'move']]) {
    assert.ok(kinds.some((k) => k.path === path && k.kind === kind), `${path} went as a ${kind}: ${pushed.stdout}`);
  }
  // Within the time an announced event is waited for (5 s), each replaced as an editor saving it does: written
  // outside the tree and renamed over it, exactly one event (an event announced once too often swallows it).
  const written = ['chmod.txt', 'touch.txt', 'moved-to.txt', 'moved-chmod-to.txt'];
  for (const n of written) {
    await writeFile(join(srv, '..', n), `${n.slice(0, 3)}!\n`);
    await rename(join(srv, '..', n), join(srv, n));
  }
  const hashes = new Map(written.map((n) => [n, createHash('sha256').update(`${n.slice(0, 3)}!\n`).digest('hex')]));
  await waitFor(async () => {
    const recs = (await readJournal(server.address)).slice(applied);
    return written.every((n) => recs.some((r) => r.path === n && r.hash === hashes.get(n)));
  }, 4000, 'each file written on the server journalled with its new content');
});

T.run();
