// `imz serve` with a --port that is no TCP port, or a directory that is not
// there: exit 2 (bad usage), one line, and nothing written (no server state
// made first).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupAll, imz, makeTmp } from '../helpers.ts';

test.after(cleanupAll);

test('a bad --port: exit 2, one line naming it, no .imz-server made', async () => {
  const tmp = await makeTmp('imz-serve-args-');
  for (const port of ['abc', '70000', '-5', '1.5']) {
    const dir = join(tmp, `d${port}`);
    await mkdir(dir);
    const r = await imz(['serve', dir, '--port', port], { timeoutMs: 10_000 });
    assert.is(r.code, 2, `--port ${port}: ${r.stderr}`);
    assert.match(r.stderr, /^imz: cannot serve: --port must be a TCP port \(0 to 65535\), not \S+\n$/, r.stderr);
    assert.equal(await readdir(dir), [], `--port ${port}: nothing written`);
  }
});

test('a --rescan-interval that is not a number of seconds a timer can wait: exit 2, one line, nothing written (it rescanned every millisecond)', async () => {
  for (const v of ['abc', '-1', '3000000']) {
    const dir = join(await makeTmp('imz-serve-args-'), 'tree');
    await mkdir(dir);
    const r = await imz(['serve', dir, '--port', '0', '--rescan-interval', v], { timeoutMs: 10_000 });
    assert.is(r.code, 2, `--rescan-interval ${v}: ${r.stderr}`);
    assert.match(r.stderr, /^imz: cannot serve: --rescan-interval must be a number of seconds from 0 \(off\) to 2147483, not \S+\n$/, r.stderr);
    assert.equal(await readdir(dir), [], `--rescan-interval ${v}: nothing written`);
  }
});

test('a directory that does not exist, or a file: exit 2, one line, nothing made (a mistyped path was made and served empty)', async () => {
  const tmp = await makeTmp('imz-serve-args-');
  const missing = join(tmp, 'no', 'such');
  const r = await imz(['serve', missing, '--port', '0'], { timeoutMs: 10_000 });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /^imz: cannot serve \S+: no such directory \(create it first, or check the path\)\n$/, r.stderr);
  assert.equal(await readdir(tmp), [], 'nothing made');
  await writeFile(join(tmp, 'file'), 'x');
  const f = await imz(['serve', join(tmp, 'file'), '--port', '0'], { timeoutMs: 10_000 });
  assert.is(f.code, 2, f.stderr);
  assert.match(f.stderr, 'it is not a directory');
  const under = await imz(['serve', join(tmp, 'file', 'sub'), '--port', '0'], { timeoutMs: 10_000 });
  assert.is(under.code, 2, under.stderr);
  assert.match(under.stderr, 'a part of the path is not a directory');
  const dir = join(tmp, 'served');
  await mkdir(dir);
  const state = await imz(['serve', dir, '--state-dir', join(tmp, 'file', 'state'), '--port', '0'], { timeoutMs: 10_000 });
  assert.is(state.code, 2, state.stderr);
  assert.match(state.stderr, /^imz: cannot serve: cannot keep the server state in \S+: a part of the path is not a directory \(give --state-dir a directory this user can write\)\n$/);
});

test.run();
