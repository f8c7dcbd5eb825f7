// A lost chmod -R of a deep tree another replica removed (server-wins): the
// push removes it here, settled, status clean, every level or only the top
// chmodded. (Each directory used to queue a removal of everything under it,
// and read the whole index: a chain 120 deep with 20 files a level took 12 s
// against 0.9 s; from the review of f481e03. Times are printed, not asserted.)
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupAll, imz, jsonLines, sampleWorld } from '../helpers.ts';

const T = suite('push: a lost chmod -R of a deep removed tree');
T.after(cleanupAll);
const DEPTH = 120;
const chain = (k: number) => ['deep', ...Array.from({ length: k }, () => 'a')].join('/');

T('server-wins: chmod -R of every level, or of the top only: exit 0, removed here, nothing left', async () => {
  const times: Record<string, number> = {};
  for (const how of ['top', 'all']) {
    const { replicas: [a, b] } = await sampleWorld(2, async (srv) => {
      for (let k = 0; k <= DEPTH; k++) {
        await mkdir(join(srv, chain(k)), { recursive: true });
        for (let i = 0; i < 20; i++) await writeFile(join(srv, chain(k), `f${i}.txt`), `${k}/${i}\n`);
      }
    });
    await rm(join(b!, 'deep'), { recursive: true });
    assert.is((await imz(['push', '-C', b!, '--quiet', '--allow-mass-delete'], { timeoutMs: 120_000 })).code, 0);
    for (let k = how === 'top' ? 0 : DEPTH; k >= 0; k--) await chmod(join(a!, chain(k)), 0o700);
    const t0 = Date.now();
    const r = await imz(['push', '-C', a!, '--policy', 'server-wins', '--json'], { timeoutMs: 300_000 });
    times[how] = Date.now() - t0;
    assert.is(r.code, 0, r.stderr);
    assert.not.ok(existsSync(join(a!, 'deep')), 'removed here');
    const st = jsonLines((await imz(['status', '-C', a!, '--json'])).stdout).at(-1)!;
    assert.is(st.changes, 0);
    assert.is(st.conflicts, 0);
    console.log(`${how}: push ${times[how]} ms, exit ${r.code}, status ${JSON.stringify({ changes: st.changes, conflicts: st.conflicts, tracked: st.tracked })}`);
    await cleanupAll();
  }
});

T.run();
