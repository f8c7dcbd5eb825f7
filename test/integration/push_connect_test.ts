// push connects while its scan loads the cache, and looks at the tree only once the server has
// answered; the fast path ends the process once its output is written. What must not change:
// error codes, exit statuses, the lock, the log (written only once something is logged).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type RunResult, runReport as out, cleanupAll, imz, imzArgv, jsonLines, makeTmp, readReintLog, sampleWorld, setRemote, snapshotTree, startServer, diffTrees,
} from '../helpers.ts';

const T = suite('push: connecting');
T.after.each(cleanupAll);
T.after(cleanupAll);

function errorEvent(r: RunResult): Record<string, unknown> | undefined {
  return jsonLines(r.stdout).find((e) => e.event === 'error');
}

async function ops(rep: string): Promise<number> {
  return (await readReintLog(rep)).filter((l) => l.t === 'op').length;
}

/** A TCP server that accepts and then does nothing (or closes at once). */
async function mute(mode: 'silent' | 'close' | 'garbage'): Promise<{ address: string; server: Server; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    if (mode === 'close') s.destroy();
    if (mode === 'garbage') s.write(Buffer.from([0, 0, 0, 5, 1, 2, 3, 4, 5]));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { address: `127.0.0.1:${port}`, server, sockets };
}

async function closeMute(m: { server: Server; sockets: Set<Socket> }): Promise<void> {
  for (const s of m.sockets) s.destroy();
  await new Promise<void>((r) => m.server.close(() => r()));
}

T('a token file that cannot be read: exit 2 (IMZ_USAGE), nothing logged, lock released, the next push with a good setup works', async () => {
  const { srv, replicas: [a] } = await sampleWorld(1);
  await writeFile(join(a!, 'new.txt'), 'new\n');
  for (const file of [join(a!, 'no-such.token'), a!]) { // missing, and a directory
    const r = await imz(['push', '-C', a!, '--json', '--token-file', file]);
    assert.ok(r.code === 2 || r.code === 1, out(r));
    const e = errorEvent(r);
    assert.ok(e, out(r));
    assert.is(e!.code, 'IMZ_USAGE', out(r));
    assert.not.ok(existsSync(join(a!, '.imz', 'lock')), 'lock released');
    assert.is(await ops(a!), 0, 'nothing logged');
    assert.not.ok(existsSync(join(srv, 'new.txt')));
  }
  const ok = await imz(['push', '-C', a!, '--json']);
  assert.is(ok.code, 0, out(ok));
  assert.is(await readFile(join(srv, 'new.txt'), 'utf8'), 'new\n');
});

T('a push to another server (IMZ_SERVER_IDENTITY): exit 1, nothing logged, server untouched, lock released; pending sent ops too', async () => {
  const { srv, replicas: [a] } = await sampleWorld(1);
  const tmp2 = await makeTmp();
  const other = join(tmp2, 'other');
  await mkdir(other);
  await writeFile(join(other, 'x.txt'), 'x\n');
  const server2 = await startServer(other);
  const right = JSON.parse(await readFile(join(a!, '.imz', 'config'), 'utf8')).remote as string;
  await writeFile(join(a!, 'new.txt'), 'new\n');
  await setRemote(a!, server2.address);
  const before = await snapshotTree(other);
  const r = await imz(['push', '-C', a!, '--json']);
  assert.is(r.code, 1, out(r));
  assert.is(errorEvent(r)?.code, 'IMZ_SERVER_IDENTITY', out(r));
  assert.is(r.stderr.trim().split('\n').length, 1, out(r));
  assert.is(await ops(a!), 0, 'nothing logged');
  assert.not.ok(existsSync(join(a!, '.imz', 'lock')), 'lock released');
  assert.equal(diffTrees(before, await snapshotTree(other)), []);
  // Human form as well.
  const h = await imz(['push', '-C', a!]);
  assert.is(h.code, 1, out(h));
  assert.match(h.stderr, /^imz: cannot push: the server at .* is not the one this replica follows/, out(h));
  await setRemote(a!, right);
  const ok = await imz(['push', '-C', a!, '--json']);
  assert.is(ok.code, 0, out(ok));
  assert.is(await readFile(join(srv, 'new.txt'), 'utf8'), 'new\n');
});

