// Mirrors (`imz serve DIR --upstream HOST:PORT`), with real servers and the
// real CLI: a two-level on-demand cascade where one read moves exactly one
// file's content across each hop, a mirror serving what it has while its
// upstream is down, live following, writes forwarded upstream or refused,
// and one upstream fetch for many concurrent readers of a hot file.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, connect, type Server } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Remote } from '../../core/remote.ts';
import { type ServerHandle, cleanupAll, diffTrees, imz, jsonLines, makeTmp, snapshotTree, startServer, waitFor } from '../helpers.ts';

const big = new Uint8Array(1024 * 1024 + 5).map((_, i) => (i * 31 + 7) & 0xff);
const closers: (() => Promise<void> | void)[] = [];

test.after(async () => {
  for (const c of closers.reverse()) await c();
  await cleanupAll();
});

async function primary(tmp: string): Promise<{ srv: string; server: ServerHandle }> {
  const srv = join(tmp, 'primary');
  await mkdir(join(srv, 'docs/deep'), { recursive: true });
  await writeFile(join(srv, 'docs/a.txt'), 'alpha\n');
  await writeFile(join(srv, 'docs/deep/b.txt'), 'beta\n');
  await writeFile(join(srv, 'big.bin'), big);
  await writeFile(join(srv, 'c.txt'), 'gamma\n');
  return { srv, server: await startServer(srv) };
}

// Files with content under a mirror's tree (its own state left out).
function contentFiles(dir: string, paths: string[]): string[] {
  return paths.filter((p) => existsSync(join(dir, p)));
}

test('a two-level on-demand cascade: one cat moves one file across each hop, nothing else', async () => {
  const tmp = await makeTmp('imz-mirror-');
  const { server: p } = await primary(tmp);
  const m1 = await startServer(join(tmp, 'm1'), ['--upstream', p.address, '--on-demand', '--read-only']);
  const m2 = await startServer(join(tmp, 'm2'), ['--upstream', m1.address, '--on-demand', '--read-only']);
  const client = join(tmp, 'client');
  const c = await imz(['clone', '--on-demand', m2.address, client]);
  assert.is(c.code, 0, c.stderr);
  const ls = jsonLines((await imz(['ls', '--json'], { cwd: client })).stdout);
  assert.equal(ls.map((e) => e.path), ['big.bin', 'c.txt', 'docs']);
  assert.ok(ls.filter((e) => e.type === 'file').every((e) => e.local === false));
  const all = ['docs/a.txt', 'docs/deep/b.txt', 'big.bin', 'c.txt'];
  assert.equal(contentFiles(join(tmp, 'm1'), all), [], 'the first mirror fetched no content yet');
  assert.equal(contentFiles(join(tmp, 'm2'), all), [], 'the second mirror fetched no content yet');
  const cat = await imz(['cat', 'docs/deep/b.txt'], { cwd: client });
  assert.is(cat.code, 0, cat.stderr);
  assert.is(cat.stdout, 'beta\n');
  assert.equal(contentFiles(join(tmp, 'm1'), all), ['docs/deep/b.txt']);
  assert.equal(contentFiles(join(tmp, 'm2'), all), ['docs/deep/b.txt']);
  assert.equal(contentFiles(client, all), ['docs/deep/b.txt']);
  // A big file through both hops arrives whole and verified.
  const got = await imz(['get', 'big.bin'], { cwd: client });
  assert.is(got.code, 0, got.stderr);
  assert.equal(readFileSync(join(client, 'big.bin')), Buffer.from(big));

  // The upstream goes away: the mirrors serve what they have, and say so.
  await p.stop();
  const again = await imz(['cat', '--no-keep', 'docs/deep/b.txt'], { cwd: join(tmp, 'client') });
  assert.is(again.stdout, 'beta\n');
  const missing = await imz(['cat', 'c.txt'], { cwd: client });
  assert.is.not(missing.code, 0);
  assert.match(missing.stderr, /^imz: cannot .*upstream .* is unreachable/m);
  await waitFor(async () => {
    const r = await Remote.connect(m1.address);
    r.close();
    return r.info.upstream?.reachable === false;
  }, 15_000, 'the first mirror to notice its upstream is gone');
  const st = await imz(['status', '--json', '-C', join(tmp, 'm2')]);
  assert.ok(st.code === 0 || st.code === 3, st.stderr);
  const direct = await Remote.connect(m1.address);
  assert.equal(direct.info.upstream, { address: p.address, reachable: false });
  direct.close();
  await m2.stop();
  await m1.stop();
});

test('a full mirror follows its upstream live and forwards its clients\' writes there', async () => {
  const tmp = await makeTmp('imz-mirror-rw-');
  const { srv, server: p } = await primary(tmp);
  const m = await startServer(join(tmp, 'm'), ['--upstream', p.address]);
  closers.push(() => { void m.stop(); });
  // The mirror's tree is a full copy.
  assert.equal(diffTrees(await snapshotTree(srv), await snapshotTree(join(tmp, 'm'))), []);
  const client = join(tmp, 'client');
  assert.is((await imz(['clone', m.address, client])).code, 0);
  // Upstream change → mirror → its client.
  await writeFile(join(srv, 'new-upstream.txt'), 'from the primary\n');
  await waitFor(() => existsSync(join(tmp, 'm', 'new-upstream.txt')), 10_000, 'the mirror to follow the change');
  await waitFor(async () => {
    await imz(['pull'], { cwd: client });
    return existsSync(join(client, 'new-upstream.txt'));
  }, 10_000, 'the change to reach the mirror\'s client');
  // A client of the mirror pushes: the mirror applies it and pushes upstream.
  await writeFile(join(client, 'from-client.txt'), 'written at the edge\n');
  const push = await imz(['push'], { cwd: client });
  assert.is(push.code, 0, push.stderr);
  await waitFor(() => existsSync(join(srv, 'from-client.txt')), 10_000, 'the write to reach the primary');
  assert.is(readFileSync(join(srv, 'from-client.txt'), 'utf8'), 'written at the edge\n');
  await m.stop();
  await p.stop();
});

