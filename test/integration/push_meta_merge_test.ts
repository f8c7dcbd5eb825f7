// A content change pushed over a file whose mode (or only mtime) another replica changed since is no conflict: both
// apply at the push, as they do at a pull. A content change there is still one.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { appendFile, chmod, cp, mkdir, rename, rm, rmdir, utimes, writeFile } from 'node:fs/promises';
import { encodeLogRecord } from '../../core/reint_log_model.ts';
import { join } from 'node:path';
import { runReport as out, cleanupAll, imz, jsonLines, listedConflicts, readReintLog, sampleWorld, setRemote } from '../helpers.ts';

const T = suite('push: a content change meets a chmod there');
T.after.each(cleanupAll);
T.after(cleanupAll);

const modeOf = (p: string) => statSync(p).mode & 0o777;
const changes = async (rep: string) => jsonLines((await imz(['status', '-C', rep, '--json'])).stdout).filter((e) => e.event === 'change');

/**
 * A push of the one change logged in a, cut off once the server applied it: logged while the server is away, marked
 * sent, pushed, then a's state put back as a client killed before settling left it (the change is resent next time,
 * answered as a duplicate).
 */
async function pushCutOff(a: string, address: string): Promise<void> {
  await setRemote(a, '127.0.0.1:1');
  assert.is((await imz(['push', '-C', a, '--quiet'])).code, 4);
  await setRemote(a, address);
  const logged = (await readReintLog(a)).filter((l) => l.t === 'op') as { op: { seq: number } }[];
  assert.is(logged.length, 1);
  await appendFile(join(a, '.imz', 'log'), encodeLogRecord({ t: 'sent', upto: logged[0]!.op.seq }));
  const saved = join(a, '..', 'a-state');
  await cp(join(a, '.imz'), saved, { recursive: true });
  assert.is((await imz(['push', '-C', a, '--quiet'])).code, 0);
  await rm(join(a, '.imz'), { recursive: true });
  await cp(saved, join(a, '.imz'), { recursive: true });
}

/** Two replicas sharing f.txt (mode 644); b's change to it is pushed first, then a's new content, without a pull. */
async function world(there: (f: string) => Promise<void>, here: (f: string) => Promise<void>) {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await writeFile(join(a!, 'f.txt'), 'one\n');
  await chmod(join(a!, 'f.txt'), 0o644);
  for (const [cmd, rep] of [['push', a], ['pull', b]] as const) {
    const r = await imz([cmd, '-C', rep!, '--quiet']);
    assert.is(r.code, 0, out(r));
  }
  await there(join(b!, 'f.txt'));
  const r = await imz(['push', '-C', b!, '--quiet']);
  assert.is(r.code, 0, out(r));
  await here(join(a!, 'f.txt'));
  return { srv, a: a!, b: b!, push: await imz(['push', '-C', a!, '--json']) };
}

T("new content here, a chmod there: the push applies, with the server's mode; a pull then gives that mode here, nothing left", async () => {
  const { srv, a, b, push } = await world((f) => chmod(f, 0o600), (f) => writeFile(f, 'two, longer\n'));
  assert.is(push.code, 0, out(push));
  assert.is(readFileSync(join(srv, 'f.txt'), 'utf8'), 'two, longer\n');
  assert.is(modeOf(join(srv, 'f.txt')), 0o600, "the server's chmod stays");
  assert.equal(await listedConflicts(a), []);
  const p = await imz(['pull', '-C', a, '--quiet']);
  assert.is(p.code, 0, out(p));
  assert.is(modeOf(join(a, 'f.txt')), 0o600);
  assert.equal(await changes(a), [], 'nothing left to push');
  const q = await imz(['pull', '-C', b, '--quiet']);
  assert.is(q.code, 0, out(q));
  assert.is(readFileSync(join(b, 'f.txt'), 'utf8'), 'two, longer\n');
  assert.is(modeOf(join(b, 'f.txt')), 0o600);
});

T("push-only: a second content push after the merged one keeps the server's mode (the replica indexed its own, and sent it back: review)", async () => {
  const { srv, a, push } = await world((f) => chmod(f, 0o600), (f) => writeFile(f, 'two, longer\n'));
  assert.is(push.code, 0, out(push));
  await writeFile(join(a, 'f.txt'), 'three, longer still\n');
  const again = await imz(['push', '-C', a, '--json']);
  assert.is(again.code, 0, out(again));
  assert.is(readFileSync(join(srv, 'f.txt'), 'utf8'), 'three, longer still\n');
  assert.is(modeOf(join(srv, 'f.txt')), 0o600, "the other replica's chmod stays");
  const p = await imz(['pull', '-C', a, '--quiet']);
  assert.is(p.code, 0, out(p));
  assert.is(modeOf(join(a, 'f.txt')), 0o600);
  assert.equal(await changes(a), []);
});

T("a chmod pushed over a content change there, then new content here before a pull: a conflict, the other replica's content kept (review: it was overwritten unseen)", async () => {
  const { srv, a, push } = await world((f) => writeFile(f, 'theirs\n'), (f) => chmod(f, 0o600));
  assert.is(push.code, 0, out(push));
  assert.is(readFileSync(join(srv, 'f.txt'), 'utf8'), 'theirs\n');
  assert.is(modeOf(join(srv, 'f.txt')), 0o600, 'the chmod merged');
  await writeFile(join(a, 'f.txt'), 'mine!!\n');
  const again = await imz(['push', '-C', a, '--json']);
  assert.is(again.code, 3, out(again));
  assert.is(readFileSync(join(srv, 'f.txt'), 'utf8'), 'theirs\n');
  assert.equal((await listedConflicts(a)).map((c) => [c.path, c.class]), [['f.txt', 'update/update']]);
});

