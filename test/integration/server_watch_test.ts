// Watches of directories a real server made or removed itself (a client's
// pushed mkdir or rmdir), its periodic rescan off: a directory made in place
// of one moved away, or of one removed, is watched, so files written on the
// server into it are journalled (from the review of bea54fe).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdir, rename, rmdir, writeFile } from 'node:fs/promises';
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

T.run();
