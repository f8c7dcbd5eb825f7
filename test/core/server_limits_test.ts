// Resource limits of the server, against real sockets: connections in all
// and per address, the handshake deadline (a peer that sends half a frame
// and stalls is cut off), and that a refused or stalled peer leaves the
// server serving everyone else.
import { connect, type Socket } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FrameDecoder, encodeFrame } from '../../protocol/frame_codec.ts';
import { Op, decodeEnvelope, encodeEnvelope } from '../../protocol/messages.ts';
import { Remote } from '../../core/remote.ts';
import { ImzServer } from '../../core/server.ts';
import { cleanupAll, makeTmp, waitFor } from '../helpers.ts';

const sockets: Socket[] = [];
const servers: ImzServer[] = [];

test.after(async () => {
  for (const s of sockets) s.destroy();
  for (const s of servers) await s.close();
  await cleanupAll();
});

async function startServer(opts: Partial<ConstructorParameters<typeof ImzServer>[0]>): Promise<{ server: ImzServer; port: number }> {
  const root = await makeTmp('imz-limits-test-');
  await writeFile(join(root, 'a.txt'), 'alpha');
  const server = new ImzServer({ dir: root, rescanMs: 0, ...opts });
  servers.push(server);
  const { port } = await server.start();
  return { server, port };
}

// A raw socket that collects decoded frames and notes when it closes.
function rawSocket(port: number): Promise<{ sock: Socket; frames: ReturnType<typeof decodeEnvelope>[]; closed: Promise<number> }> {
  return new Promise((res, rej) => {
    const sock = connect({ host: '127.0.0.1', port });
    sockets.push(sock);
    const frames: ReturnType<typeof decodeEnvelope>[] = [];
    const dec = new FrameDecoder();
    sock.on('data', (b) => { for (const f of dec.push(b)) frames.push(decodeEnvelope(f)); });
    sock.on('error', () => {});
    const closed = new Promise<number>((r) => sock.once('close', () => r(Date.now())));
    sock.once('connect', () => res({ sock, frames, closed }));
    sock.once('error', rej);
  });
}

test('connections beyond the per-address limit get IMZ_BUSY and are closed; a freed slot admits the next', async () => {
  const { server, port } = await startServer({ maxConnectionsPerAddress: 3 });
  const held = await Promise.all([rawSocket(port), rawSocket(port), rawSocket(port)]);
  await waitFor(() => server.connectionCount === 3, 2000, 'three connections counted');
  const extra = await rawSocket(port);
  await extra.closed;
  assert.is(extra.frames[0]?.error?.code, 'IMZ_BUSY');
  assert.match(extra.frames[0]!.error!.message, /127\.0\.0\.1 has 3 connections/);
  held[0]!.sock.destroy();
  await waitFor(() => server.connectionCount === 2, 2000, 'the slot freed');
  const r = await Remote.connect(`127.0.0.1:${port}`);
  assert.is((await r.stat('a.txt')).size, 5);
  r.close();
});

test('the total limit applies too, and the client sees IMZ_BUSY as a clear error', async () => {
  const { server, port } = await startServer({ maxConnections: 2 });
  await Promise.all([rawSocket(port), rawSocket(port)]);
  await waitFor(() => server.connectionCount === 2, 2000, 'two connections counted');
  let err: { code?: string; message?: string } = {};
  try {
    await Remote.connect(`127.0.0.1:${port}`, { timeoutMs: 3000 });
  } catch (e) {
    err = e as typeof err;
  }
  assert.is(err.code, 'IMZ_BUSY');
  assert.match(err.message ?? '', /^cannot accept the connection: the server has 2 connections, its limit/);
});

test('a peer that sends half a frame and stalls is closed at the handshake deadline; a greeted one is not', async () => {
  const { port } = await startServer({ handshakeMs: 400 });
  const good = await Remote.connect(`127.0.0.1:${port}`);
  const t0 = Date.now(); // before the connection: the server's deadline starts at its accept, so never before this
  const stall = await rawSocket(port);
  const hello = encodeFrame(encodeEnvelope({ xid: 1, op: Op.HELLO, hello: { version: 1, maxFrame: 1 << 20, client: 't', replicaId: '' } }));
  stall.sock.write(hello.subarray(0, 7));
  const closedAt = await stall.closed;
  const took = closedAt - t0;
  assert.ok(took >= 390 && took < 5000, `closed after ${took} ms`);
  assert.is(stall.frames.at(-1)?.error?.code, 'IMZ_TIMEOUT');
  // The greeted session outlives the deadline.
  await new Promise((r) => setTimeout(r, 300));
  assert.is((await good.stat('a.txt')).size, 5);
  good.close();
});

test('a silent connection (nothing sent at all) is closed at the handshake deadline', async () => {
  const { server, port } = await startServer({ handshakeMs: 300 });
  const quiet = await rawSocket(port);
  const t0 = Date.now();
  const took = (await quiet.closed) - t0;
  assert.ok(took < 2000, `closed after ${took} ms`);
  await waitFor(() => server.connectionCount === 0, 2000, 'its slot released');
});

test.run();
