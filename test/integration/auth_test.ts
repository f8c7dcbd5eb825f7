// Integration tests of token authentication (DESIGN.md invariant 5, "secure
// by default") with the real CLI against real `imz serve` processes on
// 127.0.0.1 (the bundled CLI, dist/imz.js: run `npm run build` first). They
// check what a user sees: no token, a wrong token and a right one (from a
// file, saved by clone as a path only, or from IMZ_TOKEN); a token file that
// went stale; read-only tokens (clone, pull and follow work, push and sync are
// refused and the local edit is kept); `imz serve` refusing unsafe or unusable
// settings before it listens; and that no token ever shows up in any output or
// under .imz/. Only loopback addresses are ever listened on.
import { suite } from 'uvu';
import { TokenTranscript } from '../token_transcript.ts';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type ImzOptions, type RunResult, runReport as out, type ServerHandle, type SnapEntry,
  cleanupAll, copyFixture, diffTrees, jsonLines, makeTmp, snapshotTree, spawnImz, startServer, waitFor,
} from '../helpers.ts';

const T = suite('auth');
T.after.each(cleanupAll);
T.after(cleanupAll);

type Tree = Record<string, SnapEntry>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A fresh 48-character token (what `openssl rand -hex 24` makes). */
const newToken = () => randomBytes(24).toString('hex');

// ---------- every process output of a test, to check that no token leaks ----------

const tt = new TokenTranscript();
const { transcripts, secrets } = tt;
const cli = tt.cli.bind(tt);
const assertNoLeak = tt.assertNoLeak.bind(tt);



T.before.each(() => tt.reset());

// ---------- local helpers ----------

/** Writes a token file (comment lines allowed) and remembers its tokens as secrets. */
async function tokenFile(path: string, tokens: string[], comment = '# imz tokens, one per line'): Promise<string> {
  for (const t of tokens) secrets.add(t);
  await writeFile(path, `${comment}\n\n${tokens.join('\n')}\n`, { mode: 0o600 });
  return path;
}

interface World {
  tmp: string;
  srv: string;
  server: ServerHandle;
  /** Client token files: read-write, read-only, and a long but wrong one. */
  rw: string;
  ro: string;
  bad: string;
  tokens: { rw: string; rwOther: string; ro: string; bad: string };
}

/** fixtures/sample served with two read-write tokens and one read-only token. */
async function world(): Promise<World> {
  const tmp = await makeTmp('imz-auth-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  const tokens = { rw: newToken(), rwOther: newToken(), ro: newToken(), bad: newToken() };
  const srvRw = await tokenFile(join(tmp, 'server-rw.tokens'), [tokens.rwOther, tokens.rw]);
  const srvRo = await tokenFile(join(tmp, 'server-ro.tokens'), [tokens.ro]);
  const rw = await tokenFile(join(tmp, 'rw.token'), [tokens.rw], '# my read-write token');
  const ro = await tokenFile(join(tmp, 'ro.token'), [tokens.ro]);
  const bad = await tokenFile(join(tmp, 'bad.token'), [tokens.bad]);
  const server = await startServer(srv, ['--token-file', srvRw, '--read-only-token-file', srvRo]);
  const listening = jsonLines(server.output().stdout)[0]!;
  assert.is(listening.auth, true, `the listening event says auth: ${server.output().stdout}`);
  assert.is(listening.tls, false, 'no TLS here');
  return { tmp, srv, server, rw, ro, bad, tokens };
}

/** `imz clone` that must succeed. */
async function cloneOk(w: World, dest: string, args: string[], opts: ImzOptions = {}): Promise<void> {
  const r = await cli(['clone', w.server.address, dest, '--json', ...args], opts);
  assert.is(r.code, 0, `clone ${args.join(' ')}: ${out(r)}`);
}

function assertSame(a: Tree, b: Tree, what: string): void {
  const d = diffTrees(a, b);
  assert.ok(d.length === 0, `${what}: trees differ:\n  ${d.join('\n  ')}`);
}

/** The --json error event of a failed run, after checking the exit status and the one stderr line. */
function failure(r: RunResult, exit: number, code: string, what: string): Record<string, unknown> {
  assert.is(r.code, exit, `${what}: exit ${exit}\n${out(r)}`);
  const e = jsonLines(r.stdout).find((x) => x.event === 'error');
  assert.ok(e, `${what}: an error event\n${out(r)}`);
  assert.is(e!.code, code, `${what}: error code\n${out(r)}`);
  assertOneErrorLine(r.stderr, what);
  return e!;
}

/** Exactly one line on stderr, `imz: cannot ...`. */
function assertOneErrorLine(stderr: string, what: string): void {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  assert.is(lines.length, 1, `${what}: exactly one line on stderr, got:\n${stderr}`);
  assert.match(lines[0]!, /^imz: cannot /, `${what}: ${lines[0]}`);
}

/** Every file under dir (recursively) as path → content. */
async function filesUnder(dir: string): Promise<Record<string, Buffer>> {
  const found: Record<string, Buffer> = {};
  const walk = async (rel: string): Promise<void> => {
    for (const d of await readdir(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) await walk(p);
      else if (d.isFile()) found[p] = await readFile(join(dir, p));
    }
  };
  await walk('');
  return found;
}

/** Fails when any file under REPLICA/.imz holds a token of this test (as text, hex of its bytes, or base64). */
async function assertNoTokenUnderImz(replica: string): Promise<void> {
  const files = await filesUnder(join(replica, '.imz'));
  assert.ok(Object.keys(files).length > 0, 'there is a .imz/ to look at');
  for (const [p, buf] of Object.entries(files)) {
    const text = buf.toString('latin1');
    for (const t of secrets) {
      for (const form of [t, Buffer.from(t).toString('base64'), Buffer.from(t).toString('hex')]) {
        assert.not.ok(text.includes(form), `.imz/${p} holds a token`);
      }
    }
  }
}

async function readConfig(replica: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(replica, '.imz', 'config'), 'utf8'));
}

