import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Session, type RequestHandler, type SessionOptions } from '../../protocol/session.ts';
import { FrameDecoder, encodeFrame } from '../../protocol/frame_codec.ts';
import { Change, EntryType, Op, type Envelope, decodeEnvelope, encodeEnvelope } from '../../protocol/messages.ts';
import { Codes, ImzError } from '../../protocol/errors.ts';

// Everything runs over real loopback TCP: a node:net server on 127.0.0.1
// port 0 with a Session per accepted socket, and client Sessions (or raw
// sockets playing a hostile peer) connected to it.

// ---------- harness ----------

const cleanups: (() => unknown)[] = [];

test.after.each(async () => {
  while (cleanups.length > 0) {
    try {
      await cleanups.pop()!();
    } catch { /* keep cleaning */ }
  }
});

/** Fails (instead of hanging the whole run) when p does not settle in time. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls cond until true or fails after ms. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.unreachable(`timed out after ${ms} ms waiting until ${what}`);
    await sleep(5);
  }
}

async function rejectsCode(p: Promise<unknown>, code: string, what: string): Promise<ImzError> {
  try {
    await within(p, 3000, what);
  } catch (err) {
    assert.instance(err, ImzError, `${what}: rejects with an ImzError (got ${String(err)})`);
    assert.is((err as ImzError).code, code, what);
    return err as ImzError;
  }
  assert.unreachable(`${what}: expected a rejection with ${code}`);
  throw new Error('unreachable');
}

interface TestServer {
  port: number;
  /** Server-side sessions, in accept order. */
  sessions: Session[];
  /** Resolves with the n-th (0-based) server-side session once accepted. */
  session(n: number): Promise<Session>;
  connections(): Promise<number>;
}

