// The reintegrator's batch path, driven on the engine directly (real files,
// no network): staged blobs made ready ahead of a batch (mode, time, fsync),
// or staged with the mode and time PUT_BLOBS's hint gave, must land exactly
// as the operation says, whatever else the batch holds.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, statfsSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { EntryType, Op, type Operation, OpKind, OpStatus, decodeEnvelope, encodeEnvelope } from '../../protocol/messages.ts';
import { fsyncCostsIo } from '../../core/atomic_fs.ts';
import { Reintegrator } from '../../core/server_apply.ts';
import { ServerState } from '../../core/server_state.ts';
import { cleanupAll } from '../helpers.ts';
import { serverEngine } from './server_engine.ts';

test.after(cleanupAll);

const sha = (b: string) => new Uint8Array(createHash('sha256').update(b).digest());
const T0 = Date.UTC(2024, 0, 2, 3, 4, 5, 678);

const world = (files: Record<string, string> = {}) => serverEngine(files, 'imz-apply-');
// Every upload staged on disk (none held in memory): the staging directory's own behaviour.
const stagingWorld = (files: Record<string, string> = {}) => serverEngine(files, 'imz-apply-staged-', undefined, { holdBytes: 0 });

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

test('a store of the content the server got since: its mode applies only when it changed it (base_mode, or the base version\'s record for a client that sends none; a create\'s is its own)', async () => {
  const w = await world();
  try {
    await stage(w.re, 'base\n', 'new\n');
    const replica = randomUUID();
    const mode = (p: string) => statSync(join(w.root, p)).mode & 0o777;
    // Each path: version 1 'base' 644, then another replica's 'new' at the given mode (version 2).
    const seed = async (p: string, theirs: number, seq: number) => {
      await stage(w.re, 'base\n', 'new\n');
      const [s0] = await w.re.reintegrate(replica, [storeOp(seq, p, 'base\n', 0o644, T0)], 'manual');
      assert.is(s0!.status, OpStatus.APPLIED, JSON.stringify(s0));
      const v1 = w.state.table.get(p)!.version;
      await w.re.reintegrate(replica, [storeOp(seq + 1, p, 'new\n', theirs, T0, v1)], 'manual');
      return v1;
    };
    const other = randomUUID();
    const cases: { p: string; theirs: number; ours: number; baseMode?: number; want: number; status: number }[] = [
      { p: 'kept.sh', theirs: 0o755, ours: 0o644, baseMode: 0o644, want: 0o755, status: OpStatus.SAME }, // ours kept the old mode
      { p: 'chmod.sh', theirs: 0o644, ours: 0o755, baseMode: 0o644, want: 0o755, status: OpStatus.APPLIED }, // ours changed it
      { p: 'old-kept.sh', theirs: 0o755, ours: 0o644, want: 0o755, status: OpStatus.SAME }, // no base_mode: the journal says 644
      { p: 'old-chmod.sh', theirs: 0o644, ours: 0o755, want: 0o755, status: OpStatus.APPLIED },
    ];
    let seq = 10;
    for (const c of cases) {
      const v1 = await seed(c.p, c.theirs, seq);
      seq += 2;
      const op = { ...storeOp(1000 + seq, c.p, 'new\n', c.ours, T0 + 1, v1), ...(c.baseMode ? { baseMode: c.baseMode } : {}) };
      const [r] = await w.re.reintegrate(other, [op], 'manual');
      assert.is(r!.status, c.status, c.p);
      assert.is(mode(c.p), c.want, `${c.p}: mode`);
      assert.is(w.state.table.get(c.p)!.mode & 0o777, c.want, `${c.p}: table`);
    }
    // Two creates of the same content: the second's mode is its own (no base to keep).
    await w.re.reintegrate(replica, [storeOp(100, 'twice.sh', 'new\n', 0o644, T0)], 'manual');
    const [r] = await w.re.reintegrate(other, [storeOp(2000, 'twice.sh', 'new\n', 0o755, T0)], 'manual');
    assert.is(r!.status, OpStatus.APPLIED);
    assert.is(mode('twice.sh'), 0o755);
  } finally {
    await w.close();
  }
});

