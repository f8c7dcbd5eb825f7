// Hostile clients against a real server (Invariant 3, Confinement: a hostile
// client cannot read or write outside the served tree, nor touch the server's
// state; and the wire-protocol rule that a bad frame costs only its own
// connection). A real ImzServer serves a temp tree on loopback; raw node:net
// sockets send what no imz client would: garbage and truncated frames,
// oversized length prefixes, requests before HELLO, unknown ops, replies and
// xid-0 requests aimed at the server, floods of pipelined requests,
// traversal and reserved paths in every path-bearing request, forged
// versions and hashes, odd READ offsets, lying uploads, and symlinks inside
// the tree that point out of it. After each attack a fresh, well-behaved
// client must still be served, and nothing beside the tree or inside
// .imz-server may have changed unless the test says what may.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { chmod, lstat, mkdir, readFile, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { extract } from 'tar-stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_MAX_FRAME, FrameDecoder, encodeFrame } from '../../protocol/frame_codec.ts';
import { type Entry, EntryType, type Envelope, Op, OpKind, type Operation, OpStatus, decodeEnvelope, encodeEnvelope } from '../../protocol/messages.ts';
import { Remote } from '../../core/remote.ts';
import { ImzServer } from '../../core/server.ts';
import { type SnapEntry, cleanupAll, makeTmp, snapshotTree } from '../helpers.ts';

const SECRET = 'TOP SECRET: this file is outside the served tree';
const BIG = new Uint8Array(300 * 1024).map((_, i) => (i * 13 + 7) & 0xff);
const STABLE_CODE = /^IMZ_[A-Z_]+$/;

let base = '';
let root = '';
let outside = '';
let stateDir = '';
let server: ImzServer;
let port = 0;
let addr = '';
const peers = new Set<RawPeer>();

test.before(async () => {
  base = await makeTmp('imz-hostile-client-');
  root = join(base, 'srv');
  outside = join(base, 'outside');
  stateDir = join(root, '.imz-server');
  await mkdir(join(root, 'dir', 'sub'), { recursive: true });
  await writeFile(join(root, 'dir', 'a.txt'), 'alpha');
  await writeFile(join(root, 'big.bin'), BIG);
  await mkdir(outside);
  await writeFile(join(outside, 'secret.txt'), SECRET);
  await writeFile(join(outside, 'victim.txt'), 'a file the server must never move');
  await writeFile(join(outside, 'mode.txt'), 'its mode must stay 0644');
  await chmod(join(outside, 'mode.txt'), 0o644);
  // Symlinks inside the tree that lead out of it: absolute, relative, to a file, to a dir.
  await symlink(outside, join(root, 'link-abs'));
  await symlink('../outside', join(root, 'link-rel'));
  await symlink(join(outside, 'secret.txt'), join(root, 'link-file'));
  await symlink('../outside/mode.txt', join(root, 'link-mode'));
  server = new ImzServer({ dir: root, rescanMs: 0 });
  port = (await server.start()).port;
  addr = `127.0.0.1:${port}`;
});

test.after(async () => {
  for (const p of peers) p.destroy();
  await server?.close();
  await cleanupAll();
});

// ---------- a raw peer: frames in, frames out, nothing checked ----------

class RawPeer {
  readonly sock: Socket;
  readonly frames: Envelope[] = [];
  closed = false;
  private _dec = new FrameDecoder(64 * 1024 * 1024);
  private _waiters: (() => void)[] = [];
  private _xid = 100;

  private constructor(sock: Socket) {
    this.sock = sock;
    sock.on('data', (b: Uint8Array) => {
      for (const f of this._dec.push(b)) this.frames.push(decodeEnvelope(f));
      this._notify();
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closed = true;
      this._notify();
    });
  }

  static open(): Promise<RawPeer> {
    return new Promise((res, rej) => {
      const sock = connect({ host: '127.0.0.1', port });
      sock.once('error', rej);
      sock.once('connect', () => {
        const p = new RawPeer(sock);
        peers.add(p);
        res(p);
      });
    });
  }

  /** An open peer that has said HELLO (maxFrame as asked). */
  static async greeted(maxFrame = DEFAULT_MAX_FRAME): Promise<RawPeer> {
    const p = await RawPeer.open();
    const r = await p.call(Op.HELLO, { hello: { version: 1, maxFrame, client: 'hostile/1', replicaId: '', nonce: randomBytes(32) } });
    assert.ok(r.frames[0]?.helloReply?.serverId, `HELLO answered: ${JSON.stringify(r.error)}`);
    return p;
  }

  xid(): number {
    return this._xid++;
  }

  write(bytes: Uint8Array): void {
    if (!this.sock.destroyed) this.sock.write(bytes);
  }

  send(env: Partial<Envelope>): void {
    this.write(frame(env));
  }

  private _notify(): void {
    const w = this._waiters;
    this._waiters = [];
    for (const f of w) f();
  }

  /** Waits until check() returns something (returned), the socket closes, or ms pass (then check() once more). */
  async until<T>(check: () => T | undefined, ms = 3000): Promise<T | undefined> {
    const end = Date.now() + ms;
    for (;;) {
      const v = check();
      if (v !== undefined || this.closed || Date.now() >= end) return v;
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, end - Date.now()));
        this._waiters.push(() => { clearTimeout(t); r(); });
      });
    }
  }

  /** The reply frames of xid once the last one (or an error) came; done false when it never finished. */
  async reply(xid: number, ms = 3000): Promise<{ frames: Envelope[]; error: { code: string; message: string } | undefined; done: boolean }> {
    const mine = () => this.frames.filter((f) => f.reply && f.xid === xid);
    const done = await this.until(() => (mine().some((f) => f.last || f.error?.code) ? true : undefined), ms);
    const frames = mine();
    const err = frames.find((f) => f.error?.code)?.error ?? undefined;
    return { frames, error: err ? { code: err.code, message: err.message } : undefined, done: done === true };
  }

  /** Sends one request and waits for its whole reply. */
  async call(op: number, body: Partial<Envelope> = {}, ms = 3000): ReturnType<RawPeer['reply']> {
    const xid = this.xid();
    this.send({ xid, op, ...body });
    return this.reply(xid, ms);
  }

  /** The connection-level error frame (xid 0, op ERROR), if one came. */
  errorFrame(): Envelope | undefined {
    return this.frames.find((f) => f.xid === 0 && f.op === Op.ERROR);
  }

  async waitClosed(ms = 3000): Promise<boolean> {
    await this.until(() => (this.closed ? true : undefined), ms);
    return this.closed;
  }

  destroy(): void {
    this.sock.destroy();
    peers.delete(this);
  }
}

function frame(env: Partial<Envelope>): Uint8Array {
  return encodeFrame(encodeEnvelope(env));
}

function lengthPrefix(n: number): Uint8Array {
  const h = new Uint8Array(4);
  new DataView(h.buffer).setUint32(0, n, false);
  return h;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))));
}

const sha = (b: Uint8Array | string) => new Uint8Array(createHash('sha256').update(b).digest());

