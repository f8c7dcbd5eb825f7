// DirWatcher: events the owner announced (its own writes) are dropped, and
// nothing else is: a write by anyone else right after still marks the path.
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EntryType, Op, OpKind, OpStatus } from '../../protocol/messages.ts';
import { DirWatcher } from '../../core/dir_watcher.ts';
import { Remote } from '../../core/remote.ts';
import { ImzServer } from '../../core/server.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

const EXACT = process.platform === 'linux' && typeof (globalThis as { Deno?: unknown }).Deno === 'undefined';

test.after(async () => {
  await cleanupAll();
});

// Collects the watcher's dirty paths for ms.
async function dirtyFor(w: DirWatcher, ms: number): Promise<string[]> {
  const seen: string[] = [];
  const on = (paths: string[]) => seen.push(...paths);
  w.on('dirty', on);
  await new Promise((r) => setTimeout(r, ms));
  w.off('dirty', on);
  return seen.sort();
}

test('an announced rename is not reported; another write to the same path right after is', async () => {
  const root = await makeTmp('imz-watch-');
  await mkdir(join(root, 'd'));
  const w = new DirWatcher(root, { debounceMs: 20 });
  w.watch('');
  w.watch('d');
  try {
    // As the server does it: the rename and its announcement in one turn of the event loop, before the event can be read.
    writeFileSync(join(root, 'd', '.imz-tmp-1'), 'ours');
    renameSync(join(root, 'd', '.imz-tmp-1'), join(root, 'd', 'f'));
    w.expect('d/f');
    writeFileSync(join(root, 'd', '.imz-tmp-2'), 'ours too');
    renameSync(join(root, 'd', '.imz-tmp-2'), join(root, 'd', 'g'));
    w.expect('d/g');
    assert.equal(await dirtyFor(w, 300), EXACT ? [] : ['d/f', 'd/g'], 'our own writes');
    // Someone else writes g now: reported, though one event for g was announced before.
    await writeFile(join(root, 'd', 'g'), 'theirs');
    assert.equal(await dirtyFor(w, 300), ['d/g'], 'a write by someone else');
    // An announcement in a directory that is not watched is ignored; so are late ones past their time.
    w.expect('elsewhere/x');
    await writeFile(join(root, 'h'), 'theirs');
    assert.equal(await dirtyFor(w, 300), ['h']);
  } finally {
    w.close();
  }
});

test('a pushed file is journalled once, without a rescan, and a direct write just after it is still journalled', async () => {
  const root = await makeTmp('imz-watch-srv-');
  await writeFile(join(root, 'seed.txt'), 'seed');
  const server = new ImzServer({ dir: root, rescanMs: 0, debounceMs: 20 });
  const { port } = await server.start();
  const remote = await Remote.connect(`127.0.0.1:${port}`);
  try {
    const scans: number[] = [];
    server.scanner.on('scanned', (n: number) => scans.push(n));
    const data = new TextEncoder().encode('pushed content');
    const hash = new Uint8Array(createHash('sha256').update(data).digest());
    await remote.session.request(Op.PUT_BLOBS, { putBlobs: { blobs: [{ hash, size: data.length, offset: 0, data, last: true }] } });
    const ops = [{ seq: 1, kind: OpKind.STORE, path: 'new/p.txt', fromPath: '', base: 0, fromBase: 0, state: { path: 'new/p.txt', type: EntryType.FILE, size: data.length, mode: 0o644, mtimeMs: Date.now(), hash, target: '', version: 0 } }];
    const r = await remote.session.request(Op.REINTEGRATE, { reintegrate: { replicaId: randomUUID(), ops, policy: 'manual' } });
    assert.is(r.reintegrateReply!.results[0]!.status, OpStatus.APPLIED);
    const after = server.state.lastSeq;
    await new Promise((res) => setTimeout(res, 300));
    await server.scanner.idle();
    assert.is(server.state.lastSeq, after, 'nothing journalled twice');
    if (EXACT) assert.equal(scans, [], 'the server did not rescan its own writes');
    // A local program rewrites the pushed file at once: journalled as a direct write.
    await writeFile(join(root, 'new', 'p.txt'), 'written on the server');
    for (let i = 0; i < 50 && server.state.lastSeq === after; i++) await new Promise((res) => setTimeout(res, 50));
    await server.scanner.idle();
    const t = server.state.table.get('new/p.txt');
    assert.is(t?.hash, createHash('sha256').update(await readFile(join(root, 'new', 'p.txt'))).digest().toString('latin1'), 'the direct write is journalled');
  } finally {
    remote.close();
    await server.close();
  }
});

test.run();
