// Integration tests of `imz pull --follow` (issue 4: live journal streaming)
// as real processes on loopback TCP (the bundled CLI, dist/imz.js: run
// `npm run build` first): a follower sees direct server writes and other
// replicas' pushes without running pull; survives the server being killed
// and restarted; detects a link that goes silent (a TCP proxy in the test
// that stops forwarding) and reconnects; stops cleanly on SIGINT/SIGTERM; is
// not delayed by a stalled subscriber; never overwrites a local change.
// Latencies measured here are printed (`follow: ...` lines) for the report.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { type Server, type Socket, connect as netConnect, createServer } from 'node:net';
import { join } from 'node:path';
import { Remote } from '../../core/remote.ts';
import { Op } from '../../protocol/messages.ts';
import {
  type RunResult, runReport as out, type ServerHandle, type SnapEntry,
  cleanupAll, copyFixture, diffTrees, findTemps, imz, makeTmp, readJournal, snapshotTree, spawnImz, startServer, waitFor,
  setRemote,
} from '../helpers.ts';

const T = suite('follow');

// Things this file opens itself (proxies, raw sessions): closed before cleanupAll.
const closers: (() => void)[] = [];
async function cleanup(): Promise<void> {
  for (const c of closers.splice(0)) {
    try {
      c();
    } catch { /* already closed */ }
  }
  await cleanupAll();
}
T.after.each(cleanup);
T.after(cleanup);

const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
type Tree = Record<string, SnapEntry>;

function report(s: string): void {
  console.log(`  follow: ${s}`);
}

function assertSame(a: Tree, b: Tree, what: string): void {
  const d = diffTrees(a, b);
  assert.ok(d.length === 0, `${what}: trees differ:\n  ${d.join('\n  ')}`);
}

