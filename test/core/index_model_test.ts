import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BUCKETS, type IndexEntry, bucketOf, decodeBucket, encodeBucket } from '../../core/index_model.ts';

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

test('paths spread over the buckets', () => {
  const counts = new Array(BUCKETS).fill(0);
  for (let i = 0; i < 25600; i++) counts[bucketOf(`dir${i % 97}/file${i}.txt`)]++;
  assert.ok(Math.min(...counts) > 40, `min ${Math.min(...counts)}`);
  assert.ok(Math.max(...counts) < 180, `max ${Math.max(...counts)}`);
});

test.run();
