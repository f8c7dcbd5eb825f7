// The reintegrator's batch path, driven on the engine directly (real files,
// no network): staged blobs made ready ahead of a batch (mode, time, fsync)
// must land exactly as the operation says, whatever else the batch holds.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { EntryType, type Operation, OpKind, OpStatus } from '../../protocol/messages.ts';
import { Reintegrator } from '../../core/server_apply.ts';
import { ServerState } from '../../core/server_state.ts';
import { cleanupAll } from '../helpers.ts';
import { serverEngine } from './server_engine.ts';

test.after(cleanupAll);

const sha = (b: string) => new Uint8Array(createHash('sha256').update(b).digest());
const T0 = Date.UTC(2024, 0, 2, 3, 4, 5, 678);

const world = (files: Record<string, string> = {}) => serverEngine(files, 'imz-apply-');

function storeOp(seq: number, path: string, c: string, mode: number, mtimeMs: number, base = 0): Operation {
  return {
    seq, kind: OpKind.STORE, path, fromPath: '', base, fromBase: 0,
    state: { path, type: EntryType.FILE, size: Buffer.byteLength(c), mode, mtimeMs, hash: sha(c), target: '', version: 0 },
  };
}

async function stage(re: Reintegrator, ...contents: string[]): Promise<void> {
  await re.putBlobs(contents.map((c) => ({ hash: sha(c), size: Buffer.byteLength(c), offset: 0, data: Buffer.from(c), last: true })));
}

test('a batch of stores lands with each operation\'s content, mode and time, the same content twice included', async () => {
  const w = await world();
  try {
    await stage(w.re, 'shared\n', 'one\n', 'two\n');
    const replica = randomUUID();
    const ops = [
      storeOp(1, 'a.sh', 'shared\n', 0o755, T0),
      storeOp(2, 'b.txt', 'shared\n', 0o600, T0 + 2000), // same content, another mode and time
      storeOp(3, 'c.txt', 'one\n', 0o644, T0 + 4000),
      storeOp(4, 'd.txt', 'two\n', 0o640, T0 + 6000),
    ];
    const results = await w.re.reintegrate(replica, ops, 'manual');
    assert.equal(results.map((r) => r.status), [OpStatus.APPLIED, OpStatus.APPLIED, OpStatus.APPLIED, OpStatus.APPLIED]);
    for (const op of ops) {
      const abs = join(w.root, op.path);
      assert.is(readFileSync(abs, 'utf8'), op.path === 'c.txt' ? 'one\n' : op.path === 'd.txt' ? 'two\n' : 'shared\n', op.path);
      const st = statSync(abs);
      assert.is(st.mode & 0o777, op.state.mode, `${op.path} mode`);
      assert.is(Math.round(st.mtimeMs), op.state.mtimeMs, `${op.path} mtime`);
      const t = w.state.table.get(op.path)!;
      assert.is(t.ino, st.ino, `${op.path}: the table has the file in place`);
      assert.is(t.mode & 0o777, op.state.mode);
    }
    assert.equal(readdirSync(join(w.stateDir, 'staging')), [], 'every staged blob went into the tree');
  } finally {
    await w.close();
  }
  // Acknowledged means journalled durably: a new process finds every record.
  const again = await ServerState.open(w.stateDir);
  try {
    for (const p of ['a.sh', 'b.txt', 'c.txt', 'd.txt']) assert.ok(again.table.has(p), `${p} journalled`);
  } finally {
    await again.close();
  }
});

test('a blob made ready for a store refused as a conflict stays staged, and a later store with another mode and time gets its own', async () => {
  const w = await world({ 'x.txt': 'on the server\n' });
  try {
    await stage(w.re, 'pushed\n', 'other\n');
    const replica = randomUUID();
    const r1 = await w.re.reintegrate(replica, [storeOp(1, 'x.txt', 'pushed\n', 0o755, T0), storeOp(2, 'y.txt', 'other\n', 0o644, T0)], 'manual');
    assert.is(r1[0]!.status, OpStatus.CONFLICT, 'create/create: the server has x.txt');
    assert.is(r1[1]!.status, OpStatus.APPLIED);
    assert.is(readFileSync(join(w.root, 'x.txt'), 'utf8'), 'on the server\n', 'the server\'s version stays');
    const staged = readdirSync(join(w.stateDir, 'staging'));
    assert.ok(staged.length === 1, 'the refused content is still staged');
    // Made ready with the refused store's mode, it gets its staging mode back (0755 here; a mode without write
    // permission would keep a server that is not root from finishing it for another store).
    assert.is(statSync(join(w.stateDir, 'staging', staged[0]!)).mode & 0o777, 0o600, 'the staging mode back');
    assert.ok(Date.now() - statSync(join(w.stateDir, 'staging', staged[0]!)).mtimeMs < 60_000, 'and a time the sweep of old uploads reads as recent');
    const r2 = await w.re.reintegrate(replica, [storeOp(3, 'z.txt', 'pushed\n', 0o600, T0 + 10_000), storeOp(4, 'y.txt', 'other\n', 0o640, T0 + 20_000, w.state.table.get('y.txt')!.version)], 'manual');
    assert.equal(r2.map((r) => r.status), [OpStatus.APPLIED, OpStatus.APPLIED]);
    const z = statSync(join(w.root, 'z.txt'));
    assert.is(readFileSync(join(w.root, 'z.txt'), 'utf8'), 'pushed\n');
    assert.is(z.mode & 0o777, 0o600, 'not the mode it was made ready with');
    assert.is(Math.round(z.mtimeMs), T0 + 10_000);
    const y = statSync(join(w.root, 'y.txt'));
    assert.is(y.mode & 0o777, 0o640, 'a metadata-only store of content the tree holds');
    assert.is(Math.round(y.mtimeMs), T0 + 20_000);
  } finally {
    await w.close();
  }
});

test('content staged and checked is not written again; a blob an earlier process left (torn) is replaced', async () => {
  const w = await world();
  try {
    const c = 'some content\n';
    const whole = 'staged whole by an earlier process\n';
    const blobOf = (x: string) => join(w.stateDir, 'staging', createHash('sha256').update(x).digest('hex'));
    const blob = blobOf(c);
    await mkdir(join(w.stateDir, 'staging'), { recursive: true });
    writeFileSync(blob, 'some con'); // torn by a kill before this process
    writeFileSync(blobOf(whole), whole);
    assert.equal(w.re.holds([sha(c), sha(whole)]), [false, true], 'torn: not held, the client sends it again; whole: held once its bytes check out');
    assert.not.ok(existsSync(blob), 'the torn blob is gone');
    writeFileSync(blob, 'some con'); // torn again, then uploaded
    await stage(w.re, c);
    assert.is(readFileSync(blob, 'utf8'), c, 'written again in full');
    const ino = lstatSync(blob).ino;
    const mtime = lstatSync(blob).mtimeMs;
    await new Promise((r) => setTimeout(r, 20));
    await stage(w.re, c);
    assert.is(lstatSync(blob).ino, ino, 'the same file');
    assert.is(lstatSync(blob).mtimeMs, mtime, 'not written again');
    const [r] = await w.re.reintegrate(randomUUID(), [storeOp(1, 'f.txt', c, 0o644, T0), { ...storeOp(2, 'g.txt', c, 0o644, T0) }], 'manual');
    assert.is(r!.status, OpStatus.APPLIED);
    assert.is(readFileSync(join(w.root, 'f.txt'), 'utf8'), c);
    assert.is(readFileSync(join(w.root, 'g.txt'), 'utf8'), c);
  } finally {
    await w.close();
  }
});

test.run();