T('a chmod pushed over a content change there, then a pull: the content comes, with the mode pushed; nothing left', async () => {
  const { a, push } = await world((f) => writeFile(f, 'theirs\n'), (f) => chmod(f, 0o600));
  assert.is(push.code, 0, out(push));
  const p = await imz(['pull', '-C', a, '--quiet']);
  assert.is(p.code, 0, out(p));
  assert.is(readFileSync(join(a, 'f.txt'), 'utf8'), 'theirs\n');
  assert.is(modeOf(join(a, 'f.txt')), 0o600);
  assert.equal(await changes(a), []);
});

T('new content and a chmod here, another chmod there: the later push wins the mode, as two chmods do', async () => {
  const { srv, push } = await world((f) => chmod(f, 0o600), async (f) => {
    await writeFile(f, 'two\n');
    await chmod(f, 0o640);
  });
  assert.is(push.code, 0, out(push));
  assert.is(readFileSync(join(srv, 'f.txt'), 'utf8'), 'two\n');
  assert.is(modeOf(join(srv, 'f.txt')), 0o640);
});

T('new content here, only a touch there (the same content, another mtime): the push applies', async () => {
  const { srv, push } = await world((f) => utimes(f, new Date('2020-01-02'), new Date('2020-01-02')), (f) => writeFile(f, 'two\n'));
  assert.is(push.code, 0, out(push));
  assert.is(readFileSync(join(srv, 'f.txt'), 'utf8'), 'two\n');
});

T('new content here, new content there: still an update/update conflict under manual (exit 3), both kept', async () => {
  const { srv, a, push } = await world((f) => writeFile(f, 'theirs\n'), (f) => writeFile(f, 'ours!\n'));
  assert.is(push.code, 3, out(push));
  assert.is(readFileSync(join(srv, 'f.txt'), 'utf8'), 'theirs\n');
  assert.is(readFileSync(join(a, 'f.txt'), 'utf8'), 'ours!\n');
  assert.equal((await listedConflicts(a)).map((c) => [c.path, c.class]), [['f.txt', 'update/update']]);
});

T('a chmod over a chmod there, then a removal or a rename here before a pull: no conflict (review: a false remove/update, create/create)', async () => {
  for (const then of ['rm', 'mv'] as const) {
    const { srv, a, push } = await world((f) => chmod(f, 0o755), (f) => chmod(f, 0o600));
    assert.is(push.code, 0, out(push));
    assert.is(modeOf(join(srv, 'f.txt')), 0o600);
    if (then === 'rm') await rm(join(a, 'f.txt'));
    else await rename(join(a, 'f.txt'), join(a, 'g.txt'));
    const again = await imz(['push', '-C', a, '--json']);
    assert.is(again.code, 0, `${then}: ${out(again)}`);
    assert.not.ok(existsSync(join(srv, 'f.txt')), then);
    if (then === 'mv') assert.is(readFileSync(join(srv, 'g.txt'), 'utf8'), 'one\n');
  }
});

T("a chmod merged over a content change there, resent after a push cut off once the server applied it: the next content push meets a conflict, the other replica's content kept (review)", async () => {
  const { srv, server, replicas: [a, b] } = await sampleWorld(2);
  await writeFile(join(a!, 'f.txt'), 'one\n');
  await chmod(join(a!, 'f.txt'), 0o644);
  for (const [cmd, rep] of [['push', a], ['pull', b]] as const) assert.is((await imz([cmd, '-C', rep!, '--quiet'])).code, 0);
  await writeFile(join(b!, 'f.txt'), 'theirs\n');
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await chmod(join(a!, 'f.txt'), 0o600);
  await pushCutOff(a!, server.address);
  const again = await imz(['push', '-C', a!, '--json']);
  assert.is(again.code, 0, out(again));
  await writeFile(join(a!, 'f.txt'), 'mine, written before any pull\n');
  const third = await imz(['push', '-C', a!, '--json']);
  assert.is(third.code, 3, out(third));
  assert.is(readFileSync(join(srv, 'f.txt'), 'utf8'), 'theirs\n');
  assert.equal((await listedConflicts(a!)).map((c) => [c.path, c.class]), [['f.txt', 'update/update']]);
});

T("a directory's chmod resent as a duplicate after the path became a file there: the removal of the directory here never removes that file (review)", async () => {
  const { srv, server, replicas: [a, b] } = await sampleWorld(2);
  await mkdir(join(a!, 'd'));
  await chmod(join(a!, 'd'), 0o755);
  for (const [cmd, rep] of [['push', a], ['pull', b]] as const) assert.is((await imz([cmd, '-C', rep!, '--quiet'])).code, 0);
  await chmod(join(a!, 'd'), 0o700);
  await pushCutOff(a!, server.address);
  assert.is((await imz(['pull', '-C', b!, '--quiet'])).code, 0);
  await rmdir(join(b!, 'd'));
  await writeFile(join(b!, 'd'), "b's file\n");
  await chmod(join(b!, 'd'), 0o700);
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  const again = await imz(['push', '-C', a!, '--json']);
  assert.ok(again.code === 0 || again.code === 3, out(again));
  await rmdir(join(a!, 'd'));
  const third = await imz(['push', '-C', a!, '--json']);
  assert.is(third.code, 3, out(third));
  assert.is(readFileSync(join(srv, 'd'), 'utf8'), "b's file\n");
});

T.run();
