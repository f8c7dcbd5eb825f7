// The same CLI under two runtimes talks to itself: a client under Deno (run
// from the TypeScript sources) clones and pulls from a server under Node (the
// bundle), and a server under Deno serves a clone and a pull made by Node.
// Deno gets generous timeouts: its first start type-checks nothing but still
// compiles the sources.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { appendFile, chmod, mkdir, readFile, readlink, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  DENO, type Runtime, type SnapEntry,
  cleanupAll, copyFixture, diffTrees, findTemps, imz, jsonLines, makeTmp, snapshotTree, startServer,
} from '../helpers.ts';

const T = suite('cross-runtime');
T.after.each(cleanupAll);
T.after(cleanupAll);

const DENO_MS = 30_000;

function assertSame(a: Record<string, SnapEntry>, b: Record<string, SnapEntry>, what: string): void {
  const d = diffTrees(a, b);
  assert.ok(d.length === 0, `${what}: trees differ:\n  ${d.join('\n  ')}`);
}

/** The sample tree plus entries that are easy to get wrong between runtimes. */
async function richTree(tmp: string): Promise<string> {
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  await writeFile(join(srv, 'run.sh'), '#!/bin/sh\necho hi\n');
  await chmod(join(srv, 'run.sh'), 0o755);
  await writeFile(join(srv, 'naïve – ü.txt'), 'unicode\n');
  await mkdir(join(srv, 'deep', 'er', 'est'), { recursive: true });
  await symlink('/nonexistent/absolute/target', join(srv, 'abs-link'));
  await symlink('missing', join(srv, 'dangling'));
  // An mtime just past a whole millisecond (Deno's node:fs reports whole ms;
  // written back as fractional seconds, ...395 ms can land at ...394.999).
  await writeFile(join(srv, 'precise.txt'), 'mtime on a millisecond boundary\n');
  await utimes(join(srv, 'precise.txt'), 1795620528.3955, 1795620528.3955);
  // Larger than one chunk, so it travels by READs rather than in the tar stream.
  const big = Buffer.alloc(3 * 1024 * 1024 + 17);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 12)) & 0xff;
  await writeFile(join(srv, 'big.bin'), big);
  return srv;
}