async function startServer(handler: RequestHandler, opts: SessionOptions = {}): Promise<TestServer> {
  const sessions: Session[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    const s = new Session(sock, opts);
    s.handle(handler);
    sessions.push(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  cleanups.push(() => new Promise<void>((resolve) => {
    for (const s of sessions) s.close();
    for (const sock of sockets) sock.destroy();
    server.close(() => resolve());
  }));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    sessions,
    async session(n: number) {
      await until(() => sessions.length > n, 2000, `server session ${n} is accepted`);
      return sessions[n]!;
    },
    connections: () => new Promise<number>((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
  };
}

async function connect(port: number, opts: SessionOptions = {}): Promise<Session> {
  const sock = net.connect({ port, host: '127.0.0.1' });
  // The session listens from the start, so nothing the server sends early is lost.
  const s = new Session(sock, opts);
  cleanups.push(() => s.close());
  await within(new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  }), 2000, 'connect');
  return s;
}

/** A raw socket for playing a hostile peer; it does not close its side when the server does. */
async function rawConnect(port: number): Promise<{ sock: net.Socket; received: () => Uint8Array; ended: Promise<void> }> {
  const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  cleanups.push(() => sock.destroy());
  const chunks: Uint8Array[] = [];
  sock.on('data', (c: Buffer) => chunks.push(c));
  sock.on('error', () => {});
  const ended = new Promise<void>((resolve) => {
    sock.once('end', () => resolve());
    sock.once('close', () => resolve());
  });
  await within(new Promise<void>((resolve) => sock.once('connect', () => resolve())), 2000, 'raw connect');
  return { sock, received: () => Buffer.concat(chunks), ended };
}

function decodeAll(bytes: Uint8Array): Envelope[] {
  return new FrameDecoder().push(bytes).map(decodeEnvelope);
}

function header(len: number): Uint8Array {
  const h = new Uint8Array(4);
  new DataView(h.buffer).setUint32(0, len, false);
  return h;
}

/** Session internals read by the backpressure tests (must exist, or those tests would prove nothing). */
interface Internals {
  _streamBytes: number;
  _paused: boolean;
  _decoder: FrameDecoder;
  _pending: Map<number, unknown>;
}
function internals(s: Session): Internals {
  const i = s as unknown as Internals;
  assert.type(i._streamBytes, 'number', 'Session._streamBytes exists');
  assert.type(i._paused, 'boolean', 'Session._paused exists');
  assert.instance(i._decoder, FrameDecoder, 'Session._decoder exists');
  assert.instance(i._pending, Map, 'Session._pending exists');
  return i;
}

/** A handler that answers PING with an empty last frame and STAT with its path. */
const basicHandler: RequestHandler = async (req, reply) => {
  if (req.op === Op.STAT) {
    await reply.send({ statReply: { path: req.stat?.path ?? '', type: EntryType.FILE, size: 1, mode: 0o644, mtimeMs: 0, hash: new Uint8Array(0), target: '', version: req.xid } }, true);
    return;
  }
  await reply.send({}, true);
};

// ---------- pipelining ----------

test('many requests in flight at once, answered out of order, are matched by xid', async () => {
  const N = 64;
  const waiting: { req: Envelope; send: () => Promise<void> }[] = [];
  const sendOrder: string[] = [];
  const srv = await startServer(async (req, reply) => {
    const path = req.stat!.path;
    await new Promise<void>((done) => {
      waiting.push({
        req,
        send: async () => {
          sendOrder.push(path);
          await reply.send({ statReply: { path: `${path}!`, type: EntryType.FILE, size: 2 ** 40 + Number(path.slice(1)), mode: 0, mtimeMs: 0, hash: new Uint8Array(0), target: '', version: req.xid } }, true);
          done();
        },
      });
      // Nothing is answered until all N requests have arrived: this only
      // completes if the client really pipelines them.
      if (waiting.length === N) {
        const order = waiting.map((_, i) => i).sort((a, b) => ((a * 37) % N) - ((b * 37) % N)).reverse();
        void (async () => { for (const i of order) await waiting[i]!.send(); })();
      }
    });
  });
  const client = await connect(srv.port);
  const arrival: number[] = [];
  const replies = await within(Promise.all(Array.from({ length: N }, (_, i) =>
    client.request(Op.STAT, { stat: { path: `f${i}` } }).then((env) => { arrival.push(i); return env; }))), 3000, 'all pipelined replies');
  const xids = new Set<number>();
  replies.forEach((env, i) => {
    assert.is(env.reply, true);
    assert.is(env.op, Op.STAT);
    assert.is(env.statReply!.path, `f${i}!`, `reply ${i} carries its own request's answer`);
    assert.is(env.statReply!.size, 2 ** 40 + i);
    assert.is(env.statReply!.version, env.xid, 'the server saw the same xid');
    xids.add(env.xid);
  });
  assert.is(xids.size, N, 'every request had its own xid');
  assert.is(waiting.length, N, 'all requests were in flight before any answer');
  // The replies really came back in another order than asked.
  assert.not.equal(arrival, [...arrival].sort((a, b) => a - b));
  assert.equal(arrival.map((i) => `f${i}`), sendOrder, 'each reply resolved as its frame arrived');
  assert.is(internals(client)._pending.size, 0, 'nothing left pending');
});

// ---------- streamed replies ----------

/** Streams `frames` READ replies; offset i, data of 100 bytes starting with i & 0xff. */
function streamingHandler(frames: number, extra?: RequestHandler): RequestHandler {
  return async (req, reply) => {
    if (req.op === Op.READ) {
      const n = req.read?.length || frames;
      for (let i = 0; i < n; i++) {
        const data = new Uint8Array(100).fill(i & 0xff);
        await reply.send({ readReply: { data, offset: i } }, i === n - 1);
      }
      return;
    }
    if (extra) return extra(req, reply);
    return basicHandler(req, reply);
  };
}

test('a streamed reply of many frames arrives in order and ends at the last frame', async () => {
  const N = 1000;
  const srv = await startServer(streamingHandler(N));
  const client = await connect(srv.port);
  const got: Envelope[] = [];
  await within((async () => { for await (const env of client.stream(Op.READ, { read: { path: 'a', hash: new Uint8Array(0), offset: 0, length: 0 } })) got.push(env); })(), 3000, 'stream');
  assert.is(got.length, N);
  got.forEach((env, i) => {
    assert.is(env.readReply!.offset, i, 'in order');
    assert.is(env.readReply!.data.length, 100);
    assert.is(env.readReply!.data[99], i & 0xff);
    assert.is(Boolean(env.last), i === N - 1, 'only the final frame is marked last');
    assert.is(env.xid, got[0]!.xid, 'one xid for the whole stream');
  });
  assert.is(internals(client)._pending.size, 0, 'the stream is forgotten once ended');
  assert.is(internals(client)._streamBytes, 0, 'no buffered stream bytes left');
  // The session is still usable.
  const pong = await within(client.request(Op.PING), 2000, 'ping after stream');
  assert.is(pong.op, Op.PING);
});

test('two streams and single requests interleaved on one session each stay in order', async () => {
  const srv = await startServer(streamingHandler(0));
  const client = await connect(srv.port);
  const collect = async (n: number): Promise<number[]> => {
    const offs: number[] = [];
    for await (const env of client.stream(Op.READ, { read: { path: 'a', hash: new Uint8Array(0), offset: 0, length: n } })) offs.push(env.readReply!.offset);
    return offs;
  };
  const [a, b, s1, s2] = await within(Promise.all([
    collect(300), collect(500),
    client.request(Op.STAT, { stat: { path: 'x' } }), client.request(Op.STAT, { stat: { path: 'y' } }),
  ]), 3000, 'interleaved streams');
  assert.equal(a, Array.from({ length: 300 }, (_, i) => i));
  assert.equal(b, Array.from({ length: 500 }, (_, i) => i));
  assert.is(s1.statReply!.path, 'x');
  assert.is(s2.statReply!.path, 'y');
});

test('a stream of one frame (last on the first) yields exactly one', async () => {
  const srv = await startServer(streamingHandler(0));
  const client = await connect(srv.port);
  const got: Envelope[] = [];
  await within((async () => { for await (const env of client.stream(Op.READ, { read: { path: 'a', hash: new Uint8Array(0), offset: 0, length: 1 } })) got.push(env); })(), 2000, 'one-frame stream');
  assert.is(got.length, 1);
  assert.ok(got[0]!.last);
});

// ---------- errors ----------

test('an error reply rejects with the ImzError code the handler used', async () => {
  const srv = await startServer(async (req, reply) => {
    const path = req.stat?.path;
    if (path === 'missing') return reply.fail(new ImzError(Codes.NOT_FOUND, 'cannot stat missing: no such path'));
    if (path === 'throws') throw new ImzError(Codes.STALE, 'cannot read throws: the file changed');
    if (path === 'plain') throw new Error('boom');
    if (path === 'silent') return; // ends without a final frame
    return basicHandler(req, reply);
  });
  const client = await connect(srv.port);
  const e1 = await rejectsCode(client.request(Op.STAT, { stat: { path: 'missing' } }), Codes.NOT_FOUND, 'fail()');
  assert.is(e1.message, 'cannot stat missing: no such path');
  await rejectsCode(client.request(Op.STAT, { stat: { path: 'throws' } }), Codes.STALE, 'handler throws an ImzError');
  const e3 = await rejectsCode(client.request(Op.STAT, { stat: { path: 'plain' } }), Codes.INTERNAL, 'handler throws a plain Error');
  assert.match(e3.message, /boom/);
  await rejectsCode(client.request(Op.STAT, { stat: { path: 'silent' } }), Codes.INTERNAL, 'handler sends no final frame');
  // Errors end one request, not the session.
  const ok = await within(client.request(Op.STAT, { stat: { path: 'fine' } }), 2000, 'request after errors');
  assert.is(ok.statReply!.path, 'fine');
});

test('an error in the middle of a stream is thrown after the frames before it', async () => {
  const srv = await startServer(async (_req, reply) => {
    for (let i = 0; i < 3; i++) await reply.send({ readReply: { data: new Uint8Array([i]), offset: i } });
    await reply.fail(new ImzError(Codes.HASH_MISMATCH, 'cannot read a: the content changed under the read'));
  });
  const client = await connect(srv.port);
  const offs: number[] = [];
  const err = await rejectsCode((async () => {
    for await (const env of client.stream(Op.READ, { read: { path: 'a', hash: new Uint8Array(0), offset: 0, length: 0 } })) offs.push(env.readReply!.offset);
  })(), Codes.HASH_MISMATCH, 'stream error');
  assert.equal(offs, [0, 1, 2]);
  assert.match(err.message, /content changed/);
});

test('a handler whose final frame cannot be sent (over maxFrame) still ends the request with an error', async () => {
  // E.g. a READ of exactly maxFrame bytes: the envelope around it is larger than a frame.
  const srv = await startServer(async (_req, reply) => {
    await reply.send({ readReply: { data: new Uint8Array(4096), offset: 0 } }, true);
  }, { maxFrame: 4096 });
  const client = await connect(srv.port);
  await rejectsCode(client.request(Op.READ, { read: { path: 'a', hash: new Uint8Array(0), offset: 0, length: 4096 } }), Codes.FRAME_TOO_LARGE, 'oversize final reply');
});

test('a request whose body is over maxFrame rejects with IMZ_FRAME_TOO_LARGE and the session stays usable', async () => {
  const srv = await startServer(basicHandler);
  const client = await connect(srv.port, { maxFrame: 1024 });
  await rejectsCode(client.request(Op.STAT, { stat: { path: 'x'.repeat(2000) } }), Codes.FRAME_TOO_LARGE, 'oversize request');
  await rejectsCode((async () => { for await (const _ of client.stream(Op.SNAPSHOT, { snapshot: { paths: ['y'.repeat(2000)] } })) { /* nothing */ } })(), Codes.FRAME_TOO_LARGE, 'oversize stream request');
  const ok = await within(client.request(Op.STAT, { stat: { path: 'small' } }), 2000, 'request after an oversize one');
  assert.is(ok.statReply!.path, 'small');
  assert.is(internals(client)._pending.size, 0, 'the failed requests are forgotten');
});

// ---------- server push ----------

test('a server-initiated notify (xid 0) arrives as a message event, also between replies', async () => {
  let serverSession: Session | undefined;
  const srv = await startServer(async (req, reply) => {
    // Push a record before answering: the reply must still match its request.
    await serverSession!.notify(Op.JOURNAL, { journalReply: { records: [{ seq: 2 ** 40, change: Change.CREATE, entry: { path: 'pushed', type: EntryType.FILE, size: 3, mode: 0o644, mtimeMs: 1, hash: new Uint8Array([1, 2, 3]), target: '', version: 2 ** 40 }, origin: '', originSeq: 0, timeMs: 5 }], last: 2 ** 40, more: false } });
    await basicHandler(req, reply);
  });
  const client = await connect(srv.port);
  const messages: Envelope[] = [];
  client.on('message', (env: Envelope) => messages.push(env));
  serverSession = await srv.session(0);
  await serverSession.notify(Op.PING);
  await serverSession.notify(Op.LIST, { entries: { entries: [], cursor: 7, skipped: [] } });
  const r = await within(client.request(Op.STAT, { stat: { path: 'q' } }), 2000, 'request with a push before its reply');
  assert.is(r.statReply!.path, 'q');
  await until(() => messages.length === 3, 2000, 'three pushed messages arrive');
  assert.equal(messages.map((m) => [m.xid, m.op, Boolean(m.reply)]), [[0, Op.PING, false], [0, Op.LIST, false], [0, Op.JOURNAL, false]]);
  assert.is(messages[1]!.entries!.cursor, 7);
  const rec = messages[2]!.journalReply!.records[0]!;
  assert.is(rec.seq, 2 ** 40);
  assert.is(rec.entry.path, 'pushed');
  assert.equal(Array.from(rec.entry.hash), [1, 2, 3]);
  assert.not.ok(client.closed, 'a push does not disturb the session');
});

// ---------- backpressure ----------

test('backpressure: a slowly read 64 MiB stream is not buffered beyond the high-water mark', async () => {
  const FRAME = 256 * 1024;
  const TOTAL = 64 * 1024 * 1024;
  const FRAMES = TOTAL / FRAME;
  const HWM = 1024 * 1024;
  const data = new Uint8Array(FRAME);
  const srv = await startServer(async (_req, reply) => {
    for (let i = 0; i < FRAMES; i++) {
      data[0] = i & 0xff; // encode copies, so one buffer serves every frame
      await reply.send({ readReply: { data, offset: i * FRAME } }, i === FRAMES - 1);
    }
  });
  const client = await connect(srv.port, { highWaterMark: HWM });
  const inner = internals(client);
  let maxUser = 0; // bytes held in user space on the client: queued frames, partial frame, socket buffer
  let sawPause = false;
  const sample = (): void => {
    const held = inner._streamBytes + inner._decoder.buffered + client.socket.readableLength;
    if (held > maxUser) maxUser = held;
    if (inner._paused) sawPause = true;
  };
  client.socket.on('data', sample); // runs after the session's own data listener
  let received = 0;
  let frames = 0;
  await within((async () => {
    for await (const env of client.stream(Op.READ, { read: { path: 'big', hash: new Uint8Array(0), offset: 0, length: 0 } })) {
      sample();
      const d = env.readReply!.data;
      assert.is(env.readReply!.offset, frames * FRAME, 'in order');
      assert.is(d[0], frames & 0xff);
      received += d.length;
      frames++;
      // The reader first stops until the session must pause (a sender that
      // outruns it is then certain, on any machine), then reads slowly.
      if (frames === 1) await until(() => inner._paused, 3000, 'the session pauses the socket while its reader waits');
      if (frames % 2 === 0) await sleep(1); // a slow consumer: ~128 MB/s at most
    }
  })(), 9000, '64 MiB stream');
  assert.is(received, TOTAL);
  assert.is(frames, FRAMES);
  assert.ok(sawPause, 'the session paused the socket at some point');
  // Bound: the high-water mark, plus the frame that crossed it, plus one
  // partial frame and Node's socket buffer. Without backpressure the
  // fast sender fills tens of MiB.
  const bound = HWM + 2 * FRAME + 1024 * 1024;
  assert.ok(maxUser <= bound, `client held at most ${maxUser} bytes in user space (bound ${bound})`);
  assert.is(inner._streamBytes, 0);
  assert.not.ok(inner._paused, 'resumed after the stream');
});

test('backpressure: the sender awaits drain while the reader is paused', async () => {
  const FRAME = 1024 * 1024;
  const FRAMES = 64;
  const data = new Uint8Array(FRAME);
  let sent = 0;
  let sendStarted = 0; // when the send in progress started (0: none in progress)
  let longestSend = 0;
  let handlerDone = false;
  const srv = await startServer(async (_req, reply) => {
    for (let i = 0; i < FRAMES; i++) {
      sendStarted = Date.now();
      await reply.send({ readReply: { data, offset: i * FRAME } }, i === FRAMES - 1);
      longestSend = Math.max(longestSend, Date.now() - sendStarted);
      sendStarted = 0;
      sent++;
    }
    handlerDone = true;
  });
  const client = await connect(srv.port, { highWaterMark: FRAME });
  const it = client.stream(Op.READ, { read: { path: 'big', hash: new Uint8Array(0), offset: 0, length: 0 } })[Symbol.asyncIterator]();
  const first = await within(it.next(), 5000, 'first frame');
  assert.is(first.value!.readReply!.offset, 0);
  // Stop reading. The sender must block in send(), not buffer 64 MiB: waited for, not slept on, as a loaded
  // machine may take long to fill the buffers (without backpressure the handler ends, and this times out).
  await until(() => internals(client)._paused && sendStarted > 0 && Date.now() - sendStarted >= 150, 5000, 'a send() pending for 150 ms, the reader paused');
  const sentAtPause = sent;
  assert.not.ok(handlerDone, 'the handler is still sending');
  assert.ok(sent < FRAMES, `only ${sent} of ${FRAMES} frames handed to the socket`);
  await sleep(200);
  assert.is(sent, sentAtPause, 'no progress while the reader is paused');
  // Read the rest: everything arrives and the handler finishes.
  let n = 1;
  await within((async () => {
    for (let r = await it.next(); !r.done; r = await it.next()) {
      assert.is(r.value.readReply!.offset, n * FRAME);
      n++;
    }
  })(), 15000, 'rest of the stream');
  assert.is(n, FRAMES);
  await until(() => handlerDone, 5000, 'the handler finishes');
  assert.ok(longestSend >= 300, `a send() waited ${longestSend} ms for the reader`);
});

// ---------- hostile peers ----------

test('an oversize length prefix gets an IMZ_FRAME_TOO_LARGE error frame and is disconnected; others keep working', async () => {
  const srv = await startServer(basicHandler);
  const good = await connect(srv.port); // connected before the attack
  await within(good.request(Op.PING), 2000, 'ping before');
  const bad = await rawConnect(srv.port);
  const badSession = await srv.session(1);
  const closeErr = new Promise<ImzError | undefined>((resolve) => badSession.once('close', resolve));
  bad.sock.write(header(0x7fffffff)); // 2 GiB announced, no body
  await within(bad.ended, 2000, 'the server ends the hostile connection');
  const frames = decodeAll(bad.received());
  assert.is(frames.length, 1, 'exactly one frame: the error');
  assert.is(frames[0]!.op, Op.ERROR);
  assert.is(frames[0]!.xid, 0);
  assert.is(frames[0]!.error!.code, Codes.FRAME_TOO_LARGE);
  assert.is((await within(closeErr, 1000, 'server session close event'))?.code, Codes.FRAME_TOO_LARGE);
  // The peer keeps its half open: the server must still tear the socket down.
  await until(() => badSession.socket.destroyed, 1000, 'the server destroys the hostile socket');
  // The connection made before still works, and so does a new one.
  const r1 = await within(good.request(Op.STAT, { stat: { path: 'still' } }), 2000, 'old connection after the attack');
  assert.is(r1.statReply!.path, 'still');
  const again = await connect(srv.port);
  const r2 = await within(again.request(Op.STAT, { stat: { path: 'new' } }), 2000, 'new connection after the attack');
  assert.is(r2.statReply!.path, 'new');
  let conns = -1;
  for (let t = 0; t < 100 && conns !== 2; t++) {
    conns = await srv.connections();
    if (conns !== 2) await sleep(10);
  }
  assert.is(conns, 2, 'only the two good connections remain on the server');
});

test('garbage frame bodies get an IMZ_PROTOCOL error frame and are disconnected', async () => {
  const srv = await startServer(basicHandler);
  const good = await connect(srv.port);
  await within(good.request(Op.PING), 2000, 'ping before'); // accepted first: server session 0
  const bad = await rawConnect(srv.port);
  const badSession = await srv.session(1);
  bad.sock.write(encodeFrame(new Uint8Array([0xff, 0xff, 0xff, 0xff]))); // a body protobuf cannot decode
  await within(bad.ended, 2000, 'the server ends the connection');
  const frames = decodeAll(bad.received());
  assert.is(frames.length, 1);
  assert.is(frames[0]!.op, Op.ERROR);
  assert.is(frames[0]!.error!.code, Codes.PROTOCOL);
  assert.match(frames[0]!.error!.message, /^cannot /);
  await until(() => badSession.socket.destroyed, 1000, 'the server destroys the socket');
  const r = await within(good.request(Op.STAT, { stat: { path: 'ok' } }), 2000, 'good connection after garbage');
  assert.is(r.statReply!.path, 'ok');
});

test('a handler blocked in send() is released when a hostile peer gets the connection aborted', async () => {
  const FRAME = 1024 * 1024;
  let sendError: unknown;
  let handlerDone = false;
  const srv = await startServer(async (_req, reply) => {
    try {
      for (let i = 0; i < 256; i++) await reply.send({ readReply: { data: new Uint8Array(FRAME), offset: i * FRAME } });
      await reply.send({}, true);
    } catch (err) {
      sendError = err;
    } finally {
      handlerDone = true;
    }
  });
  const bad = await rawConnect(srv.port);
  bad.sock.pause(); // never read: the server's sends back up
  bad.sock.write(encodeFrame(encodeEnvelope({ xid: 1, op: Op.READ, read: { path: 'big', hash: new Uint8Array(0), offset: 0, length: 0 } })));
  await sleep(200);
  assert.not.ok(handlerDone, 'the handler is blocked waiting for drain');
  bad.sock.write(encodeFrame(new Uint8Array([0xff]))); // now misbehave
  await until(() => handlerDone, 2000, 'the blocked handler is released');
  assert.instance(sendError, ImzError);
  assert.is((sendError as ImzError).code, Codes.PROTOCOL, 'send() rejects with the reason the session ended');
  const s = await srv.session(0);
  await until(() => s.socket.destroyed, 1000, 'the socket is destroyed');
});

test('an HTTP request instead of frames is refused with an error frame', async () => {
  const srv = await startServer(basicHandler);
  const bad = await rawConnect(srv.port);
  bad.sock.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
  await within(bad.ended, 2000, 'the server ends the connection');
  const frames = decodeAll(bad.received());
  assert.is(frames.length, 1);
  assert.is(frames[0]!.op, Op.ERROR);
  assert.is(frames[0]!.error!.code, Codes.FRAME_TOO_LARGE, '"GET " read as a length is over 1 GiB');
});

test('a client Session whose request is too big for the server fails with the server error code', async () => {
  const srv = await startServer(basicHandler, { maxFrame: 1024 });
  const client = await connect(srv.port);
  const closed = new Promise<ImzError | undefined>((resolve) => client.once('close', resolve));
  await rejectsCode(client.request(Op.STAT, { stat: { path: 'z'.repeat(4000) } }), Codes.FRAME_TOO_LARGE, 'request over the server maximum');
  assert.is((await within(closed, 1000, 'client close event'))?.code, Codes.FRAME_TOO_LARGE);
  await rejectsCode(client.request(Op.PING), Codes.FRAME_TOO_LARGE, 'later requests fail with the same cause');
});

test('more requests in flight than maxInFlight is a protocol error', async () => {
  const srv = await startServer(() => new Promise<void>(() => { /* never answers */ }), { maxInFlight: 2 });
  const client = await connect(srv.port);
  const ps = [0, 1, 2].map(() => rejectsCode(client.request(Op.PING), Codes.PROTOCOL, 'over maxInFlight'));
  await Promise.all(ps);
});

// ---------- closing ----------

test('the peer closing the socket rejects pending requests and streams with IMZ_CLOSED', async () => {
  const srv = await startServer(async (req, reply) => {
    if (req.op === Op.READ) {
      await reply.send({ readReply: { data: new Uint8Array([1]), offset: 0 } });
    }
    await new Promise<void>(() => { /* never finishes */ });
  });
  const client = await connect(srv.port);
  const closeEvent = new Promise<ImzError | undefined>((resolve) => client.once('close', resolve));
  const pending = [client.request(Op.STAT, { stat: { path: 'a' } }), client.request(Op.PING)];
  const got: Envelope[] = [];
  const streaming = (async () => { for await (const env of client.stream(Op.READ, { read: { path: 'a', hash: new Uint8Array(0), offset: 0, length: 0 } })) got.push(env); })();
  const server = await srv.session(0);
  await until(() => got.length === 1, 2000, 'the first stream frame arrives');
  server.socket.destroy();
  for (const p of pending) await rejectsCode(p, Codes.CLOSED, 'pending request');
  await rejectsCode(streaming, Codes.CLOSED, 'pending stream');
  await within(closeEvent, 1000, 'close event');
  assert.ok(client.closed);
  assert.is(internals(client)._pending.size, 0);
  await rejectsCode(client.request(Op.PING), Codes.CLOSED, 'request after close');
});

test('closing the session locally rejects pending requests with IMZ_CLOSED and later calls fail fast', async () => {
  const srv = await startServer(() => new Promise<void>(() => { /* never answers */ }));
  const client = await connect(srv.port);
  const p1 = client.request(Op.PING);
  const p2 = client.request(Op.STAT, { stat: { path: 'a' } });
  const st = (async () => { for await (const _ of client.stream(Op.LIST, { list: { prefix: '' } })) { /* nothing */ } })();
  await until(() => srv.sessions.length === 1, 1000, 'server accepted');
  client.close();
  await rejectsCode(p1, Codes.CLOSED, 'pending ping');
  await rejectsCode(p2, Codes.CLOSED, 'pending stat');
  await rejectsCode(st, Codes.CLOSED, 'pending stream');
  await rejectsCode(client.request(Op.PING), Codes.CLOSED, 'request after close');
  await rejectsCode((async () => { for await (const _ of client.stream(Op.LIST, { list: { prefix: '' } })) { /* nothing */ } })(), Codes.CLOSED, 'stream after close');
  await rejectsCode(client.notify(Op.PING), Codes.CLOSED, 'notify after close');
  // The server notices too.
  await until(() => srv.sessions[0]!.closed, 1000, 'the server session closes');
});

test.run();