/** Waits until the server's journal has moved past what the replica holds (`imz status` says behind ≥ n). */
async function waitBehind(replica: string, n: number, opts: ImzOptions = {}): Promise<void> {
  await waitFor(async () => {
    const r = await cli(['status', '-C', replica, '--json'], opts);
    const s = jsonLines(r.stdout).find((e) => e.event === 'status');
    return typeof s?.behind === 'number' && s.behind >= n;
  }, 8_000, `the server to journal the change (${replica} behind by ≥ ${n})`, 100);
}

/** The auth-failed events the server printed so far. */
function authFailures(server: ServerHandle): Record<string, unknown>[] {
  return jsonLines(server.output().stdout).filter((e) => e.event === 'auth-failed');
}

// ---------- no token, wrong token, right token ----------

T('without a token clone exits 1 with one "cannot" line asking for a token, and writes nothing', async () => {
  const w = await world();
  const dest = join(w.tmp, 'none');
  const r = await cli(['clone', w.server.address, dest]);
  assert.is(r.code, 1, out(r));
  assertOneErrorLine(r.stderr, 'clone without a token');
  assert.match(r.stderr, /token/i, 'the message says a token is needed');
  assert.match(r.stderr, /--token-file|IMZ_TOKEN/, 'and how to give one');
  assert.not.ok(existsSync(dest), 'the target directory is not created');

  // --json: the error event, nothing but JSON on stdout; an existing empty target stays empty.
  const empty = join(w.tmp, 'empty');
  await mkdir(empty);
  const j = await cli(['clone', w.server.address, empty, '--json']);
  failure(j, 1, 'IMZ_AUTH', 'clone --json without a token');
  assert.equal(await readdir(empty), [], 'the existing empty target is left empty');
  assertNoLeak(w.server);
});

T('a wrong token: exit 1 with IMZ_AUTH, nothing written, and the server logs the failure with the peer address', async () => {
  const w = await world();
  const dest = join(w.tmp, 'wrong');
  const t0 = Date.now();
  const r = await cli(['clone', w.server.address, dest, '--json', '--token-file', w.bad]);
  const e = failure(r, 1, 'IMZ_AUTH', 'clone with a wrong token');
  assert.match(String(e.message), /token/i, 'the message is about the token');
  assert.ok(Date.now() - t0 < 5_000, `a refused token is reported promptly (${Date.now() - t0} ms)`);
  assert.not.ok(existsSync(dest), 'the target directory is not created');

  await waitFor(() => authFailures(w.server).length >= 1, 3_000, 'the auth-failed event');
  const f = authFailures(w.server);
  assert.is(f.length, 1, `one failure logged: ${JSON.stringify(f)}`);
  assert.match(String(f[0]!.address), /^(::ffff:)?127\.0\.0\.1$/, 'the event names the peer address');
  assert.type(f[0]!.reason, 'string');
  assert.is(f[0]!.blocked, false, 'one failure does not block the address');
  assert.match(w.server.output().stderr, /authentication failed from (::ffff:)?127\.0\.0\.1: /, 'and a warning on stderr');
  assertNoLeak(w.server);
});

