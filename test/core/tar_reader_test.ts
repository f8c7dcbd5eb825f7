import { createHash } from 'node:crypto';
import { pack as tarPack } from 'tar-stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TarReader } from '../../core/tar_reader.ts';

async function makeTar(files: { name: string; data: Uint8Array }[]): Promise<Uint8Array> {
  const p = tarPack();
  for (const f of files) p.entry({ name: f.name, size: f.data.length, mode: 0o644 }, Buffer.from(f.data));
  p.finalize();
  const parts: Buffer[] = [];
  for await (const c of p as AsyncIterable<Buffer>) parts.push(c);
  return new Uint8Array(Buffer.concat(parts));
}

function read(tar: Uint8Array, splits: number[]): Map<string, string> {
  const got = new Map<string, string>();
  const r = new TarReader((h) => {
    const hash = createHash('sha256');
    return { write: (b) => hash.update(b), end: () => got.set(h.name, hash.digest('hex')) };
  });
  let prev = 0;
  for (const s of [...splits, tar.length]) {
    r.push(tar.subarray(prev, s));
    prev = s;
  }
  assert.ok(r.ended, 'end of archive seen');
  return got;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('reads members split at every byte, with long and non-ASCII names (pax)', async () => {
  const files = [
    { name: 'a.txt', data: new TextEncoder().encode('hello') },
    { name: 'empty', data: new Uint8Array(0) },
    { name: `${'deep/'.repeat(30)}long-name.bin`, data: new Uint8Array(1500).map((_, i) => i & 0xff) },
    { name: 'naïve – ü/日本.txt', data: new TextEncoder().encode('unicode') },
  ];
  const tar = await makeTar(files);
  const want = new Map(files.map((f) => [f.name, sha(f.data)]));
  assert.equal(read(tar, []), want);
  for (let cut = 1; cut < tar.length; cut += 7) assert.equal(read(tar, [cut]), want, `split at ${cut}`);
  const bytes: number[] = [];
  for (let i = 1; i < tar.length; i++) bytes.push(i);
  assert.equal(read(tar, bytes), want, 'one byte at a time');
});

test('a damaged header is IMZ_PROTOCOL, not garbage files', async () => {
  const tar = await makeTar([{ name: 'a', data: new Uint8Array(10) }]);
  tar[130] ^= 0x01; // inside the size field: the checksum no longer matches
  const r = new TarReader(() => null);
  try {
    r.push(tar);
    assert.unreachable('accepted a bad header');
  } catch (err) {
    assert.is((err as { code: string }).code, 'IMZ_PROTOCOL');
  }
});

test('members the caller does not want are skipped', async () => {
  const tar = await makeTar([{ name: 'skip', data: new Uint8Array(700) }, { name: 'keep', data: new Uint8Array([1, 2, 3]) }]);
  const seen: string[] = [];
  const r = new TarReader((h) => (h.name === 'keep' ? { write: () => seen.push('data'), end: () => seen.push('end') } : null));
  r.push(tar);
  assert.equal(seen, ['data', 'end']);
});

test.run();
