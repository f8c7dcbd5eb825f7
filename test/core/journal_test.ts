import { appendFile, mkdtemp, readdir, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Change, EntryType, type JournalRecord } from '../../protocol/messages.ts';
import { decodeSegment, encodeJournalRecords, segmentHeader } from '../../core/journal_model.ts';
import { JournalStore } from '../../core/journal_store.ts';

const dirs: string[] = [];
test.after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'imz-journal-'));
  dirs.push(d);
  return d;
}

function rec(seq: number, path = `f${seq}`): JournalRecord {
  return {
    seq, change: Change.CREATE, origin: '', originSeq: 0, timeMs: 1700000000000 + seq,
    entry: { path, type: EntryType.FILE, size: seq * 10, mode: 0o644, mtimeMs: 1700000000000, hash: new Uint8Array(32).fill(seq & 0xff), target: '', version: seq },
  };
}

function segment(records: JournalRecord[]): Uint8Array {
  const body = encodeJournalRecords(records);
  const out = new Uint8Array(8 + body.length);
  out.set(segmentHeader(), 0);
  out.set(body, 8);
  return out;
}

test('a segment decodes back to the same records', () => {
  const recs = [rec(1), rec(2), rec(3, 'dir/ü nicode')];
  const dec = decodeSegment(segment(recs));
  assert.is(dec.torn, false);
  assert.equal(dec.records.map((r) => r.seq), [1, 2, 3]);
  assert.is(dec.records[2]!.entry.path, 'dir/ü nicode');
  assert.equal([...dec.records[1]!.entry.hash], [...new Uint8Array(32).fill(2)]);
});

test('a torn tail is cut at every possible byte, keeping every whole record before it', () => {
  const seg = segment([rec(1), rec(2), rec(3)]);
  const full = decodeSegment(seg);
  const ends = [8];
  let off = 8;
  for (const r of [rec(1), rec(2), rec(3)]) {
    off += encodeJournalRecords([r]).length;
    ends.push(off);
  }
  for (let cut = 8; cut < seg.length; cut++) {
    const dec = decodeSegment(seg.subarray(0, cut));
    const whole = ends.filter((e) => e <= cut).length - 1;
    assert.is(dec.records.length, whole, `cut at ${cut}`);
    assert.is(dec.validEnd, ends[whole]);
    assert.is(dec.torn, cut !== ends[whole]);
  }
  assert.is(full.records.length, 3);
});

test('a flipped bit in a record stops decoding there (checksum)', () => {
  const seg = segment([rec(1), rec(2), rec(3)]);
  const firstLen = encodeJournalRecords([rec(1)]).length;
  seg[8 + firstLen + 12] ^= 0x40; // inside record 2's payload
  const dec = decodeSegment(seg);
  assert.equal(dec.records.map((r) => r.seq), [1]);
  assert.is(dec.torn, true);
});

test('a segment with a wrong magic is refused with IMZ_CORRUPT', () => {
  const seg = segment([rec(1)]);
  seg[0] = 0x58;
  try {
    decodeSegment(seg);
    assert.unreachable('decoded a bad header');
  } catch (err) {
    assert.is((err as { code: string }).code, 'IMZ_CORRUPT');
  }
});

test('records are served only once they are on disk (a crash cannot take back what a reader got)', async () => {
  const d = await tmp();
  const j = await JournalStore.open(d);
  await j.append([rec(1)]);
  const pending = j.append([rec(2), rec(3)]);
  assert.is(j.last, 3, 'numbers are handed out at once');
  assert.is(j.durableLast, 1);
  const early: number[] = [];
  for await (const b of j.readSince(0)) early.push(...b.map((r) => r.seq));
  assert.equal(early, [1], 'not yet durable: not served');
  await pending;
  assert.is(j.durableLast, 3);
  const late: number[] = [];
  for await (const b of j.readSince(0)) late.push(...b.map((r) => r.seq));
  assert.equal(late, [1, 2, 3]);
  await j.close();
});

