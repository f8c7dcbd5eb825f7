// PathList.indexOf (runs searched by their first path, then one run) against a brute-force
// model, with random Unicode paths sorted in JS string order, some runs decoded already.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { PathList, RUN } from '../../core/path_list.ts';

const order = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
// Well-formed strings only (TextEncoder would replace a lone surrogate), no NUL (the separator), not empty.
const pathArb = fc.string({ unit: fc.oneof(fc.constantFrom('a', 'b', '/', 'é', '😀', '\uFFFD', '\u{10FFFF}', 'Z', '~', ' '), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 })), minLength: 1, maxLength: 6 })
  .filter((s) => !s.includes('\0') && !/[\uD800-\uDFFF]/.test(s.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, '')));

test('indexOf agrees with a model: random Unicode paths, sizes across run edges, random runs decoded first', () => {
  fc.assert(fc.property(
    fc.uniqueArray(pathArb, { minLength: 0, maxLength: RUN * 3 + 5 }),
    fc.integer({ min: 0, max: RUN * 3 + 5 }),
    fc.array(fc.nat(), { maxLength: 4 }),
    fc.array(pathArb, { maxLength: 30 }),
    (raw, padTo, warm, probes) => {
      // Pad with generated names so the list spans several runs.
      const set = new Set(raw);
      for (let i = 0; set.size < padTo; i++) set.add(`p${i.toString(36)}`);
      const paths = [...set].sort(order);
      const l = PathList.fromStrings(paths);
      if (paths.length > 0) for (const w of warm) l.at(w % paths.length);
      const where = new Map(paths.map((p, i) => [p, i]));
      const idx = [0, paths.length - 1, ...Array.from({ length: 40 }, (_, k) => Math.floor((k * paths.length) / 40))];
      for (let r = 0; r * RUN < paths.length; r++) idx.push(r * RUN, r * RUN - 1, r * RUN + 1);
      for (const i of idx) if (i >= 0 && i < paths.length) assert.is(l.indexOf(paths[i]!), i, JSON.stringify(paths[i]));
      for (const p of [...probes, '', '\u{10FFFF}\u{10FFFF}', ...paths.slice(0, 5).map((p) => `${p}\u0001`)]) {
        assert.is(l.indexOf(p), where.get(p) ?? -1, JSON.stringify(p));
      }
    },
  ), { numRuns: 150 });
});

test('indexOf on runs whose first paths are astral vs BMP-high (UTF-16 order differs from code point order)', () => {
  // '\uFFFD' > '😀' in UTF-16 units, < in code points: the list is in JS order, so the search must use it.
  const names: string[] = [];
  for (let i = 0; i < RUN * 2 + 10; i++) names.push(`${i % 2 ? '\uFFFD' : '😀'}${String(i).padStart(6, '0')}`);
  names.push('a', 'z', '\u{10FFFF}');
  const paths = names.sort(order);
  for (const warm of [[], [0], [1], [2], [0, 1, 2]]) {
    const l = PathList.fromStrings(paths);
    for (const r of warm) if (r * RUN < paths.length) l.at(r * RUN);
    for (let i = 0; i < paths.length; i++) assert.is(l.indexOf(paths[i]!), i, JSON.stringify(paths[i]));
  }
});

test.run();
