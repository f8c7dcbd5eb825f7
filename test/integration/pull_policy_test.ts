// Conflict policies at pull (replay over a locally modified file): the
// winner is in place, the loser is kept, and settled conflicts don't make
// the exit status 3.
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cleanupAll, imz, sampleWorld, waitFor } from '../helpers.ts';

const T = suite('pull: conflict policies');
T.after.each(cleanupAll);
T.after(cleanupAll);

async function conflicted(): Promise<{ srv: string; a: string; address: string }> {
  const { srv, server, replicas: [a] } = await sampleWorld(1);
  await writeFile(join(a!, 'docs', 'kml.txt'), 'mine\n');
  await writeFile(join(srv, 'docs', 'kml.txt'), 'theirs\n');
  // Wait until the server has journalled its side.
  await waitFor(async () => (await imz(['status', '-C', a!])).stdout.includes('1 record behind'), 5000, 'the server to journal its write');
  return { srv, a: a!, address: server.address };
}

T('server-wins: the server version is in place, mine is a conflict copy that is never pushed', async () => {
  const { srv, a } = await conflicted();
  const r = await imz(['pull', '-C', a, '--policy', 'server-wins']);
  assert.is(r.code, 0, r.stderr);
  assert.is(await readFile(join(a, 'docs', 'kml.txt'), 'utf8'), 'theirs\n');
  const copy = (await readdir(join(a, 'docs'))).find((n) => n.includes('.imz-conflict-'));
  assert.ok(copy, 'a conflict copy');
  assert.is(await readFile(join(a, 'docs', copy!), 'utf8'), 'mine\n');
  assert.is((await imz(['push', '-C', a])).code, 0);
  assert.not.ok((await readdir(join(srv, 'docs'))).some((n) => n.includes('.imz-conflict-')), 'the copy stays local');
});

T('keep-both: mine moves to a keep name that the next push replicates', async () => {
  const { srv, a } = await conflicted();
  const r = await imz(['pull', '-C', a, '--policy', 'keep-both']);
  assert.is(r.code, 0, r.stderr);
  assert.is(await readFile(join(a, 'docs', 'kml.txt'), 'utf8'), 'theirs\n');
  const keep = (await readdir(join(a, 'docs'))).find((n) => n.includes('.imz-keep-'));
  assert.ok(keep, 'a keep copy');
  assert.is((await imz(['push', '-C', a])).code, 0);
  assert.is(await readFile(join(srv, 'docs', keep!), 'utf8'), 'mine\n', 'both versions on the server');
});

T('client-wins: mine stays; the next push wins and the server keeps its version displaced', async () => {
  const { srv, a } = await conflicted();
  const r = await imz(['pull', '-C', a, '--policy', 'client-wins']);
  assert.is(r.code, 0, r.stderr);
  assert.is(await readFile(join(a, 'docs', 'kml.txt'), 'utf8'), 'mine\n');
  assert.is((await imz(['push', '-C', a, '--policy', 'client-wins'])).code, 0);
  assert.is(await readFile(join(srv, 'docs', 'kml.txt'), 'utf8'), 'mine\n');
  const displaced = await readdir(join(srv, '.imz-server', 'displaced'));
  assert.ok(displaced.some((n) => n.endsWith('kml.txt')), 'the server version is kept');
});

T('manual (default): mine stays, the server version is kept in blobs, exit 3', async () => {
  const { a } = await conflicted();
  const r = await imz(['pull', '-C', a]);
  assert.is(r.code, 3);
  assert.is(await readFile(join(a, 'docs', 'kml.txt'), 'utf8'), 'mine\n');
  const blobs = await readdir(join(a, '.imz', 'conflicts', 'blobs'));
  assert.ok(await Promise.any(blobs.map(async (b) => (await readFile(join(a, '.imz', 'conflicts', 'blobs', b), 'utf8')) === 'theirs\n')), 'theirs is kept');
});

T.run();
