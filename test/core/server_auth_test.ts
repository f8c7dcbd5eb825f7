// Authentication at the protocol level: real ImzServer instances with
// tokens, real sockets. The CLI side (token files, config) is covered in
// test/integration/auth_test.ts; here we attack the handshake itself:
// replayed and reflected proofs, requests before AUTH, an impostor server,
// read-only sessions, the failure limit, and the token never on the wire.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Access, Op, PROTOCOL_VERSION } from '../../protocol/messages.ts';
import { Session } from '../../protocol/session.ts';
import { clientProof, newNonce, serverProof } from '../../core/auth.ts';
import { Remote } from '../../core/remote.ts';
import { ImzServer } from '../../core/server.ts';
import { ServerAuth } from '../../core/server_auth.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

const RW = 'rw-token-0123456789abcdef';
const RO = 'ro-token-0123456789abcdef';
let server: ImzServer;
let addr = '';
const failures: { address: string; reason: string; blocked: boolean }[] = [];
const cleanups: (() => void | Promise<void>)[] = [];

test.before(async () => {
  const root = await makeTmp('imz-auth-test-');
  await writeFile(join(root, 'a.txt'), 'alpha');
  server = new ImzServer({ dir: root, rescanMs: 0, tokens: { readWrite: [RW], readOnly: [RO] } });
  server.on('auth-failed', (f) => failures.push(f));
  const { port } = await server.start();
  addr = `127.0.0.1:${port}`;
});
test.after(async () => {
  for (const c of cleanups.reverse()) await c();
  await server?.close();
  await cleanupAll();
});

async function rawSession(address = addr): Promise<Session> {
  const [host, port] = address.split(':');
  const s = await new Promise<Socket>((res, rej) => {
    const c = connect({ host, port: Number(port) }, () => res(c));
    c.once('error', rej);
  });
  const session = new Session(s);
  cleanups.push(() => session.close());
  return session;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as { code: string }).code;
  }
  return 'resolved';
}

test('a right token authenticates both ways; the session gets the token\'s access', async () => {
  const rw = await Remote.connect(addr, { token: RW });
  assert.is(rw.info.access, 'read-write');
  assert.ok(rw.info.authenticated);
  assert.is((await rw.stat('a.txt')).size, 5);
  rw.close();
  const ro = await Remote.connect(addr, { token: RO });
  assert.is(ro.info.access, 'read-only');
  assert.is((await ro.read('a.txt', new Uint8Array(0), 0, 5)).length, 5);
  ro.close();
});

test('no token, or a wrong one, is IMZ_AUTH; the failure is reported with the address', async () => {
  assert.is(await codeOf(Remote.connect(addr)), 'IMZ_AUTH');
  const before = failures.length;
  assert.is(await codeOf(Remote.connect(addr, { token: 'wrong-token-0123456789' })), 'IMZ_AUTH');
  assert.is(failures.length, before + 1);
  assert.is(failures.at(-1)!.address, '127.0.0.1');
});

test('requests before AUTH are refused and end the connection', async () => {
  const s = await rawSession();
  const hello = await s.request(Op.HELLO, { hello: { version: PROTOCOL_VERSION, maxFrame: 1 << 20, client: 't', replicaId: '', nonce: newNonce() } });
  assert.is(hello.helloReply!.access, Access.NONE);
  assert.is(hello.helloReply!.nonce!.length, 32);
  assert.is(await codeOf(s.request(Op.STAT, { stat: { path: 'a.txt' } })), 'IMZ_AUTH');
  const by = Date.now() + 3000;
  while (!s.closed && Date.now() < by) await new Promise((r) => setTimeout(r, 10));
  assert.ok(s.closed, 'the connection is closed');
});

test('a replayed proof fails: each connection has a fresh server nonce', async () => {
  const s1 = await rawSession();
  const cn = newNonce();
  const h1 = (await s1.request(Op.HELLO, { hello: { version: 1, maxFrame: 1 << 20, client: 't', replicaId: '', nonce: cn } })).helloReply!;
  const proof = clientProof(RW, h1.nonce!, cn, h1.serverId);
  const ok = await s1.request(Op.AUTH, { auth: { proof } });
  assert.is(ok.authReply!.access, Access.READ_WRITE);
  assert.equal([...ok.authReply!.proof], [...serverProof(RW, h1.nonce!, cn, h1.serverId)]);
  s1.close();
  // An eavesdropper replays the same client nonce and proof on a new connection.
  const s2 = await rawSession();
  const h2 = (await s2.request(Op.HELLO, { hello: { version: 1, maxFrame: 1 << 20, client: 't', replicaId: '', nonce: cn } })).helloReply!;
  assert.not.equal([...h2.nonce!], [...h1.nonce!]);
  assert.is(await codeOf(s2.request(Op.AUTH, { auth: { proof } })), 'IMZ_AUTH');
});

test('a reflected proof fails: the server\'s own proof is not a client proof', async () => {
  const s = await rawSession();
  const cn = newNonce();
  const h = (await s.request(Op.HELLO, { hello: { version: 1, maxFrame: 1 << 20, client: 't', replicaId: '', nonce: cn } })).helloReply!;
  // Whoever could make the server compute its answer for these nonces gets a server-labelled HMAC, which AUTH rejects.
  const reflected = serverProof(RW, h.nonce!, cn, h.serverId);
  assert.is(await codeOf(s.request(Op.AUTH, { auth: { proof: reflected } })), 'IMZ_AUTH');
});