/** fixtures/sample (plus extend) served from a fresh temp dir, and n replicas cloned from it. */
async function world(n: number, opts: { extend?: (srv: string) => Promise<void>; env?: NodeJS.ProcessEnv } = {}): Promise<{ tmp: string; srv: string; server: ServerHandle; replicas: string[] }> {
  const tmp = await makeTmp('imz-follow-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  if (opts.extend) await opts.extend(srv);
  const server = await startServer(srv, [], { env: opts.env });
  const replicas: string[] = [];
  for (let i = 0; i < n; i++) {
    const d = join(tmp, `replica${i}`);
    const r = await imz(['clone', server.address, d, '--json']);
    assert.is(r.code, 0, `clone: ${out(r)}`);
    replicas.push(d);
  }
  return { tmp, srv, server, replicas };
}

async function readHead(replica: string): Promise<{ serverId: string; cursor: number }> {
  return JSON.parse(await readFile(join(replica, '.imz', 'HEAD'), 'utf8'));
}

async function lastSeq(address: string): Promise<number> {
  const recs = await readJournal(address);
  return recs.length === 0 ? 0 : recs[recs.length - 1]!.seq;
}

// ---------- a follower process ----------

interface Ev { t: number; e: Record<string, unknown> }

interface Follower {
  proc: ChildProcess;
  done: Promise<RunResult>;
  /** JSON events with their arrival time (--json only). */
  events: Ev[];
  stdout(): string;
  stderr(): string;
  describe(): string;
  /** The first event (at index ≥ from) matching pred; fails at once if the follower exits. */
  waitEvent(pred: (e: Record<string, unknown>) => boolean, timeoutMs: number, what: string, from?: number): Promise<Ev>;
  /** Waits until stdout or stderr matches re; fails at once if the follower exits. */
  waitOutput(stream: 'stdout' | 'stderr', re: RegExp, timeoutMs: number, what: string): Promise<RegExpMatchArray>;
  /** Sends a signal and waits (≤ timeoutMs) for the exit. */
  stop(signal: NodeJS.Signals, timeoutMs?: number): Promise<RunResult>;
}

async function startFollower(replica: string, opts: { json?: boolean; env?: NodeJS.ProcessEnv; args?: string[] } = {}): Promise<Follower> {
  const json = opts.json ?? true;
  const { proc, done } = await spawnImz(['pull', '--follow', '-C', replica, ...(json ? ['--json'] : []), ...(opts.args ?? [])], { env: opts.env });
  const events: Ev[] = [];
  const notJson: string[] = [];
  let so = '';
  let se = '';
  let buf = '';
  let exited: RunResult | undefined;
  void done.then((r) => { exited = r; });
  proc.stdout!.on('data', (s: string) => {
    so += s;
    if (!json) return;
    buf += s;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.length === 0) continue;
      try {
        events.push({ t: Date.now(), e: JSON.parse(line) });
      } catch {
        notJson.push(line);
      }
    }
  });
  proc.stderr!.on('data', (s: string) => { se += s; });
  const describe = () => `follower ${exited ? `exited ${exited.code} (signal ${exited.signal})` : `pid ${proc.pid} running`}\nstdout:\n${so}\nstderr:\n${se}`;
  const until = async <T>(probe: () => T | undefined, timeoutMs: number, what: string): Promise<T> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      assert.is(notJson.length, 0, `--json stdout has only JSON lines, got ${JSON.stringify(notJson)}`);
      const v = probe();
      if (v !== undefined) return v;
      if (exited) throw new Error(`the follower exited while waiting for ${what}\n${describe()}`);
      if (Date.now() >= end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${describe()}`);
      await sleep(10);
    }
  };
  return {
    proc, done, events,
    stdout: () => so,
    stderr: () => se,
    describe,
    waitEvent: (pred, timeoutMs, what, from = 0) => until(() => events.slice(from).find((x) => pred(x.e)), timeoutMs, what),
    waitOutput: (stream, re, timeoutMs, what) => until(() => (stream === 'stdout' ? so : se).match(re) ?? undefined, timeoutMs, what),
    async stop(signal, timeoutMs = 5_000) {
      if (!exited) proc.kill(signal);
      const r = await Promise.race([done, sleep(timeoutMs).then(() => undefined)]);
      if (!r) {
        proc.kill('SIGKILL');
        throw new Error(`the follower did not exit within ${timeoutMs} ms of ${signal}\n${describe()}`);
      }
      return r;
    },
  };
}

const isChange = (path: string) => (e: Record<string, unknown>) => e.event === 'change' && e.path === path;

// ---------- a TCP proxy that can make a link go silent ----------

interface Link {
  client: Socket;
  upstream: Socket;
  /** Drops data both ways; the sockets stay open (a dead link, not a closed one). */
  silent: boolean;
  /** Forwards the server's first frame (the HELLO reply), then goes silent. */
  helloOnly: boolean;
  firstFrame: Buffer;
  clientClosedAt?: number;
  upstreamClosedAt?: number;
}

/**
 * 127.0.0.1:port forwarding both ways to the server. silence() makes every
 * open link drop data without closing anything (both ends think the
 * connection is fine); a silent link never passes a close on (a partition
 * carries no FIN), so each side must notice by itself. `mode` says what new
 * connections do.
 */
class LinkProxy {
  readonly links: Link[] = [];
  mode: 'forward' | 'silent' | 'hello-only' = 'forward';
  port = 0;
  private _server: Server;
  private readonly targetPort: number;

  constructor(targetPort: number) {
    this.targetPort = targetPort;
    this._server = createServer((client) => this._onConnection(client));
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    await new Promise<void>((res, rej) => {
      this._server.once('error', rej);
      this._server.listen(0, '127.0.0.1', () => res());
    });
    this.port = (this._server.address() as { port: number }).port;
    closers.push(() => this.close());
    return this;
  }

  silence(): void {
    for (const l of this.links) l.silent = true;
    this.mode = 'silent';
  }

  close(): void {
    this._server.close();
    for (const l of this.links) {
      l.client.destroy();
      l.upstream.destroy();
    }
  }

  private _onConnection(client: Socket): void {
    const upstream = netConnect({ host: '127.0.0.1', port: this.targetPort });
    const l: Link = { client, upstream, silent: this.mode === 'silent', helloOnly: this.mode === 'hello-only', firstFrame: Buffer.alloc(0) };
    this.links.push(l);
    client.on('error', () => {});
    upstream.on('error', () => {});
    client.on('data', (d: Buffer) => { if (!l.silent) upstream.write(d); });
    upstream.on('data', (d: Buffer) => {
      if (l.silent) return;
      if (!l.helloOnly) {
        client.write(d);
        return;
      }
      l.firstFrame = Buffer.concat([l.firstFrame, d]);
      if (l.firstFrame.length < 4) return;
      const end = 4 + l.firstFrame.readUInt32BE(0);
      if (l.firstFrame.length < end) return;
      client.write(l.firstFrame.subarray(0, end));
      l.silent = true;
    });
    client.on('close', () => {
      l.clientClosedAt = Date.now();
      if (!l.silent) upstream.destroy();
    });
    upstream.on('close', () => {
      l.upstreamClosedAt = Date.now();
      if (!l.silent) client.destroy();
    });
  }
}

// ---------- 1. direct writes and other replicas' pushes arrive live ----------

T('a follower sees a direct server write and another replica\'s push within 2 s, without running pull', async () => {
  const { srv, server, replicas: [a, b] } = await world(2);
  const f = await startFollower(a!);
  const following = await f.waitEvent((e) => e.event === 'following', 10_000, 'the following event');
  assert.is(following.e.address, server.address, 'it follows the address in .imz/config');
  assert.is(following.e.cursor, (await readHead(a!)).cursor, 'it starts from the replica\'s cursor');

  // A program writes into the served tree directly.
  const direct = 'written on the server by a local program\n';
  const t0 = Date.now();
  await writeFile(join(srv, 'direct.txt'), direct);
  const ev = await f.waitEvent(isChange('direct.txt'), 5_000, 'the change event of direct.txt');
  const directMs = ev.t - t0;
  assert.is(ev.e.action, 'create');
  assert.is(await readFile(join(a!, 'direct.txt'), 'utf8'), direct, 'the content is in the replica when the change is reported');
  await f.waitEvent((e) => e.event === 'applied', 10_000, 'an applied event after the change', f.events.indexOf(ev));

  // Another replica pushes.
  const pushed = 'pushed by replica b\n';
  await writeFile(join(b!, 'pushed.txt'), pushed);
  const p0 = Date.now();
  const p = await imz(['push', '-C', b!, '--json']);
  const p1 = Date.now();
  assert.is(p.code, 0, `push from b: ${out(p)}`);
  const ev2 = await f.waitEvent(isChange('pushed.txt'), 15_000, 'the change event of pushed.txt');
  assert.is(await readFile(join(a!, 'pushed.txt'), 'utf8'), pushed);
  const pushMs = Math.max(0, ev2.t - p1);

  report(`direct server write → visible in the follower: ${directMs} ms (includes the server watcher's debounce)`);
  report(`push by another replica → visible in the follower: ${pushMs} ms after the push exited (${ev2.t - p0} ms after it started)`);
  // Live, not polled: bounds wide enough for a loaded machine (the latency itself is measured by the bench).
  assert.ok(directMs <= 8_000, `a direct write arrives within 8 s (took ${directMs} ms)`);
  assert.ok(pushMs <= 8_000, `a push arrives within 8 s of the push returning (took ${pushMs} ms)`);

  // The follower's cursor reaches the end of the journal; no conflicts on the way.
  const last = await lastSeq(server.address);
  await f.waitEvent((e) => e.event === 'applied' && e.cursor === last, 10_000, `an applied event at the journal's end (${last})`);
  assert.is((await readHead(a!)).cursor, last, '.imz/HEAD holds the last applied record');
  assert.not.ok(f.events.some((x) => x.e.event === 'conflict' || x.e.event === 'disconnected'), `no conflict or disconnection:\n${f.describe()}`);
  assert.is(f.proc.exitCode, null, 'still following');
});

