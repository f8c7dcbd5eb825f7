// A pull over a path whose content is the server's but whose mode was changed
// here and not pushed yet (a chmod): the chmod stays a local change and the
// next push sends it; a server's chmod over a path only touched here is taken.
// (From the review of b040e51: the pull indexed the mode on disk, so the push
// found nothing to send, and status said all was clean while the server held
// another mode.)
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { statSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { runReport as out, cleanupAll, imz, jsonLines, sampleWorld } from '../helpers.ts';

const T = suite('pull: a local mode change');
T.after.each(cleanupAll);
T.after(cleanupAll);

const modeOf = (p: string) => (statSync(p).mode & 0o777).toString(8);
const changes = async (rep: string) => jsonLines((await imz(['status', '-C', rep, '--json'])).stdout).filter((e) => e.event === 'change');

T('own mkdir left for the pull (a server write came first), a chmod of it here, then sync: the chmod reaches the server', async () => {
  const { srv, replicas: [rep] } = await sampleWorld(1);
  // A record not made by this replica comes first: the push cannot move HEAD past its own mkdir record.
  writeFileSync(join(srv, 'server-note.txt'), 'written on the server\n');
  await new Promise((r) => setTimeout(r, 500));
  await mkdir(join(rep!, 'd'));
  const p1 = await imz(['push', '-C', rep!, '--quiet']);
  assert.is(p1.code, 0, out(p1));
  await chmod(join(rep!, 'd'), 0o700);
  const s = await imz(['sync', '-C', rep!, '--json']);
  assert.is(s.code, 0, out(s));
  assert.is(modeOf(join(srv, 'd')), '700', `the server has the replica's chmod\n${s.stdout}`);
  assert.is(modeOf(join(rep!, 'd')), '700');
  assert.equal(await changes(rep!), [], 'nothing left to push');
});

T("another replica's chmod, and one here: pulled, then pushed; both sides end with this replica's, nothing left over", async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await chmod(join(b!, 'src'), 0o750);
  await chmod(join(b!, 'README.txt'), 0o640);
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await chmod(join(a!, 'src'), 0o700);
  await chmod(join(a!, 'README.txt'), 0o600);
  const p = await imz(['pull', '-C', a!, '--json']);
  assert.is(p.code, 0, out(p));
  assert.is(modeOf(join(a!, 'src')), '700', 'the pull left the local chmod in place');
  assert.equal((await changes(a!)).map((e) => e.path).sort(), ['README.txt', 'src'], 'still changes to push');
  const push = await imz(['push', '-C', a!, '--json']);
  assert.is(push.code, 0, out(push));
  for (const [path, mode] of [['src', '700'], ['README.txt', '600']] as const) {
    assert.is(modeOf(join(srv, path)), mode, `server ${path}`);
    assert.is(modeOf(join(a!, path)), mode, `replica ${path}`);
  }
  assert.equal(await changes(a!), []);
  assert.is((await imz(['pull', '-C', b!, '--quiet'])).code, 0);
  assert.is(modeOf(join(b!, 'src')), '700', 'the other replica takes it at its pull');
});

T("a server's chmod of a file only touched here (same content): the pull takes the server's mode", async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await chmod(join(b!, 'README.txt'), 0o600);
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await utimes(join(a!, 'README.txt'), 1_700_000_000, 1_700_000_000);
  const p = await imz(['pull', '-C', a!, '--json']);
  assert.is(p.code, 0, out(p));
  assert.is(modeOf(join(a!, 'README.txt')), '600', "the server's chmod reached the replica");
  assert.is(modeOf(join(srv, 'README.txt')), '600');
  assert.equal(await changes(a!), [], 'nothing to push');
});

T.run();
