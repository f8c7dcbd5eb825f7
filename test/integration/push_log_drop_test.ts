// A push supersedes what an earlier (offline) push logged and never sent: it writes a drop
// record, then logs and marks its own operations sent. Cut off after that, the next push must
// resend its operations, never the dropped ones (found by the review of 90456e4: a sent mark
// with a higher number brought them back, and paths deleted before they were ever pushed
// reappeared on the server). A real proxy on loopback cuts the connection.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFile, mkdir, rm, stat } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { runReport as out, cleanupAll, diffTreesBut, imz, readJournal, readReintLog, sampleWorld, setRemote, snapshotTree } from '../helpers.ts';

const T = suite('push: dropped operations stay dropped');
T.after.each(cleanupAll);
T.after(cleanupAll);

/**
 * A loopback TCP proxy to port that forwards both ways until the server has
 * answered once (HELLO); the first client bytes after that make it cut both
 * sockets without forwarding them (the connection lost as a request goes out).
 */
async function cuttingProxy(port: number): Promise<{ address: string; close: () => Promise<void>; cuts: () => number }> {
  let cuts = 0;
  const socks = new Set<Socket>();
  const srv: Server = createServer((c) => {
    socks.add(c);
    const s = connect(port, '127.0.0.1');
    socks.add(s);
    let answered = false;
    s.on('data', (b) => { answered = true; c.write(b); });
    c.on('data', (b) => {
      if (answered) {
        cuts++;
        c.destroy();
        s.destroy();
        return;
      }
      s.write(b);
    });
    const end = () => { c.destroy(); s.destroy(); };
    c.on('error', end); s.on('error', end); c.on('close', end); s.on('close', end);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const p = (srv.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${p}`,
    cuts: () => cuts,
    close: () => new Promise<void>((r) => { for (const s of socks) s.destroy(); srv.close(() => r()); }),
  };
}

async function manyDirs(root: string, dir: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await mkdir(join(root, dir, `d${i}`), { recursive: true });
}

T('operations an offline push logged and a later push dropped stay dropped when that push is cut off after a sent mark: nothing deleted before it was pushed comes back on the server', async () => {
  const { srv, server, replicas: [a] } = await sampleWorld(1);
  // 1. Offline: a new directory and a new file (a copy of content the server holds) are logged, never sent.
  await mkdir(join(a!, 'ghost'));
  await copyFile(join(a!, 'docs', 'kml.txt'), join(a!, 'ghost.txt'));
  await setRemote(a!, '127.0.0.1:1');
  const off = await imz(['push', '-C', a!, '--json']);
  assert.is(off.code, 4, out(off));
  // 2. The user thinks better of it: both are removed before anything reached the server.
  await rm(join(a!, 'ghost'), { recursive: true });
  await rm(join(a!, 'ghost.txt'));
  // 3. A push of 600 new directories streams (nothing tracked gone): its first group is logged (with a 'drop' of the
  // offline operations), marked sent, and the connection is lost as the REINTEGRATE goes out.
  await manyDirs(a!, 'many', 600);
  const proxy = await cuttingProxy(server.port);
  try {
    await setRemote(a!, proxy.address);
    const cut = await imz(['push', '-C', a!, '--json']);
    assert.is(cut.code, 4, `connection lost mid-push: ${out(cut)}`);
    assert.ok(proxy.cuts() >= 1, 'the proxy cut the connection');
  } finally {
    await proxy.close();
  }
  const log = await readReintLog(a!);
  const ghostOps = log.filter((l) => l.t === 'op' && (l.op.path === 'ghost' || l.op.path === 'ghost.txt')) as { op: { seq: number } }[];
  const drop = log.find((l) => l.t === 'drop') as { upto: number } | undefined;
  const sentUpto = Math.max(...log.filter((l) => l.t === 'sent').map((l) => (l as { upto: number }).upto));
  assert.ok(drop && ghostOps.every((g) => g.op.seq <= drop.upto), `the offline operations were dropped: ${JSON.stringify(log.filter((l) => l.t !== 'op'))}`);
  assert.ok(ghostOps.every((g) => g.op.seq <= sentUpto), 'and a later sent mark covers their numbers');
  // 4. The next push, to the server: the dropped operations must not be sent.
  await setRemote(a!, server.address);
  const r = await imz(['push', '-C', a!, '--json']);
  assert.is(r.code, 0, out(r));
  const recs = await readJournal(server.address);
  const resurrected = recs.filter((x) => x.path === 'ghost' || x.path === 'ghost.txt');
  const onServer: string[] = [];
  for (const p of ['ghost', 'ghost.txt']) if (await stat(join(srv, p)).catch(() => null)) onServer.push(p);
  assert.equal(onServer, [], `paths deleted before they were ever pushed are on the server: ${onServer.join(', ')}; journal: ${JSON.stringify(resurrected)}`);
  const d = diffTreesBut(await snapshotTree(srv), await snapshotTree(a!));
  assert.ok(d.length === 0, `trees differ:\n  ${d.slice(0, 10).join('\n  ')}`);
});

T.run();
