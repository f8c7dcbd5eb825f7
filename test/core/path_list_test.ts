import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PathList, RUN } from '../../core/path_list.ts';

const sorted = (xs: string[]) => [...xs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

test('paths round-trip through bytes and end offsets, in runs and one by one', () => {
  const paths = sorted(['a', 'a/b', 'a/b/c.txt', 'dir with space/ü', 'z', '😀/x', 'ünï/ñew', 'é'.repeat(40)]);
  const l = PathList.fromStrings(paths);
  assert.is(l.length, paths.length);
  assert.ok(l.valid());
  assert.equal(l.toArray(), paths);
  assert.equal([...l], paths);
  for (let i = 0; i < paths.length; i++) assert.is(l.at(i), paths[i]);
  for (let from = 0; from <= paths.length; from++) {
    for (let to = from; to <= paths.length; to++) assert.equal(l.slice(from, to), paths.slice(from, to), `slice ${from}..${to}`);
  }
});

test('indexOf finds every path and nothing else, across runs', () => {
  const paths = sorted(Array.from({ length: RUN * 3 + 17 }, (_, i) => `d${i % 7}/f${String(i).padStart(5, '0')}.txt`));
  const l = PathList.fromStrings(paths);
  for (let i = 0; i < paths.length; i += 13) assert.is(l.indexOf(paths[i]!), i);
  assert.is(l.indexOf(paths[paths.length - 1]!), paths.length - 1);
  assert.is(l.indexOf(paths[0]!), 0);
  for (const missing of ['', 'd0', 'd0/f', 'd9/x', 'zzz', 'd0/f00000.txt ']) assert.is(l.indexOf(missing), -1, missing);
  assert.ok(l.includes(paths[RUN]!) && !l.includes('nope'));
});

test('indexOf finds every path at every run edge, whichever runs are decoded already, non-ASCII included', () => {
  const names = ['a', 'é', 'z', '😀', 'ünï'];
  const paths = sorted(Array.from({ length: RUN * 4 + 3 }, (_, i) => `${names[i % names.length]}/${String(i).padStart(5, '0')}`));
  for (const warm of [[], [1], [0, 2, 4], [3]]) {
    const l = PathList.fromStrings(paths);
    for (const r of warm) l.at(r * RUN); // that run decoded and kept
    for (let r = 0; r <= 4; r++) {
      for (const i of [r * RUN - 1, r * RUN, r * RUN + 1]) {
        if (i >= 0 && i < paths.length) assert.is(l.indexOf(paths[i]!), i, `${paths[i]} with runs ${warm} decoded`);
      }
    }
    for (let i = 0; i < paths.length; i += 97) assert.is(l.indexOf(paths[i]!), i);
    // Names between two stored ones, before the first and after the last.
    for (const p of [`${paths[RUN]!}0`, `${paths[RUN * 2 - 1]!}~`, '', '\u0000', '\u{10ffff}']) assert.is(l.indexOf(p), -1, JSON.stringify(p));
  }
});

test('an empty list, and a single path', () => {
  const e = PathList.fromStrings([]);
  assert.is(e.length, 0);
  assert.ok(e.valid());
  assert.equal(e.toArray(), []);
  assert.is(e.indexOf('a'), -1);
  const one = PathList.fromStrings(['only']);
  assert.equal(one.slice(0, 1), ['only']);
  assert.is(one.indexOf('only'), 0);
});

test('valid() refuses end offsets that do not describe the bytes', () => {
  const l = PathList.fromStrings(['a', 'bb', 'ccc']);
  const bad = (ends: number[], bytes = l.bytes) => new PathList(bytes, Uint32Array.from(ends)).valid();
  assert.not.ok(bad([1, 4, 7]), 'past the end');
  assert.not.ok(bad([1, 4, 6]), 'short of the end');
  assert.not.ok(bad([1, 3, 8]), 'an end not followed by NUL');
  assert.not.ok(bad([0, 4, 8]), 'an empty path');
  assert.not.ok(bad([4, 1, 8]), 'falling');
  assert.not.ok(new PathList(new Uint8Array(3), new Uint32Array(0)).valid(), 'bytes with no paths');
  assert.ok(bad([1, 4, 8]));
});

test('the bytes sit in shared memory where the runtime has it (a pass worker reads them in place)', () => {
  const l = PathList.fromStrings(['a', 'b']);
  if (typeof SharedArrayBuffer === 'function') {
    assert.ok(l.bytes.buffer instanceof SharedArrayBuffer);
    assert.ok(l.ends.buffer instanceof SharedArrayBuffer);
  }
});

test('lowerBound is where a linear search puts any path, and merged inserts paths exactly as encoding the union would', () => {
  const names = ['a', 'é', 'z', '😀', 'ünï', 'b c'];
  const all = sorted([...new Set(Array.from({ length: RUN * 3 + 40 }, (_, i) => `${names[(i * 7) % names.length]}/${String((i * 37) % 5000).padStart(4, '0')}`))]);
  // Every third path is "old", the rest added: runs of one, many, at the start and the end.
  for (const keep of [(i: number) => i % 3 === 0, (i: number) => i >= 10, (i: number) => i < all.length - 25, () => false, () => true, (i: number) => i % 500 < 480]) {
    const oldPaths = all.filter((_, i) => keep(i));
    const added = all.filter((_, i) => !keep(i));
    const l = PathList.fromStrings(oldPaths);
    const linear = (p: string) => {
      let i = 0;
      while (i < oldPaths.length && oldPaths[i]! < p) i++;
      return i;
    };
    for (const p of [...added.filter((_, i) => i % 17 === 0), '', 'zzz', '0', oldPaths[0] ?? 'x']) assert.is(l.lowerBound(p), linear(p), p);
    const at = added.map((p) => l.lowerBound(p));
    const m = l.merged(at, added);
    const want = PathList.fromStrings(all);
    assert.ok(m.valid());
    assert.equal(m.toArray(), all);
    assert.equal(Array.from(m.ends), Array.from(want.ends));
    assert.equal(Array.from(m.bytes), Array.from(want.bytes));
  }
});

test('edited drops rows and inserts paths exactly as encoding the result would, a dropped row replaced by its own path too', () => {
  const names = ['a', 'é', 'z', '😀', 'ünï', 'b c'];
  const all = sorted([...new Set(Array.from({ length: RUN * 3 + 40 }, (_, i) => `${names[(i * 7) % names.length]}/${String((i * 37) % 5000).padStart(4, '0')}`))]);
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let round = 0; round < 30; round++) {
    const pOld = [0.9, 0.5, 0.1, 1, 0][round % 5]!;
    const oldPaths = all.filter(() => rand() < pOld);
    const oldSet = new Set(oldPaths);
    const pDrop = [0, 0.02, 0.5, 1][round % 4]!;
    const dropped = oldPaths.map((_, i) => i).filter(() => rand() < pDrop);
    const droppedSet = new Set(dropped.map((i) => oldPaths[i]!));
    // Added: paths not in the old list, and some dropped ones again (a changed row).
    const added = all.filter((p) => (!oldSet.has(p) && rand() < 0.3) || (droppedSet.has(p) && rand() < 0.3));
    const l = PathList.fromStrings(oldPaths);
    const at = added.map((p) => l.lowerBound(p));
    const e = l.edited(at, added, dropped);
    const want = sorted([...oldPaths.filter((p) => !droppedSet.has(p)), ...added]);
    assert.ok(e.valid(), `round ${round}`);
    assert.equal(e.toArray(), want, `round ${round}`);
    assert.equal(Array.from(e.bytes), Array.from(PathList.fromStrings(want).bytes));
  }
});

test.run();