// ---------- 2. the server is killed and restarted ----------

T('a follower survives the server being killed (SIGKILL) and restarted, and catches up with writes made while it was down', async () => {
  const { srv, server, replicas: [a] } = await world(1);
  const f = await startFollower(a!, { json: false });
  const cursor0 = (await readHead(a!)).cursor;
  await f.waitOutput('stdout', new RegExp(`^following ${server.address.replace(/\./g, '\\.')} from journal record ${cursor0}$`, 'm'), 10_000, 'the following line');

  await writeFile(join(srv, 'before-kill.txt'), 'before the crash\n');
  await f.waitOutput('stdout', /^create {2}before-kill\.txt$/m, 5_000, 'the line of before-kill.txt');
  assert.is(await readFile(join(a!, 'before-kill.txt'), 'utf8'), 'before the crash\n');

  const tKill = Date.now();
  const killed = await server.stop('SIGKILL');
  assert.is(killed.signal, 'SIGKILL');
  await f.waitOutput('stderr', /retrying in \d+(\.\d+)? s/, 5_000, 'a retry warning on stderr');

  // Written while no server runs: journaled by the restarted server's scan.
  await writeFile(join(srv, 'while-down.txt'), 'written while the server was down\n');
  await writeFile(join(srv, 'README.txt'), 'README changed while the server was down\n');
  await unlink(join(srv, 'src', 'main.js'));
  await sleep(300); // a few failed attempts
  assert.is(f.proc.exitCode, null, `the follower keeps running without a server:\n${f.describe()}`);
  const retries = (f.stderr().match(/retrying in/g) ?? []).length;

  const again = await startServer(srv); // same state dir, new port
  assert.is(again.serverId, server.serverId, 'the restarted server has the same identity');
  await setRemote(a!, again.address);
  const t0 = Date.now();
  await f.waitOutput('stdout', new RegExp(`^following ${again.address.replace(/\./g, '\\.')} from journal record \\d+$`, 'm'), 15_000, 'following the restarted server');
  report(`server down ${t0 - tKill} ms: ${retries} retry warnings before the restart; following again ${Date.now() - t0} ms after re-pointing`);
  assert.is(await readFile(join(a!, 'while-down.txt'), 'utf8'), 'written while the server was down\n');
  assert.is(await readFile(join(a!, 'README.txt'), 'utf8'), 'README changed while the server was down\n');
  assert.not.ok(existsSync(join(a!, 'src', 'main.js')), 'the removal made while the server was down is replayed');

  // Live again.
  const t1 = Date.now();
  await writeFile(join(srv, 'after-restart.txt'), 'after the restart\n');
  await f.waitOutput('stdout', /^create {2}after-restart\.txt$/m, 5_000, 'the line of after-restart.txt');
  report(`write after the restart → visible: ${Date.now() - t1} ms (polled)`);
  assertSame(await snapshotTree(srv), await snapshotTree(a!), 'server and follower after the restart');

  const last = await lastSeq(again.address);
  const r = await f.stop('SIGTERM');
  assert.is(r.code, 0, `SIGTERM ends the follower with exit 0:\n${out(r)}`);
  assert.match(r.stdout, new RegExp(`^stopped at journal record ${last}$`, 'm'));
  assert.is((await readHead(a!)).cursor, last);
});

