// core/hash.ts against real files: hashFileKeeping gives the hash hashFile
// gives, and the bytes it hashed, unless the file grew past the size given.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hashBytes, hashFile, hashFileKeeping, toHex } from '../../core/hash.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

test.after(cleanupAll);

test('hashFileKeeping: the same hash as hashFile, with the bytes hashed; a file grown past the size is hashed whole, its bytes not kept', async () => {
  const dir = await makeTmp('imz-hash-');
  for (const size of [0, 1, 4095, 4096, 70_000, 1024 * 1024]) {
    const file = join(dir, `f${size}`);
    const bytes = Buffer.alloc(size, size % 251);
    writeFileSync(file, bytes);
    const r = hashFileKeeping(file, size);
    assert.is(toHex(r.hash), toHex(await hashFile(file)), `hash of ${size} bytes`);
    assert.ok(r.data?.equals(bytes), `bytes of ${size}`);
    // Grown since its size was read: the whole file is hashed, nothing kept.
    for (const was of size > 0 ? [size - 1, size >> 1] : []) {
      const grown = hashFileKeeping(file, was);
      assert.is(toHex(grown.hash), toHex(await hashFile(file)), `${size} bytes, grown from ${was}`);
      assert.is(grown.data, undefined);
    }
  }
  // Shrunk since: what is there is hashed and kept.
  const file = join(dir, 'shrunk');
  writeFileSync(file, 'short');
  const r = hashFileKeeping(file, 100);
  assert.is(r.data?.toString(), 'short');
  assert.is(toHex(r.hash), toHex(hashBytes(Buffer.from('short'))));
});

test.run();