/** Asserts the server told the peer why (ERROR frame with one of codes) and closed the connection. */
async function assertAborted(p: RawPeer, codes: string[], what: string): Promise<void> {
  assert.ok(await p.waitClosed(3000), `${what}: the connection was not closed`);
  const e = p.errorFrame();
  assert.ok(e, `${what}: no ERROR frame before the close`);
  assert.ok(codes.includes(e!.error!.code), `${what}: ERROR code ${e!.error!.code}, expected one of ${codes.join(', ')}`);
  assert.match(e!.error!.message, /^cannot /, `${what}: the message says what could not be done`);
  p.destroy();
}

/** Asserts a reply failed with one of codes. */
function assertReplyError(r: { error?: { code: string; message: string }; done: boolean }, codes: string[], what: string): void {
  assert.ok(r.done, `${what}: no reply`);
  assert.ok(r.error, `${what}: succeeded`);
  assert.ok(codes.includes(r.error!.code), `${what}: code ${r.error!.code} (${r.error!.message}), expected one of ${codes.join(', ')}`);
}

/** A well-behaved client is still served. */
async function assertServing(): Promise<void> {
  const r = await Remote.connect(addr, { timeoutMs: 3000 });
  try {
    assert.is((await r.stat('dir/a.txt')).size, 5, 'a fresh client is still served');
  } finally {
    r.close();
  }
}

/** What must not change: the directory beside the tree (and what lies next to it), and the server's state. */
async function world(): Promise<{ outside: Record<string, SnapEntry>; base: string[]; state: Record<string, SnapEntry>; identity: string; journalLast: number }> {
  return {
    outside: await snapshotTree(outside),
    base: (await readdir(base)).sort(),
    state: await snapshotTree(stateDir),
    identity: await readFile(join(stateDir, 'identity'), 'utf8'),
    journalLast: server.state.journal.last,
  };
}

/**
 * Runs an attack, then checks a fresh client is served and nothing outside
 * the tree changed. With state 'same', .imz-server must be byte-identical
 * and the journal must not have moved; with 'may-change', only the identity
 * and the absence of any unsafe path in the table are checked.
 */
async function attack(fn: () => Promise<void>, state: 'same' | 'may-change' = 'same'): Promise<void> {
  if (state === 'same' && changedTree) await quiet();
  changedTree ||= state === 'may-change';
  const before = await world();
  await fn();
  await assertServing();
  const after = await world();
  assert.equal(after.outside, before.outside, 'the directory outside the tree is untouched');
  assert.equal(after.base, before.base, 'nothing appeared beside the served tree');
  assert.is(after.identity, before.identity, 'the server identity is untouched');
  if (state === 'same') {
    assert.equal(after.state, before.state, '.imz-server is untouched');
    assert.is(after.journalLast, before.journalLast, 'nothing was journalled');
  }
  for (const p of server.state.table.keys()) assert.not.ok(p.startsWith('/') || p.split('/').some((s) => s === '..' || s === '.imz-server'), `unsafe path in the table: ${p}`);
}

let changedTree = false;

/** Waits until the server's journal has stopped moving (the watcher has seen the last test's writes). */
async function quiet(): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const last = server.state.journal.last;
    await new Promise((r) => setTimeout(r, 250));
    if (server.state.journal.last === last) break;
  }
  changedTree = false;
}

/** An operation with a complete state (what an imz client sends). */
function op(seq: number, kind: number, path: string, extra: Partial<Operation> = {}, state: Partial<Entry> = {}): Operation {
  const type = kind === OpKind.MAKEDIR ? EntryType.DIR : kind === OpKind.LINK ? EntryType.SYMLINK : kind === OpKind.UNLINK || kind === OpKind.REMOVEDIR ? EntryType.NONE : EntryType.FILE;
  return {
    seq, kind: kind as Operation['kind'], path, fromPath: '', base: 0, fromBase: 0,
    state: { path, type, size: 0, mode: 0o644, mtimeMs: Date.now(), hash: new Uint8Array(0), target: '', version: 0, ...state },
    ...extra,
  };
}

const versionOf = (p: string) => server.state.table.get(p)?.version ?? 0;

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(() => true, () => false);
}

async function tarEntries(tar: Uint8Array): Promise<{ name: string; data: Buffer }[]> {
  const ex = extract();
  const out: { name: string; data: Buffer }[] = [];
  ex.on('entry', (h, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: unknown) => chunks.push(c as Buffer));
    stream.on('end', () => {
      out.push({ name: h.name, data: Buffer.concat(chunks) });
      next();
    });
  });
  await new Promise<void>((res, rej) => {
    ex.on('finish', () => res());
    ex.on('error', rej);
    ex.end(Buffer.from(tar));
  });
  return out;
}

/** Asserts no content with these hashes is staged, whole or in part. */
async function assertNotStaged(hashes: Uint8Array[], what: string): Promise<void> {
  const names = await readdir(join(stateDir, 'staging')).catch(() => [] as string[]);
  for (const h of hashes) {
    const hex = Buffer.from(h).toString('hex');
    assert.not.ok(names.some((n) => n.startsWith(hex)), `${what}: ${hex.slice(0, 12)}... is staged`);
  }
}

// Paths no request may reach: traversal, absolute, reserved, control
// characters, non-normalised, too long.
const BAD_PATHS = ['../x', '/etc/passwd', 'a/../../b', '..', '.', './dir/a.txt', 'dir/../dir/a.txt', 'dir//a.txt', 'dir/a.txt/', '.imz-server/identity', '.imz-server',
  'dir/.imz-server/x', '.imz/HEAD', '.imz-tmp-x', 'dir/.imz-tmp-123-a.txt', 'x\u0000y', 'dir/a.txt\u0000', 'dir\n/a.txt', 'x\u007f', 'n'.repeat(256), `${'a/'.repeat(2100)}b`,
  '../outside/secret.txt', '../../../../../../etc/shadow'];

// ---------- attacks that must change nothing at all (state dir included) ----------

test('garbage frame bodies (bad varints, invalid wire types, truncated protobuf, overrunning lengths) get IMZ_PROTOCOL and a close, before and after HELLO', async () => {
  const stat = encodeEnvelope({ xid: 7, op: Op.STAT, stat: { path: 'dir/a.txt' } });
  const garbage: [string, Uint8Array][] = [
    ['ten 0xff bytes (a varint that never ends)', new Uint8Array(10).fill(0xff)],
    ['wire type 7 on a known field', Uint8Array.of(0x0f)],
    ['wire type 7 on an unknown field', Uint8Array.of(0x37)],
    ['wire type 6 on an unknown field', Uint8Array.of(0x36, 0x00)],
    ['a length-delimited field overrunning the body', Uint8Array.of(0x62, 0x7f, 0x0a, 0x01, 0x61)],
    ['a STAT request cut inside its path', stat.subarray(0, stat.length - 3)],
    ['a group start never closed', Uint8Array.of(0x33)],
    ['field number 0', Uint8Array.of(0x00, 0x01)],
    ['random bytes', Uint8Array.from([0x9a, 0xfe, 0x11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])],
  ];
  await attack(async () => {
    for (const [what, body] of garbage) {
      assert.throws(() => decodeEnvelope(body), undefined, `${what} is really undecodable`);
      for (const greet of [false, true]) {
        const p = greet ? await RawPeer.greeted() : await RawPeer.open();
        p.write(encodeFrame(body));
        await assertAborted(p, ['IMZ_PROTOCOL'], `${what}${greet ? ' after HELLO' : ''}`);
      }
    }
  });
});

