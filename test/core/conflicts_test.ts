// core/conflicts.ts: the names conflict copies and kept versions get are
// names a file system takes, however long the original (cut at a
// character's edge, the same every time), and freeName never reuses one.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { conflictCopyName, freeName, keepName } from '../../core/conflicts.ts';
import { MAX_NAME_BYTES, pathProblem } from '../../core/paths.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

test.after(cleanupAll);

const last = (p: string) => p.slice(p.lastIndexOf('/') + 1);
const id = '0f88c04a-1111-2222-3333-444455556666';

test('short names keep their stem and extension around the tag', () => {
  assert.is(conflictCopyName('d/f.txt', id, 3), 'd/f.imz-conflict-0f88c04a-3.txt');
  assert.is(keepName('f', id, 0), 'f.imz-keep-0f88c04a-0');
});

test('long names (ASCII, multi-byte, a long extension) are cut to fit, at a character\'s edge, deterministically', () => {
  const names = ['n'.repeat(240) + '.txt', 'é'.repeat(126) + '.md', 'x.' + 'e'.repeat(200), 'd/' + '日本'.repeat(42), '😀'.repeat(63)];
  for (const n of names) {
    for (const made of [conflictCopyName(n, id, 123456), keepName(n, id, 7)]) {
      assert.ok(Buffer.byteLength(last(made)) <= MAX_NAME_BYTES, `${made.length} chars`);
      assert.is(pathProblem(made), undefined, made);
      assert.ok(!made.includes('\ufffd'), 'no character cut in two');
      assert.ok(made.includes('.imz-'), 'still tagged');
    }
    assert.is(conflictCopyName(n, id, 9), conflictCopyName(n, id, 9));
  }
  assert.ok(conflictCopyName('n'.repeat(240) + '.txt', id, 1).endsWith('.txt'), 'a short extension is kept');
});

test('freeName of a long name: the next free one fits too', async () => {
  const root = await makeTmp('imz-conflicts-');
  const name = conflictCopyName('n'.repeat(250) + '.txt', id, 2);
  await writeFile(join(root, name), 'first');
  const next = freeName(root, name);
  assert.is.not(next, name);
  assert.ok(Buffer.byteLength(next) <= MAX_NAME_BYTES);
  await writeFile(join(root, next), 'second');
  assert.ok(![name, next].includes(freeName(root, name)));
});

test.run();
