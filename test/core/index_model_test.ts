import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BUCKETS, type IndexEntry, appendedBucket, bucketCount, bucketOf, bucketText, decodeBucket, encodeBucket, encodeRows, replaceRow, rowOf, rowsOfBucketText } from '../../core/index_model.ts';

const e = (v: number): IndexEntry => ({ type: 1 as const, version: v, hash: 'ab'.repeat(32), size: v, mode: 0o644, mtimeMs: 1.7e12 + v, ctimeMs: 1.7e12 + 0.5, ino: 1234 + v, target: '' });

test('a bucket round-trips', () => {
  const m = new Map([['a', e(1)], ['dir/ü "quoted"\\', e(2)], ['link', { ...e(3), type: 3 as const, target: '../x', hash: '' }]]);
  assert.equal(decodeBucket(encodeBucket(m), 'b'), m);
});

test('a truncated or foreign bucket is IMZ_CORRUPT, never half-read', () => {
  const text = encodeBucket(new Map([['a', e(1)], ['b', e(2)]]));
  const cut = text.slice(0, text.length - 20);
  for (const bad of [cut, 'hello\n', text.replace('imz-index 1', 'imz-index 9'), text.replace('"b"', '"b'), text.replace(' 2\n', ' 3\n')]) {
    try {
      decodeBucket(bad, 'x');
      assert.unreachable(`decoded ${JSON.stringify(bad).slice(0, 40)}`);
    } catch (err) {
      assert.is((err as { code: string }).code, 'IMZ_CORRUPT');
    }
  }
});

test('bucketCount reads the count of a header this imz reads, and nothing else', () => {
  const text = encodeBucket(new Map([['a', e(1)], ['b', e(2)]]));
  assert.is(bucketCount(text), 2);
  assert.is(bucketCount(encodeBucket(new Map())), 0);
  for (const bad of ['hello\n', text.replace('imz-index 1', 'imz-index 9'), text.replace(' 2\n', ' x\n'), 'imz-index 1 2']) assert.is(bucketCount(bad), undefined, JSON.stringify(bad).slice(0, 30));
});

test('bucketCount reads a header from bytes as from text', () => {
  const text = encodeBucket(new Map([['ü/ñ', e(1)], ['b', e(2)]]));
  assert.is(bucketCount(new TextEncoder().encode(text)), 2);
  assert.is(bucketCount(new TextEncoder().encode('imz-index 9 2\n[]\n')), undefined);
  assert.is(bucketCount(new Uint8Array(0)), undefined);
});

test('appendedBucket gives the bytes of the text with the rows appended, the old rows copied as they are', () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  const dec = (b: Uint8Array) => new TextDecoder().decode(b);
  const old = encodeBucket(new Map([['ü/ñ "q"', e(1)], ['😀/], [x', e(2)], ['link', { ...e(3), type: 3 as const, target: '→]\\', hash: '' }]]));
  const added = encodeRows([['new/é', e(4)], ['z]', e(5)]]);
  for (const [file, count, add] of [[old, 5, added], [old, 3, ''], [encodeBucket(new Map()), 2, added], [undefined, 2, added], [undefined, 0, '']] as const) {
    const rows = file === undefined ? '' : rowsOfBucketText(file);
    const want = bucketText(count, rows === '' ? add : add === '' ? rows : `${rows},${add}`);
    assert.is(dec(appendedBucket(file === undefined ? undefined : enc(file), count, add)), want, `${JSON.stringify(file)?.slice(0, 30)} + ${add.length}`);
  }
  const m = decodeBucket(dec(appendedBucket(enc(old), 5, added)), 'b');
  assert.equal([...m.keys()], ['ü/ñ "q"', '😀/], [x', 'link', 'new/é', 'z]']);
});

test('paths spread over the buckets', () => {
  const counts = new Array(BUCKETS).fill(0);
  for (let i = 0; i < 25600; i++) counts[bucketOf(`dir${i % 97}/file${i}.txt`)]++;
  assert.ok(Math.min(...counts) > 40, `min ${Math.min(...counts)}`);
  assert.ok(Math.max(...counts) < 180, `max ${Math.max(...counts)}`);
});

test('replaceRow replaces exactly the row of its path, whatever the names and targets hold', () => {
  const names = ['a', 'a"b', '],["a",', 'x\\"],["a",1]', 'dir/ü "quoted"\\', '[', 'z'];
  const m = new Map<string, IndexEntry>(names.map((p, i) => [p, { ...e(i), type: i % 2 ? 3 as const : 1 as const, target: i % 2 ? `"],["${names[i + 1] ?? 'a'}",` : '' }]));
  for (const p of names) {
    const next = new Map(m);
    next.set(p, e(777));
    assert.is(replaceRow(encodeRows(m), p, encodeRows([[p, e(777)]])), encodeRows(next), p);
  }
  assert.is(replaceRow(encodeRows(m), 'b', encodeRows([['b', e(1)]])), undefined);
  assert.is(replaceRow('', 'a', encodeRows([['a', e(1)]])), undefined);
});