test('a blob made ready for a store refused as a conflict stays staged, and a later store with another mode and time gets its own', async () => {
  const w = await stagingWorld({ 'x.txt': 'on the server\n' });
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
  const w = await stagingWorld();
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

// Where a hint is taken: a memory-backed file system (fsync costs nothing). /dev/shm where there is one.
const SHM = (() => {
  try {
    statfsSync('/dev/shm');
    return fsyncCostsIo('/dev/shm') ? undefined : '/dev/shm';
  } catch {
    return undefined;
  }
})();
const shmWorld = (files: Record<string, string> = {}) => serverEngine(files, 'imz-apply-hint-', SHM);

async function stageHinted(re: Reintegrator, c: string, mode: number, mtimeMs: number): Promise<string> {
  await re.putBlobs([{ hash: sha(c), size: Buffer.byteLength(c), offset: 0, data: Buffer.from(c), last: true, mode, mtimeMs }]);
  return createHash('sha256').update(c).digest('hex');
}

test('on tmpfs, a blob staged with a hint has its store\'s mode and time, and the store renames that very file in', async () => {
  if (!SHM) throw new Error('no tmpfs at /dev/shm to test on');
  const w = await shmWorld();
  try {
    const staging = join(w.stateDir, 'staging');
    const cases = [['run.sh', 'a script\n', 0o755], ['notes.txt', 'notes\n', 0o644], ['shared.txt', 'for all\n', 0o666]] as const;
    const inos = new Map<string, number>();
    for (const [i, [p, c, mode]] of cases.entries()) {
      const hex = await stageHinted(w.re, c, 0o100000 | mode, T0 + i * 1000); // (a client sends the whole st_mode)
      const st = statSync(join(staging, hex));
      // (0666 is not taken: a staged blob is never left writable by other users; its store sets it.)
      assert.is(st.mode & 0o7777, mode & 0o022 ? 0o600 : mode, `${p}: staged with the hinted mode, unless others could write it`);
      if (!(mode & 0o022)) assert.is(Math.round(st.mtimeMs), T0 + i * 1000, `${p}: and time`);
      inos.set(p, st.ino);
    }
    const replica = randomUUID();
    const results = await w.re.reintegrate(replica, cases.map(([p, c, mode], i) => storeOp(i + 1, p, c, mode, T0 + i * 1000)), 'manual');
    assert.equal(results.map((r) => r.status), cases.map(() => OpStatus.APPLIED));
    for (const [i, [p, c, mode]] of cases.entries()) {
      const st = statSync(join(w.root, p));
      assert.is(readFileSync(join(w.root, p), 'utf8'), c);
      assert.is(st.mode & 0o7777, mode, `${p} mode`);
      assert.is(Math.round(st.mtimeMs), T0 + i * 1000, `${p} mtime`);
      assert.is(st.ino, inos.get(p), `${p}: the staged file itself, renamed in`);
      const t = w.state.table.get(p)!;
      assert.equal([t.ino, t.mode & 0o7777, t.size], [st.ino, mode, st.size], `${p}: the table says what is there`);
    }
    assert.equal(readdirSync(staging), []);
  } finally {
    await w.close();
  }
});

test('on tmpfs, a store whose mode or time is not the hint\'s gets its own, alone or in a batch, also after a refused one', async () => {
  if (!SHM) throw new Error('no tmpfs at /dev/shm to test on');
  const w = await shmWorld({ 'taken.txt': 'the server\'s\n' });
  try {
    await stageHinted(w.re, 'one\n', 0o755, T0);
    await stageHinted(w.re, 'two\n', 0o644, T0);
    await stageHinted(w.re, 'three\n', 0o644, T0);
    const replica = randomUUID();
    // A batch: a store refused (create/create) with the hint's mode and time, one with another time, one with another mode.
    const r1 = await w.re.reintegrate(replica, [storeOp(1, 'taken.txt', 'one\n', 0o755, T0), storeOp(2, 'b.txt', 'two\n', 0o644, T0 + 5000), storeOp(3, 'c.txt', 'three\n', 0o600, T0)], 'manual');
    assert.equal(r1.map((r) => r.status), [OpStatus.CONFLICT, OpStatus.APPLIED, OpStatus.APPLIED]);
    assert.is(readFileSync(join(w.root, 'taken.txt'), 'utf8'), 'the server\'s\n');
    assert.is(Math.round(statSync(join(w.root, 'b.txt')).mtimeMs), T0 + 5000);
    assert.is(statSync(join(w.root, 'b.txt')).mode & 0o777, 0o644);
    assert.is(statSync(join(w.root, 'c.txt')).mode & 0o777, 0o600);
    assert.is(Math.round(statSync(join(w.root, 'c.txt')).mtimeMs), T0);
    // The refused content, still staged, stored alone (no batch made ready) with another mode, then with the hint's.
    const [r2] = await w.re.reintegrate(replica, [storeOp(4, 'd.sh', 'one\n', 0o700, T0 + 7000)], 'manual');
    assert.is(r2!.status, OpStatus.APPLIED);
    const d = statSync(join(w.root, 'd.sh'));
    assert.equal([d.mode & 0o777, Math.round(d.mtimeMs)], [0o700, T0 + 7000]);
    await stageHinted(w.re, 'four\n', 0o755, T0);
    await w.re.putBlobs([{ hash: sha('four\n'), size: 5, offset: 0, data: Buffer.from('four\n'), last: true }]); // again, no hint: nothing changes
    const [r3] = await w.re.reintegrate(replica, [storeOp(5, 'e.sh', 'four\n', 0o755, T0)], 'manual');
    assert.is(r3!.status, OpStatus.APPLIED);
    const e = statSync(join(w.root, 'e.sh'));
    assert.equal([e.mode & 0o777, Math.round(e.mtimeMs)], [0o755, T0]);
    for (const p of ['b.txt', 'c.txt', 'd.sh', 'e.sh']) {
      const t = w.state.table.get(p)!;
      const st = statSync(join(w.root, p));
      assert.equal([t.ino, t.mode & 0o7777, Math.round(t.mtimeMs)], [st.ino, st.mode & 0o7777, Math.round(st.mtimeMs)], `${p}: the table says what is there`);
    }
  } finally {
    await w.close();
  }
});

test('a hint the server cannot stage with (no owner read and write, a time out of range) is left: the blob gets the staging mode, the store its own', async () => {
  const w = await (SHM ? shmWorld() : stagingWorld());
  try {
    const staging = join(w.stateDir, 'staging');
    const ro = await stageHinted(w.re, 'read only\n', 0o444, T0);
    assert.is(statSync(join(staging, ro)).mode & 0o777, 0o600);
    const far = await stageHinted(w.re, 'far\n', 0o644, 9e15);
    assert.is(statSync(join(staging, far)).mode & 0o777, 0o600);
    const nan = await stageHinted(w.re, 'nan\n', 0o644, Number.NaN);
    assert.is(statSync(join(staging, nan)).mode & 0o777, 0o600);
    const results = await w.re.reintegrate(randomUUID(), [storeOp(1, 'ro.txt', 'read only\n', 0o444, T0), storeOp(2, 'far.txt', 'far\n', 0o644, T0)], 'manual');
    assert.equal(results.map((r) => r.status), [OpStatus.APPLIED, OpStatus.APPLIED]);
    assert.is(statSync(join(w.root, 'ro.txt')).mode & 0o777, 0o444);
    assert.is(Math.round(statSync(join(w.root, 'far.txt')).mtimeMs), T0);
  } finally {
    await w.close();
  }
});

// The sweep of old uploads goes by when a blob was staged, not by the mtime a hint gave it: an old one, or one in the
// future (review: a client could stage blobs never swept).
for (const [when, what] of [[Date.UTC(2019, 5, 1), 'an old mtime'], [Date.UTC(2200, 0, 1), 'a time in the future (a clock gone wrong, or a client that means it)']] as const) {
  test(`the sweep of old uploads goes by when a blob was staged, not by the hint's ${what}`, async () => {
    const w = await (SHM ? shmWorld() : stagingWorld());
    try {
      const hex = await stageHinted(w.re, `staged with ${what}\n`, 0o644, when);
      const blob = join(w.stateDir, 'staging', hex);
      if (SHM) assert.is(Math.round(statSync(blob).mtimeMs), when, 'staged with the hinted time');
      assert.is(await w.re.sweepStaging(24 * 3600 * 1000), 0, 'staged a moment ago: kept');
      assert.ok(existsSync(blob));
      assert.is(await w.re.sweepStaging(-1), 1, 'past any age: swept, whatever mtime the client gave it');
      assert.not.ok(existsSync(blob));
    } finally {
      await w.close();
    }
  });
}

test('a hint never makes a staged blob writable by other users: what another local user writes there is not renamed in under the hash it was checked for (review)', async () => {
  if (!SHM) throw new Error('no tmpfs at /dev/shm to test on');
  if (process.getuid?.() !== 0) return; // another user is needed: root runs the writer as nobody
  const w = await shmWorld();
  try {
    chmodSync(w.root, 0o755); // a served tree others may read, as most are
    // A client pushes a file of mode 0666 (a umask of 0): the hint asks for that mode.
    const hex = await stageHinted(w.re, 'honest\n', 0o666, T0);
    const blob = join(w.stateDir, 'staging', hex);
    assert.is(statSync(blob).mode & 0o022, 0, 'staged writable by its owner only');
    // Another local user tries to change the checked content before it is stored.
    const forged = spawnSync(process.execPath, ['-e', `require('fs').writeFileSync(${JSON.stringify(blob)}, 'forged\\n', { flag: 'r+' })`], { uid: 65534, gid: 65534 });
    const [r] = await w.re.reintegrate(randomUUID(), [storeOp(1, 'x.txt', 'honest\n', 0o666, T0)], 'manual');
    assert.is(r!.status, OpStatus.APPLIED);
    const onDisk = readFileSync(join(w.root, 'x.txt'));
    const t = w.state.table.get('x.txt')!;
    assert.is(createHash('sha256').update(onDisk).digest('hex'), Buffer.from(t.hash, 'latin1').toString('hex'), `the journal's hash is the file's (the other user's write ${forged.status === 0 ? 'went through' : 'was refused'})`);
    assert.is(onDisk.toString(), 'honest\n');
    assert.is(statSync(join(w.root, 'x.txt')).mode & 0o777, 0o666, 'the store still gets its mode');
  } finally {
    await w.close();
  }
});

// Bytes this process has read through read(2) and the like so far (Linux).
const readBytes = () => Number(/^rchar:\s+(\d+)/m.exec(readFileSync('/proc/self/io', 'utf8'))![1]);

test('a file moved, then given a new mode, is journalled with the hash the table had for it, not read again; given a new time, it is read again (a write in between would hide behind that time)', async () => {
  if (!existsSync('/proc/self/io')) throw new Error('no /proc/self/io to count reads with');
  const big = Buffer.alloc(16 * 1024 * 1024, 7);
  big.write('the first bytes differ\n');
  const w = await world();
  try {
    writeFileSync(join(w.root, 'big.bin'), big);
    await w.re.scanner.scanNow('big.bin');
    const t0 = w.state.table.get('big.bin')!;
    assert.ok(t0.ino !== 0, 'journalled with its inode');
    const want = createHash('sha256').update(big).digest().toString('latin1');
    assert.is(t0.hash, want);
    const replica = randomUUID();
    const state = { path: 'moved.bin', type: EntryType.FILE, size: big.length, mode: 0o644, mtimeMs: t0.mtimeMs, hash: Buffer.from(want, 'latin1'), target: '', version: 0 };
    let seq = 0;
    const move = async (from: string, to: string, mtimeMs: number) => {
      const [r] = await w.re.reintegrate(replica, [{ seq: ++seq, kind: OpKind.MOVE, path: to, fromPath: from, base: 0, fromBase: w.state.table.get(from)!.version, state: { ...state, path: to, mtimeMs } }], 'manual');
      assert.is(r!.status, OpStatus.APPLIED);
    };
    const chmod = async (path: string, mode: number, mtimeMs: number) => {
      const [r] = await w.re.reintegrate(replica, [{ seq: ++seq, kind: OpKind.SETATTR, path, fromPath: '', base: w.state.table.get(path)!.version, fromBase: 0, state: { ...state, path, mode, mtimeMs } }], 'manual');
      assert.is(r!.status, OpStatus.APPLIED);
    };
    const reads = async (what: string, f: () => Promise<void>) => {
      const before = readBytes();
      await f();
      return { what, read: readBytes() - before };
    };
    const kept = [await reads('move', () => move('big.bin', 'moved.bin', t0.mtimeMs)), await reads('chmod', () => chmod('moved.bin', 0o600, t0.mtimeMs))];
    for (const k of kept) assert.ok(k.read < big.length / 4, `${k.what} keeping the time: ${k.read} bytes read of a ${big.length}-byte file`);
    const retimed = [await reads('move', () => move('moved.bin', 'again.bin', T0)), await reads('chmod', () => chmod('again.bin', 0o640, T0 + 5000))];
    for (const k of retimed) assert.ok(k.read >= big.length, `${k.what} with a new time: ${k.read} bytes read of a ${big.length}-byte file`);
    const t = w.state.table.get('again.bin')!;
    const st = statSync(join(w.root, 'again.bin'));
    assert.equal([t.hash === want, t.ino, t.size, t.mode & 0o777, Math.round(t.mtimeMs)], [true, st.ino, big.length, 0o640, T0 + 5000]);
    assert.ok(readFileSync(join(w.root, 'again.bin')).equals(big));
    assert.equal([w.state.table.has('big.bin'), w.state.table.has('moved.bin')], [false, false]);
  } finally {
    await w.close();
  }
});

// Where uploads are held in memory: a tree on a disk (fsync costs I/O).
const ON_DISK = fsyncCostsIo(tmpdir());
// An operation without content: a directory made or moved (the state a directory, 0755), a path removed (none).
function bareOp(seq: number, kind: Operation['kind'], path: string, base: number, from: { fromPath: string; fromBase: number } = { fromPath: '', fromBase: 0 }): Operation {
  const dir = kind === OpKind.MAKEDIR || kind === OpKind.MOVE;
  return {
    seq, kind, path, base, ...from,
    state: { path, type: dir ? EntryType.DIR : EntryType.NONE, size: 0, mode: dir ? 0o755 : 0, mtimeMs: dir ? T0 : 0, hash: new Uint8Array(0), target: '', version: 0 },
  };
}
const dirOp = (seq: number, path: string): Operation => bareOp(seq, OpKind.MAKEDIR, path, 0);
const tempsIn = (dir: string) => readdirSync(dir).filter((n) => n.startsWith('.imz-tmp-'));

test('on a disk, uploads are held in memory and written beside their files: nothing staged, no temp left, a refused store\'s content still held and staged when the server stops', async () => {
  if (!ON_DISK) return console.log('  (skipped: the temp dir is memory-backed, where uploads are staged)');
  const w = await world();
  try {
    const files = Array.from({ length: 40 }, (_, i) => ({ path: `d/f${i}.txt`, c: `content ${i}\n`.repeat(i + 1), mode: i % 3 === 0 ? 0o755 : 0o644, mtimeMs: T0 + i * 1000 }));
    await stage(w.re, ...files.filter((f) => f.path !== 'd/f20.txt').map((f) => f.c), 'refused\n', 'after\n');
    assert.equal(readdirSync(join(w.stateDir, 'staging')), [], 'nothing written to staging');
    assert.equal(w.re.holds([sha('refused\n'), sha(files[7]!.c)]), [true, true], 'held contents are not asked for again');
    // A file the server has, unknown to the client: its store is refused (create/create) in the middle of the run.
    mkdirSync(join(w.root, 'd'));
    writeFileSync(join(w.root, 'd', 'f20.txt'), 'the server\'s\n');
    const replica = randomUUID();
    const ops: Operation[] = [dirOp(1, 'd'), ...files.map((f, i) => storeOp(i + 2, f.path, f.path === 'd/f20.txt' ? 'refused\n' : f.c, f.mode, f.mtimeMs)), storeOp(50, 'top.txt', 'after\n', 0o600, T0)];
    const results = await w.re.reintegrate(replica, ops, 'manual');
    for (const [i, r] of results.entries()) assert.is(r.status, ops[i]!.path === 'd/f20.txt' ? OpStatus.CONFLICT : OpStatus.APPLIED, ops[i]!.path);
    for (const f of files) {
      if (f.path === 'd/f20.txt') continue;
      const abs = join(w.root, f.path);
      const st = statSync(abs);
      assert.equal([readFileSync(abs, 'utf8') === f.c, st.mode & 0o777, Math.round(st.mtimeMs)], [true, f.mode, f.mtimeMs], f.path);
      const t = w.state.table.get(f.path)!;
      assert.equal([t.ino, t.size, t.hash === Buffer.from(sha(f.c)).toString('latin1')], [st.ino, f.c.length, true], `${f.path} in the table`);
    }
    assert.is(readFileSync(join(w.root, 'd', 'f20.txt'), 'utf8'), 'the server\'s\n', 'the server\'s version stays');
    assert.is(readFileSync(join(w.root, 'top.txt'), 'utf8'), 'after\n');
    assert.equal([tempsIn(w.root), tempsIn(join(w.root, 'd'))], [[], []], 'no temp file left in the tree (the refused store\'s was written ahead)');
    assert.equal(readdirSync(join(w.stateDir, 'staging')), [], 'still nothing staged');
    assert.equal(w.re.holds([sha('refused\n')]), [true], 'the refused content is still held');
    w.re.stageHeld();
    const hex = createHash('sha256').update('refused\n').digest('hex');
    assert.equal(readdirSync(join(w.stateDir, 'staging')), [hex], 'at a stop, what is held (only the refused content) goes to staging');
    assert.is(readFileSync(join(w.stateDir, 'staging', hex), 'utf8'), 'refused\n');
  } finally {
    await w.close();
  }
  // A new process finds it staged.
  const state = await ServerState.open(w.stateDir);
  try {
    const re = new Reintegrator(w.root, state, { exclusive: (f: () => unknown) => f() } as never);
    assert.equal(re.holds([sha('refused\n')]), [true]);
  } finally {
    await state.close();
  }
});

test('uploads past the memory bound are staged (what is held is what stores ask for first), and every store still lands', async () => {
  if (!ON_DISK) return console.log('  (skipped: the temp dir is memory-backed, where uploads are staged)');
  const w = await serverEngine({}, 'imz-apply-bound-', undefined, { holdBytes: 1000 });
  try {
    const cs = ['a', 'b', 'c', 'd'].map((x) => x.repeat(400));
    await stage(w.re, ...cs);
    const hexOf = (c: string) => createHash('sha256').update(c).digest('hex');
    assert.equal(readdirSync(join(w.stateDir, 'staging')).sort(), [hexOf(cs[2]!), hexOf(cs[3]!)].sort(), 'the two first held (800 bytes), the two after them staged');
    assert.equal(w.re.holds(cs.map(sha)), [true, true, true, true]);
    const ops = cs.map((c, i) => storeOp(i + 1, `f${i}`, c, 0o640, T0 + i));
    const results = await w.re.reintegrate(randomUUID(), ops, 'manual');
    assert.equal(results.map((r) => r.status), ops.map(() => OpStatus.APPLIED));
    for (const [i, c] of cs.entries()) {
      const st = statSync(join(w.root, `f${i}`));
      assert.equal([readFileSync(join(w.root, `f${i}`), 'utf8') === c, st.mode & 0o777, Math.round(st.mtimeMs)], [true, 0o640, T0 + i], `f${i}`);
    }
    assert.equal([readdirSync(join(w.stateDir, 'staging')), tempsIn(w.root)], [[], []]);
  } finally {
    await w.close();
  }
});

test('a store whose mode the server keeps (a chmod made there) writes its own temp again: no temp of the stores after it is left, and their directory goes in the next batch', async () => {
  if (!ON_DISK) return console.log('  (skipped: the temp dir is memory-backed, where uploads are staged)');
  const w = await world();
  try {
    const r1 = randomUUID();
    const r2 = randomUUID();
    await stage(w.re, 'base\n', 'theirs\n');
    await w.re.reintegrate(r1, [dirOp(1, 'd'), storeOp(2, 'd/a', 'base\n', 0o644, T0)], 'manual');
    await w.re.reintegrate(r1, [storeOp(3, 'd/a', 'theirs\n', 0o755, T0, w.state.table.get('d/a')!.version)], 'manual');
    await stage(w.re, 'zero\n', 'mine\n', 'bee\n', 'cee\n');
    // Ours changes the content and leaves the mode as it knew it (base_mode 0644): the server's 0755 stays.
    const mine = { ...storeOp(2, 'd/a', 'mine\n', 0o644, T0, w.state.table.get('d/a')!.version), baseMode: 0o644 };
    const rs = await w.re.reintegrate(r2, [storeOp(1, 'd/0', 'zero\n', 0o644, T0), mine, storeOp(3, 'd/b', 'bee\n', 0o644, T0), storeOp(4, 'd/c', 'cee\n', 0o640, T0)], 'manual');
    assert.equal(rs.map((r) => r.status), [OpStatus.APPLIED, OpStatus.APPLIED, OpStatus.APPLIED, OpStatus.APPLIED]);
    assert.equal([readFileSync(join(w.root, 'd/a'), 'utf8'), statSync(join(w.root, 'd/a')).mode & 0o777], ['mine\n', 0o755]);
    assert.equal([readFileSync(join(w.root, 'd/c'), 'utf8'), statSync(join(w.root, 'd/c')).mode & 0o777], ['cee\n', 0o640]);
    assert.equal(tempsIn(join(w.root, 'd')), [], 'no temp left');
    const v = (p: string) => w.state.table.get(p)!.version;
    const gone = (seq: number, path: string, kind: Operation['kind'] = OpKind.UNLINK): Operation => bareOp(seq, kind, path, v(path));
    const rm = await w.re.reintegrate(r2, [gone(5, 'd/0'), gone(6, 'd/a'), gone(7, 'd/b'), gone(8, 'd/c'), gone(9, 'd', OpKind.REMOVEDIR)], 'manual');
    assert.equal(rm.map((r) => r.status), [OpStatus.APPLIED, OpStatus.APPLIED, OpStatus.APPLIED, OpStatus.APPLIED, OpStatus.APPLIED]);
    assert.not.ok(existsSync(join(w.root, 'd')));
  } finally {
    await w.close();
  }
});

test('a temp written ahead for a store answered SAME is gone before a later operation of the batch moves its directory', async () => {
  if (!ON_DISK) return console.log('  (skipped: the temp dir is memory-backed, where uploads are staged)');
  const w = await world();
  try {
    const replica = randomUUID();
    await stage(w.re, 'same\n');
    await w.re.reintegrate(replica, [dirOp(1, 'd'), storeOp(2, 'd/x', 'same\n', 0o644, T0)], 'manual');
    await stage(w.re, 'new\n', 'same\n');
    // d/x again as a create (base 0) of what the server has: SAME, after its temp was written ahead with d/a's.
    const move = bareOp(5, OpKind.MOVE, 'e', 0, { fromPath: 'd', fromBase: w.state.table.get('d')!.version });
    const rs = await w.re.reintegrate(replica, [storeOp(3, 'd/a', 'new\n', 0o644, T0), storeOp(4, 'd/x', 'same\n', 0o644, T0), move], 'manual');
    assert.equal(rs.map((r) => r.status), [OpStatus.APPLIED, OpStatus.SAME, OpStatus.APPLIED]);
    assert.equal(readdirSync(join(w.root, 'e')).sort(), ['a', 'x'], 'no temp carried along with the directory');
  } finally {
    await w.close();
  }
});

// Every name under dir (recursively) that is a temp.
function tempsUnder(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.imz-tmp-')) out.push(join(dir, e.name));
    else if (e.isDirectory() && e.name !== '.imz-server') tempsUnder(join(dir, e.name), out);
  }
  return out;
}

// A push of a new tree: directories (one inside another) and their files, in the order a scan logs them.
function newTree(top: string, perDir: number): { ops: Operation[]; files: { path: string; c: string; mode: number; mtimeMs: number }[]; dirs: string[] } {
  const dirs = [top, `${top}/a`, `${top}/a/b`, `${top}/c`];
  const ops: Operation[] = [];
  const files: { path: string; c: string; mode: number; mtimeMs: number }[] = [];
  let seq = 1;
  for (const d of dirs) {
    ops.push(dirOp(seq++, d));
    for (let i = 0; i < perDir; i++) {
      const f = { path: `${d}/f${i}`, c: `${d} ${i}\n`.repeat(i + 1), mode: i % 4 === 0 ? 0o755 : 0o640, mtimeMs: T0 + seq * 1000 };
      files.push(f);
      ops.push(storeOp(seq++, f.path, f.c, f.mode, f.mtimeMs));
    }
  }
  return { ops, files, dirs };
}

for (const [how, syncfsFrom] of [['one syncfs', 1], ['an fsync each', Infinity]] as const) {
  test(`on a disk, a push of new directories is written ahead in one window (${how}): each directory made under a temp name and renamed in by its MAKEDIR, every file with its content, mode and time, no temp left`, async () => {
    if (!ON_DISK) return console.log('  (skipped: the temp dir is memory-backed, where uploads are staged)');
    const windows: { files: number; dirs: number; syncfs: boolean }[] = [];
    const w = await serverEngine({}, 'imz-apply-window-', undefined, { syncfsFrom, onWriteAhead: (e) => windows.push(e) });
    try {
      const { ops, files, dirs } = newTree('n', 30);
      await stage(w.re, ...files.map((f) => f.c));
      const rs = await w.re.reintegrate(randomUUID(), ops, 'manual');
      assert.equal(rs.map((r) => r.status), ops.map(() => OpStatus.APPLIED));
      assert.equal(windows.map((x) => [x.files, x.dirs]), [[120, 3]], 'one window: every file, and the three directories made after the first store');
      if (syncfsFrom === Infinity) assert.not.ok(windows[0]!.syncfs);
      for (const f of files) {
        const st = statSync(join(w.root, f.path));
        assert.equal([readFileSync(join(w.root, f.path), 'utf8') === f.c, st.mode & 0o777, Math.round(st.mtimeMs)], [true, f.mode, f.mtimeMs], f.path);
        assert.is(w.state.table.get(f.path)!.ino, st.ino, `${f.path} in the table`);
      }
      for (const d of dirs) {
        assert.is(statSync(join(w.root, d)).mode & 0o777, 0o755, `${d}: the operation's mode, not the temp's`);
        assert.is(w.state.table.get(d)!.type, EntryType.DIR);
      }
      assert.equal(tempsUnder(w.root), [], 'no temp left in the tree');
      assert.equal(readdirSync(join(w.stateDir, 'staging')), [], 'nothing staged');
    } finally {
      await w.close();
    }
  });
}

test('directories made ahead whose MAKEDIR does not place them (one made on the server meanwhile, one not applied) are removed with what was written into them; their stores land as before', async () => {
  if (!ON_DISK) return console.log('  (skipped: the temp dir is memory-backed, where uploads are staged)');
  const windows: { files: number; dirs: number }[] = [];
  let root = '';
  // Once the window is written, directory m is made on the server (another program), before m's MAKEDIR runs.
  const w = await serverEngine({ 'first.txt': 'old\n' }, 'imz-apply-window-gone-', undefined, { onWriteAhead: (e) => { windows.push(e); mkdirSync(join(root, 'm')); } });
  root = w.root;
  try {
    const replica = randomUUID();
    await stage(w.re, 'one\n', 'p\n', 'q\n', 'r\n');
    // Made ahead: m and z (whose MAKEDIR is not applied: it claims a version of z the server never had).
    const ops: Operation[] = [
      storeOp(1, 'first.txt', 'one\n', 0o644, T0, w.state.table.get('first.txt')!.version),
      dirOp(2, 'm'), storeOp(3, 'm/p', 'p\n', 0o644, T0),
      { ...dirOp(4, 'z'), base: 12345 }, storeOp(5, 'z/q', 'q\n', 0o644, T0),
      storeOp(6, 'last.txt', 'r\n', 0o600, T0),
    ];
    const rs = await w.re.reintegrate(replica, ops, 'manual');
    assert.equal(windows.map((x) => [x.files, x.dirs]), [[4, 2]], 'one window: four files, m and z made ahead');
    assert.equal([rs[0]!.status, rs[2]!.status], [OpStatus.APPLIED, OpStatus.APPLIED], JSON.stringify(rs));
    assert.is(readFileSync(join(w.root, 'm/p'), 'utf8'), 'p\n');
    assert.not.equal(rs[3]!.status, OpStatus.APPLIED, 'the MAKEDIR with a stale base is not applied');
    assert.is(readFileSync(join(w.root, 'last.txt'), 'utf8'), 'r\n');
    assert.equal(tempsUnder(w.root), [], 'no temp directory or file left in the tree');
  } finally {
    await w.close();
  }
});

test('the window never writes through a link: a directory below a symlink to outside the tree ends it, and nothing is written outside', async () => {
  if (!ON_DISK) return console.log('  (skipped: the temp dir is memory-backed, where uploads are staged)');
  const windows: { files: number; dirs: number }[] = [];
  const w = await serverEngine({}, 'imz-apply-window-link-', undefined, { onWriteAhead: (e) => windows.push(e) });
  const outside = join(w.root, '..', `outside-${randomUUID()}`);
  mkdirSync(join(outside, 'sub'), { recursive: true });
  try {
    symlinkSync(outside, join(w.root, 'link'));
    await stage(w.re, 'a\n', 'b\n', 'c\n');
    const ops: Operation[] = [storeOp(1, 'a.txt', 'a\n', 0o644, T0), storeOp(2, 'link/sub/b.txt', 'b\n', 0o644, T0), dirOp(3, 'link/new'), storeOp(4, 'link/new/c.txt', 'c\n', 0o644, T0)];
    const rs = await w.re.reintegrate(randomUUID(), ops, 'manual');
    assert.is(rs[0]!.status, OpStatus.APPLIED);
    assert.equal(rs.slice(1).map((r) => r.status === OpStatus.APPLIED), [false, false, false], 'nothing applied through the link');
    assert.equal(windows.map((x) => [x.files, x.dirs]), [[1, 0]], 'the window ends at the store under the link');
    assert.equal(readdirSync(outside).sort(), ['sub'], 'nothing made outside');
    assert.equal(readdirSync(join(outside, 'sub')), [], 'nothing written outside');
  } finally {
    rmSync(outside, { recursive: true, force: true });
    await w.close();
  }
});

test('a held content keeps only its own bytes alive, not the request it came in', async () => {
  if (!ON_DISK) return console.log('  (skipped: the temp dir is memory-backed, where uploads are staged)');
  const w = await world();
  try {
    const small = 'tiny\n';
    const filler = String(7).repeat(200 * 1024);
    const blobs = [small, filler].map((c) => ({ hash: sha(c), size: Buffer.byteLength(c), offset: 0, data: Buffer.from(c), last: true }));
    // Decoded from one frame, as a session hands them over: views into it.
    const env = decodeEnvelope(Buffer.from(encodeEnvelope({ xid: 1, op: Op.PUT_BLOBS, putBlobs: { blobs } } as never)));
    await w.re.putBlobs(env.putBlobs!.blobs);
    // (The held map is private: no other way to see what memory an entry keeps.)
    const held = (w.re as unknown as { _held: Map<string, { bytes: Uint8Array }> })._held;
    const bytes = held.get(createHash('sha256').update(small).digest('hex'))!.bytes;
    assert.is(bytes.buffer.byteLength, small.length, 'its own buffer');
  } finally {
    await w.close();
  }
});

test('a held content no store came for is staged once it waited long enough (a refused store, an abandoned push)', async () => {
  if (!ON_DISK) return console.log('  (skipped: the temp dir is memory-backed, where uploads are staged)');
  const w = await serverEngine({ 'x.txt': 'on the server\n' }, 'imz-apply-old-', undefined, { holdMs: 0 });
  try {
    await stage(w.re, 'refused\n', 'applied\n');
    assert.equal(readdirSync(join(w.stateDir, 'staging')), []);
    const rs = await w.re.reintegrate(randomUUID(), [storeOp(1, 'x.txt', 'refused\n', 0o644, T0), storeOp(2, 'y.txt', 'applied\n', 0o644, T0)], 'manual');
    assert.equal(rs.map((r) => r.status), [OpStatus.CONFLICT, OpStatus.APPLIED]);
    assert.equal(readdirSync(join(w.stateDir, 'staging')), [createHash('sha256').update('refused\n').digest('hex')], 'staged after the batch');
    assert.equal(w.re.holds([sha('refused\n')]), [true]);
  } finally {
    await w.close();
  }
});

test.run();