T('a dead server: exit 4, changes logged, lock released; the next push once it is back applies them', async () => {
  const { srv, server, replicas: [a] } = await sampleWorld(1);
  await server.stop();
  await writeFile(join(a!, 'offline.txt'), 'made offline\n');
  await appendFile(join(a!, 'README.txt'), 'more\n');
  const r = await imz(['push', '-C', a!, '--json']);
  assert.is(r.code, 4, out(r));
  assert.is(errorEvent(r)?.code, 'IMZ_UNREACHABLE', out(r));
  assert.ok(await ops(a!) >= 2, 'logged');
  assert.not.ok(existsSync(join(a!, '.imz', 'lock')), 'lock released');
  // A second offline push: the same, still exit 4 (the log superseded, not doubled).
  const r2 = await imz(['push', '-C', a!]);
  assert.is(r2.code, 4, out(r2));
  assert.match(r2.stderr, /2 local changes stay logged/, out(r2));
  const back = await startServer(srv);
  await setRemote(a!, back.address);
  const ok = await imz(['push', '-C', a!, '--json']);
  assert.is(ok.code, 0, out(ok));
  assert.is(await readFile(join(srv, 'offline.txt'), 'utf8'), 'made offline\n');
  assert.match(await readFile(join(srv, 'README.txt'), 'utf8'), /more\n$/);
  assert.is(await ops(a!), 0, 'log cleared');
});

for (const mode of ['silent', 'close', 'garbage'] as const) {
  T(`a server that accepts TCP and then ${mode === 'silent' ? 'never answers HELLO' : mode === 'close' ? 'closes at once' : 'sends garbage'}: no hang, lock released, the right exit`, async () => {
    const { srv, replicas: [a] } = await sampleWorld(1);
    const right = JSON.parse(await readFile(join(a!, '.imz', 'config'), 'utf8')).remote as string;
    const m = await mute(mode);
    try {
      await setRemote(a!, m.address);
      await writeFile(join(a!, 'new.txt'), 'new\n');
      const t0 = Date.now();
      const r = await imz(['push', '-C', a!, '--json'], { timeoutMs: 20_000 });
      const took = Date.now() - t0;
      if (mode === 'garbage') assert.ok(r.code === 1 || r.code === 4, out(r));
      else {
        assert.is(r.code, 4, out(r));
        assert.is(errorEvent(r)?.code, 'IMZ_UNREACHABLE', out(r));
        assert.is(await ops(a!), 1, 'logged');
      }
      assert.ok(took < 12_000, `took ${took} ms`);
      assert.not.ok(existsSync(join(a!, '.imz', 'lock')), 'lock released');
    } finally {
      await closeMute(m);
    }
    await setRemote(a!, right);
    const ok = await imz(['push', '-C', a!, '--json']);
    assert.is(ok.code, 0, out(ok));
    assert.is(await readFile(join(srv, 'new.txt'), 'utf8'), 'new\n');
  });
}

T('sync against a dead server: exit 4, changes logged, lock released', async () => {
  const { server, replicas: [a] } = await sampleWorld(1);
  await server.stop();
  await writeFile(join(a!, 'offline.txt'), 'made offline\n');
  const r = await imz(['sync', '-C', a!, '--json']);
  assert.is(r.code, 4, out(r));
  assert.ok(await ops(a!) >= 1, 'logged');
  assert.not.ok(existsSync(join(a!, '.imz', 'lock')));
});

/** Runs imz with stdout into a pipe that is read only after delayMs (the pipe fills meanwhile). */
async function slowReader(args: string[], delayMs: number, runtime: 'node' | 'deno' = 'node'): Promise<RunResult> {
  const argv = await imzArgv(args, runtime);
  return new Promise((res) => {
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    const so: Buffer[] = [];
    const se: Buffer[] = [];
    p.stdout!.pause();
    p.stderr!.on('data', (b: Buffer) => se.push(b));
    setTimeout(() => {
      p.stdout!.on('data', (b: Buffer) => so.push(b));
      p.stdout!.resume();
    }, delayMs);
    p.on('close', (code, signal) => res({ code, signal, stdout: Buffer.concat(so).toString('utf8'), stderr: Buffer.concat(se).toString('utf8') }));
  });
}

