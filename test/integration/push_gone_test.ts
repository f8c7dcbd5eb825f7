// A chmod or a move made here, of a file or directory another replica removed
// (or replaced) meanwhile: under client-wins it comes back on the server
// whole (this replica's content and mode), not refused; under manual it is a
// conflict, kept here as it is; where the removal wins (server-wins, newest,
// keep-both) a directory's chmod gives way and the next pull removes it.
// (From the reviews of b040e51 and d5ac8dc: client-wins answered "setattr was
// refused: it does not exist on the server", exit 1, at every push.)
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { chmod, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EntryType } from '../../protocol/messages.ts';
import { OpKind } from '../../protocol/constants.ts';
import { ReintLog } from '../../core/reint_log.ts';
import { Replica } from '../../core/replica.ts';
import { hashFile, toHex } from '../../core/hash.ts';
import { runReport as out, cleanupAll, imz, jsonLines, sampleWorld } from '../helpers.ts';

const T = suite('push: a chmod or move of what the server removed');
T.after.each(cleanupAll);
T.after(cleanupAll);

const modeOf = (p: string) => (statSync(p).mode & 0o777).toString(8);
const changes = async (rep: string) => jsonLines((await imz(['status', '-C', rep, '--json'])).stdout).filter((e) => e.event === 'change');

// Replica b removes README.txt and docs/kml.txt and pushes; replica a chmods the first and moves the second.
async function world() {
  const w = await sampleWorld(2);
  const [a, b] = w.replicas;
  const content = { readme: readFileSync(join(a!, 'README.txt')), kml: readFileSync(join(a!, 'docs', 'kml.txt')) };
  await rm(join(b!, 'README.txt'));
  await rm(join(b!, 'docs', 'kml.txt'));
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await chmod(join(a!, 'README.txt'), 0o600);
  await rename(join(a!, 'docs', 'kml.txt'), join(a!, 'docs', 'kml-moved.txt'));
  return { ...w, a: a!, b: b!, content };
}

T('client-wins: both files come back on the server with this replica\'s content and mode; nothing left; the other replica gets them', async () => {
  const { srv, a, b, content } = await world();
  const r = await imz(['push', '-C', a, '--policy', 'client-wins', '--json']);
  assert.is(r.code, 0, out(r));
  assert.ok(readFileSync(join(srv, 'README.txt')).equals(content.readme), 'README.txt back on the server');
  assert.is(modeOf(join(srv, 'README.txt')), '600');
  assert.ok(readFileSync(join(srv, 'docs', 'kml-moved.txt')).equals(content.kml), 'the moved file on the server');
  assert.not.ok(statSync(join(srv, 'docs', 'kml.txt'), { throwIfNoEntry: false }), 'its old name stays removed');
  assert.equal(await changes(a), [], 'nothing left to push');
  assert.is((await imz(['pull', '-C', a, '--quiet'])).code, 0);
  assert.is(modeOf(join(a, 'README.txt')), '600', 'the pull keeps it');
  assert.is((await imz(['pull', '-C', b, '--quiet'])).code, 0);
  assert.ok(readFileSync(join(b, 'README.txt')).equals(content.readme), 'the other replica has it back');
  assert.ok(readFileSync(join(b, 'docs', 'kml-moved.txt')).equals(content.kml));
});

T('manual: conflicts (exit 3), the files kept here as they are', async () => {
  const { srv, a, content } = await world();
  const r = await imz(['push', '-C', a, '--json']);
  assert.is(r.code, 3, out(r));
  assert.ok(readFileSync(join(a, 'README.txt')).equals(content.readme));
  assert.is(modeOf(join(a, 'README.txt')), '600');
  assert.ok(readFileSync(join(a, 'docs', 'kml-moved.txt')).equals(content.kml));
  assert.not.ok(statSync(join(srv, 'README.txt'), { throwIfNoEntry: false }), 'the server keeps its removal until resolved');
});

T('client-wins, a chmod of a directory another replica removed, or replaced by a file: the directory comes back with this mode, exit 0', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await rm(join(b!, 'src', 'lib'), { recursive: true });
  await rm(join(b!, 'docs'), { recursive: true });
  writeFileSync(join(b!, 'docs'), 'now a file\n');
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await chmod(join(a!, 'src', 'lib'), 0o700);
  await chmod(join(a!, 'docs'), 0o750);
  const r1 = await imz(['push', '-C', a!, '--policy', 'client-wins', '--json']);
  assert.is(r1.code, 0, out(r1));
  assert.ok(statSync(join(srv, 'src', 'lib')).isDirectory(), 'src/lib is a directory on the server again');
  assert.is(modeOf(join(srv, 'src', 'lib')), '700');
  assert.ok(statSync(join(srv, 'docs')).isDirectory(), "docs: this replica's directory, not b's file");
  assert.is(modeOf(join(srv, 'docs')), '750');
  const r2 = await imz(['push', '-C', a!, '--policy', 'client-wins', '--json']);
  assert.is(r2.code, 0, `a second push: ${out(r2)}`);
  assert.equal(await changes(a!), [], 'nothing left to push');
});