test('rowOf finds exactly the entry of its path, whatever the names and targets hold, and calls a damaged row IMZ_CORRUPT', () => {
  const names = ['a', 'a"b', '],["a",', 'x\\"],["a",1]', 'dir/ü "quoted"\\', '[', 'z', 'a/b'];
  const m = new Map<string, IndexEntry>(names.map((p, i) => [p, { ...e(i), type: i % 2 ? 3 as const : 1 as const, target: i % 2 ? `"],["${names[i + 1] ?? 'a'}",` : '' }]));
  m.set('remote', { ...e(9), remote: true });
  m.set('fetched', { ...e(10), fetchedMs: 1.7e12 });
  const rows = encodeRows(m);
  for (const [p, want] of m) assert.equal(rowOf(rows, p, 'b'), want, p);
  assert.is(rowOf(rows, 'b', 'b'), undefined);
  assert.is(rowOf(rows, 'a/', 'b'), undefined);
  assert.is(rowOf('', 'a', 'b'), undefined);
  for (const bad of [rows.replace('["z",1,', '["z","1",'), rows.replace(/\["z",[^\]]*\]/, '["z",1,2]')]) {
    try {
      rowOf(bad, 'z', 'index/7a');
      assert.unreachable('a damaged row was read');
    } catch (err) {
      assert.is((err as { code?: string }).code, 'IMZ_CORRUPT');
      assert.match((err as Error).message, 'index/7a');
    }
  }
});

test('rowOf and replaceRow never take text inside another row for a row: random names and link targets made of the rows\' own syntax (review: a target ending in "],[" before a path beginning with ",")', () => {
  let x = 20261127;
  const rnd = (n: number) => {
    x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return ((x ^ (x >>> 13)) >>> 0) % n;
  };
  const alphabet = ['[', ']', ',', '"', '\\', 'x', '],[', '],["', '",'];
  const word = () => Array.from({ length: 1 + rnd(5) }, () => alphabet[rnd(alphabet.length)]).join('');
  for (let round = 0; round < 400; round++) {
    const m = new Map<string, IndexEntry>();
    for (let i = 0; i < 2 + rnd(6); i++) {
      const link = rnd(2) === 0;
      m.set(word(), { ...e(i), type: link ? 3 as const : 1 as const, target: link ? word() : '' });
    }
    const rows = encodeRows(m);
    for (const [p, want] of m) {
      assert.equal(rowOf(rows, p, 'b'), want, `round ${round}: ${JSON.stringify(p)} in ${rows}`);
      const next = new Map(m);
      next.set(p, e(777));
      assert.is(replaceRow(rows, p, encodeRows([[p, e(777)]])), encodeRows(next), `round ${round}: ${JSON.stringify(p)}`);
    }
    const absent = word();
    if (!m.has(absent)) {
      assert.is(rowOf(rows, absent, 'b'), undefined, `round ${round}: ${JSON.stringify(absent)} is no row`);
      assert.is(replaceRow(rows, absent, encodeRows([[absent, e(1)]])), undefined);
    }
  }
  const seen = encodeRows([['link', { ...e(1), type: 3 as const, target: 'to],[' }], [',x', e(2)], ['],[', e(3)]]);
  assert.equal(rowOf(seen, '],[', 'b'), e(3));
});

test('a bucket that only gained entries is written by appending rows: the same bytes as encoding it whole', async () => {
  const { Replica } = await import('../../core/replica.ts');
  const { makeTmp, cleanupAll } = await import('../helpers.ts');
  const { readFileSync } = await import('node:fs');
  try {
    const dir = await makeTmp('imz-index-append-');
    const r = await Replica.init(dir, '127.0.0.1:1', 'full');
    for (let i = 0; i < 600; i++) await r.set(`d/f${i}`, e(i));
    await r.flushIndex();
    // A fresh open reads the buckets' texts; then only additions (one of them a path with "]," in it), then one change.
    const r2 = await Replica.open(dir);
    for (let i = 600; i < 1200; i++) await r2.set(i === 700 ? 'odd],[name"' : `d/f${i}`, e(i));
    await r2.flushIndex();
    await r2.set('d/f5', e(99999)); // a changed row: replaced in the bucket's text
    await r2.set('d/f1300', e(1300));
    await r2.set('d/f1300', e(1301)); // an added row set again: encoded from the entry
    await r2.set('odd],[name"', e(701));
    // Past the replacements a bucket takes, it is encoded whole.
    const crowded = [...Array(1200).keys()].map((i) => `d/f${i}`).filter((p) => bucketOf(p) === bucketOf('d/f7'));
    for (let k = 0; k < 40; k++) await r2.set(crowded[k % crowded.length]!, e(5000 + k));
    await r2.flushIndex();
    const r3 = await Replica.open(dir);
    for (let b = 0; b < BUCKETS; b++) {
      const file = r3.bucketFile(b);
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch {
        continue;
      }
      assert.is(text, encodeBucket(decodeBucket(text, file)), `bucket ${b}`);
    }
    const all = await r3.all();
    assert.is(all.size, 1201);
    assert.equal(all.get('odd],[name"'), e(701));
    assert.equal(all.get('d/f5'), e(99999));
    assert.equal(all.get('d/f1300'), e(1301));
    for (let k = 40 - crowded.length; k < 40; k++) assert.equal(all.get(crowded[k % crowded.length]!), e(5000 + k));
  } finally {
    await cleanupAll();
  }
});

test.run();
