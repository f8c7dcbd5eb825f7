// Damaged replica state, against a real `imz serve`. An index bucket:
// status and push name it and say to run `imz pull --resync` (exit 1), and
// that command does rebuild it (the bucket set aside, kept; its paths
// compared by hash; a local change in it kept and pushed). A state file
// that is a directory: one line naming it, and once it is moved away the
// push goes through.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdir, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupAll, diffTrees, imz, servedClone, snapshotTree } from '../helpers.ts';

test.after(cleanupAll);

for (const damage of ['truncated', 'a directory']) {
  test(`an index bucket ${damage}: a clear error, and pull --resync rebuilds it`, async () => {
    const { srv, a } = await servedClone('imz-index-damage-', Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`f${i}.txt`, `server ${i}\n`])));
    await writeFile(join(a, 'f7.txt'), 'mine\n');
    const dir = join(a, '.imz', 'index');
    const buckets = (await readdir(dir)).sort();
    for (const b of buckets.slice(0, 3)) {
      if (damage === 'truncated') await truncate(join(dir, b), 20);
      else {
        await rm(join(dir, b));
        await mkdir(join(dir, b));
      }
    }
    for (const cmd of ['status', 'push']) {
      const r = await imz([cmd, '-C', a]);
      assert.is(r.code, 1, `${cmd}: ${r.stderr}`);
      assert.match(r.stderr, /cannot read replica index: .*index\/\w\w .*imz pull --resync/, r.stderr);
      assert.is(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    }
    const p = await imz(['pull', '--resync', '-C', a]);
    assert.ok(p.code === 0 || p.code === 3, `pull --resync: ${p.code} ${p.stderr}`);
    assert.ok((await readdir(dir)).some((n) => n.includes('.damaged-')), 'the damaged bucket is kept aside');
    assert.is(await readFile(join(a, 'f7.txt'), 'utf8'), 'mine\n', 'the local change is kept');
    const s = await imz(['sync', '-C', a, '--policy', 'client-wins', '--quiet']);
    assert.is(s.code, 0, s.stderr);
    assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(a)), []);
    assert.is(await readFile(join(srv, 'f7.txt'), 'utf8'), 'mine\n');
  });
}

for (const name of ['log', 'opseq']) {
  test(`.imz/${name} a directory: push names it in one line (exit 1); moved away, the push goes through`, async () => {
    const { srv, a } = await servedClone('imz-state-dir-', { 'seed.txt': 'seed\n' });
    await writeFile(join(a, 'new.txt'), 'new\n');
    const file = join(a, '.imz', name);
    await rm(file, { force: true });
    await mkdir(file);
    const r = await imz(['push', '-C', a]);
    assert.is(r.code, 1, r.stderr);
    assert.is(r.stderr, `imz: cannot push: ${file} is a directory where imz keeps a file; move it away, then run the command again (it resumes where it stopped)\n`);
    await rm(file, { recursive: true });
    assert.is((await imz(['push', '-C', a, '--quiet'])).code, 0);
    assert.is(await readFile(join(srv, 'new.txt'), 'utf8'), 'new\n');
  });
}

test.run();