test('valid requests with a field re-tagged to another wire type are refused or answered with a stable code; the server keeps serving', async () => {
  await attack(async () => {
    const env = encodeEnvelope({ xid: 9, op: Op.STAT, stat: { path: 'dir/a.txt' } });
    for (let at = 0; at < env.length; at++) {
      if (env[at]! < 8 || env[at]! & 0x80) continue; // one-byte keys only
      for (let wt = 0; wt < 8; wt++) {
        const b = Uint8Array.from(env);
        b[at] = (b[at]! & ~7) | wt;
        const p = await RawPeer.greeted();
        const seen = p.frames.length;
        // A PING right behind it: its answer (or the close) says the server is done with the re-tagged frame.
        p.write(concat([encodeFrame(b), frame({ xid: 77, op: Op.PING })]));
        // Either the frame is refused (ERROR and close), or whatever request it decoded to gets a stable answer, or none (xid 0).
        await p.until(() => (p.frames.some((f) => f.xid === 77) ? true : undefined), 3000);
        assert.ok(p.closed || p.frames.some((f) => f.xid === 77), `re-tagged byte ${at} to wire type ${wt}: neither answered nor closed`);
        await new Promise((r) => setTimeout(r, 10));
        for (const f of p.frames.slice(seen).filter((x) => x.xid !== 77)) {
          if (f.error?.code) assert.match(f.error.code, STABLE_CODE);
          else assert.ok(f.statReply && f.statReply.path === 'dir/a.txt', `re-tagged byte ${at} to wire type ${wt}: unexpected answer ${JSON.stringify(f).slice(0, 200)}`);
        }
        p.destroy();
      }
    }
  });
});

test('oversized length prefixes get IMZ_FRAME_TOO_LARGE as soon as the header arrives, before and after HELLO', async () => {
  await attack(async () => {
    // Before HELLO the limit is 64 KiB; after, what HELLO negotiated.
    for (const [greetMax, len] of [[0, 64 * 1024 + 1], [0, 0xffffffff], [DEFAULT_MAX_FRAME, DEFAULT_MAX_FRAME + 1], [DEFAULT_MAX_FRAME, 0xffffffff], [64 * 1024, 64 * 1024 + 1], [1, 64 * 1024 + 1]] as const) {
      const p = greetMax ? await RawPeer.greeted(greetMax) : await RawPeer.open();
      // Only the header and a few bytes: the server must not wait for (or buffer) the declared body.
      p.write(concat([lengthPrefix(len), new Uint8Array(16)]));
      await assertAborted(p, ['IMZ_FRAME_TOO_LARGE'], `a ${len}-byte frame${greetMax ? ` after HELLO with maxFrame ${greetMax}` : ' before HELLO'}`);
    }
    // A body that really is over the negotiated size, sent whole.
    const p = await RawPeer.greeted(64 * 1024);
    p.send({ xid: 5, op: Op.STAT, stat: { path: 'x'.repeat(70 * 1024) } });
    await assertAborted(p, ['IMZ_FRAME_TOO_LARGE'], 'a 70 KiB frame after a 64 KiB HELLO');
  });
});

test('bytes that follow a refused frame are never served', async () => {
  await attack(async () => {
    const after = concat([
      frame({ xid: 11, op: Op.STAT, stat: { path: 'dir/a.txt' } }),
      frame({ xid: 12, op: Op.REINTEGRATE, reintegrate: { replicaId: randomUUID(), ops: [op(1, OpKind.MAKEDIR, 'after-error-dir')], policy: 'manual' } }),
    ]);
    for (const bad of [encodeFrame(new Uint8Array(10).fill(0xff)), lengthPrefix(0xfffffff0)]) {
      const p = await RawPeer.greeted();
      p.write(concat([bad, after]));
      await assertAborted(p, ['IMZ_PROTOCOL', 'IMZ_FRAME_TOO_LARGE'], 'a bad frame followed by requests');
      assert.not.ok(p.frames.some((f) => f.xid === 11 || f.xid === 12), 'a request after the bad frame was answered');
    }
    assert.not.ok(await exists(join(root, 'after-error-dir')), 'a request after the bad frame was applied');
  });
});

test('requests before HELLO are refused with IMZ_PROTOCOL and change nothing', async () => {
  const content = new TextEncoder().encode('uploaded before hello');
  await attack(async () => {
    const p = await RawPeer.open();
    const requests: [number, Partial<Envelope>][] = [
      [Op.STAT, { stat: { path: 'dir/a.txt' } }], [Op.READDIR, { readdir: { path: '' } }], [Op.LIST, { list: { prefix: '' } }],
      [Op.READ, { read: { path: 'dir/a.txt', hash: new Uint8Array(0), offset: 0, length: 5 } }], [Op.JOURNAL, { journal: { since: 0, limit: 0 } }],
      [Op.SUBSCRIBE, { journal: { since: 0, limit: 0 } }], [Op.SNAPSHOT, { snapshot: { paths: [] } }], [Op.PING, {}], [Op.AUTH, { auth: { proof: new Uint8Array(32) } }],
      [Op.PUT_BLOB, { putBlob: { hash: sha(content), size: content.length, offset: 0, data: content, last: true } }],
      [Op.PUT_BLOBS, { putBlobs: { blobs: [{ hash: sha(content), size: content.length, offset: 0, data: content, last: true }] } }],
      [Op.REINTEGRATE, { reintegrate: { replicaId: randomUUID(), ops: [op(1, OpKind.MAKEDIR, 'pre-hello-dir')], policy: 'client-wins' } }],
    ];
    for (const [o, body] of requests) {
      if (p.closed) break;
      const r = await p.call(o, body);
      if (r.done) assertReplyError(r, ['IMZ_PROTOCOL'], `op ${o} before HELLO`);
      assert.not.ok(r.frames.some((f) => f.statReply || f.entries || f.readReply || f.journalReply || f.snapshotReply || f.blobReply || f.blobsReply || f.reintegrateReply), `op ${o} before HELLO was served`);
    }
    p.destroy();
    assert.not.ok(await exists(join(root, 'pre-hello-dir')));
    await assertNotStaged([sha(content)], 'PUT_BLOB before HELLO');
  });
});

