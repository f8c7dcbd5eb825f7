// core/fast_lstat.ts: the numbers it gives are lstatSync's, whichever way
// it gets them, for every kind of path, and absence and ENOTDIR as lstat has them.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lstatSync } from 'node:fs';
import { mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { type StatFacts, lstatFacts } from '../../core/fast_lstat.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

test.after(cleanupAll);

test('file, directory, symlink, odd times: the same facts as lstatSync', async () => {
  const tmp = await makeTmp('imz-fast-lstat-');
  await writeFile(join(tmp, 'f'), 'x'.repeat(1234));
  await mkdir(join(tmp, 'd'));
  await symlink('f', join(tmp, 'l'));
  await writeFile(join(tmp, 'old'), '');
  await utimes(join(tmp, 'old'), 1, 86400 * 365.25 + 0.123456); // fractions of a second, far back
  for (const name of ['f', 'd', 'l', 'old', '']) {
    const p = join(tmp, name);
    const got: StatFacts = { mode: 0, ino: 0, size: 0, mtimeMs: 0, ctimeMs: 0 };
    assert.ok(lstatFacts(p, got), name);
    const st = lstatSync(p);
    assert.equal(got, { mode: st.mode, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs }, name);
  }
  const none: StatFacts = { mode: 0, ino: 0, size: 0, mtimeMs: 0, ctimeMs: 0 };
  assert.is(lstatFacts(join(tmp, 'missing'), none), false);
  try {
    lstatFacts(join(tmp, 'f', 'below-a-file'), none);
    assert.unreachable('ENOTDIR');
  } catch (err) {
    assert.is((err as NodeJS.ErrnoException).code, 'ENOTDIR');
  }
});

test('a first call on a missing path (a server about to make a new file) still gets the raw lstat for the calls after it', () => {
  // A fresh process: the choice is made once per process, at its first call.
  const mod = new URL('../../core/fast_lstat.ts', import.meta.url).href;
  const code = `const m = await import(${JSON.stringify(mod)}); const f = { mode: 0, ino: 0, size: 0, mtimeMs: 0, ctimeMs: 0 };
    const first = m.lstatFacts('/no/such/imz-path', f); console.log(JSON.stringify([first, typeof m.rawLstat('/no/such/imz-path')]));`;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8' });
  // Node 20 has the binding (Deno, which has none, never runs this file under node).
  assert.equal(JSON.parse(out), [false, 'function']);
});

test.run();