// ---------- 3. the link goes silent ----------

T('a follower over a link that goes silent detects it with heartbeats, reconnects, and receives new writes', async () => {
  const env = { IMZ_HEARTBEAT_MS: '500' };
  const { srv, server, replicas: [a] } = await world(1, { env });
  const proxy = await new LinkProxy(server.port).start();
  await setRemote(a!, proxy.address);
  const f = await startFollower(a!, { env });
  const fol = await f.waitEvent((e) => e.event === 'following', 10_000, 'the following event');
  assert.is(fol.e.address, proxy.address, 'it follows through the proxy');
  await writeFile(join(srv, 'through-proxy.txt'), 'one\n');
  await f.waitEvent(isChange('through-proxy.txt'), 5_000, 'a write through the proxy');
  assert.ok(proxy.links.length >= 1, 'the follower connected through the proxy');
  const followLink = proxy.links[proxy.links.length - 1]!;

  // The link goes dead: nothing passes either way, nothing is closed.
  const from = f.events.length;
  const t0 = Date.now();
  proxy.silence();
  const disc = await f.waitEvent((e) => e.event === 'disconnected', 10_000, 'the disconnected event (heartbeat timeout)', from);
  const detectMs = disc.t - t0;
  report(`silent link detected after ${detectMs} ms (IMZ_HEARTBEAT_MS=500): ${JSON.stringify(disc.e.message)}`);
  assert.ok(detectMs <= 5_000, `detected within a bounded time (≤ 5 s, 10 periods of 500 ms), took ${detectMs} ms`);
  assert.ok(typeof disc.e.retryInMs === 'number' && disc.e.retryInMs <= 30_000, `the event says when it retries: ${JSON.stringify(disc.e)}`);
  assert.match(f.stderr(), /retrying in \d+(\.\d+)? s/);
  const closeBy = Date.now() + 3_000;
  while (followLink.clientClosedAt === undefined && Date.now() < closeBy) await sleep(20);
  assert.ok(followLink.clientClosedAt !== undefined, 'the follower closed its end of the dead connection');

  // Written while the link is dead; then the network heals (for new connections).
  await writeFile(join(srv, 'while-silent.txt'), 'two\n');
  proxy.mode = 'forward';
  const t1 = Date.now();
  const back = await f.waitEvent((e) => e.event === 'following', 8_000, 'following again', f.events.indexOf(disc));
  report(`reconnected ${back.t - t1} ms after the link healed`);
  assert.is(back.e.address, proxy.address);
  await f.waitEvent(isChange('while-silent.txt'), 3_000, 'the write made while the link was silent');
  const t2 = Date.now();
  await writeFile(join(srv, 'after-heal.txt'), 'three\n');
  const ev = await f.waitEvent(isChange('after-heal.txt'), 3_000, 'a new write after reconnecting');
  report(`write after reconnecting → visible: ${ev.t - t2} ms`);
  assert.is(await readFile(join(a!, 'after-heal.txt'), 'utf8'), 'three\n');
  assert.is(f.proc.exitCode, null, 'still following');
});