T('the right token from a file: clone matches the server, .imz/config keeps the absolute file path (never the token), and pull, push and status need no flags', async () => {
  const w = await world();
  const rep = join(w.tmp, 'rep');
  // A relative path, as a user types it: the config must keep it absolute.
  await cloneOk(w, rep, ['--token-file', 'rw.token'], { cwd: w.tmp });
  assertSame(await snapshotTree(w.srv), await snapshotTree(rep), 'server and replica after clone');
  const cfg = await readConfig(rep);
  assert.is(cfg.tokenFile, join(w.tmp, 'rw.token'), `.imz/config keeps the absolute token file path: ${JSON.stringify(cfg)}`);
  assert.not.ok('token' in cfg, 'no token field in .imz/config');
  await assertNoTokenUnderImz(rep);

  // A change on the server, then pull with no security flags (and no IMZ_TOKEN).
  await writeFile(join(w.srv, 'from-server.txt'), 'written on the server\n');
  await waitBehind(rep, 1);
  const p = await cli(['pull', '-C', rep, '--json']);
  assert.is(p.code, 0, `pull with the saved token file: ${out(p)}`);
  assert.is(await readFile(join(rep, 'from-server.txt'), 'utf8'), 'written on the server\n');

  // status reaches the server (not "offline"), human and --json.
  const s = await cli(['status', '-C', rep, '--json']);
  assert.is(s.code, 0, out(s));
  const ev = jsonLines(s.stdout).find((x) => x.event === 'status')!;
  assert.is(ev.reachable, true, `status reaches the auth server: ${s.stdout}`);
  assert.is(ev.offline, false);
  assert.is(ev.behind, 0);
  assert.is(ev.changes, 0);
  const h = await cli(['status', '-C', rep]);
  assert.is(h.code, 0, out(h));
  assert.not.match(h.stdout, /offline/, `human status does not say offline: ${h.stdout}`);
  assert.match(h.stdout, new RegExp(`0 records behind server ${w.server.address.replace(/\./g, '\\.')}`));

  // A local edit, then push with no flags.
  await appendFile(join(rep, 'README.txt'), 'edited on the replica\n');
  const u = await cli(['push', '-C', rep, '--json']);
  assert.is(u.code, 0, `push with the saved token file: ${out(u)}`);
  assert.match(await readFile(join(w.srv, 'README.txt'), 'utf8'), /edited on the replica\n$/, 'the server has the edit');
  assertSame(await snapshotTree(w.srv), await snapshotTree(rep), 'server and replica after pull and push');

  await assertNoTokenUnderImz(rep);
  assert.is(authFailures(w.server).length, 0, 'no failed attempt was logged');
  assertNoLeak(w.server);
});

T('IMZ_TOKEN: a replica cloned with the token in the environment pulls and pushes with it, and fails clearly without it', async () => {
  const w = await world();
  const rep = join(w.tmp, 'rep');
  const env = { IMZ_TOKEN: w.tokens.rw };
  await cloneOk(w, rep, [], { env });
  const cfg = await readConfig(rep);
  assert.not.ok('tokenFile' in cfg, `nothing about a token file saved: ${JSON.stringify(cfg)}`);
  await assertNoTokenUnderImz(rep);
  assertSame(await snapshotTree(w.srv), await snapshotTree(rep), 'server and replica after clone');

  await writeFile(join(w.srv, 'later.txt'), 'later\n');
  await waitBehind(rep, 1, { env });
  const before = await snapshotTree(rep);
  const no = await cli(['pull', '-C', rep, '--json']);
  failure(no, 1, 'IMZ_AUTH', 'pull without IMZ_TOKEN');
  assert.match(no.stderr, /token/i);
  assertSame(before, await snapshotTree(rep), 'replica unchanged by the refused pull');

  const p = await cli(['pull', '-C', rep, '--json'], { env });
  assert.is(p.code, 0, `pull with IMZ_TOKEN: ${out(p)}`);
  assert.is(await readFile(join(rep, 'later.txt'), 'utf8'), 'later\n');
  await writeFile(join(rep, 'mine.txt'), 'from the replica\n');
  const u = await cli(['push', '-C', rep, '--json'], { env });
  assert.is(u.code, 0, `push with IMZ_TOKEN: ${out(u)}`);
  assert.is(await readFile(join(w.srv, 'mine.txt'), 'utf8'), 'from the replica\n');

  // A too-short IMZ_TOKEN is bad usage, said before connecting.
  secrets.add('tooShortSecret1');
  const s = await cli(['pull', '-C', rep, '--json'], { env: { IMZ_TOKEN: 'tooShortSecret1' } });
  const e = failure(s, 2, 'IMZ_USAGE', 'a short IMZ_TOKEN');
  assert.match(String(e.message), /IMZ_TOKEN.*shorter than 16/);
  assertNoLeak(w.server);
});