/** Pulls (under runtime) until the replica equals the server tree, or fails with the difference. */
async function pullUntilSame(srv: string, replica: string, runtime: Runtime, timeoutMs = 40_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (let n = 1; ; n++) {
    const r = await imz(['pull', '-C', replica, '--json'], { runtime, timeoutMs: DENO_MS });
    assert.is(r.code, 0, `pull (${runtime}) exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    jsonLines(r.stdout);
    const d = diffTrees(await snapshotTree(srv), await snapshotTree(replica));
    if (d.length === 0) return;
    if (Date.now() > end) assert.unreachable(`replica (${runtime}) did not converge after ${n} pulls:\n  ${d.join('\n  ')}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

async function editServer(srv: string): Promise<void> {
  await writeFile(join(srv, 'added.txt'), 'added after the clone\n');
  await appendFile(join(srv, 'README.txt'), 'changed after the clone\n');
  await unlink(join(srv, 'src/main.js'));
  await unlink(join(srv, 'HISTORY'));
  await symlink('README.txt', join(srv, 'HISTORY'));
}

T.before(() => {
  assert.ok(existsSync(DENO), `deno is installed at ${DENO} (npm ci)`);
});

T('a client under Deno clones and pulls from a server under Node', async () => {
  const tmp = await makeTmp();
  const srv = await richTree(tmp);
  const server = await startServer(srv, [], { runtime: 'node' });
  const replica = join(tmp, 'replica');
  const r = await imz(['clone', server.address, replica, '--json'], { runtime: 'deno', timeoutMs: DENO_MS });
  assert.is(r.code, 0, `deno clone exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.ok(jsonLines(r.stdout).some((e) => e.event === 'cloned'), r.stdout);
  assertSame(await snapshotTree(srv), await snapshotTree(replica), 'deno clone of a node server');
  assert.is(await readlink(join(replica, 'abs-link')), '/nonexistent/absolute/target');
  assert.equal(await findTemps(replica), []);

  await editServer(srv);
  await pullUntilSame(srv, replica, 'deno');
  assert.is(await readFile(join(replica, 'added.txt'), 'utf8'), 'added after the clone\n');
  assert.is(await readlink(join(replica, 'HISTORY')), 'README.txt');
});

T('a client under Deno pushes new and changed files (uploaded while its scan hashes them) to a server under Node', async () => {
  const tmp = await makeTmp();
  const srv = await richTree(tmp);
  const server = await startServer(srv, [], { runtime: 'node' });
  const replica = join(tmp, 'replica');
  assert.is((await imz(['clone', server.address, replica])).code, 0);
  // Enough small files for the scan to ask about them and upload them before it ends, and one edit.
  await mkdir(join(replica, 'from-deno'));
  for (let i = 0; i < 300; i++) await writeFile(join(replica, 'from-deno', `f${i}.txt`), `pushed under deno ${i}\n`.repeat(1 + (i % 9)));
  await writeFile(join(replica, 'README.txt'), 'edited under deno\n');
  const r = await imz(['push', '-C', replica, '--json'], { runtime: 'deno', timeoutMs: DENO_MS });
  assert.is(r.code, 0, `deno push exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.is(jsonLines(r.stdout).find((e) => e.event === 'pushed')?.applied, 302, r.stdout);
  assertSame(await snapshotTree(replica), await snapshotTree(srv), 'the node server after a deno push');
  const again = await imz(['status', '-C', replica, '--json']);
  assert.is(jsonLines(again.stdout).find((e) => e.event === 'status')?.changes, 0, `node sees the index deno wrote as clean: ${again.stdout}`);
});

T('a server under Deno serves a clone and a pull made by Node', async () => {
  const tmp = await makeTmp();
  const srv = await richTree(tmp);
  const server = await startServer(srv, [], { runtime: 'deno', timeoutMs: DENO_MS });
  const replica = join(tmp, 'replica');
  const r = await imz(['clone', server.address, replica, '--json'], { runtime: 'node' });
  assert.is(r.code, 0, `node clone exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assertSame(await snapshotTree(srv), await snapshotTree(replica), 'node clone of a deno server');
  assert.equal(await findTemps(replica), []);

  await editServer(srv);
  await pullUntilSame(srv, replica, 'node');
  assert.not.ok(existsSync(join(replica, 'src/main.js')));

  const stopped = await server.stop('SIGTERM');
  assert.is(stopped.code, 0, `the deno server stops cleanly on SIGTERM (code ${stopped.code}, signal ${stopped.signal})\n${server.output().stderr}`);
});

T('under Deno: an on-demand clone, cat and get, against a Node server that requires a token', async () => {
  const tmp = await makeTmp();
  const srv = await richTree(tmp);
  await writeFile(join(tmp, 'tokens'), 'cross-runtime-token-0123456789\n');
  const server = await startServer(srv, ['--token-file', join(tmp, 'tokens')]);
  const replica = join(tmp, 'replica');
  const env = { IMZ_TOKEN: 'cross-runtime-token-0123456789' };
  const c = await imz(['clone', '--on-demand', server.address, replica], { runtime: 'deno', env, timeoutMs: DENO_MS });
  assert.is(c.code, 0, c.stderr);
  assert.not.ok(existsSync(join(replica, 'run.sh')), 'no content yet');
  const cat = await imz(['cat', 'run.sh'], { cwd: replica, runtime: 'deno', env, timeoutMs: DENO_MS });
  assert.is(cat.stdout, '#!/bin/sh\necho hi\n');
  const get = await imz(['get', '--all'], { cwd: replica, runtime: 'deno', env, timeoutMs: DENO_MS });
  assert.is(get.code, 0, get.stderr);
  assertSame(await snapshotTree(srv), await snapshotTree(replica), 'deno on-demand replica made full');
  const wrong = await imz(['pull'], { cwd: replica, runtime: 'deno', env: { IMZ_TOKEN: 'a-wrong-token-0123456789' }, timeoutMs: DENO_MS });
  assert.is(wrong.code, 1);
  assert.match(wrong.stderr, /did not accept the token/);
});

T.run();
