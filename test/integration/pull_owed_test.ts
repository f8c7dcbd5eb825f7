// A file a pull could not fetch (the server's content no longer matched the record it replayed: it kept changing)
// is owed: HEAD lists it, status says so, and the next pull asks the server for it again, though the cursor is
// past its record and no newer record comes. (Before, the message said "run imz pull again", and that pull found
// nothing to do: the replica kept the old content, and status said it was up to date.)
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type RunResult, runReport as out, cleanupAll, conflictRecords, imz, jsonLines, readJournal, servedClone, setRemote, spawnImz, waitFor } from '../helpers.ts';
import { countingProxy } from '../fault_helpers.ts';
import { Op } from '../../protocol/messages.ts';

const T = suite('pull: files that kept changing on the server are fetched by the next pull');
T.after.each(cleanupAll);
T.after(cleanupAll);

// Rewrites a server file in place, same size, same inode, its time put back: the server's lstat check sees nothing.
function rewriteUnseen(file: string, content: string): void {
  const st = statSync(file);
  assert.is(Buffer.byteLength(content), st.size, 'the same size');
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, content, 0);
  } finally {
    closeSync(fd);
  }
  utimesSync(file, st.atime, st.mtime);
}

const statusOf = async (rep: string) => {
  const r = await imz(['status', '-C', rep, '--json']);
  return { r, status: jsonLines(r.stdout).find((e) => e.event === 'status')! };
};

/**
 * Has the server at address journal path as content (renamed in whole, dated in the past: a file written just now is
 * hashed again whatever its lstat says, as git does), then puts hidden on its disk unseen. Returns the journal's
 * records of path and its temporary name, and how many there are once content is journalled.
 */
async function journalThenHide(srv: string, address: string, path = 'keep.txt', content = 'BBBB\n', hidden = 'CCCC\n'): Promise<{ journalled: () => Promise<unknown[]>; records: number }> {
  const tmp = `${path}.new`;
  await writeFile(join(srv, tmp), content);
  utimesSync(join(srv, tmp), new Date('2020-01-01'), new Date('2020-01-01'));
  renameSync(join(srv, tmp), join(srv, path));
  const want = createHash('sha256').update(content).digest('hex');
  const records = async () => (await readJournal(address)).filter((r) => r.path === path || r.path === tmp);
  // path's own record of content, and tmp gone if it was ever journalled: then nothing more is coming for either.
  await waitFor(async () => {
    const rs = await records();
    const newer = rs.filter((r) => r.path === tmp).at(-1);
    return rs.filter((r) => r.path === path).at(-1)?.hash === want && (newer === undefined || newer.type === 0);
  }, 10_000, `the server journalling ${path}`);
  const n = (await records()).length;
  rewriteUnseen(join(srv, path), hidden);
  return { journalled: records, records: n };
}

const head = (rep: string) => JSON.parse(readFileSync(join(rep, '.imz', 'HEAD'), 'utf8'));

/**
 * A served clone a whose pull met keep.txt changed on the server since its record: the server journals B, then its
 * disk holds C unseen (same size, inode and time), and a pull replays B's record and cannot get B.
 */
async function owedScenario(prefix: string) {
  const { srv, server, a } = await servedClone(prefix, { 'keep.txt': 'AAAA\n', 'other.txt': 'same\n' });
  const { journalled, records } = await journalThenHide(srv, server.address);
  const p = await imz(['pull', '-C', a]);
  assert.is(p.code, 0, out(p));
  assert.match(p.stderr, /1 file kept changing on the server and is not here yet; the next `imz pull` fetches it/, out(p));
  assert.not.match(p.stdout, /already up to date/, out(p));
  assert.is(readFileSync(join(a, 'keep.txt'), 'utf8'), 'AAAA\n', 'not fetched (the scenario happened)');
  assert.is((await journalled()).length, records, 'the server journalled nothing more');
  assert.equal(head(a).owed, ['keep.txt'], 'HEAD lists what is owed');
  return { srv, server, a, journalled, records };
}