T('a replica whose token file now holds a wrong token: pull and push exit 1 and change nothing; with the right token back it catches up', async () => {
  const w = await world();
  const rep = join(w.tmp, 'rep');
  const mine = join(w.tmp, 'mine.token');
  await tokenFile(mine, [w.tokens.rw]);
  await cloneOk(w, rep, ['--token-file', mine]);
  await writeFile(join(w.srv, 'news.txt'), 'news from the server\n');
  await waitBehind(rep, 1);

  // The token file is rotated to a token the server does not know.
  await tokenFile(mine, [w.tokens.bad]);
  const tree0 = await snapshotTree(rep);
  const imz0 = await filesUnder(join(rep, '.imz'));
  const p = await cli(['pull', '-C', rep, '--json']);
  failure(p, 1, 'IMZ_AUTH', 'pull with a wrong token in the saved file');
  assertSame(tree0, await snapshotTree(rep), 'the replica tree is unchanged');
  assert.not.ok(existsSync(join(rep, 'news.txt')), 'the server change did not arrive');
  const imz1 = await filesUnder(join(rep, '.imz'));
  assert.equal(Object.keys(imz1).sort(), Object.keys(imz0).sort(), 'no file added to or removed from .imz/');
  for (const [k, v] of Object.entries(imz0)) assert.ok(v.equals(imz1[k]!), `.imz/${k} is unchanged`);

  // A local edit cannot be pushed with it either, and stays.
  await appendFile(join(rep, 'README.txt'), 'local edit\n');
  const srvBefore = await snapshotTree(w.srv);
  const u = await cli(['push', '-C', rep, '--json']);
  failure(u, 1, 'IMZ_AUTH', 'push with a wrong token in the saved file');
  assert.match(await readFile(join(rep, 'README.txt'), 'utf8'), /local edit\n$/, 'the local edit stays');
  assertSame(srvBefore, await snapshotTree(w.srv), 'the server is unchanged');
  await waitFor(() => authFailures(w.server).length >= 2, 3_000, 'two auth-failed events');

  // The right token back: both directions work, nothing was lost (the lock was released too).
  await tokenFile(mine, [w.tokens.rw]);
  const p2 = await cli(['pull', '-C', rep, '--json']);
  assert.is(p2.code, 0, `pull after restoring the token: ${out(p2)}`);
  assert.is(await readFile(join(rep, 'news.txt'), 'utf8'), 'news from the server\n');
  const u2 = await cli(['push', '-C', rep, '--json']);
  assert.is(u2.code, 0, `push after restoring the token: ${out(u2)}`);
  assert.match(await readFile(join(w.srv, 'README.txt'), 'utf8'), /local edit\n$/);
  assertSame(await snapshotTree(w.srv), await snapshotTree(rep), 'server and replica in the end');
  assertNoLeak(w.server);
});

// Fixed, guarded here: `imz status` with a refused token prints "server 127.0.0.1:P offline"
// and nothing else (exit 0): the reason (the token was refused) is only in the
// --json event's "error" field. cli/commands/status.ts prints srv.error only
// when srv.reachable, and core/status.ts reports any connect failure,
// IMZ_AUTH included, as reachable: false. A server that answers and refuses
// the token is not offline; the human output should say why.
T('status with a refused token says so, instead of calling the server offline', async () => {
  const w = await world();
  const rep = join(w.tmp, 'rep');
  await cloneOk(w, rep, ['--token-file', w.rw]);
  const j = await cli(['status', '-C', rep, '--json', '--token-file', w.bad]);
  const ev = jsonLines(j.stdout).find((x) => x.event === 'status');
  assert.ok(ev, out(j));
  assert.match(String(ev!.error ?? ''), /token/i, `--json names the token problem: ${j.stdout}`);
  const h = await cli(['status', '-C', rep, '--token-file', w.bad]);
  assert.ok(h.code === 0 || h.code === 1, out(h));
  assert.match(h.stdout + h.stderr, /token|authenticat/i, `the human output says the token was refused:\n${out(h)}`);
  assertNoLeak(w.server);
});