T('status and push -v with a lot of output into a slow pipe, and into a file: nothing truncated', async () => {
  const { srv, replicas: [a] } = await sampleWorld(1);
  const N = 6000;
  await mkdir(join(a!, 'many'));
  for (let i = 0; i < N; i++) await writeFile(join(a!, 'many', `file-with-a-rather-long-name-to-fill-the-pipe-${String(i).padStart(5, '0')}.txt`), `${i}\n`);
  const st = await slowReader(['status', '-C', a!, '--offline'], 700);
  assert.is(st.code, 0, st.stderr);
  const lines = st.stdout.split('\n').filter((l) => l.startsWith('A  many/'));
  assert.is(lines.length, N + 1, `status lines: ${lines.length}; tail: ${st.stdout.slice(-300)}`);
  const sj = await slowReader(['status', '-C', a!, '--offline', '--json'], 700);
  const evs = jsonLines(sj.stdout);
  assert.is(evs.filter((e) => e.event === 'change').length, N + 1);
  assert.is(evs[evs.length - 1]!.event, 'status');
  // Into a file.
  const tmp = await makeTmp();
  const file = join(tmp, 'out.txt');
  const argv = await imzArgv(['status', '-C', a!, '--offline']);
  const fd = openSync(file, 'w');
  const code = await new Promise<number | null>((res) => {
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, 'inherit'] });
    p.on('close', (c) => res(c));
  });
  closeSync(fd);
  assert.is(code, 0);
  assert.is(readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('A  many/')).length, N + 1);
  // push -v: every operation printed.
  const pv = await slowReader(['push', '-C', a!, '-v'], 700);
  assert.is(pv.code, 0, pv.stderr);
  assert.match(pv.stdout, /pushed \d+ of \d+ changes/, pv.stdout.slice(-500));
  const pushedLines = pv.stdout.split('\n').filter((l) => l.includes('many/file-with'));
  assert.ok(pushedLines.length >= N, `push -v lines: ${pushedLines.length}`);
  assert.ok(existsSync(join(srv, 'many', `file-with-a-rather-long-name-to-fill-the-pipe-${String(N - 1).padStart(5, '0')}.txt`)));
});

T('after a push exits (process.exit), the server logs no error for the connection and the next push is clean', async () => {
  const { server, replicas: [a] } = await sampleWorld(1);
  for (let i = 0; i < 5; i++) {
    await writeFile(join(a!, `n${i}.txt`), `${i}\n`);
    const r = await imz(['push', '-C', a!]);
    assert.is(r.code, 0, out(r));
  }
  await new Promise((r) => setTimeout(r, 300));
  const o = server.output();
  const bad = jsonLines(o.stdout).filter((e) => e.event === 'error' || e.event === 'warning' || e.level === 'error');
  assert.equal(bad, [], `server output:\n${o.stdout}\n${o.stderr}`);
  assert.is(o.stderr.trim(), '', o.stderr);
});

T('under Deno too: status and push -v with a lot of output into a slow pipe, nothing truncated', async () => {
  const { srv, replicas: [a] } = await sampleWorld(1);
  const N = 4000;
  await mkdir(join(a!, 'many'));
  for (let i = 0; i < N; i++) await writeFile(join(a!, 'many', `file-with-a-rather-long-name-to-fill-the-pipe-${String(i).padStart(5, '0')}.txt`), `${i}\n`);
  const st = await slowReader(['status', '-C', a!, '--offline'], 1500, 'deno');
  assert.is(st.code, 0, st.stderr);
  assert.is(st.stdout.split('\n').filter((l) => l.startsWith('A  many/')).length, N + 1, st.stdout.slice(-300));
  assert.match(st.stdout, /local changes, 0 conflicts/);
  const pv = await slowReader(['push', '-C', a!, '-v'], 1500, 'deno');
  assert.is(pv.code, 0, pv.stderr);
  assert.match(pv.stdout, /pushed \d+ of \d+ changes/, pv.stdout.slice(-500));
  assert.ok(existsSync(join(srv, 'many', `file-with-a-rather-long-name-to-fill-the-pipe-${String(N - 1).padStart(5, '0')}.txt`)));
});

