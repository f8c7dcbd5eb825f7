// syncFs: a real syncfs through the long-lived helper, and a clear "no" where it cannot.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { release } from 'node:os';
import { cleanupAll, makeTmp } from '../helpers.ts';
import { syncFs, syncFsUsable } from '../../core/sync_fs.ts';

test.after(cleanupAll);

test('syncfs of a directory answers true, calls in flight together each get their own answer, and the process waits for them (then exits: the helper keeps it alive only while a call waits)', async () => {
  if (process.platform !== 'linux' || !/^([6-9]|\d\d|5\.([89]|\d\d))/.test(release())) return console.log('  (skipped: syncfs is used on Linux 5.8 and later only)');
  const dir = await makeTmp('imz-syncfs-');
  writeFileSync(join(dir, 'f'), 'x');
  assert.is(await syncFs(dir), true);
  assert.equal(await Promise.all([dir, dir, dir, dir].map((d) => syncFs(d))), [true, true, true, true]);
});

test('it stands for an fsync of each file only on a local disk file system (not tmpfs, whose fsync does nothing anyway, nor FUSE or network ones)', () => {
  if (process.platform !== 'linux') return console.log('  (skipped: syncfs is Linux only)');
  assert.is(syncFsUsable('/dev/shm'), false, 'tmpfs');
  assert.is(syncFsUsable('/proc'), false, 'proc');
  assert.is(syncFsUsable('/no/such/dir'), false, 'no such directory');
});

test('a name with a newline is refused without reaching the helper (it reads a line a call)', async () => {
  assert.is(await syncFs('/tmp/a\nb'), false);
});

test.run();