T('a link that goes silent right after HELLO (during the catch-up, before SUBSCRIBE) is detected too; the follower does not hang — no heartbeat or timeout covers the catch-up', async () => {
  const env = { IMZ_HEARTBEAT_MS: '500' };
  const { srv, server, replicas: [a] } = await world(1, { env });
  await writeFile(join(srv, 'behind.txt'), 'the follower starts behind\n'); // so the catch-up has work
  const proxy = await new LinkProxy(server.port).start();
  proxy.mode = 'hello-only';
  await setRemote(a!, proxy.address);
  const f = await startFollower(a!, { env });
  await waitForLinks(proxy, 1, 5_000);
  await sleep(300); // HELLO answered, the catch-up's JOURNAL request is in the void
  proxy.mode = 'forward';
  // With heartbeats (500 ms) the dead first connection is noticed within ~1 s and the next one works.
  let fol: Ev;
  try {
    fol = await f.waitEvent((e) => e.event === 'following', 5_000, 'following after the silent catch-up was given up');
  } catch (err) {
    const lock = existsSync(join(a!, '.imz', 'lock'));
    assert.unreachable(`${(err as Error).message}\nconnections through the proxy: ${proxy.links.length}; .imz/lock held meanwhile: ${lock ? 'yes (a cron push in this replica fails with IMZ_LOCKED)' : 'no'}`);
    return;
  }
  assert.is(fol.e.address, proxy.address);
  assert.ok(f.events.some((x) => x.e.event === 'disconnected'), 'the dead connection was reported');
  assert.ok(existsSync(join(a!, 'behind.txt')), 'the catch-up finished on the new connection');
});

async function waitForLinks(proxy: LinkProxy, n: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (proxy.links.length < n) {
    if (Date.now() > end) throw new Error(`no connection reached the proxy within ${timeoutMs} ms`);
    await sleep(10);
  }
}

T('the server side closes a follower\'s connection that went silent within a bounded time (heartbeats on both sides, issue 4) — the server never times out a silent session', async () => {
  const env = { IMZ_HEARTBEAT_MS: '500' };
  const { server, replicas: [a] } = await world(1, { env });
  const proxy = await new LinkProxy(server.port).start();
  await setRemote(a!, proxy.address);
  const f = await startFollower(a!, { env });
  await f.waitEvent((e) => e.event === 'following', 10_000, 'the following event');
  const link = proxy.links[proxy.links.length - 1]!;
  proxy.silence();
  proxy.mode = 'forward';
  const t0 = Date.now();
  // The proxy keeps its upstream socket open (a partition carries no FIN): only the server can end it.
  const end = t0 + 10_000;
  while (link.upstreamClosedAt === undefined && Date.now() < end) await sleep(20);
  assert.ok(link.upstreamClosedAt !== undefined, `the server closed the dead subscriber's connection within 10 s (20 heartbeat periods); it is still open after ${Date.now() - t0} ms`);
  report(`server closed the silent session after ${link.upstreamClosedAt! - t0} ms`);
});

// ---------- 4. SIGINT / SIGTERM ----------

T('SIGINT stops a follower cleanly in the middle of a burst: exit 0, a stopped event, HEAD = last applied record, no lock, no temp files; a later pull finishes the job without conflicts', async () => {
  const { srv, server, replicas: [a] } = await world(1);
  const f = await startFollower(a!);
  const fol = await f.waitEvent((e) => e.event === 'following', 10_000, 'the following event');

  // A burst that takes a while to apply, so the signal lands mid-batch.
  const burst = new Map<string, string>();
  for (let i = 0; i < 80; i++) {
    const name = `burst-${String(i).padStart(3, '0')}.bin`;
    const data = randomBytes(96 * 1024);
    burst.set(name, createHash('sha256').update(data).digest('hex'));
    await writeFile(join(srv, name), data);
  }
  await f.waitEvent((e) => e.event === 'change', 10_000, 'the first change of the burst');
  const t0 = Date.now();
  const r = await f.stop('SIGINT');
  report(`SIGINT mid-burst → exit after ${Date.now() - t0} ms; ${f.events.filter((x) => x.e.event === 'change').length}/80 changes reported`);
  assert.is(r.code, 0, `exit 0 on SIGINT:\n${out(r)}`);
  const stopped = f.events.filter((x) => x.e.event === 'stopped');
  assert.is(stopped.length, 1, `one stopped event:\n${r.stdout}`);
  assert.is(f.events[f.events.length - 1]!.e.event, 'stopped', 'stopped is the last event');
  const applied = f.events.filter((x) => x.e.event === 'applied');
  const lastApplied = applied.length > 0 ? Number(applied[applied.length - 1]!.e.cursor) : Number(fol.e.cursor);
  assert.is(stopped[0]!.e.cursor, lastApplied, 'the stopped cursor is the last applied record');
  const head = await readHead(a!);
  assert.is(head.cursor, lastApplied, '.imz/HEAD holds the last applied record');
  assert.is(head.serverId, server.serverId);
  assert.not.ok(existsSync(join(a!, '.imz', 'lock')), 'no lock file left');
  assert.equal(await findTemps(a!), [], 'no temp files left');
  // Whatever it reported as applied is really there.
  for (const x of f.events) {
    if (x.e.event === 'change' && applied.length > 0 && f.events.indexOf(x) < f.events.indexOf(applied[applied.length - 1]!)) {
      assert.ok(existsSync(join(a!, String(x.e.path))), `${x.e.path} was reported and applied`);
    }
  }

  // The replica is consistent: a plain pull finishes the job, with nothing taken for a local change. (Once the
  // server's watcher has journalled the whole burst: a pull takes what is journalled, and on a loaded machine the
  // last files of the burst could still be on their way.)
  await waitFor(async () => {
    const last = new Map<string, string>();
    for (const x of await readJournal(server.address)) last.set(x.path, x.hash);
    return [...burst].every(([path, hash]) => last.get(path) === hash);
  }, 15_000, 'the whole burst journalled', 50);
  const p = await imz(['pull', '-C', a!, '--json']);
  assert.is(p.code, 0, `pull after the interrupted follower: ${out(p)}`);
  assert.not.match(p.stdout, /"event":"conflict"/, 'no spurious conflicts');
  assertSame(await snapshotTree(srv), await snapshotTree(a!), 'server and replica after the follow-up pull');

  // SIGTERM while idle: the same clean stop.
  const g = await startFollower(a!);
  const last = await lastSeq(server.address);
  await g.waitEvent((e) => e.event === 'following' && e.cursor === last, 10_000, 'following from the journal\'s end');
  const r2 = await g.stop('SIGTERM');
  assert.is(r2.code, 0, `exit 0 on SIGTERM:\n${out(r2)}`);
  assert.ok(g.events.some((x) => x.e.event === 'stopped' && x.e.cursor === last), `a stopped event at ${last}:\n${r2.stdout}`);
  assert.is((await readHead(a!)).cursor, last);
  assert.not.ok(existsSync(join(a!, '.imz', 'lock')), 'no lock file left after SIGTERM');
  assert.equal(await findTemps(a!), [], 'no temp files left after SIGTERM');
});