test('a second HELLO is refused; the connection keeps what the first negotiated', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted(64 * 1024);
    const again = await p.call(Op.HELLO, { hello: { version: 1, maxFrame: DEFAULT_MAX_FRAME, client: 'again', replicaId: '', nonce: randomBytes(32) } });
    assertReplyError(again, ['IMZ_PROTOCOL'], 'a second HELLO');
    const st = await p.call(Op.STAT, { stat: { path: 'dir/a.txt' } });
    assert.is(st.frames[0]?.statReply?.size, 5, 'still served');
    // The second HELLO did not raise the frame limit to 16 MiB.
    p.write(concat([lengthPrefix(1024 * 1024), new Uint8Array(8)]));
    await assertAborted(p, ['IMZ_FRAME_TOO_LARGE'], 'a 1 MiB frame after a 64 KiB HELLO and a refused second HELLO');
  });
});

test('unknown and misplaced op numbers get a reply error with a stable code; the connection keeps serving', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    for (const o of [0, 14, 99, 1000, 2 ** 31 - 1, -1, -(2 ** 31), Op.ERROR]) {
      const r = await p.call(o, { stat: { path: 'dir/a.txt' } });
      assertReplyError(r, ['IMZ_UNSUPPORTED', 'IMZ_PROTOCOL'], `op ${o}`);
    }
    // Bodies that do not match the op, or no body at all.
    for (const [o, body] of [[Op.STAT, {}], [Op.READ, {}], [Op.PUT_BLOB, {}], [Op.REINTEGRATE, {}], [Op.STAT, { list: { prefix: '' } }], [Op.READ, { stat: { path: 'dir/a.txt' } }]] as [number, Partial<Envelope>][]) {
      const r = await p.call(o, body);
      assertReplyError(r, ['IMZ_PROTOCOL', 'IMZ_BAD_PATH', 'IMZ_NOT_FOUND'], `op ${o} with body ${JSON.stringify(Object.keys(body))}`);
    }
    const ping = await p.call(Op.PING);
    assert.ok(ping.done && !ping.error, 'PING answered after the errors');
    p.destroy();
  });
});

test('frames with the reply flag set are never served nor applied', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    p.send({ xid: 5, op: Op.STAT, reply: true, last: true, stat: { path: 'dir/a.txt' } });
    p.send({ xid: 6, op: Op.REINTEGRATE, reply: true, last: false, reintegrate: { replicaId: randomUUID(), ops: [op(1, OpKind.MAKEDIR, 'reply-flag-dir')], policy: 'manual' } });
    p.send({ xid: 1, op: Op.HELLO, reply: true, last: true, error: { code: 'IMZ_FORGED', message: 'a reply to the HELLO xid' } });
    p.send({ xid: 0xffffffff, op: Op.READ, reply: true, read: { path: '../outside/secret.txt', hash: new Uint8Array(0), offset: 0, length: 100 } });
    const ping = await p.call(Op.PING);
    assert.ok(ping.done && !ping.error, 'PING answered after the reply frames');
    assert.not.ok(p.frames.some((f) => [5, 6, 0xffffffff].includes(f.xid)), 'a reply-flagged frame was answered');
    p.destroy();
    assert.not.ok(await exists(join(root, 'reply-flag-dir')));
  });
});

test('xid 0 requests are never served nor applied; an xid 0 ERROR from the client ends its connection', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    p.send({ xid: 0, op: Op.STAT, stat: { path: 'dir/a.txt' } });
    p.send({ xid: 0, op: Op.READ, read: { path: 'dir/a.txt', hash: new Uint8Array(0), offset: 0, length: 5 } });
    p.send({ xid: 0, op: Op.REINTEGRATE, reintegrate: { replicaId: randomUUID(), ops: [op(1, OpKind.MAKEDIR, 'xid0-dir')], policy: 'manual' } });
    p.send({ xid: 0, op: Op.PUT_BLOB, putBlob: { hash: sha('x'), size: 1, offset: 0, data: new TextEncoder().encode('x'), last: true } });
    const ping = await p.call(Op.PING);
    // (The server ignores them silently: the peer is not told. It must at least never act on them.)
    if (!p.closed) assert.ok(ping.done && !ping.error, 'PING answered after the xid-0 requests');
    assert.not.ok(p.frames.some((f) => f.statReply || f.readReply || f.reintegrateReply || f.blobReply), 'an xid-0 request was answered');
    p.send({ xid: 0, op: Op.ERROR, error: { code: 'IMZ_BYE', message: 'the client gives up' } });
    assert.ok(await p.waitClosed(3000), 'an xid-0 ERROR from the client closes its connection');
    p.destroy();
    assert.not.ok(await exists(join(root, 'xid0-dir')));
    await assertNotStaged([sha('x')], 'PUT_BLOB with xid 0');
  });
});

test('pipelining: 200 requests in one write are all answered; over 256 in flight gets IMZ_PROTOCOL and a close', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    const xids = Array.from({ length: 200 }, (_, i) => 1000 + i);
    p.write(concat(xids.map((xid) => frame({ xid, op: Op.STAT, stat: { path: 'dir/a.txt' } }))));
    await p.until(() => (xids.every((x) => p.frames.some((f) => f.xid === x)) ? true : undefined), 5000);
    for (const x of xids) assert.is(p.frames.find((f) => f.xid === x)?.statReply?.size, 5, `reply to xid ${x}`);
    p.destroy();

    const flood = await RawPeer.greeted();
    const many = Array.from({ length: 400 }, (_, i) => 5000 + i);
    flood.write(concat(many.map((xid) => frame({ xid, op: Op.READ, read: { path: 'big.bin', hash: new Uint8Array(0), offset: 0, length: 0 } }))));
    await assertAborted(flood, ['IMZ_PROTOCOL'], '400 pipelined READs');
    assert.ok(flood.frames.filter((f) => f.readReply).length < many.length, 'every request of the flood was served');
  });
});

test('traversal, absolute, reserved and malformed paths are refused in STAT, READDIR, LIST, READ and SNAPSHOT', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    for (const bad of BAD_PATHS) {
      const what = JSON.stringify(bad).slice(0, 40);
      assertReplyError(await p.call(Op.STAT, { stat: { path: bad } }), ['IMZ_BAD_PATH'], `STAT ${what}`);
      assertReplyError(await p.call(Op.READDIR, { readdir: { path: bad } }), ['IMZ_BAD_PATH'], `READDIR ${what}`);
      assertReplyError(await p.call(Op.LIST, { list: { prefix: bad } }), ['IMZ_BAD_PATH'], `LIST ${what}`);
      assertReplyError(await p.call(Op.READ, { read: { path: bad, hash: new Uint8Array(0), offset: 0, length: 100 } }), ['IMZ_BAD_PATH'], `READ ${what}`);
      const snap = await p.call(Op.SNAPSHOT, { snapshot: { paths: ['dir/a.txt', bad] } });
      assertReplyError(snap, ['IMZ_BAD_PATH'], `SNAPSHOT ${what}`);
      assert.not.ok(snap.frames.some((f) => (f.snapshotReply?.tar.length ?? 0) > 0), `SNAPSHOT ${what} sent tar bytes`);
    }
    assertReplyError(await p.call(Op.STAT, { stat: { path: '' } }), ['IMZ_BAD_PATH'], 'STAT of the empty path');
    p.destroy();
  });
});