// The next pull, once the server's disk agrees with its record again (no new record comes), fetches what is owed.
async function fetchedByNextPull(srv: string, a: string, journalled: () => Promise<unknown[]>, records: number): Promise<void> {
  rewriteUnseen(join(srv, 'keep.txt'), 'BBBB\n');
  const q = await imz(['pull', '-C', a]);
  assert.is(q.code, 0, out(q));
  assert.is((await journalled()).length, records, 'no newer record');
  assert.is(readFileSync(join(a, 'keep.txt'), 'utf8'), 'BBBB\n', `fetched by the next pull: ${out(q)}`);
  assert.is(head(a).owed, undefined, 'nothing owed');
  const t = await statusOf(a);
  assert.is(t.status.owed, 0);
  assert.is(t.status.changes, 0, `indexed as the server's: ${out(t.r)}`);
  assert.is(t.status.behind, 0);
}

T('a file whose server content did not match its record is owed, listed by status, and fetched by the next pull', async () => {
  const { srv, a, journalled, records } = await owedScenario('imz-owed-');
  const s = await statusOf(a);
  assert.is(s.status.owed, 1, out(s.r));
  assert.is(s.status.behind, 0, 'the cursor is past its record');
  assert.is(s.status.changes, 0, 'the old content is not a local change');
  const human = await imz(['status', '-C', a]);
  assert.match(human.stderr, /1 file could not be fetched yet .*run `imz pull`.*keep\.txt/, out(human));
  // Pulled (or synced) again while the server still cannot give it: said again, not "up to date".
  const again = await imz(['pull', '-C', a]);
  assert.is(again.code, 0, out(again));
  assert.not.match(again.stdout, /already up to date/, out(again));
  assert.match(again.stderr, /1 file kept changing on the server/, out(again));
  const sync = await imz(['sync', '-C', a, '--json']);
  assert.is(sync.code, 0, out(sync));
  assert.is(jsonLines(sync.stdout).find((e) => e.event === 'synced')?.stale, 1, out(sync));
  assert.match(sync.stderr, /1 file kept changing on the server/, out(sync));
  assert.equal(head(a).owed, ['keep.txt'], 'still owed');
  await fetchedByNextPull(srv, a, journalled, records);
  // And a push has nothing to send.
  const push = await imz(['push', '-C', a, '--json']);
  assert.is(push.code, 0, out(push));
  assert.is(jsonLines(push.stdout).filter((e) => e.event === 'op').length, 0, out(push));
});

T('a follower keeps what is owed when it moves the cursor, and the next pull fetches it', async () => {
  const { srv, server, a, journalled, records } = await owedScenario('imz-owed-follow-');
  const { proc, done } = await spawnImz(['pull', '--follow', '-C', a, '--json']);
  let so = '';
  proc.stdout!.on('data', (d: Buffer) => (so += d.toString()));
  try {
    // Its first pull asks for keep.txt again, and cannot get it either; then it follows.
    await waitFor(() => jsonLines(so).some((e) => e.event === 'following'), 15_000, 'the follower following');
    assert.is(jsonLines(so).find((e) => e.event === 'following')?.stale, 1, 'its catch-up says what it could not fetch');
    await writeFile(join(srv, 'other.txt'), 'changed\n');
    await waitFor(() => readFileSync(join(a, 'other.txt'), 'utf8') === 'changed\n', 15_000, 'the follower applying other.txt');
    const seq = (await readJournal(server.address)).filter((r) => r.path === 'other.txt').at(-1)!.seq;
    await waitFor(() => head(a).cursor >= seq, 5_000, 'HEAD past the record of other.txt');
    assert.equal(head(a).owed, ['keep.txt'], 'still owed after the follower wrote HEAD');
  } finally {
    proc.kill('SIGINT');
    await done;
  }
  await fetchedByNextPull(srv, a, journalled, records);
});