T('status started elsewhere with a relative -C and --token-file takes both from where it was started (it enters the replica first)', async () => {
  const w = await world();
  const rep = join(w.tmp, 'rep');
  await cloneOk(w, rep, ['--token-file', w.rw]);
  await appendFile(join(rep, 'README.txt'), 'local edit\n');
  // Two levels down: resolved from the replica's root instead, these paths would name nothing.
  await mkdir(join(w.tmp, 'else', 'where'), { recursive: true });
  const opts = { cwd: join(w.tmp, 'else', 'where'), env: { IMZ_SCAN_WORKER_MIN: '0' } };
  const ok = await cli(['status', '-C', '../../rep/docs', '--json', '--token-file', '../../rw.token'], opts);
  assert.is(ok.code, 0, out(ok));
  const ev = jsonLines(ok.stdout).find((x) => x.event === 'status');
  assert.ok(ev && ev.error === undefined, `reached the server with ../../rw.token: ${ok.stdout}`);
  assert.ok(ok.stdout.includes('"path":"README.txt"'), `the local edit, found from ../../rep/docs: ${ok.stdout}`);
  // The wrong token, also relative: refused by the server, so it was read from there too.
  const bad = await cli(['status', '-C', '../../rep', '--json', '--token-file', '../../bad.token'], opts);
  const badEv = jsonLines(bad.stdout).find((x) => x.event === 'status');
  assert.match(String(badEv?.error ?? ''), /token/i, `the server refused ../../bad.token: ${bad.stdout}`);
  assert.not.match(String(badEv?.error ?? ''), /ENOENT|no such file/i, 'the file was found');
  assertNoLeak(w.server);
});

// ---------- read-only tokens ----------

T('a read-only token: clone, pull and follow work; push and sync exit 1 with IMZ_READ_ONLY, keep the local edit and leave the server alone; a read-write token pushes it later', async () => {
  const w = await world();
  const rep = join(w.tmp, 'rep');
  await cloneOk(w, rep, ['--token-file', w.ro]);
  assertSame(await snapshotTree(w.srv), await snapshotTree(rep), 'server and read-only replica after clone');
  const st = await cli(['status', '-C', rep, '--json']);
  const sev = jsonLines(st.stdout).find((x) => x.event === 'status')!;
  assert.is(sev.reachable, true, st.stdout);
  assert.is(sev.access, 'read-only', `status tells the access the token gives: ${st.stdout}`);

  await writeFile(join(w.srv, 'pulled.txt'), 'pulled read-only\n');
  await waitBehind(rep, 1);
  const p = await cli(['pull', '-C', rep, '--json']);
  assert.is(p.code, 0, `pull with a read-only token: ${out(p)}`);
  assert.is(await readFile(join(rep, 'pulled.txt'), 'utf8'), 'pulled read-only\n');

  // follow: a live stream with the saved read-only token.
  const { proc, done } = await spawnImz(['pull', '--follow', '-C', rep, '--json'], { env: { IMZ_TOKEN: '' } });
  let fo = '';
  let fe = '';
  proc.stdout!.on('data', (b: string) => { fo += b; });
  proc.stderr!.on('data', (b: string) => { fe += b; });
  try {
    await waitFor(() => /"event":"following"/.test(fo) || proc.exitCode !== null, 10_000, 'the follower to start');
    assert.is(proc.exitCode, null, `the follower runs with a read-only token:\nstdout: ${fo}\nstderr: ${fe}`);
    await writeFile(join(w.srv, 'followed.txt'), 'followed read-only\n');
    await waitFor(async () => existsSync(join(rep, 'followed.txt')) && (await readFile(join(rep, 'followed.txt'), 'utf8')) === 'followed read-only\n', 8_000, 'the followed change to arrive');
  } finally {
    proc.kill('SIGTERM');
    const r = await Promise.race([done, sleep(5_000).then(() => undefined)]);
    if (!r) proc.kill('SIGKILL');
    transcripts.push(`follow\n${fo}\n${fe}`);
  }

  // A local edit: push is refused, the edit stays (file and status), the server is untouched.
  await appendFile(join(rep, 'README.txt'), 'edited under a read-only token\n');
  const edited = await readFile(join(rep, 'README.txt'), 'utf8');
  const srvBefore = await snapshotTree(w.srv);
  const u = await cli(['push', '-C', rep, '--json']);
  const e = failure(u, 1, 'IMZ_READ_ONLY', 'push with a read-only token');
  assert.match(String(e.message), /read-only/);
  assert.is(await readFile(join(rep, 'README.txt'), 'utf8'), edited, 'the local edit is still in the file');
  assertSame(srvBefore, await snapshotTree(w.srv), 'the server tree is unchanged by the refused push');
  const s = await cli(['status', '-C', rep, '--json']);
  const changes = jsonLines(s.stdout).filter((x) => x.event === 'change');
  assert.equal(changes.map((c) => [c.kind, c.path]), [['modify', 'README.txt']], `the edit is still a local change: ${s.stdout}`);

  const y = await cli(['sync', '-C', rep, '--json']);
  failure(y, 1, 'IMZ_READ_ONLY', 'sync with a read-only token');
  assertSame(srvBefore, await snapshotTree(w.srv), 'the server tree is unchanged by the refused sync');
  assert.is(await readFile(join(rep, 'README.txt'), 'utf8'), edited, 'the local edit is still in the file after sync');

  // The same local change goes through with a read-write token.
  const ok = await cli(['push', '-C', rep, '--json', '--token-file', w.rw]);
  assert.is(ok.code, 0, `push with a read-write token given on the command line: ${out(ok)}`);
  assert.is(await readFile(join(w.srv, 'README.txt'), 'utf8'), edited, 'the server has the edit');
  assertSame(await snapshotTree(w.srv), await snapshotTree(rep), 'server and replica in the end');
  assertNoLeak(w.server);
});

