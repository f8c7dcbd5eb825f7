// core/uploader.ts against a real server: contents the scan hashed are not
// hashed again when their lstat facts are unchanged, and a content that
// changed without its facts changing (a rewrite in the same clock tick) is
// caught by the server's check, sent alone, and never staged under a wrong hash.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { lstatSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Op } from '../../protocol/messages.ts';
import { fromHex } from '../../core/hash.ts';
import { Remote } from '../../core/remote.ts';
import { ImzServer } from '../../core/server.ts';
import { type BlobItem, Prestager, uploadBlobs } from '../../core/uploader.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

test.after(cleanupAll);

const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

test('a content whose bytes no longer match the scanned hash, with its stat unchanged, is refused alone; the rest of its batch is staged', async () => {
  const srv = await makeTmp('imz-upload-srv-');
  const rep = await makeTmp('imz-upload-rep-');
  const server = new ImzServer({ dir: srv, rescanMs: 0 });
  const { port } = await server.start();
  const remote = await Remote.connect(`127.0.0.1:${port}`);
  try {
    const items: BlobItem[] = [];
    for (let i = 0; i < 20; i++) {
      const file = join(rep, `f${i}.txt`);
      await writeFile(file, `content ${i}\n`);
      const st = lstatSync(file);
      items.push({ hash: sha(`content ${i}\n`), size: st.size, file, seen: { mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino } });
    }
    // f7's bytes are not what the scan hashed, though its stat facts are the ones recorded.
    items[7]!.hash = sha('content X\n');
    const sent = await uploadBlobs(remote, items);
    const held = (await remote.session.request(Op.PUT_BLOB, { putBlob: { hash: new Uint8Array(0), size: 0, offset: 0, data: new Uint8Array(0), last: false, query: items.map((b) => fromHex(b.hash)) } })).blobReply!.held;
    assert.equal((held ?? []).map((h, i) => (h ? i : -1)).filter((i) => i >= 0), [...Array(20).keys()].filter((i) => i !== 7), 'every content but the changed one is staged');
    assert.is(sent, items.filter((_, i) => i !== 7).reduce((n, it) => n + it.size, 0), 'bytes counted once');
  } finally {
    remote.close();
    await server.close();
  }
});

test('Prestager: contents offered while a scan goes on are staged, each once; what the server holds already is not sent', async () => {
  const srv = await makeTmp('imz-upload-srv-');
  const rep = await makeTmp('imz-upload-rep-');
  await writeFile(join(srv, 'there.txt'), 'already on the server\n');
  const server = new ImzServer({ dir: srv, rescanMs: 0 });
  const { port } = await server.start();
  const remote = await Remote.connect(`127.0.0.1:${port}`);
  try {
    const pre = new Prestager(remote);
    const texts = [...Array.from({ length: 700 }, (_, i) => `content ${i}\n`.repeat(1 + (i % 50))), 'already on the server\n', 'content 3\n'.repeat(4)];
    let want = 0;
    const seen = new Set<string>();
    for (const [i, t] of texts.entries()) {
      const data = Buffer.from(t);
      const item: BlobItem = { hash: sha(data), size: data.length, file: join(rep, `f${i}`) };
      if (!seen.has(item.hash) && t !== 'already on the server\n') want += data.length;
      seen.add(item.hash);
      await pre.offer(item, data);
    }
    await pre.finish();
    assert.is(pre.sent, want, 'each content the server lacked sent once');
    assert.is(pre.staged.size, seen.size - 1, 'every content the server lacked is staged');
    assert.equal([...pre.held], [sha('already on the server\n')], 'the one it had is said held');
    const hashes = [...pre.staged];
    const held = (await remote.session.request(Op.PUT_BLOB, { putBlob: { hash: new Uint8Array(0), size: 0, offset: 0, data: new Uint8Array(0), last: false, query: hashes.map(fromHex) } })).blobReply!.held;
    assert.ok(held?.every((h) => h === true), 'the server holds every content said staged');
  } finally {
    remote.close();
    await server.close();
  }
});

test.run();