T('SIGINT while a large file is being fetched: exit 0, HEAD = last applied record, no temp file left, and a later pull completes without conflicts', async () => {
  const { srv, server, replicas: [a] } = await world(1);
  const f = await startFollower(a!);
  const fol = await f.waitEvent((e) => e.event === 'following', 10_000, 'the following event');
  await writeFile(join(srv, 'large.bin'), randomBytes(32 * 1024 * 1024));
  // A temp file in the replica root means the fetch is under way: stop right then.
  const end = Date.now() + 10_000;
  let seen = false;
  while (!seen && Date.now() < end && !f.events.some((x) => isChange('large.bin')(x.e))) {
    seen = (await readdir(a!)).some((n) => n.startsWith('.imz-tmp-'));
    if (!seen) await sleep(2);
  }
  const r = await f.stop('SIGINT');
  report(`SIGINT ${seen ? 'during' : 'NOT during (the fetch was not caught in flight)'} the fetch of a 32 MiB file`);
  assert.is(r.code, 0, `exit 0 on SIGINT:\n${out(r)}`);
  const stopped = f.events.find((x) => x.e.event === 'stopped');
  assert.ok(stopped, `a stopped event:\n${r.stdout}`);
  const applied = f.events.filter((x) => x.e.event === 'applied');
  const lastApplied = applied.length > 0 ? Number(applied[applied.length - 1]!.e.cursor) : Number(fol.e.cursor);
  assert.is(stopped!.e.cursor, lastApplied, 'the stopped cursor is the last applied record');
  assert.is((await readHead(a!)).cursor, lastApplied, '.imz/HEAD holds the last applied record');
  assert.not.ok(existsSync(join(a!, '.imz', 'lock')), 'no lock file left');
  assert.equal(await findTemps(a!), [], 'no temp files left');
  const p = await imz(['pull', '-C', a!, '--json'], { timeoutMs: 30_000 });
  assert.is(p.code, 0, `pull after the interrupted follower: ${out(p)}`);
  assert.is(sha(await readFile(join(a!, 'large.bin'))), sha(await readFile(join(srv, 'large.bin'))), 'the large file arrives whole');
  assert.is((await readHead(a!)).cursor, await lastSeq(server.address));
});

// ---------- 5. a stalled subscriber ----------

