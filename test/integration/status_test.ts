// Integration tests of `imz status` as a real process (the bundled CLI,
// dist/imz.js: run `npm run build` first) against a real server on
// loopback TCP.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFile, mkdir, rename, symlink, unlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type RunResult, type ServerHandle, cleanupAll, copyFixture, imz, imzArgv, jsonLines, makeTmp, startServer, waitFor } from '../helpers.ts';

const T = suite('status');
T.after.each(cleanupAll);
T.after(cleanupAll);

async function setup(): Promise<{ tmp: string; srv: string; server: ServerHandle; replica: string }> {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  const server = await startServer(srv);
  const replica = join(tmp, 'replica');
  const r = await imz(['clone', server.address, replica, '--json']);
  assert.is(r.code, 0, `clone exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return { tmp, srv, server, replica };
}

function ok(r: RunResult, code = 0): void {
  assert.is(r.code, code, `status exited ${r.code}, wanted ${code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

const lines = (s: string) => s.split('\n').filter((l) => l.length > 0);
// Everything but the scan cache (.imz/scan-cache, derived: status may write it) and the mtime of .imz/ that writing it moves.
const treeState = (dir: string) => execFileSync('sh', ['-c', `cd '${dir}' && find . -mindepth 1 ! -name scan-cache ! -path ./.imz -printf '%p %y %s %T@ %m\\n' | sort`]).toString();

T('a clean replica: exit 0, "0 local changes, 0 conflicts, 0 records behind"', async () => {
  const { server, replica } = await setup();
  const r = await imz(['status', '-C', replica]);
  ok(r);
  assert.equal(lines(r.stdout), [`0 local changes, 0 conflicts, 0 records behind server ${server.address}`]);
  assert.is(r.stderr, '');
  // Run from inside the replica (a subdirectory), without -C.
  const r2 = await imz(['status'], { cwd: join(replica, 'docs') });
  ok(r2);
  assert.match(r2.stdout, /^0 local changes/);
});

T('local edits: one line per change with its code, then the summary; status writes nothing', async () => {
  const { server, replica } = await setup();
  await writeFile(join(replica, 'new.txt'), 'new\n');
  await appendFile(join(replica, 'README.txt'), 'more\n');
  await unlink(join(replica, 'src/main.js'));
  await mkdir(join(replica, 'newdir'));
  await symlink('README.txt', join(replica, 'link'));
  await rename(join(replica, 'docs/kml.txt'), join(replica, 'kml-moved.txt'));
  execFileSync('chmod', ['700', join(replica, 'bin/hello.sh')]);
  await unlink(join(replica, 'HISTORY'));
  await mkdir(join(replica, 'HISTORY'));
  await writeFile(join(replica, 'notes.imz-conflict-abcd-3.txt'), 'a conflict copy: never shown\n');
  const before = treeState(replica);
  const r = await imz(['status', '-C', replica]);
  ok(r);
  assert.equal(lines(r.stdout), [
    'T  HISTORY/',
    'A  newdir/',
    'M  README.txt',
    'm  bin/hello.sh',
    'R  docs/kml.txt -> kml-moved.txt',
    'A  link@',
    'A  new.txt',
    'D  src/main.js',
    `8 local changes, 0 conflicts, 0 records behind server ${server.address}`,
  ]);
  assert.is(treeState(replica), before, 'status changed nothing in the replica (.imz included, but for its scan cache)');

  const s = await imz(['status', '-C', replica, '--short']);
  ok(s);
  assert.is(lines(s.stdout).length, 8, '--short: change lines only');
  assert.ok(!s.stdout.includes('local change'));
});

T('a name holding a newline or an escape sequence: the warning stays one line, the characters shown escaped', async () => {
  const { replica } = await setup();
  await writeFile(join(replica, 'bad\nname'), 'x');
  await writeFile(join(replica, 'esc\u001b[31mred'), 'x');
  const r = await imz(['status', '-C', replica]);
  assert.is(r.code, 0, r.stderr);
  const warned = lines(r.stderr);
  assert.is(warned.length, 1, r.stderr);
  assert.ok(warned[0]!.includes('bad\\u000aname') && warned[0]!.includes('esc\\u001b[31mred'), r.stderr);
  assert.not.ok(r.stderr.includes('\u001b'), 'no raw escape reaches the terminal');
});

T('--json: one object per change, then a status object', async () => {
  const { server, replica } = await setup();
  await writeFile(join(replica, 'new.txt'), 'new\n');
  await rename(join(replica, 'docs/kml.txt'), join(replica, 'kml-moved.txt'));
  const r = await imz(['status', '-C', replica, '--json']);
  ok(r);
  const evs = jsonLines(r.stdout);
  assert.is(r.stderr, '');
  assert.equal(evs.map((e) => e.event), ['change', 'change', 'status']);
  assert.equal(evs[0], { ...evs[0], kind: 'rename', path: 'kml-moved.txt', from: 'docs/kml.txt', type: 'file', base: 0 });
  assert.ok((evs[0]!.fromBase as number) > 0);
  assert.equal(evs[1], { ...evs[1], kind: 'create', path: 'new.txt', type: 'file', base: 0, size: 4 });
  const st = evs[2]!;
  assert.is(st.changes, 2);
  assert.is(st.conflicts, 0);
  assert.is(st.reachable, true);
  assert.is(st.behind, 0);
  assert.is(st.server, server.address);
  assert.is(st.serverId, server.serverId || st.serverId);
  assert.is(typeof st.cursor, 'number');
});

T('server stopped: "offline", exit 0; --offline does not try', async () => {
  const { server, replica } = await setup();
  await writeFile(join(replica, 'new.txt'), 'new\n');
  await server.stop();
  const r = await imz(['status', '-C', replica]);
  ok(r);
  assert.equal(lines(r.stdout), ['A  new.txt', `1 local change, 0 conflicts, server ${server.address} offline`]);
  const j = await imz(['status', '-C', replica, '--json']);
  ok(j);
  const st = jsonLines(j.stdout).at(-1)!;
  assert.is(st.event, 'status');
  assert.is(st.reachable, false);
  assert.is(st.offline, true);
  assert.is(st.behind, undefined);
  assert.match(String(st.error), /cannot reach server/);
  const o = await imz(['status', '-C', replica, '--offline', '--json']);
  ok(o);
  const so = jsonLines(o.stdout).at(-1)!;
  assert.is(so.reachable, false);
  assert.is(so.error, undefined, '--offline: not even tried');
});

T('behind: counts journal records written on the server since the last pull; pull brings it back to 0', async () => {
  const { srv, server, replica } = await setup();
  await writeFile(join(srv, 'direct-1.txt'), 'written on the server\n');
  await writeFile(join(srv, 'direct-2.txt'), 'written on the server\n');
  const st = (await waitFor(async () => {
    const r = await imz(['status', '-C', replica, '--json']);
    ok(r);
    const s = jsonLines(r.stdout).at(-1)!;
    return (s.behind as number) >= 2 ? s : null;
  }, 8_000, 'status to see 2 records behind'))!;
  assert.is(st.changes, 0, 'server-side writes are not local changes');
  const human = await imz(['status', '-C', replica]);
  ok(human);
  assert.match(human.stdout, new RegExp(`^0 local changes, 0 conflicts, ${st.behind} records behind server ${server.address.replace(/[.]/g, '\\.')}\\n$`));
  ok(await imz(['pull', '-C', replica, '--quiet']));
  const after = jsonLines((await imz(['status', '-C', replica, '--json'])).stdout).at(-1)!;
  assert.is(after.behind, 0);
});

T('behind after a push: its own records are not counted; records from elsewhere before them keep the cursor back until a pull', async () => {
  const { tmp, srv, server, replica } = await setup();
  const behind = async (rep: string) => {
    const r = await imz(['status', '-C', rep, '--json']);
    ok(r);
    return jsonLines(r.stdout).at(-1)!.behind as number;
  };
  // Stores, a symlink and a removal: their records hold what the replica indexed.
  await writeFile(join(replica, 'new.txt'), 'new\n');
  await appendFile(join(replica, 'README.txt'), 'more\n');
  await symlink('new.txt', join(replica, 'link'));
  await unlink(join(replica, 'src', 'main.js'));
  ok(await imz(['push', '-C', replica, '--quiet']));
  assert.is(await behind(replica), 0, 'stores, a symlink and a removal');
  const pulled = jsonLines((await imz(['pull', '-C', replica, '--json'])).stdout).at(-1)!;
  assert.is(pulled.records, 0, 'nothing for the next pull to read back');
  // A rename, a mkdir and a chmod: the server records what it reads back from its disk, and tells it; the same
  // as what the replica indexed here, so not counted either (push_cursor_test has a case where it differs).
  await rename(join(replica, 'docs', 'kml.txt'), join(replica, 'docs', 'kml-moved.txt'));
  await mkdir(join(replica, 'fresh-dir'));
  execFileSync('chmod', ['755', join(replica, 'HISTORY')]);
  ok(await imz(['push', '-C', replica, '--quiet']));
  assert.is(await behind(replica), 0, 'a rename, a mkdir and a chmod');
  const pulled2 = jsonLines((await imz(['pull', '-C', replica, '--json'])).stdout).at(-1)!;
  assert.is(pulled2.records, 0, 'nothing for the next pull to read back');

  // Another replica's push, then this one's: the other's record is not this replica's, so its cursor stays
  // before it, and the pull that follows brings the other's change.
  const other = join(tmp, 'other');
  ok(await imz(['clone', server.address, other, '--quiet']));
  await writeFile(join(other, 'from-other.txt'), 'other\n');
  ok(await imz(['push', '-C', other, '--quiet']));
  await writeFile(join(replica, 'mine.txt'), 'mine\n');
  ok(await imz(['push', '-C', replica, '--quiet']));
  assert.ok((await behind(replica)) >= 2, 'the other record and this push\'s stay counted');
  ok(await imz(['pull', '-C', replica, '--quiet']));
  assert.is(await behind(replica), 0);
  assert.ok(existsSync(join(replica, 'from-other.txt')), 'the other replica\'s change came with the pull');

  // A write made on the server itself before a push: the same.
  await writeFile(join(srv, 'direct.txt'), 'server\n');
  await waitFor(async () => (await behind(replica)) >= 1, 8_000, 'the server to journal its own write');
  await writeFile(join(replica, 'mine-2.txt'), 'mine\n');
  ok(await imz(['push', '-C', replica, '--quiet']));
  assert.ok((await behind(replica)) >= 2);
  ok(await imz(['pull', '-C', replica, '--quiet']));
  assert.ok(existsSync(join(replica, 'direct.txt')));
  // A conflict settled by a policy: records the replica may not hold as the server does; a pull reads them.
  await writeFile(join(srv, 'new.txt'), 'server side\n');
  await waitFor(async () => (await behind(replica)) >= 1, 8_000, 'the server to journal its own write');
  await writeFile(join(replica, 'new.txt'), 'replica side\n');
  const p = await imz(['push', '-C', replica, '--quiet', '--policy', 'client-wins']);
  ok(p);
  assert.ok((await behind(replica)) >= 1, 'not passed by a push with a conflict');
  ok(await imz(['pull', '-C', replica, '--quiet']));
  assert.is(await behind(replica), 0);
});

T('conflicts remain: listed as "C  path (class)", exit 3', async () => {
  const { srv, replica } = await setup();
  await appendFile(join(replica, 'README.txt'), 'local edit\n');
  await appendFile(join(srv, 'README.txt'), 'server edit, longer than the local one\n');
  await waitFor(async () => {
    const r = await imz(['pull', '-C', replica, '--json']);
    return r.code === 3;
  }, 8_000, 'pull to record the conflict');
  const r = await imz(['status', '-C', replica]);
  ok(r, 3);
  const ls = lines(r.stdout);
  assert.ok(ls.includes('M  README.txt'), r.stdout);
  assert.ok(ls.includes('C  README.txt (update/update)'), r.stdout);
  assert.match(ls.at(-1)!, /^1 local change, 1 conflict, 0 records behind/);
  const j = await imz(['status', '-C', replica, '--json']);
  ok(j, 3);
  const c = jsonLines(j.stdout).find((e) => e.event === 'conflict');
  assert.equal(c, { ...c, path: 'README.txt', class: 'update/update', at: 'pull' });
});

T('status does not take the lock: works while another imz holds it', async () => {
  const { replica } = await setup();
  await writeFile(join(replica, '.imz', 'lock'), JSON.stringify({ pid: process.pid, since: new Date().toISOString() }));
  const r = await imz(['status', '-C', replica]);
  ok(r);
  assert.match(r.stdout, /^0 local changes/);
});

T('not a replica: exit 1, IMZ_NOT_REPLICA, one error line', async () => {
  const tmp = await makeTmp();
  const r = await imz(['status', '-C', tmp]);
  ok(r, 1);
  assert.is(r.stdout, '');
  assert.equal(lines(r.stderr).length, 1);
  assert.match(r.stderr, /^imz: cannot find a replica/);
  const j = await imz(['status', '-C', tmp, '--json']);
  ok(j, 1);
  const evs = jsonLines(j.stdout);
  assert.is(evs.length, 1);
  assert.is(evs[0]!.code, 'IMZ_NOT_REPLICA');
  // A file, or nothing at all, where the replica should be: the same one line.
  await writeFile(join(tmp, 'a-file'), 'x');
  for (const where of [join(tmp, 'a-file'), join(tmp, 'nothing-here')]) {
    const f = await imz(['status', '-C', where]);
    ok(f, 1);
    assert.equal(lines(f.stderr).length, 1, f.stderr);
    assert.match(f.stderr, /^imz: cannot find a replica/);
  }
});

T('a -C that cannot be looked at, or a relative path given where the start directory is gone: one error line, no stack trace', async () => {
  const { replica } = await setup();
  // Under a file (ENOTDIR): the CLI enters the replica's root before parsing, and must not crash doing it.
  const j = await imz(['status', '-C', join(replica, 'README.txt', 'x'), '--json']);
  ok(j, 1);
  const evs = jsonLines(j.stdout);
  assert.is(evs.length, 1, j.stdout);
  assert.is(evs[0]!.event, 'error');
  assert.equal(lines(j.stderr).length, 1, j.stderr);
  assert.match(j.stderr, /^imz: cannot /);
  // Started in a directory removed before it ran: a relative --token-file is refused, never read from the replica.
  await writeFile(join(replica, 'mytoken'), 'not a token the user named\n');
  const gone = join(replica, '..', 'gone');
  const argv = [...(await imzArgv(['status', '-C', replica, '--token-file', 'mytoken', '--json']))];
  const r = spawnSync('sh', ['-c', 'mkdir "$0" && cd "$0" && rmdir "$0" && exec "$@"', gone, ...argv], { encoding: 'utf8', timeout: 15_000 });
  assert.is(r.status, 2, `${r.stdout}\n${r.stderr}`);
  const e = jsonLines(r.stdout).find((x) => x.event === 'error');
  assert.is(e?.code, 'IMZ_USAGE', r.stdout);
  assert.match(String(e?.message), /relative path mytoken/);
});

T('--help documents the codes', async () => {
  const r = await imz(['status', '--help']);
  ok(r);
  for (const s of ['--offline', '--short', 'R  old -> new', 'C  path (class)', 'offline']) assert.ok(r.stdout.includes(s), `help mentions ${s}`);
});

T.run();