test('record(seq) gives the record readSince gives, from recent records and from older segments (decoded once), and nothing outside the journal', async () => {
  const d = await tmp();
  const j = await JournalStore.open(d);
  // Long paths: ~250 bytes a record, so 60,000 records span four segments, most beyond the recent ones kept in memory.
  const long = 'p'.repeat(200);
  for (let s = 1; s <= 60_000; s += 1000) await j.append(Array.from({ length: 1000 }, (_, i) => rec(s + i, `${long}/${s + i}`)));
  await j.close();
  const k = await JournalStore.open(d);
  assert.ok((await readdir(join(d))).length >= 3, 'several segments');
  const all = new Map<number, JournalRecord>();
  for await (const b of k.readSince(0)) for (const r of b) all.set(r.seq, r);
  for (const seq of [1, 2, 999, 1000, 1001, 17_000, 33_333, 39_999, 40_000, 40_001, 59_999, 60_000, 5, 45_000, 3]) {
    assert.equal(await k.record(seq), all.get(seq), `record ${seq}`);
  }
  for (const seq of [0, -1, 60_001, 1.5, Number.NaN]) assert.is(await k.record(seq), undefined, `record ${seq}`);
});

test('the store appends durably, reopens, and reads since a cursor', async () => {
  const d = await tmp();
  const j = await JournalStore.open(d);
  assert.is(j.last, 0);
  await j.append([rec(1), rec(2)]);
  await Promise.all([j.append([rec(3)]), j.append([rec(4), rec(5)])]); // group commit
  await j.close();
  const k = await JournalStore.open(d);
  assert.is(k.first, 1);
  assert.is(k.last, 5);
  const got: number[] = [];
  for await (const b of k.readSince(2)) got.push(...b.map((r) => r.seq));
  assert.equal(got, [3, 4, 5]);
  const none: number[] = [];
  for await (const b of k.readSince(5)) none.push(...b.map((r) => r.seq));
  assert.equal(none, []);
  await k.close();
});

test('deferred appends are written at the next flush, in one write, and only then served', async () => {
  const d = await tmp();
  const j = await JournalStore.open(d);
  await j.append([rec(1)]);
  const [seg] = (await readdir(d)).filter((n) => n.endsWith('.seg'));
  const size = (await stat(join(d, seg!))).size;
  let done = 0;
  const deferred = [2, 3, 4].map((s) => j.append([rec(s)], { deferred: true }).then(() => { done++; }));
  await new Promise((r) => setTimeout(r, 50));
  assert.is(j.last, 4, 'numbers are handed out at once');
  assert.is(done, 0, 'not resolved before a flush');
  assert.is(j.durableLast, 1);
  assert.is((await stat(join(d, seg!))).size, size, 'nothing written yet');
  await j.flush();
  await Promise.all(deferred);
  assert.is(done, 3);
  assert.is(j.durableLast, 4);
  await j.close();
  const k = await JournalStore.open(d);
  const got: number[] = [];
  for await (const b of k.readSince(0)) got.push(...b.map((r) => r.seq));
  assert.equal(got, [1, 2, 3, 4], 'durable once flushed');
  await k.close();
});

test('deferred appends are written without a flush once many wait, and by close', async () => {
  const d = await tmp();
  const j = await JournalStore.open(d);
  const many = Array.from({ length: 5000 }, (_, i) => rec(i + 1));
  const all = Promise.all(many.map((r) => j.append([r], { deferred: true })));
  await all; // bounded: written with no flush asked for
  assert.is(j.durableLast, 5000);
  const last = j.append([rec(5001)], { deferred: true });
  await j.close();
  await last;
  const k = await JournalStore.open(d);
  assert.is(k.last, 5001, 'close writes what waits');
  await k.close();
});

test('the store cuts a torn tail on open and keeps appending after it', async () => {
  const d = await tmp();
  const j = await JournalStore.open(d);
  await j.append([rec(1), rec(2), rec(3)]);
  await j.close();
  const [seg] = (await readdir(d)).filter((n) => n.endsWith('.seg'));
  const file = join(d, seg!);
  const size = (await stat(file)).size;
  await truncate(file, size - 5); // a crash in the middle of record 3
  await appendFile(file, new Uint8Array([1, 2])); // and some garbage
  const k = await JournalStore.open(d);
  assert.ok(k.tornBytes > 0);
  assert.is(k.last, 2);
  await k.append([rec(3, 'again')]);
  await k.close();
  const m = await JournalStore.open(d);
  const got: string[] = [];
  for await (const b of m.readSince(0)) got.push(...b.map((r) => r.entry.path));
  assert.equal(got, ['f1', 'f2', 'again']);
  assert.is(m.tornBytes, 0);
  await m.close();
});

test.run();