test('READ with a forged hash is IMZ_STALE; READ never returns anything but bytes of the file asked for, whatever the offset and length', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    for (const hash of [randomBytes(32), randomBytes(5), sha('beta'), new Uint8Array(64)]) {
      assertReplyError(await p.call(Op.READ, { read: { path: 'dir/a.txt', hash, offset: 0, length: 5 } }), ['IMZ_STALE'], `READ with a forged ${hash.length}-byte hash`);
    }
    const files: [string, Uint8Array][] = [['dir/a.txt', new TextEncoder().encode('alpha')], ['big.bin', BIG]];
    const offsets = [0, 3, 5, 6, -1, -1e300, NaN, Infinity, -Infinity, 0.5, 3.7, 2 ** 32 + 1, 2 ** 53, 2 ** 53 + 2, 1e300, Number.MIN_VALUE, BIG.length - 1, BIG.length];
    for (const [path, content] of files) {
      for (const offset of offsets) {
        for (const length of [0, 1, 7, 2 ** 32 - 1]) {
          const r = await p.call(Op.READ, { read: { path, hash: sha(content), offset, length } });
          const what = `READ ${path} at ${offset} for ${length}`;
          assert.ok(r.done, `${what}: no reply`);
          if (r.error) {
            assert.match(r.error.code, STABLE_CODE, what);
            continue;
          }
          const data = Buffer.from(r.frames[0]!.readReply!.data);
          assert.ok(data.length <= content.length && data.length <= (length || 4 * 1024 * 1024), `${what}: ${data.length} bytes`);
          if (data.length === 0) continue;
          const at = r.frames[0]!.readReply!.offset;
          // Bytes of this very file: at the offset said when it is a whole number, somewhere in it otherwise.
          if (Number.isSafeInteger(at)) assert.ok(data.equals(Buffer.from(content.subarray(at, at + data.length))), `${what}: bytes not from offset ${at}`);
          else assert.ok(Buffer.from(content).includes(data), `${what}: bytes not from the file`);
        }
      }
    }
    p.destroy();
  });
});

test('SNAPSHOT of missing paths, directories and symlinks sends an empty tar, never what a link points at', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    const paths = ['nope', 'dir/nope', 'dir', 'dir/sub', 'link-abs', 'link-rel', 'link-file', 'link-mode', 'link-abs/secret.txt', 'link-rel/secret.txt', 'link-abs/victim.txt'];
    const r = await p.call(Op.SNAPSHOT, { snapshot: { paths } });
    assert.ok(r.done && !r.error, JSON.stringify(r.error));
    const tar = concat(r.frames.map((f) => f.snapshotReply?.tar ?? new Uint8Array(0)));
    assert.is(Buffer.from(tar).indexOf(SECRET), -1, 'the tar holds the secret');
    assert.equal(await tarEntries(tar), []);
    p.destroy();
  });
});

test('symlinks inside the tree that point outside: STAT, LIST, READDIR, READ and SNAPSHOT never return what they point at', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    const st = await p.call(Op.STAT, { stat: { path: 'link-file' } });
    assert.is(st.frames[0]?.statReply?.type, EntryType.SYMLINK, 'a link is described as a link');
    assert.is(st.frames[0]?.statReply?.size, 0);
    for (const path of ['link-file', 'link-mode', 'link-abs', 'link-abs/secret.txt', 'link-rel/secret.txt', 'link-abs/victim.txt']) {
      const r = await p.call(Op.READ, { read: { path, hash: new Uint8Array(0), offset: 0, length: 1000 } });
      assertReplyError(r, ['IMZ_NOT_FOUND', 'IMZ_STALE', 'IMZ_BAD_PATH'], `READ ${path}`);
      assertReplyError(await p.call(Op.READ, { read: { path, hash: sha(SECRET), offset: 0, length: 1000 } }), ['IMZ_NOT_FOUND', 'IMZ_STALE', 'IMZ_BAD_PATH'], `READ ${path} with the secret's hash`);
      assertReplyError(await p.call(Op.STAT, { stat: { path: `${path}/x` } }), ['IMZ_NOT_FOUND', 'IMZ_BAD_PATH'], `STAT under ${path}`);
    }
    for (const dir of ['link-abs', 'link-rel']) assertReplyError(await p.call(Op.READDIR, { readdir: { path: dir } }), ['IMZ_NOT_FOUND'], `READDIR ${dir}`);
    const list = await p.call(Op.LIST, { list: { prefix: '' } });
    const entries = list.frames.flatMap((f) => f.entries?.entries ?? []);
    assert.ok(entries.length > 0);
    for (const e of entries) {
      assert.not.ok(/^link-[a-z]+\//.test(e.path), `LIST shows ${e.path}, inside a link`);
      if (e.path.startsWith('link-')) assert.is(e.type, EntryType.SYMLINK, e.path);
    }
    const all = await p.call(Op.SNAPSHOT, { snapshot: { paths: [] } });
    const tar = concat(all.frames.map((f) => f.snapshotReply?.tar ?? new Uint8Array(0)));
    assert.is(Buffer.from(tar).indexOf(SECRET), -1, 'the whole-tree snapshot holds the secret');
    const names = (await tarEntries(tar)).map((e) => e.name);
    assert.ok(names.includes('dir/a.txt') && names.includes('big.bin'), names.join(','));
    assert.not.ok(names.some((n) => n.startsWith('link-')), names.join(','));
    p.destroy();
  });
});

// ---------- attacks that may stage uploads or journal legitimate changes ----------

test('traversal, absolute, reserved and malformed paths are rejected in every REINTEGRATE operation (path and fromPath)', async () => {
  const content = new TextEncoder().encode('would-be content');
  await attack(async () => {
    const p = await RawPeer.greeted();
    const up = await p.call(Op.PUT_BLOB, { putBlob: { hash: sha(content), size: content.length, offset: 0, data: content, last: true } });
    assert.ok(up.frames[0]?.blobReply?.present, 'the content is staged');
    let seq = 1;
    const ops: Operation[] = [];
    for (const bad of BAD_PATHS) {
      for (const kind of [OpKind.STORE, OpKind.MAKEDIR, OpKind.LINK, OpKind.UNLINK, OpKind.REMOVEDIR, OpKind.SETATTR, OpKind.MOVE]) {
        ops.push(op(seq++, kind, bad, kind === OpKind.MOVE ? { fromPath: 'dir/a.txt', fromBase: versionOf('dir/a.txt') } : {}, { hash: sha(content), size: content.length, target: '/etc/passwd' }));
      }
      ops.push(op(seq++, OpKind.MOVE, 'moved-here.txt', { fromPath: bad, fromBase: 0 }));
    }
    const r = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: randomUUID(), ops, policy: 'client-wins' } }, 10_000);
    assert.ok(r.done && !r.error, `REINTEGRATE answered: ${JSON.stringify(r.error)}`);
    const results = r.frames[0]!.reintegrateReply!.results;
    assert.is(results.length, ops.length);
    results.forEach((x, i) => {
      const o = ops[i]!;
      assert.is(x.status, OpStatus.REJECTED, `op ${o.kind} ${JSON.stringify(o.path).slice(0, 40)} from ${JSON.stringify(o.fromPath).slice(0, 40)}`);
      assert.is(x.error?.code, 'IMZ_BAD_PATH');
    });
    p.destroy();
    assert.ok(await exists(join(root, 'dir', 'a.txt')), 'the MOVE source is still there');
    assert.not.ok(await exists(join(root, 'moved-here.txt')));
  }, 'may-change'); // the upload is staged
});