T('stalled subscribers (never reading) do not delay a follower: 200 server writes arrive as fast as without them, and the server stays up', async () => {
  const { srv, server, replicas: [a] } = await world(1, { extend: (s) => writeFile(join(s, 'big.bin'), randomBytes(6 * 1024 * 1024)) });
  const f = await startFollower(a!);
  await f.waitEvent((e) => e.event === 'following', 10_000, 'the following event');

  // 200 direct writes; per-write latency = change event time - write time.
  const burst = async (tag: string): Promise<{ p50: number; max: number; allMs: number }> => {
    const written = new Map<string, number>();
    for (let i = 0; i < 200; i++) {
      const p = `${tag}-${String(i).padStart(3, '0')}.txt`;
      written.set(p, Date.now());
      await writeFile(join(srv, p), `${tag} ${i}\n`);
    }
    const tLast = Date.now();
    await waitForAll(f, [...written.keys()], 10_000);
    const lat = [...written].map(([p, t]) => f.events.find((x) => isChange(p)(x.e))!.t - t).sort((x, y) => x - y);
    for (const i of [0, 123, 199]) assert.is(await readFile(join(a!, `${tag}-${String(i).padStart(3, '0')}.txt`), 'utf8'), `${tag} ${i}\n`);
    return { p50: lat[Math.floor(lat.length / 2)]!, max: lat[lat.length - 1]!, allMs: Date.now() - tLast };
  };
  const base = await burst('base');
  report(`200 writes, no stalled subscriber: all visible ${base.allMs} ms after the last write; per-write p50 ${base.p50} ms, max ${base.max} ms`);

  // Three subscribers that never read: each asks for a 6 MiB snapshot too, so its socket really backs up on the server.
  const stalled: { remote: Remote; first: Promise<unknown> }[] = [];
  for (let i = 0; i < 3; i++) {
    const remote = await Remote.connect(server.address, { timeoutMs: 5_000 });
    closers.push(() => remote.close());
    const snap = remote.session.stream(Op.SNAPSHOT, { snapshot: { paths: ['big.bin'] } });
    const sub = remote.session.stream(Op.SUBSCRIBE, { journal: { since: 0, limit: 0 } });
    snap.next().catch(() => {}); // sends the request (the generator runs up to its first await)
    const first = sub.next().catch((e) => e);
    remote.session.socket.pause();
    stalled.push({ remote, first });
  }
  await sleep(200);

  const slow = await burst('w');
  report(`200 writes, 3 stalled subscribers: all visible ${slow.allMs} ms after the last write; per-write p50 ${slow.p50} ms, max ${slow.max} ms`);
  assert.ok(slow.max <= Math.max(10_000, 2 * base.max + 500), `the stalled subscribers do not slow the follower down (max ${slow.max} ms against ${base.max} ms without them)`);

  // The server still serves: its process runs, and it answers a new client.
  assert.is(server.proc.exitCode, null, `the server is still up:\n${server.output().stderr}`);
  const recs = await readJournal(server.address);
  assert.is(recs.filter((r) => /^w-\d{3}\.txt$/.test(r.path)).length, 200, 'the 200 writes are journaled once each');
  const bytesRead = stalled.map((s) => s.remote.session.socket.bytesRead);
  assert.ok(bytesRead.every((n) => n < 6 * 1024 * 1024), `the stalled subscribers really did not read everything (${bytesRead.join('/')} bytes)`);

  // Not relied on: what became of the stalled ones once they read again.
  const fates: string[] = [];
  for (const s of stalled) {
    s.remote.session.socket.resume();
    const r = await Promise.race([s.first, sleep(1_000).then(() => 'nothing yet')]);
    fates.push(r instanceof Error ? `error ${(r as { code?: string }).code ?? r.message}` : typeof r === 'string' ? r : 'a journal frame');
  }
  report(`stalled subscribers had read ${bytesRead.join('/')} bytes; once reading again: ${fates.join(', ')}`);
  assert.is(f.proc.exitCode, null, 'the follower is still following');
});

async function waitForAll(f: Follower, paths: string[], timeoutMs: number): Promise<void> {
  const want = new Set(paths);
  const end = Date.now() + timeoutMs;
  for (;;) {
    for (const x of f.events) if (x.e.event === 'change') want.delete(String(x.e.path));
    if (want.size === 0) return;
    if (f.proc.exitCode !== null) throw new Error(`the follower exited with ${want.size} writes missing\n${f.describe()}`);
    if (Date.now() > end) throw new Error(`${want.size} of ${paths.length} writes not seen within ${timeoutMs} ms (e.g. ${[...want].slice(0, 5).join(', ')})\n${f.describe().slice(0, 3000)}`);
    await sleep(20);
  }
}

// ---------- 6. local modifications ----------