T('under Deno: a push to a dead server exits 4 with the changes logged, lock released', async () => {
  const { server, replicas: [a] } = await sampleWorld(1);
  await server.stop();
  await writeFile(join(a!, 'offline.txt'), 'made offline\n');
  const r = await imz(['push', '-C', a!, '--json'], { runtime: 'deno' });
  assert.is(r.code, 4, out(r));
  assert.is(await ops(a!), 1);
  assert.not.ok(existsSync(join(a!, '.imz', 'lock')));
});

/** A proxy to target that holds the server's first answer on each connection for delayMs. */
async function slowProxy(target: string, delayMs: number): Promise<{ address: string; close: () => Promise<void> }> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const socks = new Set<Socket>();
  const server = createServer((c) => {
    const up = connect(port, host);
    socks.add(c);
    socks.add(up);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
    c.on('close', () => up.destroy());
    up.on('close', () => c.destroy());
    c.pipe(up);
    up.pause();
    setTimeout(() => { up.pipe(c); up.resume(); }, delayMs);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    address: `127.0.0.1:${(server.address() as { port: number }).port}`,
    close: async () => {
      for (const s of socks) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

T('a slow HELLO: an edit made while the push waits for the server is what gets pushed (the tree is looked at after the answer)', async () => {
  const { srv, server, replicas: [a] } = await sampleWorld(1);
  const px = await slowProxy(server.address, 2000);
  try {
    await setRemote(a!, px.address);
    await writeFile(join(a!, 'edit.txt'), 'first\n');
    await writeFile(join(a!, 'README.txt'), 'readme v1\n');
    const { spawnImz } = await import('../helpers.ts');
    const { done } = await spawnImz(['push', '-C', a!, '--json']);
    await new Promise((r) => setTimeout(r, 900));
    await writeFile(join(a!, 'edit.txt'), 'second, longer\n');
    await writeFile(join(a!, 'late.txt'), 'made while waiting\n');
    const r = await done;
    assert.is(r.code, 0, out(r));
    assert.is(await readFile(join(srv, 'edit.txt'), 'utf8'), 'second, longer\n');
    assert.is(await readFile(join(srv, 'late.txt'), 'utf8'), 'made while waiting\n');
    assert.is(await readFile(join(srv, 'README.txt'), 'utf8'), 'readme v1\n');
  } finally {
    await px.close();
  }
});

T('status piped into a reader that goes away (head -1): exit 0, no error', async () => {
  const { replicas: [a] } = await sampleWorld(1);
  await mkdir(join(a!, 'many'));
  for (let i = 0; i < 3000; i++) await writeFile(join(a!, 'many', `f${i}`), `${i}\n`);
  const argv = await imzArgv(['status', '-C', a!, '--offline']);
  const cmd = `${argv.map((x) => `'${x}'`).join(' ')} | head -1; echo "rc=\${PIPESTATUS[0]}"`;
  const r = await new Promise<{ stdout: string; stderr: string }>((res) => {
    const p = spawn('bash', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    let so = '', se = '';
    p.stdout!.on('data', (b) => (so += b));
    p.stderr!.on('data', (b) => (se += b));
    p.on('close', () => res({ stdout: so, stderr: se }));
  });
  assert.match(r.stdout, /rc=0/, `${r.stdout}\n${r.stderr}`);
  assert.is(r.stderr, '');
});

T('a push that cannot connect (bad token file) leaves .imz/ as it was: no log file created', async () => {
  const { replicas: [a] } = await sampleWorld(1);
  const { readdirSync } = await import('node:fs');
  const before = readdirSync(join(a!, '.imz')).sort();
  await writeFile(join(a!, 'new.txt'), 'new\n');
  const r = await imz(['push', '-C', a!, '--json', '--token-file', join(a!, 'missing.token')]);
  assert.is(r.code, 2, out(r));
  assert.equal(readdirSync(join(a!, '.imz')).sort(), before, '.imz/ entries');
});

T.run();
