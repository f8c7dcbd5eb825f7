// Operation numbers against a real `imz serve`: a replica whose .imz/opseq
// is lost, damaged or older than the server's count (restored from a backup,
// or the replica copied whole) still gets every new change applied; the
// server never takes a new operation for one it already applied.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupAll, imz, servedClone } from '../helpers.ts';

test.after(cleanupAll);

async function world(): Promise<{ tmp: string; srv: string; a: string }> {
  const { tmp, srv, a } = await servedClone('imz-seq-', { 'seed.txt': 'seed\n' });
  for (let i = 1; i <= 3; i++) await writeFile(join(a, `f${i}.txt`), `${i}\n`);
  assert.is((await imz(['push', '-C', a, '--quiet'])).code, 0);
  return { tmp, srv, a };
}

const pushed = async (replica: string) => {
  const r = await imz(['push', '-C', replica, '--quiet']);
  assert.is(r.code, 0, r.stderr);
};

for (const damage of ['removed', 'garbage', 'rewound']) {
  test(`.imz/opseq ${damage}: the next push still applies a new change`, async () => {
    const { srv, a } = await world();
    const seqFile = join(a, '.imz', 'opseq');
    if (damage === 'removed') await rm(seqFile);
    else if (damage === 'garbage') await writeFile(seqFile, 'not json');
    else await writeFile(seqFile, JSON.stringify({ next: 2 }) + '\n');
    await writeFile(join(a, 'important.txt'), 'important\n');
    await pushed(a);
    assert.is(await readFile(join(srv, 'important.txt'), 'utf8'), 'important\n');
    const st = await imz(['status', '-C', a, '--json']);
    assert.ok(!st.stdout.includes('important.txt'), `nothing left to push: ${st.stdout}`);
  });
}

test('a replica copied whole (one replica id, two trees): each copy\'s new changes are applied', async () => {
  const { tmp, srv, a } = await world();
  const copy = join(tmp, 'copy');
  execFileSync('cp', ['-a', a, copy]); // as a user copies a tree (times kept: the copy's index still matches it)
  for (let i = 4; i <= 6; i++) await writeFile(join(a, `f${i}.txt`), `${i}\n`);
  await pushed(a);
  await writeFile(join(copy, 'mine.txt'), 'mine\n');
  await pushed(copy);
  assert.is(await readFile(join(srv, 'mine.txt'), 'utf8'), 'mine\n');
});

test.run();
