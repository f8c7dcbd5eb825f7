// A push that lands between a direct write in the served tree and the
// moment the server's watcher reports it (Invariant 1, "nothing is lost"):
// the reintegrator must check the operation against what is on disk, not
// against a table that has not seen the write yet. Driven on the engine
// directly (no CLI, no network) with a watcher slowed down to never report
// in time, so the race is certain instead of a matter of milliseconds.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomUUID } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EntryType, type Operation, OpKind, OpStatus } from '../../protocol/messages.ts';
import { Reintegrator } from '../../core/server_apply.ts';
import { cleanupAll } from '../helpers.ts';
import { serverEngine } from './server_engine.ts';

test.after(cleanupAll);

const sha = (b: string) => new Uint8Array(createHash('sha256').update(b).digest());

/** A served tree whose watcher waits a minute before reporting anything. */
const world = (files: Record<string, string>) => serverEngine(files, 'imz-race-');

/** A STORE operation for path with content c, based on version base; its content is staged first. */
async function store(re: Reintegrator, seq: number, path: string, c: string, base: number): Promise<Operation> {
  await re.putBlob({ hash: sha(c), size: Buffer.byteLength(c), offset: 0, data: Buffer.from(c), last: true });
  return {
    seq, kind: OpKind.STORE, path, fromPath: '', base, fromBase: 0,
    state: { path, type: EntryType.FILE, size: Buffer.byteLength(c), mode: 0o644, mtimeMs: Date.now(), hash: sha(c), target: '', version: 0 },
  };
}

test('a direct write not journalled yet is a conflict for a push based on the version before it, and stays on disk', async () => {
  const { root, state, re, close } = await world({ 'a.txt': 'version 1\n' });
  try {
    const v1 = state.table.get('a.txt')!.version;
    await writeFile(join(root, 'a.txt'), 'version 2, written on the server directly\n');
    await writeFile(join(root, 'b.txt'), 'created on the server directly\n');
    const replica = randomUUID();
    const ops = [await store(re, 1, 'a.txt', 'version 3, pushed\n', v1), await store(re, 2, 'b.txt', 'created in a replica\n', 0)];
    const [ra, rb] = await re.reintegrate(replica, ops, 'manual');
    assert.is(ra!.status, OpStatus.CONFLICT, 'a.txt: the push meets the direct write');
    assert.is(rb!.status, OpStatus.CONFLICT, 'b.txt: create/create');
    assert.is(await readFile(join(root, 'a.txt'), 'utf8'), 'version 2, written on the server directly\n', 'the direct write is still there');
    assert.is(await readFile(join(root, 'b.txt'), 'utf8'), 'created on the server directly\n');
    assert.ok(state.table.get('a.txt')!.version > v1, 'and it is journalled');
    assert.ok(state.table.has('b.txt'));
  } finally {
    await close();
  }
});

test('under client-wins the pushed version replaces the direct write, which is displaced (kept), not lost', async () => {
  const { root, state, re, close } = await world({ 'a.txt': 'version 1\n' });
  try {
    const v1 = state.table.get('a.txt')!.version;
    await writeFile(join(root, 'a.txt'), 'version 2, written on the server directly\n');
    const [r] = await re.reintegrate(randomUUID(), [await store(re, 1, 'a.txt', 'version 3, pushed\n', v1)], 'client-wins');
    assert.is(r!.status, OpStatus.APPLIED);
    assert.is(await readFile(join(root, 'a.txt'), 'utf8'), 'version 3, pushed\n');
    const displaced = join(root, '.imz-server', 'displaced');
    const kept = await Promise.all((await readdir(displaced)).filter((n) => n.endsWith('a.txt')).map((n) => readFile(join(displaced, n), 'utf8')));
    assert.equal(kept, ['version 2, written on the server directly\n'], 'the direct write is displaced, not lost');
  } finally {
    await close();
  }
});

test('a push based on the current version still applies at once (nothing changed on disk)', async () => {
  const { root, state, re, close } = await world({ 'a.txt': 'version 1\n' });
  try {
    const v1 = state.table.get('a.txt')!.version;
    const [r] = await re.reintegrate(randomUUID(), [await store(re, 1, 'a.txt', 'version 2, pushed\n', v1)], 'manual');
    assert.is(r!.status, OpStatus.APPLIED);
    assert.is(await readFile(join(root, 'a.txt'), 'utf8'), 'version 2, pushed\n');
    assert.is(state.table.get('a.txt')!.version, v1 + 1, 'one record, the push');
  } finally {
    await close();
  }
});

test.run();
