// A directory's chmod that loses to its removal (server-wins, newest,
// keep-both) removes the directory here through reconcile (f481e03; from its
// review). What the
// directory still holds that is not the server's (an ignored file, a new file
// pushed in the same push) must leave a coherent state and exit code.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { statSync, writeFileSync } from 'node:fs';
import { chmod, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runReport as out, cleanupAll, imz, jsonLines, diffTreesBut, sampleWorld, snapshotTree } from '../helpers.ts';

const T = suite('push: a lost directory chmod with something of ours inside');
T.after.each(cleanupAll);
T.after(cleanupAll);

const statusOf = async (rep: string) => {
  const r = await imz(['status', '-C', rep, '--json']);
  return { code: r.code, lines: jsonLines(r.stdout) };
};

T('server-wins, an ignored file in the directory: the push exits 0 only if no conflict is left for a person', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  writeFileSync(join(a!, '.imzignore'), '*.log\n');
  assert.is((await imz(['push', '-C', a!, '--quiet'])).code, 0);
  await rm(join(b!, 'src', 'lib'), { recursive: true });
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await chmod(join(a!, 'src', 'lib'), 0o700);
  writeFileSync(join(a!, 'src', 'lib', 'debug.log'), 'ignored\n');
  const r = await imz(['push', '-C', a!, '--policy', 'server-wins', '--json']);
  const st = await statusOf(a!);
  const summary = st.lines.at(-1)!;
  console.log(`push: ${out(r)}\nstatus: ${JSON.stringify(st.lines)}`);
  console.log(`src/lib on server: ${!!statSync(join(srv, 'src', 'lib'), { throwIfNoEntry: false })}, here: ${!!statSync(join(a!, 'src', 'lib'), { throwIfNoEntry: false })}`);
  assert.ok(statSync(join(a!, 'src', 'lib', 'debug.log')), 'the ignored file is kept');
  assert.ok(r.code === 3 || summary.conflicts === 0, `push exited ${r.code} while status reports ${String(summary.conflicts)} conflict(s) (exit ${st.code})`);
});

T('server-wins, a new file in the directory pushed with the chmod: the push exits 0 only if no conflict is left; state coherent after a pull', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await rm(join(b!, 'src', 'lib'), { recursive: true });
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await chmod(join(a!, 'src', 'lib'), 0o700);
  writeFileSync(join(a!, 'src', 'lib', 'new.js'), 'new\n');
  const r = await imz(['push', '-C', a!, '--policy', 'server-wins', '--json']);
  const st = await statusOf(a!);
  const summary = st.lines.at(-1)!;
  console.log(`push: ${out(r)}\nstatus: ${JSON.stringify(st.lines)}`);
  console.log(`src/lib/new.js on server: ${!!statSync(join(srv, 'src', 'lib', 'new.js'), { throwIfNoEntry: false })}`);
  assert.ok(statSync(join(a!, 'src', 'lib', 'new.js')), 'the new file is kept here');
  const pl = await imz(['pull', '-C', a!, '--policy', 'server-wins', '--json']);
  const st2 = await statusOf(a!);
  console.log(`after a pull: ${out(pl)}\nstatus: ${JSON.stringify(st2.lines)}\nmode here ${(statSync(join(a!, 'src', 'lib')).mode & 0o777).toString(8)} on server ${(statSync(join(srv, 'src', 'lib')).mode & 0o777).toString(8)}`);
  assert.ok(r.code === 3 || summary.conflicts === 0, `push exited ${r.code} while status reports ${String(summary.conflicts)} conflict(s) (exit ${st.code})`);
});


T('server-wins, a new file in the directory pushed with the chmod: once a pull brings both sides to the same tree, no conflict is left', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await rm(join(b!, 'src', 'lib'), { recursive: true });
  assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
  await chmod(join(a!, 'src', 'lib'), 0o700);
  writeFileSync(join(a!, 'src', 'lib', 'new.js'), 'new\n');
  await imz(['push', '-C', a!, '--policy', 'server-wins', '--json']);
  const pl = await imz(['pull', '-C', a!, '--policy', 'server-wins', '--json']);
  const same = diffTreesBut(await snapshotTree(srv), await snapshotTree(a!));
  const st = await statusOf(a!);
  assert.equal(same, [], 'the trees agree');
  assert.is(st.lines.at(-1)!.conflicts, 0, `the trees agree, yet: pull ${out(pl)}\nstatus ${JSON.stringify(st.lines)}`);
});

for (const policy of ['server-wins', 'newest', 'keep-both']) {
  T(`${policy}: chmod of a removed directory and an edit of a file in it: the edit is kept somewhere here`, async () => {
    const { replicas: [a, b] } = await sampleWorld(2);
    await rm(join(b!, 'src', 'lib'), { recursive: true });
    assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
    await chmod(join(a!, 'src', 'lib'), 0o700);
    writeFileSync(join(a!, 'src', 'lib', 'math.js'), 'precious edit\n');
    const r = await imz(['push', '-C', a!, '--policy', policy, '--json']);
    const snap = await snapshotTree(a!);
    const kept = Object.entries(snap).filter(([, e]) => e.type === 'file' && e.size === 'precious edit\n'.length);
    assert.ok(kept.length > 0, `the edit is gone: ${out(r)}\n${Object.keys(snap).join(' ')}`);
  });
}

for (const policy of ['server-wins', 'newest', 'keep-both']) {
  T(`imz sync --policy ${policy}: a chmod of a directory another replica removed: removed here, no conflict left, exit 0`, async () => {
    const { srv, replicas: [a, b] } = await sampleWorld(2);
    await rm(join(b!, 'src', 'lib'), { recursive: true });
    assert.is((await imz(['push', '-C', b!, '--quiet'])).code, 0);
    await chmod(join(a!, 'src', 'lib'), 0o700);
    const r = await imz(['sync', '-C', a!, '--policy', policy, '--json']);
    const st = await statusOf(a!);
    const summary = st.lines.at(-1)!;
    const info = `sync: ${out(r)}\nstatus: ${JSON.stringify(st.lines)}\nhere: ${!!statSync(join(a!, 'src', 'lib'), { throwIfNoEntry: false })} server: ${!!statSync(join(srv, 'src', 'lib'), { throwIfNoEntry: false })}`;
    assert.is(r.code, 0, info);
    assert.is(summary.conflicts, 0, info);
    assert.is(summary.changes, 0, info);
  });
}

T.run();