test('REINTEGRATE with forged base versions, forged hashes, unknown kinds and odd policies never overwrites or removes', async () => {
  const content = new TextEncoder().encode('forged replacement');
  await attack(async () => {
    const p = await RawPeer.greeted();
    await p.call(Op.PUT_BLOB, { putBlob: { hash: sha(content), size: content.length, offset: 0, data: content, last: true } });
    const v = versionOf('dir/a.txt');
    assert.ok(v > 0);
    const rid = randomUUID();
    const ops = [
      op(1, OpKind.STORE, 'dir/a.txt', { base: v + 1000 }, { hash: sha(content), size: content.length }),
      op(2, OpKind.STORE, 'dir/a.txt', { base: v - 1 }, { hash: sha(content), size: content.length }),
      op(3, OpKind.UNLINK, 'dir/a.txt', { base: 123456 }),
      op(4, OpKind.REMOVEDIR, 'dir', { base: versionOf('dir') + 7 }),
      op(5, OpKind.MOVE, 'dir/b.txt', { fromPath: 'dir/a.txt', fromBase: v + 1 }),
      op(6, OpKind.STORE, 'dir/forged-hash.txt', {}, { hash: randomBytes(32), size: 10 }),
      op(7, OpKind.STORE, 'dir/short-hash.txt', {}, { hash: randomBytes(7), size: 10 }),
      op(8, 0, 'dir/kind-zero'),
      op(9, 99, 'dir/kind-99'),
      op(10, OpKind.SETATTR, 'dir/a.txt', { base: v + 1 }, { mode: 0o644 }),
      // A file or link over a directory that is not empty: a type-change conflict (under an unknown policy, manual), and
      // no temporary copy is left behind.
      op(11, OpKind.STORE, 'dir', { base: versionOf('dir') }, { hash: sha(content), size: content.length }),
      op(12, OpKind.LINK, 'dir', { base: versionOf('dir') }, { target: '/etc' }),
    ];
    const r = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: rid, ops, policy: 'no-such-policy' } });
    assert.ok(r.done && !r.error, JSON.stringify(r.error));
    const res = r.frames[0]!.reintegrateReply!.results;
    for (const i of [0, 1, 2, 3, 4]) assert.is(res[i]!.status, OpStatus.CONFLICT, `op ${i + 1}: an unknown policy is manual`);
    for (const i of [5, 6]) {
      assert.is(res[i]!.status, OpStatus.REJECTED, `op ${i + 1}`);
      assert.is(res[i]!.error?.code, 'IMZ_NOT_FOUND');
    }
    for (const i of [7, 8]) {
      assert.is(res[i]!.status, OpStatus.REJECTED, `op ${i + 1}`);
      assert.match(res[i]!.error?.code ?? '', STABLE_CODE);
    }
    assert.is(res[9]!.status, OpStatus.APPLIED, 'a mode change meets no content change: it applies (meta/update)');
    for (const i of [10, 11]) {
      assert.is(res[i]!.status, OpStatus.CONFLICT, `op ${i + 1}`);
      assert.is(res[i]!.conflictClass, 'type-change', `op ${i + 1}`);
    }
    assert.ok((await lstat(join(root, 'dir'))).isDirectory());
    assert.equal((await readdir(root)).filter((n) => n.startsWith('.imz-tmp-')), [], 'a temporary copy was left in the tree');
    assert.is(await readFile(join(root, 'dir', 'a.txt'), 'utf8'), 'alpha');
    assert.not.ok(await exists(join(root, 'dir', 'b.txt')));
    for (const n of ['forged-hash.txt', 'short-hash.txt', 'kind-zero', 'kind-99']) assert.not.ok(await exists(join(root, 'dir', n)), n);
    // Malformed replica ids refuse the whole request.
    for (const bad of ['', 'not-a-uuid', '../../etc', `${rid}x`]) {
      const rr = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: bad, ops: [op(1, OpKind.MAKEDIR, 'bad-replica-dir')], policy: 'manual' } });
      assertReplyError(rr, ['IMZ_PROTOCOL'], `replica id ${JSON.stringify(bad)}`);
    }
    assert.not.ok(await exists(join(root, 'bad-replica-dir')));
    p.destroy();
  }, 'may-change');
});

test('REINTEGRATE operations with seq, base or times that are not numbers an imz client sends are rejected, apply nothing, and cannot disable retry detection', async () => {
  const content = new TextEncoder().encode('seq content');
  await attack(async () => {
    const p = await RawPeer.greeted();
    await p.call(Op.PUT_BLOB, { putBlob: { hash: sha(content), size: content.length, offset: 0, data: content, last: true } });
    const rid = randomUUID();
    const bad = [
      op(NaN, OpKind.MAKEDIR, 'seq-nan'), op(-1, OpKind.MAKEDIR, 'seq-neg'), op(0, OpKind.MAKEDIR, 'seq-zero'), op(1.5, OpKind.MAKEDIR, 'seq-frac'),
      op(1e300, OpKind.MAKEDIR, 'seq-huge'), op(Infinity, OpKind.MAKEDIR, 'seq-inf'),
      op(2, OpKind.MAKEDIR, 'base-nan', { base: NaN }), op(3, OpKind.MAKEDIR, 'base-neg', { base: -1 }),
      op(4, OpKind.STORE, 'mtime-nan.txt', {}, { hash: sha(content), size: content.length, mtimeMs: NaN }),
      op(5, OpKind.STORE, 'mtime-inf.txt', {}, { hash: sha(content), size: content.length, mtimeMs: Infinity }),
      op(6, OpKind.STORE, 'mtime-huge.txt', {}, { hash: sha(content), size: content.length, mtimeMs: 1e300 }),
    ];
    const r = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: rid, ops: bad, policy: 'manual' } });
    assert.ok(r.done && !r.error, JSON.stringify(r.error));
    r.frames[0]!.reintegrateReply!.results.forEach((x, i) => {
      assert.is(x.status, OpStatus.REJECTED, `${bad[i]!.path}: status ${x.status}`);
      assert.match(x.error?.code ?? '', STABLE_CODE);
    });
    for (const o of bad) assert.not.ok(await exists(join(root, o.path)), `${o.path} was created`);
    // No temp file was left in the tree by a rejected store.
    assert.equal((await readdir(root)).filter((n) => n.startsWith('.imz-tmp-')), []);
    // The replica's retry detection still works: seq 1 applies once, then is a duplicate.
    const first = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: rid, ops: [op(1, OpKind.MAKEDIR, 'seq-ok')], policy: 'manual' } });
    assert.is(first.frames[0]?.reintegrateReply?.results[0]?.status, OpStatus.APPLIED);
    const again = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: rid, ops: [op(1, OpKind.MAKEDIR, 'seq-ok')], policy: 'manual' } });
    assert.is(again.frames[0]?.reintegrateReply?.results[0]?.status, OpStatus.DUPLICATE);
    p.destroy();
  }, 'may-change');
});

