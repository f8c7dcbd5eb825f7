// Watches under Deno (imz serve run by deno): a directory made on the server,
// written into at once, moved away and made again: each file journalled
// (Deno dropped a watch set again right after the old one closed; from the
// review of bea54fe).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupAll, copyFixture, makeTmp, readJournal, startServer, waitFor } from '../helpers.ts';

const T = suite('server: watches under deno');
T.after.each(cleanupAll);
T.after(cleanupAll);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const journalled = (address: string, path: string, ms: number) =>
  waitFor(async () => (await readJournal(address)).some((r) => r.path === path && r.type === 1), ms, path).then(() => true, () => false);

T('deno server: made, written, moved away, made again, written: each file journalled within 4 s', async () => {
  const tmp = await makeTmp('imz-r14deno-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  const server = await startServer(srv, ['--rescan-interval', '0'], { runtime: 'deno' });
  await mkdir(join(srv, 'logs'));
  await writeFile(join(srv, 'logs', 'a.txt'), 'a\n');
  assert.ok(await journalled(server.address, 'logs/a.txt', 4000), 'logs/a.txt');
  await mkdir(join(srv, 'logs', 'deep'));
  await writeFile(join(srv, 'logs', 'deep', 'x.txt'), 'x\n');
  assert.ok(await journalled(server.address, 'logs/deep/x.txt', 4000), 'logs/deep/x.txt');
  await rename(join(srv, 'logs'), join(srv, 'logs.1'));
  await mkdir(join(srv, 'logs'));
  assert.ok(await journalled(server.address, 'logs.1/a.txt', 4000), 'logs.1/a.txt');
  await sleep(500);
  await writeFile(join(srv, 'logs', 'b.txt'), 'b\n');
  assert.ok(await journalled(server.address, 'logs/b.txt', 4000), 'logs/b.txt');
  await writeFile(join(srv, 'logs.1', 'deep', 'y.txt'), 'y\n');
  assert.ok(await journalled(server.address, 'logs.1/deep/y.txt', 4000), 'logs.1/deep/y.txt');
});

T.run();
