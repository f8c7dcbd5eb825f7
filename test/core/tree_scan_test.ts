// core/tree_scan.ts's utimeSeconds against a real file: a time set through it
// reads back in the same whole millisecond and the same instant as sameMtime
// sees it, whatever the fraction (the kernel's coarse clock gives every file
// of a tick the same fraction, so one bad fraction hits a whole tree).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lstatSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sameMtime, utimeSeconds } from '../../core/tree_scan.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

test.after(cleanupAll);

test('utimeSeconds: the time read back is in the same millisecond and within a microsecond, at every fraction', async () => {
  const file = join(await makeTmp('imz-utime-'), 'f');
  writeFileSync(file, 'x');
  const bases = [1_764_215_805_458, 1_000_000_000_000, 86_400_000];
  const fractions = [0, 0.0001, 0.0004, 0.0005, 0.4999, 0.5, 0.9, 0.9994, 0.9995, 0.9996, 0.99999, 0.999999];
  for (const base of bases) {
    for (const f of fractions) {
      const ms = base + f;
      const s = utimeSeconds(ms);
      utimesSync(file, s, s);
      const back = lstatSync(file).mtimeMs;
      assert.is(Math.floor(back), Math.floor(ms), `millisecond of ${base}+${f}`);
      assert.ok(sameMtime(back, ms), `same instant for ${base}+${f}: ${back} vs ${ms}`);
    }
  }
});

test.run();