test('a HELLO without a nonce cannot authenticate even with the right token\'s proof over empty nonces', async () => {
  const s = await rawSession();
  const h = (await s.request(Op.HELLO, { hello: { version: 1, maxFrame: 1 << 20, client: 't', replicaId: '' } })).helloReply!;
  const proof = clientProof(RW, h.nonce!, new Uint8Array(0), h.serverId);
  assert.is(await codeOf(s.request(Op.AUTH, { auth: { proof } })), 'IMZ_AUTH');
});

test('a read-only session may read but every write is IMZ_READ_ONLY, and the session stays open', async () => {
  const ro = await Remote.connect(addr, { token: RO });
  const put = ro.session.request(Op.PUT_BLOB, { putBlob: { hash: new Uint8Array(32), size: 1, offset: 0, data: new Uint8Array([1]), last: true } });
  assert.is(await codeOf(put), 'IMZ_READ_ONLY');
  const puts = ro.session.request(Op.PUT_BLOBS, { putBlobs: { blobs: [{ hash: new Uint8Array(32), size: 1, offset: 0, data: new Uint8Array([1]), last: true }] } });
  assert.is(await codeOf(puts), 'IMZ_READ_ONLY');
  const reint = ro.session.request(Op.REINTEGRATE, { reintegrate: { replicaId: 'x', ops: [], policy: 'manual' } });
  assert.is(await codeOf(reint), 'IMZ_READ_ONLY');
  assert.is((await ro.stat('a.txt')).size, 5);
  ro.close();
});

test('before AUTH a frame over 64 KiB is refused: strangers cannot make the server buffer much', async () => {
  const s = await rawSession();
  await s.request(Op.HELLO, { hello: { version: 1, maxFrame: 1 << 24, client: 't', replicaId: '', nonce: newNonce() } });
  // Our side would refuse to send it; write the frame header by hand.
  const head = Buffer.alloc(4);
  head.writeUInt32BE(200 * 1024);
  s.socket.write(head);
  const closed = await new Promise<string>((res) => s.once('close', (e) => res((e as { code?: string })?.code ?? 'closed')));
  assert.is(closed, 'IMZ_FRAME_TOO_LARGE');
});

test('an impostor server that accepts any proof is caught by its missing proof', async () => {
  // A fake server: says AUTH is needed, then answers with a proof it cannot know.
  const fake: Server = createServer((sock) => {
    const s = new Session(sock);
    s.handle(async (req, reply) => {
      if (req.op === Op.HELLO) return reply.send({ helloReply: { version: 1, maxFrame: 1 << 20, serverId: '00000000-0000-0000-0000-000000000000', journalFirst: 0, journalLast: 0, server: 'fake', nonce: newNonce(), access: Access.NONE } }, true);
      return reply.send({ authReply: { proof: newNonce(), access: Access.READ_WRITE } }, true);
    });
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => fake.close(() => r())));
  const port = (fake.address() as { port: number }).port;
  assert.is(await codeOf(Remote.connect(`127.0.0.1:${port}`, { token: RW })), 'IMZ_AUTH');
  const s = fake as Server & { closeAllConnections?: () => void };
  s.closeAllConnections?.();
});

test('the token never crosses the wire (every byte both ways through a recording proxy)', async () => {
  const seen: Buffer[] = [];
  const [, port] = addr.split(':');
  const proxy = createServer((c) => {
    const up = connect({ host: '127.0.0.1', port: Number(port) });
    c.on('data', (b) => { seen.push(Buffer.from(b)); up.write(b); });
    up.on('data', (b) => { seen.push(Buffer.from(b)); c.write(b); });
    c.on('close', () => up.destroy());
    up.on('close', () => c.destroy());
    c.on('error', () => {});
    up.on('error', () => {});
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => proxy.close(() => r())));
  const r = await Remote.connect(`127.0.0.1:${(proxy.address() as { port: number }).port}`, { token: RW });
  await r.stat('a.txt');
  r.close();
  const all = Buffer.concat(seen);
  assert.ok(all.length > 100, 'the proxy saw the conversation');
  assert.is(all.indexOf(RW), -1);
  assert.is(all.indexOf(Buffer.from(RW, 'utf8').toString('hex')), -1);
});

test('failed attempts from one address are limited: the tenth blocks it, even with the right token after', () => {
  const a = new ServerAuth({ readWrite: [RW], readOnly: [] });
  const t0 = 1_000_000;
  for (let i = 1; i < 10; i++) assert.not.ok(a.recordFailure('10.0.0.1', t0 + i));
  assert.ok(a.recordFailure('10.0.0.1', t0 + 10));
  assert.ok(a.blockedFor('10.0.0.1', t0 + 11) > 59_000);
  assert.is(a.blockedFor('10.0.0.2', t0 + 11), 0, 'other addresses are not affected');
  assert.is(a.blockedFor('10.0.0.1', t0 + 10 + 60_001), 0, 'the block ends');
});

test('the server refuses AUTH from a blocked address with IMZ_AUTH, then lets it in after the block', async () => {
  const root = await makeTmp('imz-auth-block-');
  const srv = new ImzServer({ dir: root, rescanMs: 0, tokens: { readWrite: [RW], readOnly: [] } });
  const { port } = await srv.start();
  cleanups.push(() => srv.close());
  const a = `127.0.0.1:${port}`;
  const blocked: boolean[] = [];
  srv.on('auth-failed', (f) => blocked.push(f.blocked));
  for (let i = 0; i < 10; i++) assert.is(await codeOf(Remote.connect(a, { token: 'bad-token-0123456789abc' })), 'IMZ_AUTH');
  assert.is(blocked.filter(Boolean).length, 1, 'the tenth failure blocks the address');
  let msg = '';
  try {
    await Remote.connect(a, { token: RW });
  } catch (err) {
    msg = (err as Error).message;
  }
  assert.match(msg, /too many failed attempts from 127\.0\.0\.1/);
});

test.run();