for (const policy of ['server-wins', 'newest', 'keep-both']) {
  T(`${policy}: a chmod of a directory another replica removed loses to the removal: removed here too, nothing left to push`, async () => {
    const { srv, replicas: [a, b] } = await sampleWorld(2);
    await rm(join(b!, 'src', 'lib'), { recursive: true });
    assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
    await chmod(join(a!, 'src', 'lib'), 0o700);
    const r = await imz(['push', '-C', a!, '--policy', policy, '--json']);
    assert.is(r.code, 0, out(r));
    assert.not.ok(statSync(join(srv, 'src', 'lib'), { throwIfNoEntry: false }), 'still removed on the server');
    assert.not.ok(statSync(join(a!, 'src', 'lib'), { throwIfNoEntry: false }), 'removed here by the push');
    assert.equal(await changes(a!), [], 'nothing left to push');
    const p = await imz(['pull', '-C', a!, '--policy', policy, '--json']);
    assert.is(p.code, 0, out(p));
    assert.equal(await changes(a!), []);
  });
}

T('server-wins, a chmod of a directory that another replica chmodded too, or replaced by a file: the server\'s side here at once', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await chmod(join(b!, 'src'), 0o750);
  await rm(join(b!, 'docs'), { recursive: true });
  writeFileSync(join(b!, 'docs'), 'now a file\n');
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await chmod(join(a!, 'src'), 0o700);
  await chmod(join(a!, 'docs'), 0o700);
  const r = await imz(['push', '-C', a!, '--policy', 'server-wins', '--json']);
  assert.is(r.code, 0, out(r));
  assert.is(modeOf(join(a!, 'src')), '750', "src takes the server's mode");
  assert.ok(statSync(join(a!, 'docs')).isFile(), "docs is the server's file here");
  assert.ok(readFileSync(join(a!, 'docs')).equals(readFileSync(join(srv, 'docs'))));
  assert.equal(await changes(a!), [], 'nothing left to push');
  const p = await imz(['pull', '-C', a!, '--policy', 'server-wins', '--json']);
  assert.is(p.code, 0, out(p));
  assert.is(modeOf(join(a!, 'src')), '750');
});

T('server-wins after a manual pull kept the chmod as a conflict (the removal already read): the push removes the directory here', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await rm(join(b!, 'src', 'lib'), { recursive: true });
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await chmod(join(a!, 'src', 'lib'), 0o700);
  const p = await imz(['pull', '-C', a!, '--json']);
  assert.is(p.code, 3, out(p));
  const r = await imz(['push', '-C', a!, '--policy', 'server-wins', '--json']);
  assert.is(r.code, 0, out(r));
  assert.not.ok(statSync(join(a!, 'src', 'lib'), { throwIfNoEntry: false }), 'removed here');
  assert.not.ok(statSync(join(srv, 'src', 'lib'), { throwIfNoEntry: false }), 'and still on the server');
  assert.equal(await changes(a!), [], 'nothing left to push');
  const s = jsonLines((await imz(['status', '-C', a!, '--json'])).stdout).at(-1)!;
  assert.is(s.conflicts, 0, JSON.stringify(s));
});

T('a chmod an interrupted push sent, of a file removed on the server, resent under client-wins: exit 0, the file back', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  const content = readFileSync(join(a!, 'README.txt'));
  await rm(join(b!, 'README.txt'));
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await chmod(join(a!, 'README.txt'), 0o600);
  // What a push (under manual, say) leaves when the connection drops after the operation went out: logged, marked sent.
  const rep = await Replica.open(a!);
  const idx = (await rep.get('README.txt'))!;
  const st = statSync(join(a!, 'README.txt'));
  const log = await ReintLog.open(rep.stateDir);
  const seq = await log.reserve(1);
  await log.append([
    { t: 'op', op: { seq, kind: OpKind.SETATTR, path: 'README.txt', fromPath: '', base: idx.version, fromBase: 0,
      state: { type: EntryType.FILE, size: st.size, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs, hash: toHex(await hashFile(join(a!, 'README.txt'))), target: '' } } },
    { t: 'sent', upto: seq },
  ]);
  const r = await imz(['push', '-C', a!, '--policy', 'client-wins']);
  assert.ok(readFileSync(join(srv, 'README.txt')).equals(content), 'README.txt back on the server');
  assert.is(r.code, 0, out(r));
});

T.run();