test('MOVE from a path under a symlink cannot take a file from outside the tree', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    const ops = [
      op(1, OpKind.MOVE, 'stolen-abs.txt', { fromPath: 'link-abs/victim.txt', fromBase: 0 }),
      op(2, OpKind.MOVE, 'stolen-rel.txt', { fromPath: 'link-rel/secret.txt', fromBase: 0 }),
      op(3, OpKind.MOVE, 'dir/stolen-dir', { fromPath: 'link-abs', fromBase: versionOf('link-abs') }),
    ];
    const r = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: randomUUID(), ops, policy: 'client-wins' } });
    assert.ok(r.done && !r.error, JSON.stringify(r.error));
    const res = r.frames[0]!.reintegrateReply!.results;
    for (const i of [0, 1]) {
      assert.is(res[i]!.status, OpStatus.REJECTED, `${ops[i]!.fromPath} -> ${ops[i]!.path}: status ${res[i]!.status}`);
      assert.not.ok(await exists(join(root, ops[i]!.path)), `${ops[i]!.path} was moved into the tree`);
    }
    // Moving the link itself is fine: it moves the link, not what it points at.
    assert.ok((await lstat(join(outside, 'victim.txt'))).isFile());
    p.destroy();
  }, 'may-change');
});

test('SETATTR on a symlink never changes the mode of what it points at', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    const ops = [
      op(1, OpKind.SETATTR, 'link-mode', { base: versionOf('link-mode') }, { type: EntryType.SYMLINK, mode: 0o777 }),
      op(2, OpKind.SETATTR, 'link-file', { base: versionOf('link-file') }, { type: EntryType.FILE, mode: 0o600 }),
    ];
    const r = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: randomUUID(), ops, policy: 'client-wins' } });
    assert.ok(r.done && !r.error, JSON.stringify(r.error));
    assert.is((await stat(join(outside, 'mode.txt'))).mode & 0o777, 0o644, 'the mode of the file outside changed');
    assert.is((await stat(join(outside, 'secret.txt'))).mode & 0o777, 0o644, 'the mode of the secret outside changed');
    p.destroy();
  }, 'may-change');
});

test('a directory replaced by a symlink within one REINTEGRATE batch is not written through', async () => {
  const content = new TextEncoder().encode('planted outside');
  await attack(async () => {
    const p = await RawPeer.greeted();
    await p.call(Op.PUT_BLOB, { putBlob: { hash: sha(content), size: content.length, offset: 0, data: content, last: true } });
    const ops = [
      // Fails (no such content) after creating the parent 'trap' as a directory.
      op(1, OpKind.STORE, 'trap/first.txt', {}, { hash: randomBytes(32), size: 3 }),
      // Replaces the (empty, untracked) directory with a link out of the tree.
      op(2, OpKind.LINK, 'trap', {}, { target: outside }),
      // Would be written through the link.
      op(3, OpKind.STORE, 'trap/planted.txt', {}, { hash: sha(content), size: content.length }),
      op(4, OpKind.MAKEDIR, 'trap/planted-dir'),
    ];
    const r = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: randomUUID(), ops, policy: 'manual' } });
    assert.ok(r.done && !r.error, JSON.stringify(r.error));
    const res = r.frames[0]!.reintegrateReply!.results;
    assert.not.ok(await exists(join(outside, 'planted.txt')), 'a file was written outside the tree through a link');
    assert.not.ok(await exists(join(outside, 'planted-dir')), 'a directory was made outside the tree through a link');
    for (const i of [2, 3]) assert.not.ok(res[i]!.status === OpStatus.APPLIED, `op ${i + 1} applied through the link`);
    p.destroy();
  }, 'may-change');
});

test('a symlink pushed by a client cannot be written through by later operations', async () => {
  const content = new TextEncoder().encode('through a pushed link');
  await attack(async () => {
    const p = await RawPeer.greeted();
    await p.call(Op.PUT_BLOB, { putBlob: { hash: sha(content), size: content.length, offset: 0, data: content, last: true } });
    const rid = randomUUID();
    const link = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: rid, ops: [op(1, OpKind.LINK, 'pushed-link', {}, { target: outside })], policy: 'manual' } });
    assert.is(link.frames[0]?.reintegrateReply?.results[0]?.status, OpStatus.APPLIED, 'a link pointing anywhere is a valid symlink to replicate');
    const ops = [
      op(2, OpKind.STORE, 'pushed-link/through.txt', {}, { hash: sha(content), size: content.length }),
      op(3, OpKind.MAKEDIR, 'pushed-link/through-dir'),
      op(4, OpKind.UNLINK, 'pushed-link/secret.txt', { base: 0 }),
      op(5, OpKind.LINK, 'pushed-link/through-link', {}, { target: '/' }),
      op(6, OpKind.MOVE, 'through-moved.txt', { fromPath: 'pushed-link/victim.txt', fromBase: 0 }),
      op(7, OpKind.MOVE, 'pushed-link/moved-out.txt', { fromPath: 'dir/a.txt', fromBase: versionOf('dir/a.txt') }),
      op(8, OpKind.SETATTR, 'pushed-link', { base: versionOf('pushed-link') }, { type: EntryType.SYMLINK, mode: 0o777 }),
    ];
    const r = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: rid, ops, policy: 'client-wins' } });
    assert.ok(r.done && !r.error, JSON.stringify(r.error));
    r.frames[0]!.reintegrateReply!.results.slice(0, 6).forEach((x, i) => assert.is.not(x.status, OpStatus.APPLIED, `${ops[i]!.path} applied through the pushed link`));
    assert.ok(await exists(join(root, 'dir', 'a.txt')), 'dir/a.txt moved out');
    assert.not.ok(await exists(join(root, 'through-moved.txt')));
    p.destroy();
  }, 'may-change');
});