test('a read-only mirror refuses pushes with IMZ_READ_ONLY and keeps the local change', async () => {
  const tmp = await makeTmp('imz-mirror-ro-');
  const { srv, server: p } = await primary(tmp);
  const m = await startServer(join(tmp, 'm'), ['--upstream', p.address, '--read-only']);
  const client = join(tmp, 'client');
  assert.is((await imz(['clone', m.address, client])).code, 0);
  await writeFile(join(client, 'c.txt'), 'edited\n');
  const push = await imz(['push', '--json'], { cwd: client });
  assert.is(push.code, 1);
  assert.is(jsonLines(push.stdout).find((e) => e.event === 'error')?.code, 'IMZ_READ_ONLY');
  assert.match(push.stderr, /read-only mirror of/);
  assert.is(readFileSync(join(client, 'c.txt'), 'utf8'), 'edited\n');
  assert.is(readFileSync(join(srv, 'c.txt'), 'utf8'), 'gamma\n');
  await m.stop();
  await p.stop();
});

test('fifty concurrent readers of a hot file through an on-demand mirror: the upstream sends it once', async () => {
  const tmp = await makeTmp('imz-mirror-hot-');
  const { server: p } = await primary(tmp);
  // A counting proxy in front of the primary: every byte the mirror gets from upstream passes here.
  let bytesDown = 0;
  const [, port] = p.address.split(':');
  const proxy: Server = createServer((c) => {
    const up = connect({ host: '127.0.0.1', port: Number(port) });
    c.pipe(up);
    up.on('data', (b: Buffer) => { bytesDown += b.length; });
    up.pipe(c);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
  closers.push(() => new Promise<void>((r) => proxy.close(() => r())));
  const proxyAddr = `127.0.0.1:${(proxy.address() as { port: number }).port}`;
  const m = await startServer(join(tmp, 'm'), ['--upstream', proxyAddr, '--on-demand', '--read-only']);
  const before = bytesDown;
  const readers = await Promise.all(Array.from({ length: 50 }, () => Remote.connect(m.address)));
  const e = await readers[0]!.stat('big.bin');
  const chunks = await Promise.all(readers.map((r) => r.read('big.bin', e.hash, 0, big.length)));
  for (const r of readers) r.close();
  for (const c of chunks) assert.is(c.length, big.length);
  const crossed = bytesDown - before;
  assert.ok(crossed > big.length && crossed < 2 * big.length, `${crossed} bytes came from upstream for a ${big.length}-byte file read 50 times`);
  await m.stop();
  await p.stop();
});

test('the HTTP view of an on-demand mirror fetches a file from upstream when it is first asked for', async () => {
  const tmp = await makeTmp('imz-mirror-http-');
  const { server: p } = await primary(tmp);
  const m = await startServer(join(tmp, 'm'), ['--upstream', p.address, '--on-demand', '--read-only', '--http', '0']);
  const listening = jsonLines(m.output().stdout)[0]!;
  const base = `http://127.0.0.1:${listening.httpPort as number}`;
  assert.not.ok(existsSync(join(tmp, 'm', 'c.txt')));
  const r = await fetch(`${base}/c.txt`);
  assert.is(r.status, 200);
  assert.is(await r.text(), 'gamma\n');
  assert.ok(existsSync(join(tmp, 'm', 'c.txt')), 'kept by the mirror');
  assert.not.ok(existsSync(join(tmp, 'm', 'docs/a.txt')), 'nothing else fetched');
  const list = await (await fetch(`${base}/docs/?format=json`)).json() as { entries: { name: string }[] };
  assert.equal(list.entries.map((e) => e.name).sort(), ['a.txt', 'deep']);
  await p.stop();
  const gone = await fetch(`${base}/docs/a.txt`);
  assert.is(gone.status, 502);
  await m.stop();
});

test('--on-demand without --upstream, and a mirror directory holding other files, are refused clearly', async () => {
  const tmp = await makeTmp('imz-mirror-usage-');
  const { server: p } = await primary(tmp);
  const od = await imz(['serve', join(tmp, 'x'), '--on-demand', '--port', '0']);
  assert.is(od.code, 2);
  assert.match(od.stderr, /--on-demand needs --upstream/);
  await mkdir(join(tmp, 'busy'));
  await writeFile(join(tmp, 'busy', 'mine.txt'), 'keep me');
  const busy = await imz(['serve', join(tmp, 'busy'), '--upstream', p.address, '--port', '0']);
  assert.is(busy.code, 1);
  assert.match(busy.stderr, /not empty and not a mirror/);
  assert.is(readFileSync(join(tmp, 'busy', 'mine.txt'), 'utf8'), 'keep me');
  await p.stop();
});

test.run();
