// The server's request handlers, driven through a real Remote over loopback
// TCP against a real served directory (no CLI process: faster, and it lets
// the tests speak the protocol directly).
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Op } from '../../protocol/messages.ts';
import { Session } from '../../protocol/session.ts';
import { hashBytes } from '../../core/hash.ts';
import { Remote } from '../../core/remote.ts';
import { ImzServer } from '../../core/server.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

let server: ImzServer;
let addr = '';
let root = '';
const big = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 7) & 0xff);

test.before(async () => {
  root = await makeTmp('imz-server-test-');
  await mkdir(join(root, 'dir/sub'), { recursive: true });
  await writeFile(join(root, 'dir/a.txt'), 'alpha');
  await writeFile(join(root, 'dir/b.txt'), 'beta');
  await writeFile(join(root, 'big.bin'), big);
  server = new ImzServer({ dir: root, rescanMs: 0 });
  const { port } = await server.start();
  addr = `127.0.0.1:${port}`;
});
test.after(async () => {
  await server?.close();
  await cleanupAll();
});

test('HELLO tells identity and journal range', async () => {
  const r = await Remote.connect(addr);
  assert.match(r.info.serverId, /^[0-9a-f-]{36}$/);
  assert.is(r.info.journalFirst, 1);
  assert.ok(r.info.journalLast >= 5);
  r.close();
});

test('STAT and READDIR describe the tree; unknown and unsafe paths are refused with codes', async () => {
  const r = await Remote.connect(addr);
  const e = await r.stat('dir/a.txt');
  assert.is(e.size, 5);
  assert.equal([...e.hash], [...hashBytes(new TextEncoder().encode('alpha'))]);
  const names: string[] = [];
  for await (const env of r.session.stream(Op.READDIR, { readdir: { path: 'dir' } })) names.push(...(env.entries?.entries ?? []).map((x) => x.path));
  assert.equal(names, ['dir/a.txt', 'dir/b.txt', 'dir/sub']);
  for (const [p, code] of [['nope', 'IMZ_NOT_FOUND'], ['../etc/passwd', 'IMZ_BAD_PATH'], ['.imz-server/identity', 'IMZ_BAD_PATH'], ['dir//a.txt', 'IMZ_BAD_PATH']]) {
    try {
      await r.stat(p!);
      assert.unreachable(`stat ${p}`);
    } catch (err) {
      assert.is((err as { code: string }).code, code, p);
    }
  }
  r.close();
});

test('READ serves ranges of the version asked for, and refuses another version as IMZ_STALE', async () => {
  const r = await Remote.connect(addr);
  const e = await r.stat('big.bin');
  const chunk = await r.read('big.bin', e.hash, 1024 * 1024, 1000);
  assert.equal([...chunk], [...big.subarray(1024 * 1024, 1024 * 1024 + 1000)]);
  const tail = await r.read('big.bin', e.hash, big.length - 5, 100);
  assert.is(tail.length, 5);
  try {
    await r.read('big.bin', new Uint8Array(32), 0, 10);
    assert.unreachable();
  } catch (err) {
    assert.is((err as { code: string }).code, 'IMZ_STALE');
  }
  r.close();
});

test('JOURNAL honours since and limit, and says when more remain', async () => {
  const r = await Remote.connect(addr);
  const all: number[] = [];
  for await (const b of r.journal(0)) all.push(...b.map((x) => x.seq));
  assert.equal(all, Array.from({ length: all.length }, (_, i) => i + 1));
  let more = false;
  const some: number[] = [];
  for await (const env of r.session.stream(Op.JOURNAL, { journal: { since: 1, limit: 2 } })) {
    some.push(...(env.journalReply?.records ?? []).map((x) => x.seq));
    more ||= env.journalReply?.more === true;
  }
  assert.equal(some, [2, 3]);
  assert.ok(more);
  r.close();
});

test('a direct write is journalled by the watcher, not a rescan (which is off here)', async () => {
  const r = await Remote.connect(addr);
  const before = r.info.journalLast;
  r.close();
  await writeFile(join(root, 'dir/new.txt'), 'fresh');
  const t0 = Date.now();
  for (;;) {
    const s = await Remote.connect(addr);
    const last = s.info.journalLast;
    s.close();
    if (last > before) break;
    assert.ok(Date.now() - t0 < 10_000, 'journalled within 10 s (a loaded machine; no rescan would ever journal it)');
    await new Promise((res) => setTimeout(res, 25));
  }
});

test('a request before HELLO gets an error and the server keeps serving', async () => {
  const sock = connect({ host: '127.0.0.1', port: Number(addr.split(':')[1]) });
  await new Promise((res) => sock.once('connect', res));
  const s = new Session(sock);
  try {
    await s.request(Op.STAT, { stat: { path: 'dir/a.txt' } });
    assert.unreachable();
  } catch (err) {
    assert.is((err as { code: string }).code, 'IMZ_PROTOCOL');
  }
  s.close();
  const r = await Remote.connect(addr);
  assert.is((await r.stat('dir/b.txt')).size, 4);
  r.close();
});

test('a connection silent past the idle limit is closed; the server keeps serving', async () => {
  const idle = new ImzServer({ dir: root, rescanMs: 0, idleMs: 300, stateDir: join(root, '..', 'idle-state') });
  const { port } = await idle.start();
  try {
    const r = await Remote.connect(`127.0.0.1:${port}`);
    const t0 = Date.now();
    const closedAt = await new Promise<number>((res) => r.session.once('close', () => res(Date.now())));
    assert.ok(closedAt - t0 < 3000, `closed after ${closedAt - t0} ms`);
    const again = await Remote.connect(`127.0.0.1:${port}`);
    assert.is((await again.stat('dir/a.txt')).size, 5);
    again.close();
  } finally {
    await idle.close();
  }
});

test('uploads a server holds in memory are staged when it stops, and a new process on the tree holds them', async () => {
  const dir = await makeTmp('imz-server-stop-');
  const data = new TextEncoder().encode('uploaded, its store not sent yet\n');
  const hash = hashBytes(data);
  const one = new ImzServer({ dir, rescanMs: 0 });
  const r = await Remote.connect(`127.0.0.1:${(await one.start()).port}`);
  await r.session.request(Op.PUT_BLOBS, { putBlobs: { blobs: [{ hash, size: data.length, offset: 0, data, last: true }] } });
  r.close();
  await one.close();
  const staged = join(dir, '.imz-server', 'staging', Buffer.from(hash).toString('hex'));
  assert.is(readFileSync(staged, 'utf8'), 'uploaded, its store not sent yet\n', 'staged at the stop');
  const two = new ImzServer({ dir, rescanMs: 0 });
  try {
    const again = await Remote.connect(`127.0.0.1:${(await two.start()).port}`);
    const env = await again.session.request(Op.PUT_BLOB, { putBlob: { hash: new Uint8Array(0), size: 0, offset: 0, data: new Uint8Array(0), last: false, query: [hash] } });
    assert.equal(env.blobReply?.held, [true], 'not asked for again');
    again.close();
  } finally {
    await two.close();
  }
});

test.run();