test('PUT_BLOBS with one lying or malformed blob among honest ones is refused whole and stages nothing', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    const honest = [new TextEncoder().encode('honest one'), new TextEncoder().encode('honest two'), new Uint8Array(0)];
    const piece = (data: Uint8Array) => ({ hash: sha(data), size: data.length, offset: 0, data, last: true });
    const bad: [string, Partial<ReturnType<typeof piece>> & { query?: Uint8Array[] }, string][] = [
      ['a hash that does not match', { hash: sha('other bytes') }, 'IMZ_HASH_MISMATCH'],
      ['a 31-byte hash', { hash: sha('x').subarray(0, 31) }, 'IMZ_PROTOCOL'], ['no hash', { hash: new Uint8Array(0) }, 'IMZ_PROTOCOL'],
      ['offset 5', { offset: 5 }, 'IMZ_PROTOCOL'], ['a piece that is not the last', { last: false }, 'IMZ_PROTOCOL'],
      ['size larger than the data', { size: 999 }, 'IMZ_PROTOCOL'], ['size NaN', { size: NaN }, 'IMZ_PROTOCOL'], ['size -1', { size: -1 }, 'IMZ_PROTOCOL'],
      ['a query inside', { query: [new Uint8Array(32)] }, 'IMZ_PROTOCOL'],
    ];
    const liar = new TextEncoder().encode('the liar');
    for (const [what, over, code] of bad) {
      const r = await p.call(Op.PUT_BLOBS, { putBlobs: { blobs: [piece(honest[0]!), { ...piece(liar), ...over }, piece(honest[1]!)] } });
      assertReplyError(r, [code], `PUT_BLOBS with ${what}`);
    }
    assertReplyError(await p.call(Op.PUT_BLOBS, { putBlobs: { blobs: Array.from({ length: 10_001 }, () => piece(honest[2]!)) } }), ['IMZ_PROTOCOL'], 'PUT_BLOBS of 10001 blobs');
    p.destroy();
    await assertNotStaged([...honest, liar].map((d) => sha(d)), 'a PUT_BLOBS request with a bad blob');
  }, 'may-change'); // the staging directory may now exist (empty)
});

test('PUT_BLOBS sent a byte at a time stages every blob; REINTEGRATE stores them, the same content twice too', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    const blobs = [new TextEncoder().encode('batched one'), new Uint8Array(randomBytes(70_000)), new Uint8Array(0), new TextEncoder().encode('batched one')];
    const bytes = frame({ xid: 7, op: Op.PUT_BLOBS, putBlobs: { blobs: blobs.map((data) => ({ hash: sha(data), size: data.length, offset: 0, data, last: true })) } });
    for (let i = 0; i < bytes.length; i += 1 + (i % 997)) {
      p.write(bytes.subarray(i, Math.min(bytes.length, i + 1 + (i % 997))));
      if (i % 50 === 0) await new Promise((r) => setImmediate(r));
    }
    const r = await p.reply(7, 10_000);
    assert.ok(r.done && !r.error, `PUT_BLOBS answered: ${JSON.stringify(r.error)}`);
    assert.equal(r.frames[0]!.blobsReply!.replies.map((x) => [x.present, x.have]), blobs.map((b) => [true, b.length]));
    const held = await p.call(Op.PUT_BLOB, { putBlob: { hash: new Uint8Array(0), size: 0, offset: 0, data: new Uint8Array(0), last: false, query: blobs.map((b) => sha(b)) } });
    assert.equal(held.frames[0]!.blobReply!.held, [true, true, true, true]);
    const ops = blobs.map((b, i) => op(i + 1, OpKind.STORE, `batched/f${i}`, {}, { hash: sha(b), size: b.length, mode: 0o640 }));
    const rr = await p.call(Op.REINTEGRATE, { reintegrate: { replicaId: randomUUID(), ops, policy: 'manual' } }, 10_000);
    assert.ok(rr.done && !rr.error, `REINTEGRATE answered: ${JSON.stringify(rr.error)}`);
    assert.equal(rr.frames[0]!.reintegrateReply!.results.map((x) => x.status), blobs.map(() => OpStatus.APPLIED));
    for (let i = 0; i < blobs.length; i++) {
      assert.ok(Buffer.from(await readFile(join(root, 'batched', `f${i}`))).equals(blobs[i]!), `batched/f${i} holds its content`);
      assert.is((await stat(join(root, 'batched', `f${i}`))).mode & 0o777, 0o640);
      assert.is(server.state.table.get(`batched/f${i}`)?.hash, Buffer.from(sha(blobs[i]!)).toString('latin1'));
    }
    p.destroy();
  }, 'may-change');
});

test('PUT_BLOB with content that does not match its hash, or malformed sizes and offsets, is refused and stages nothing', async () => {
  await attack(async () => {
    const p = await RawPeer.greeted();
    const data = new TextEncoder().encode('honest bytes');
    const lie = sha('other bytes');
    assertReplyError(await p.call(Op.PUT_BLOB, { putBlob: { hash: lie, size: data.length, offset: 0, data, last: true } }), ['IMZ_HASH_MISMATCH'], 'one piece, wrong hash');
    // In pieces: the lie is found at the last piece and the partial upload is dropped.
    const first = await p.call(Op.PUT_BLOB, { putBlob: { hash: lie, size: data.length, offset: 0, data: data.subarray(0, 5), last: false } });
    assert.is(first.frames[0]?.blobReply?.have, 5);
    assertReplyError(await p.call(Op.PUT_BLOB, { putBlob: { hash: lie, size: data.length, offset: 5, data: data.subarray(5), last: true } }), ['IMZ_HASH_MISMATCH'], 'in pieces, wrong hash');
    const malformed: [string, Partial<Envelope['putBlob']>][] = [
      ['a 31-byte hash', { hash: sha(data).subarray(0, 31) }], ['a 33-byte hash', { hash: concat([sha(data), new Uint8Array(1)]) }], ['no hash', { hash: new Uint8Array(0) }],
      ['size -1', { size: -1 }], ['size NaN', { size: NaN }], ['size Infinity', { size: Infinity }], ['size 2^41', { size: 2 ** 41 }],
      ['more bytes than the size', { size: 3, last: true }], ['data past the size in a later piece', { size: 4, last: false }],
    ];
    for (const [what, over] of malformed) {
      const r = await p.call(Op.PUT_BLOB, { putBlob: { hash: sha(data), size: data.length, offset: 0, data, last: true, ...over } });
      assertReplyError(r, ['IMZ_PROTOCOL', 'IMZ_HASH_MISMATCH'], `PUT_BLOB with ${what}`);
    }
    // An offset that is not what the server holds: told where to resume, nothing written.
    for (const offset of [7, -3, NaN, 1e300]) {
      const r = await p.call(Op.PUT_BLOB, { putBlob: { hash: sha('resume'), size: 100, offset, data: new Uint8Array(10), last: false } });
      assert.ok(r.done, `PUT_BLOB at offset ${offset}`);
      if (!r.error) assert.equal([r.frames[0]?.blobReply?.present, r.frames[0]?.blobReply?.have], [false, 0], `PUT_BLOB at offset ${offset}`);
      else assert.match(r.error.code, STABLE_CODE);
    }
    assertReplyError(await p.call(Op.PUT_BLOB, { putBlob: { hash: sha(data), size: 0, offset: 0, data: new Uint8Array(0), last: false, query: Array.from({ length: 10_001 }, () => new Uint8Array(32)) } }), ['IMZ_PROTOCOL'], 'a query of 10001 hashes');
    p.destroy();
    await assertNotStaged([lie, sha(data), sha('resume')], 'lying or malformed uploads');
  }, 'may-change'); // the staging directory may now exist (empty)
});

test.run();
