// core/server_state.ts against a real state directory: commitNow (a
// batch's operations journalled without a turn of the commit chain each)
// gives what commit gives, in the same order, and steps aside while a
// commit is under way or a checkpoint falls due.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomUUID } from 'node:crypto';
import { Buffer } from 'node:buffer';
import { statSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { join } from 'node:path';
import { Change, EntryType } from '../../protocol/messages.ts';
import { type PendingChange, ServerState, type TableEntry, VersionTable, tableToEntry } from '../../core/server_state.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

test.after(cleanupAll);

const origin = randomUUID();
const create = (path: string, n: number): PendingChange => ({
  change: Change.CREATE, path, origin, originSeq: n,
  state: { type: EntryType.FILE, size: n, mode: 0o644, mtimeMs: 1.7e12 + n, hash: String.fromCharCode(n % 256).repeat(32), target: '', ino: 1000 + n },
});

// Everything a new process reads back of a state dir: the journal's records and the table.
async function readBack(dir: string) {
  const s = await ServerState.open(dir);
  try {
    const records = [];
    for await (const batch of s.journal.readSince(0)) for (const r of batch) records.push({ seq: r.seq, change: r.change, path: r.entry.path, size: r.entry.size, origin: r.origin, originSeq: r.originSeq });
    return { records, table: [...s.table].sort(), origins: [...s.origins] };
  } finally {
    await s.close();
  }
}

test('commitNow journals and tables the same as commit, numbered in call order with commits around it', async () => {
  const a = join(await makeTmp('imz-state-'), 's');
  const b = join(await makeTmp('imz-state-'), 's');
  const sa = await ServerState.open(a);
  const sb = await ServerState.open(b);
  try {
    for (let n = 1; n <= 40; n++) {
      const c = [create(`d/f${n}`, n)];
      await sa.commit(c, { durable: false });
      const now = sb.commitNow(c);
      assert.ok(now, 'nothing under way: done at once');
      assert.is(now![0]!.seq, n);
      assert.is(sb.table.get(`d/f${n}`)?.version, n, 'in the table on return');
    }
    // A commit under way: commitNow steps aside, and the order stays the call order.
    const queued = sb.commit([create('q/first', 41)], { durable: false });
    assert.is(sb.commitNow([create('q/second', 42)]), undefined);
    await queued;
    await sa.commit([create('q/first', 41)], { durable: false });
    await new Promise((r) => setTimeout(r, 0));
    for (const s of [sa, sb]) {
      const r = s.commitNow([create('q/second', 42)]);
      assert.ok(r, 'the chain is idle again');
      assert.is(r![0]!.seq, 42);
    }
    await sa.flush();
    await sb.flush();
  } finally {
    await sa.close();
    await sb.close();
  }
  const [ra, rb] = [await readBack(a), await readBack(b)];
  assert.equal(rb, ra);
  assert.is(rb.records.length, 42);
  assert.equal(rb.origins, [[origin, 42]]);
});

test('commitNow leaves a commit that brings a checkpoint due to commit, which writes it', async () => {
  const dir = join(await makeTmp('imz-state-'), 's');
  const s = await ServerState.open(dir);
  try {
    let n = 0;
    // 5,000 records make a checkpoint due on a small table.
    for (; n < 4990; n++) assert.ok(s.commitNow([create(`c/${n}`, n + 1)]));
    const big = Array.from({ length: 20 }, (_, i) => create(`c/${n + i}`, n + i + 1));
    assert.is(s.commitNow(big), undefined, 'a checkpoint falls due: not done here');
    const before = statSync(join(dir, 'table'), { throwIfNoEntry: false })?.mtimeMs;
    await s.commit(big, { durable: false });
    assert.ok(statSync(join(dir, 'table')).mtimeMs !== before, 'the checkpoint written');
    await s.flush();
  } finally {
    await s.close();
  }
  const back = await readBack(dir);
  assert.is(back.table.length, 5010);
  assert.is(back.records.length, 5010);
});

test('commitNow mixed at random with commits (durable or not, awaited or not): every change journalled once, numbered in call order; idle again at the end (review)', async () => {
  const dir = join(await makeTmp('imz-state-'), 's');
  const s = await ServerState.open(dir);
  const order: string[] = [];
  const pending: Promise<unknown>[] = [];
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  let n = 0;
  try {
    for (let i = 0; i < 4000; i++) {
      const ch = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => create(`p/${n % 700}`, ++n));
      order.push(...ch.map((c) => `${c.path}#${c.originSeq}`));
      const k = rand();
      if (k < 0.5) {
        if (!s.commitNow(ch)) pending.push(s.commit(ch, { durable: false }));
      } else if (k < 0.7) pending.push(s.commit(ch, { durable: false }));
      else if (k < 0.75) pending.push(s.commit(ch));
      else if (k < 0.85) await s.commit(ch, { durable: false });
      else if (!s.commitNow(ch)) await s.commit(ch, { durable: false });
      if (rand() < 0.01) await new Promise((r) => setTimeout(r, 0));
      if (rand() < 0.005) await s.flush();
    }
    await Promise.all(pending);
    await s.flush();
    await new Promise((r) => setTimeout(r, 0));
    const last = s.commitNow([create('p/last', ++n)]);
    assert.ok(last, 'nothing under way: commitNow takes it');
    order.push(`p/last#${n}`);
    await s.flush();
  } finally {
    await s.close();
  }
  const back = await readBack(dir);
  assert.equal(back.records.map((r) => `${r.path}#${r.originSeq}@${r.seq}`), order.map((o, i) => `${o}@${i + 1}`));
});