T('a follower never overwrites a local modification: the conflict is recorded, the local content stays, following goes on', async () => {
  const { srv, replicas: [a] } = await world(1);
  const f = await startFollower(a!);
  await f.waitEvent((e) => e.event === 'following', 10_000, 'the following event');

  const local = 'my local edit, never pushed (longer than the original so stat tells)\n'.repeat(4);
  const remote = 'the server changed it too\n';
  await writeFile(join(a!, 'README.txt'), local);
  await writeFile(join(srv, 'README.txt'), remote);
  const c = await f.waitEvent((e) => e.event === 'conflict' && e.path === 'README.txt', 5_000, 'the conflict event of README.txt');
  assert.is(c.e.class, 'update/update');
  await f.waitEvent((e) => e.event === 'applied', 5_000, 'the applied event of the batch with the conflict', f.events.indexOf(c));
  assert.match(f.stderr(), /conflict \(update\/update\) on README\.txt/);
  assert.not.ok(f.events.some((x) => isChange('README.txt')(x.e)), 'no change applied to README.txt');
  assert.is(await readFile(join(a!, 'README.txt'), 'utf8'), local, 'the local version is kept');

  const recs = await Promise.all((await readdir(join(a!, '.imz', 'conflicts'))).filter((n) => n.endsWith('.json'))
    .map(async (n) => JSON.parse(await readFile(join(a!, '.imz', 'conflicts', n), 'utf8')) as Record<string, unknown>));
  const rec = recs.find((r) => r.path === 'README.txt');
  assert.ok(rec, `a conflict record for README.txt in .imz/conflicts/ (found ${JSON.stringify(recs)})`);
  assert.is(rec!.class, 'update/update');
  assert.is(rec!.at, 'pull');
  const blob = join(a!, '.imz', 'conflicts', 'blobs', sha(remote));
  assert.ok(existsSync(blob), 'the server version is kept in the replica');
  assert.is(await readFile(blob, 'utf8'), remote);

  // Still following: later writes arrive, the local file is still not touched.
  await writeFile(join(srv, 'later.txt'), 'after the conflict\n');
  await f.waitEvent(isChange('later.txt'), 5_000, 'a later write');
  await writeFile(join(srv, 'README.txt'), 'the server changed it again\n');
  await sleep(500);
  assert.is(await readFile(join(a!, 'README.txt'), 'utf8'), local, 'a second server change does not overwrite it either');
  assert.is(f.proc.exitCode, null, `still following:\n${f.describe()}`);
  assert.not.ok(f.events.some((x) => x.e.event === 'disconnected'), 'the conflict did not break the stream');
});

T('pull --follow --resync with HEAD lost: the first catch-up compares by hash and rebuilds HEAD, then following goes on (--resync was ignored with --follow, which failed on the lost HEAD)', async () => {
  const { srv, replicas: [a] } = await world(1);
  await writeFile(join(srv, 'while-away.txt'), 'written while HEAD was lost\n');
  await unlink(join(a!, '.imz', 'HEAD'));
  const f = await startFollower(a!, { args: ['--resync'] });
  await f.waitEvent((e) => e.event === 'following', 10_000, 'the following event');
  assert.is(await readFile(join(a!, 'while-away.txt'), 'utf8'), 'written while HEAD was lost\n');
  const head = await readHead(a!);
  assert.ok(head.cursor > 0 && head.serverId !== '', `HEAD rebuilt: ${JSON.stringify(head)}`);
  await writeFile(join(srv, 'later.txt'), 'after the resync\n');
  await f.waitEvent(isChange('later.txt'), 5_000, 'a later write');
  assert.is(await readFile(join(a!, 'later.txt'), 'utf8'), 'after the resync\n');
  const stopped = await f.stop('SIGINT');
  assert.is(stopped.code, 0, f.describe());
});

T('pull --follow --policy server-wins: a local edit meeting a server change goes to a conflict copy, the server\'s version is in place (--policy was ignored with --follow)', async () => {
  const { srv, replicas: [a] } = await world(1);
  const f = await startFollower(a!, { args: ['--policy', 'server-wins'] });
  await f.waitEvent((e) => e.event === 'following', 10_000, 'the following event');
  const local = 'my local edit, never pushed (longer than the original so stat tells)\n'.repeat(4);
  await writeFile(join(a!, 'README.txt'), local);
  await writeFile(join(srv, 'README.txt'), 'the server changed it too\n');
  await f.waitEvent((e) => e.event === 'conflict' && e.path === 'README.txt', 5_000, 'the conflict event of README.txt');
  await f.waitEvent(isChange('README.txt'), 5_000, 'the server\'s version placed');
  assert.is(await readFile(join(a!, 'README.txt'), 'utf8'), 'the server changed it too\n');
  const copies = (await readdir(a!)).filter((n) => n.startsWith('README.imz-conflict-'));
  assert.is(copies.length, 1, copies.join(', '));
  assert.is(await readFile(join(a!, copies[0]!), 'utf8'), local, 'ours kept as a conflict copy');
  const stopped = await f.stop('SIGINT');
  assert.is(stopped.code, 0, f.describe());
});

T.run();