T('a follower that cannot fetch a file says so, owes it, and asks for it again while it stays connected', async () => {
  const { srv, server, a } = await servedClone('imz-owed-live-', { 'keep.txt': 'AAAA\n' });
  const { proc, done } = await spawnImz(['pull', '--follow', '-C', a, '--json']);
  let so = '';
  let se = '';
  proc.stdout!.on('data', (d: Buffer) => (so += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (se += d.toString()));
  let records = 0;
  let journalled = async (): Promise<unknown[]> => [];
  try {
    await waitFor(() => jsonLines(so).some((e) => e.event === 'following'), 15_000, 'the follower following');
    // Held still while the server journals B and its disk comes to hold C unseen: once let go, it meets the record of B.
    proc.kill('SIGSTOP');
    try {
      ({ journalled, records } = await journalThenHide(srv, server.address));
    } finally {
      proc.kill('SIGCONT');
    }
    await waitFor(() => jsonLines(so).some((e) => e.event === 'applied' && e.stale === 1), 10_000, 'an applied event with a file not fetched');
    assert.match(se, /1 file kept changing on the server and is not here yet; the next `imz pull` fetches it/, se);
    assert.is(readFileSync(join(a, 'keep.txt'), 'utf8'), 'AAAA\n', 'not fetched');
    assert.equal(head(a).owed, ['keep.txt']);
    // The server's disk agrees with its record again, and no record comes: the follower (a mirror, say) asks again.
    rewriteUnseen(join(srv, 'keep.txt'), 'BBBB\n');
    await waitFor(() => readFileSync(join(a, 'keep.txt'), 'utf8') === 'BBBB\n', 30_000, 'the follower fetching keep.txt again');
    await waitFor(() => jsonLines(so).some((e) => e.event === 'retried' && e.fetched === 1 && e.stale === 0), 5_000, 'a retried event');
    assert.is(head(a).owed, undefined, 'nothing owed');
    assert.is((await journalled()).length, records, 'no newer record');
  } finally {
    proc.kill('SIGINT');
    await done;
  }
  const t = await statusOf(a);
  assert.is(t.status.changes, 0, `indexed as the server's: ${out(t.r)}`);
  assert.is(t.status.behind, 0);
  assert.is(t.status.owed, 0);
});

T('a local edit to an owed file: a conflict that names no server copy until one is fetched; the edit stays', async () => {
  const { srv, a } = await owedScenario('imz-owed-edit-');
  writeFileSync(join(a, 'keep.txt'), 'mine\n');
  const p = await imz(['pull', '-C', a]);
  assert.is(p.code, 3, out(p));
  const [c1] = await conflictRecords(a);
  assert.is(c1?.path, 'keep.txt', out(p));
  assert.is(c1?.serverBlob, undefined, 'no server copy is named that is not there');
  assert.equal(head(a).owed, ['keep.txt'], 'still owed');
  assert.is(readFileSync(join(a, 'keep.txt'), 'utf8'), 'mine\n');
  rewriteUnseen(join(srv, 'keep.txt'), 'BBBB\n');
  const q = await imz(['pull', '-C', a]);
  assert.is(q.code, 3, out(q));
  const [c2] = await conflictRecords(a);
  assert.ok(c2?.serverBlob, out(q));
  assert.is(readFileSync(join(a, '.imz', String(c2!.serverBlob)), 'utf8'), 'BBBB\n', 'the server version kept');
  assert.is(readFileSync(join(a, 'keep.txt'), 'utf8'), 'mine\n', 'the edit stays');
  assert.is(head(a).owed, undefined);
  const r = await imz(['resolve', '-C', a, 'keep.txt', '--take', 'server']);
  assert.is(r.code, 0, out(r));
  assert.is(readFileSync(join(a, 'keep.txt'), 'utf8'), 'BBBB\n');
});

T('an owed file that .imzignore now excludes is owed no more, and pulls do not wait for it', async () => {
  const { srv, server, a } = await owedScenario('imz-owed-ignored-');
  writeFileSync(join(srv, '.imzignore'), 'keep.txt\n');
  await waitFor(async () => (await readJournal(server.address)).some((r) => r.path === '.imzignore'), 10_000, 'the server journalling .imzignore');
  const p = await imz(['pull', '-C', a]);
  assert.is(p.code, 0, out(p));
  assert.ok(existsSync(join(a, '.imzignore')), out(p));
  const q = await journalRequests(server.port, a);
  assert.is(q.r.code, 0, out(q.r));
  assert.is(head(a).owed, undefined, out(q.r));
  assert.not.match(q.r.stderr, /kept changing/, out(q.r));
  assert.is(q.journals, 1, 'no rounds of waiting: the journal is read once');
});

T('a rule of this replica not pushed yet does not drop an owed file (the server still journals it)', async () => {
  const { srv, a, journalled, records } = await owedScenario('imz-owed-local-rule-');
  writeFileSync(join(a, '.imzignore'), 'keep.txt\n');
  const p = await imz(['pull', '-C', a]);
  assert.is(p.code, 0, out(p));
  assert.equal(head(a).owed, ['keep.txt'], `still owed: ${out(p)}`);
  assert.match(p.stderr, /kept changing/, out(p));
  rewriteUnseen(join(srv, 'keep.txt'), 'BBBB\n');
  const q = await imz(['pull', '-C', a]);
  assert.is(q.code, 0, out(q));
  assert.is((await journalled()).length, records, 'no newer record');
  assert.is(readFileSync(join(a, 'keep.txt'), 'utf8'), 'BBBB\n', `fetched: ${out(q)}`);
  assert.is(head(a).owed, undefined);
});

T('an .imzignore that is not UTF-8 still counts as the rules both sides share', async () => {
  const { srv, server, a } = await owedScenario('imz-owed-latin1-');
  writeFileSync(join(srv, '.imzignore'), Buffer.from('# caf\xe9\nkeep.txt\n', 'latin1'));
  await waitFor(async () => (await readJournal(server.address)).some((r) => r.path === '.imzignore'), 10_000, 'the server journalling .imzignore');
  const p = await imz(['pull', '-C', a]);
  assert.is(p.code, 0, out(p));
  assert.ok(existsSync(join(a, '.imzignore')), out(p));
  const q = await imz(['pull', '-C', a]);
  assert.is(q.code, 0, out(q));
  assert.is(head(a).owed, undefined, `dropped: ${out(q)}`);
});

T('an owed file is not dropped for a rule the same pull removes from the server', async () => {
  const { srv, server, a, journalled, records } = await owedScenario('imz-owed-rule-gone-');
  // The rule is shared: pushed from here, so indexed as it is on disk.
  writeFileSync(join(a, '.imzignore'), 'keep.txt\n');
  const u = await imz(['push', '-C', a]);
  assert.is(u.code, 0, out(u));
  assert.ok(existsSync(join(srv, '.imzignore')), out(u));
  const before = (await readJournal(server.address)).length;
  // Then the server drops it, and keep.txt there agrees with its record again.
  await writeFile(join(srv, '.imzignore'), '');
  await waitFor(async () => (await readJournal(server.address)).length > before, 10_000, 'the server journalling the new .imzignore');
  rewriteUnseen(join(srv, 'keep.txt'), 'BBBB\n');
  const p = await imz(['pull', '-C', a]);
  assert.is(p.code, 0, out(p));
  assert.is(readFileSync(join(a, '.imzignore'), 'utf8'), '', out(p));
  assert.is((await journalled()).length, records, 'no newer record of keep.txt');
  assert.is(readFileSync(join(a, 'keep.txt'), 'utf8'), 'BBBB\n', `fetched: ${out(p)}`);
  assert.is(head(a).owed, undefined, out(p));
});

T('an owed file is not dropped for the rules here while .imzignore itself is owed', async () => {
  const { srv, server, a } = await owedScenario('imz-owed-rules-owed-');
  // A shared rule excluding keep.txt (pushed from here, so indexed as it is on disk)...
  writeFileSync(join(a, '.imzignore'), 'keep.txt\n');
  const u = await imz(['push', '-C', a]);
  assert.is(u.code, 0, out(u));
  assert.ok(existsSync(join(srv, '.imzignore')), out(u));
  // ...which the server then replaces with one that excludes nothing, and a pull cannot fetch.
  await journalThenHide(srv, server.address, '.imzignore', 'nothing!\n', 'zzzzzzzz\n');
  const p = await imz(['pull', '-C', a]);
  assert.is(p.code, 0, out(p));
  assert.is(readFileSync(join(a, '.imzignore'), 'utf8'), 'keep.txt\n', `not fetched (the scenario happened): ${out(p)}`);
  assert.equal(head(a).owed, ['.imzignore', 'keep.txt'], out(p));
  // The rules here are not the server's any more: the next pull keeps keep.txt owed.
  const q = await imz(['pull', '-C', a]);
  assert.is(q.code, 0, out(q));
  assert.equal(head(a).owed, ['.imzignore', 'keep.txt'], `still owed: ${out(q)}`);
  // And once the server's disk agrees with its records, both come.
  rewriteUnseen(join(srv, '.imzignore'), 'nothing!\n');
  rewriteUnseen(join(srv, 'keep.txt'), 'BBBB\n');
  const r = await imz(['pull', '-C', a]);
  assert.is(r.code, 0, out(r));
  assert.is(readFileSync(join(a, '.imzignore'), 'utf8'), 'nothing!\n', out(r));
  assert.is(readFileSync(join(a, 'keep.txt'), 'utf8'), 'BBBB\n', out(r));
  assert.is(head(a).owed, undefined, out(r));
});

T('a file still owed from an earlier pull costs the next pull no rounds of waiting', async () => {
  const { server, a } = await owedScenario('imz-owed-rounds-');
  const q = await journalRequests(server.port, a);
  assert.is(q.r.code, 0, out(q.r));
  assert.equal(head(a).owed, ['keep.txt'], 'still owed');
  assert.is(q.journals, 1, 'the five rounds (1.5 s of waits) are not taken: the journal is read once');
});

// An `imz pull` of replica a through a proxy that counts its JOURNAL requests (each round of waiting asks again).
async function journalRequests(port: number, a: string): Promise<{ r: RunResult; journals: number }> {
  const proxy = await countingProxy(port);
  try {
    await setRemote(a, proxy.address);
    const r = await imz(['pull', '-C', a]);
    return { r, journals: proxy.count(Op.JOURNAL) };
  } finally {
    await setRemote(a, `127.0.0.1:${port}`);
    await proxy.close();
  }
}

T('a HEAD whose owed list is not a list of safe paths is refused as damaged', async () => {
  const { a } = await servedClone('imz-owed-bad-', { 'f.txt': 'x\n' });
  const file = join(a, '.imz', 'HEAD');
  const head = JSON.parse(readFileSync(file, 'utf8'));
  await writeFile(file, JSON.stringify({ ...head, owed: ['../outside'] }) + '\n');
  const r = await imz(['pull', '-C', a]);
  assert.is(r.code, 1, out(r));
  assert.match(r.stderr, /\.imz\/HEAD is damaged; run `imz pull --resync`/, out(r));
  // The resync rebuilds it.
  const s = await imz(['pull', '-C', a, '--resync']);
  assert.is(s.code, 0, out(s));
  assert.is(JSON.parse(readFileSync(file, 'utf8')).owed, undefined);
});

T.run();