test('the version table says whether anything lies under a directory, through sets, deletes and clears before and after the first question', () => {
  const t = new VersionTable();
  const f: TableEntry = { type: EntryType.FILE, size: 1, mode: 0o644, mtimeMs: 1.7e12, hash: '', target: '', version: 1, ino: 0 };
  const d: TableEntry = { ...f, type: EntryType.DIR };
  t.set('a', d);
  t.set('a/b', d);
  t.set('a/b/c.txt', f);
  t.set('ab', f); // a sibling whose name starts like a: not under a
  t.set('ab/x', f);
  assert.ok(t.holdsUnder('a'));
  assert.ok(t.holdsUnder('a/b'));
  assert.not.ok(t.holdsUnder('a/b/c.txt'));
  assert.not.ok(t.holdsUnder('nothing'));
  t.set('a/b/c.txt', { ...f, version: 2 }); // set again: still one path
  t.delete('a/b/c.txt');
  assert.not.ok(t.holdsUnder('a/b'), 'its only path deleted');
  assert.ok(t.holdsUnder('a'), 'a/b is still there');
  t.delete('a/b');
  t.delete('a/b'); // deleted twice: counted once
  assert.not.ok(t.holdsUnder('a'));
  t.set('a/n/m/deep', f); // no rows for a/n or a/n/m: what is deep counts all the same
  assert.ok(t.holdsUnder('a') && t.holdsUnder('a/n') && t.holdsUnder('a/n/m'));
  assert.ok(t.holdsUnder('ab'));
  t.clear();
  assert.not.ok(t.holdsUnder('a') || t.holdsUnder('ab'));
  t.set('q/r', f);
  assert.ok(t.holdsUnder('q'), 'counted again after a clear');
  // Against a scan of every path, through random changes.
  let x = 7;
  const rnd = (n: number) => (x = (x * 1103515245 + 12345) >>> 0) % n;
  const names = ['a', 'b', 'a/b', 'a/c', 'b/a', 'a/b/c', 'a/b/d', 'a/c/e', 'b/a/f', 'ab', 'ab/c'];
  for (let i = 0; i < 2000; i++) {
    const p = names[rnd(names.length)]!;
    if (rnd(3) === 0) t.delete(p);
    else t.set(p, f);
    if (rnd(50) === 0) t.clear();
    for (const dir of names) assert.is(t.holdsUnder(dir), [...t.keys()].some((k) => k.startsWith(`${dir}/`)), `step ${i}: ${dir}`);
  }
});

// V8's %HaveSameMap, where the runtime lets a test turn natives syntax on (node does; elsewhere the check is skipped).
function _sameShape(): ((a: object, b: object) => boolean) | undefined {
  try {
    setFlagsFromString('--allow-natives-syntax');
    return new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;
  } catch {
    return undefined;
  }
}

test('table entries made by commits share one hidden class, whatever the states they were made of carry (a spread plus a key gave each its own)', async () => {
  const dir = join(await makeTmp('imz-state-'), 's');
  const s = await ServerState.open(dir);
  try {
    // States as the scanner makes them: a table entry spread with new facts (it keeps its version key).
    for (let n = 1; n <= 300; n++) {
      const c = create(`d/f${n}`, n);
      const state = n % 2 === 0 ? { ...c.state!, version: 7, mode: 0o600 } : c.state;
      await s.commit([{ ...c, state }], { durable: false });
    }
    const entries = [...s.table.values()];
    assert.is(entries.length, 300);
    for (const e of entries) assert.equal(Object.keys(e), ['type', 'size', 'mode', 'mtimeMs', 'hash', 'target', 'version', 'ino']);
    const same = _sameShape();
    if (same) {
      const apart = entries.filter((e) => !same(e, entries[entries.length - 1]!)).length;
      assert.is(apart, 0, `${apart} of 300 entries have a hidden class of their own`);
    }
  } finally {
    await s.close();
  }
});

test('tableToEntry gives each entry its own hash bytes, across the slabs they are cut from', () => {
  const entries = [];
  // 5,000 hashes of 32 bytes: more than two 64 KiB slabs.
  for (let n = 0; n < 5000; n++) {
    const hash = Buffer.from(createHash('sha256').update(String(n)).digest()).toString('latin1');
    entries.push({ hash, e: tableToEntry(`f${n}`, { type: EntryType.FILE, size: n, mode: 0o644, mtimeMs: 1, hash, target: '', version: n + 1, ino: 0 }) });
  }
  for (const { hash, e } of entries) {
    assert.instance(e.hash, Uint8Array);
    assert.is(e.hash.length, 32);
    assert.is(Buffer.from(e.hash).toString('latin1'), hash);
  }
  const none = tableToEntry('d', { type: EntryType.DIR, size: 0, mode: 0o755, mtimeMs: 1, hash: '', target: '', version: 1, ino: 0 });
  assert.is(none.hash.length, 0);
});

test.run();