// ---------- serve refuses what it cannot do safely ----------

T('serve refuses a non-loopback address without tokens, and unusable token files, with exit 2 and one clear line before listening', async () => {
  const tmp = await makeTmp('imz-auth-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  const good = await tokenFile(join(tmp, 'good.tokens'), [newToken()]);
  secrets.add('short-token');
  await writeFile(join(tmp, 'short.tokens'), '# too short\nshort-token\n');
  await writeFile(join(tmp, 'comments.tokens'), '# only a comment\n\n   \n');
  const cases: { args: string[]; re: RegExp; what: string }[] = [
    // The check comes before listening: nothing ever listens on 0.0.0.0 here.
    { args: ['--host', '0.0.0.0'], re: /cannot listen on 0\.0\.0\.0: .*loopback.*--token-file/, what: 'a non-loopback host without tokens' },
    { args: ['--token-file', join(tmp, 'short.tokens')], re: /cannot use the token from token file .*short\.tokens: it is shorter than 16 characters/, what: 'a short token' },
    { args: ['--token-file', join(tmp, 'missing.tokens')], re: /cannot read token file .*missing\.tokens: no such file/, what: 'a missing token file' },
    { args: ['--token-file', good, '--read-only-token-file', join(tmp, 'missing.tokens')], re: /cannot read token file .*missing\.tokens/, what: 'a missing read-only token file' },
    { args: ['--token-file', join(tmp, 'comments.tokens')], re: /holds no token/, what: 'a token file with no token' },
    { args: ['--token-file', good, '--read-only-token-file', good], re: /same token .*read-write and read-only/, what: 'one token both read-write and read-only' },
  ];
  for (const c of cases) {
    const r = await cli(['serve', srv, '--port', '0', '--json', ...c.args], { timeoutMs: 10_000 });
    const e = failure(r, 2, 'IMZ_USAGE', `serve with ${c.what}`);
    assert.match(String(e.message), c.re, `serve with ${c.what}: ${e.message}`);
    assert.not.ok(jsonLines(r.stdout).some((x) => x.event === 'listening'), `serve with ${c.what} never listens:\n${out(r)}`);
  }

  // The client side: the same checks before connecting (no server needed), nothing written.
  const dest = join(tmp, 'clone');
  for (const [file, re] of [[join(tmp, 'short.tokens'), /shorter than 16/], [join(tmp, 'missing.tokens'), /no such file/]] as const) {
    const r = await cli(['clone', '127.0.0.1:9', dest, '--json', '--token-file', file]);
    const e = failure(r, 2, 'IMZ_USAGE', `clone with ${file}`);
    assert.match(String(e.message), re);
    assert.not.ok(existsSync(dest), 'no replica directory');
  }
  assertNoLeak();
});

T.run();
