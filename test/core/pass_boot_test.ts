// core/pass_boot.ts: the worker the CLI starts before anything else loads.
// One that fails before PassWorker adopts it (its script missing, no thread
// to be had) must leave the scan to go on without it, not crash the CLI.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO, cleanupAll, makeTmp } from '../helpers.ts';

test('a worker that fails before warmUp adopts it: no crash, and the scan goes on without it (found by review)', async () => {
  try {
    const tmp = await makeTmp('imz-pass-boot-');
    const script = join(tmp, 'child.mts');
    const core = (m: string) => pathToFileURL(join(REPO, 'core', m)).href;
    // The CLI loading slowly while its thread fails: the failure comes before the handle that listens for it.
    await writeFile(script, `
import { startEarly } from '${core('pass_boot.ts')}';
startEarly(new URL('file:///nonexistent/imz-no-such-scan-worker.cjs'));
await new Promise((r) => setTimeout(r, 400));
const { PassWorker } = await import('${core('pass_worker.ts')}');
PassWorker.warmUp(${JSON.stringify(tmp)}, undefined, { pass: true });
await new Promise((r) => setTimeout(r, 100));
console.log('the scan goes on', PassWorker.take() === undefined ? 'alone' : 'with a new worker');
`);
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: REPO, encoding: 'utf8', timeout: 30_000 });
    assert.is(r.status, 0, `exit ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr.slice(0, 1500)}`);
    assert.ok(r.stdout.includes('the scan goes on'), r.stdout);
  } finally {
    await cleanupAll();
  }
});

test.run();
