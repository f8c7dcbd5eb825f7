// Server-side confinement against a tree changed under the server: a parent
// directory swapped for a symlink to somewhere else between the scan and a
// read must not let READ or SNAPSHOT return what lies outside the tree.
import { mkdir, rename, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Remote } from '../../core/remote.ts';
import { ImzServer } from '../../core/server.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

let server: ImzServer | undefined;
test.after(async () => {
  await server?.close();
  await cleanupAll();
});

test('a directory swapped for a symlink after the scan: READ and SNAPSHOT refuse what it reaches', async () => {
  const tmp = await makeTmp('imz-confine-');
  const root = join(tmp, 'tree');
  const outside = join(tmp, 'secret');
  await mkdir(join(root, 'd'), { recursive: true });
  await mkdir(outside);
  await writeFile(join(root, 'd/f.txt'), 'public!');
  // Same size and mtime as the listed file: only the inode tells them apart.
  await writeFile(join(outside, 'f.txt'), 'SECRET!');
  // Whole seconds: both files then carry exactly the same mtime.
  await utimes(join(root, 'd/f.txt'), 1_700_000_000, 1_700_000_000);
  await utimes(join(outside, 'f.txt'), 1_700_000_000, 1_700_000_000);
  // A long debounce: the swap stays unnoticed by the watcher during the test.
  server = new ImzServer({ dir: root, rescanMs: 0, debounceMs: 60_000 });
  const { port } = await server.start();
  const r = await Remote.connect(`127.0.0.1:${port}`);
  const e = await r.stat('d/f.txt');
  await rename(join(root, 'd'), join(tmp, 'd-moved'));
  await symlink(outside, join(root, 'd'));
  let code = '';
  try {
    await r.read('d/f.txt', e.hash, 0, 100);
  } catch (err) {
    code = (err as { code: string }).code;
  }
  assert.is(code, 'IMZ_STALE');
  let tar = Buffer.alloc(0);
  for await (const b of r.snapshot(['d/f.txt'])) tar = Buffer.concat([tar, b]);
  assert.is(tar.indexOf('SECRET'), -1, 'the snapshot holds nothing from outside');
  r.close();
});

test.run();
