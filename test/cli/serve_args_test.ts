// `imz serve` with a --port that is no TCP port: exit 2 (bad usage), one
// line, and nothing written into the tree (no server state made first).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdir, readdir } from 'node:fs/promises';
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

test.run();
