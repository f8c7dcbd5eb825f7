// The reintegration log on disk: a torn last line (a crash) is cut quietly;
// damage before the end is cut too, but the damaged file is kept aside first.
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ReintLog } from '../../core/reint_log.ts';
import { LOG_HEADER, encodeLogRecord } from '../../core/reint_log_model.ts';
import { cleanupAll, makeTmp } from '../helpers.ts';

test.after(cleanupAll);

const good = (upto: number) => encodeLogRecord({ t: 'done', upto });

test('a torn last line is cut without a copy', async () => {
  const dir = await makeTmp('imz-log-');
  const text = `${LOG_HEADER}\n${good(1)}${good(2)}{"torn`;
  await writeFile(join(dir, 'log'), text);
  const log = await ReintLog.open(dir);
  assert.is(log.pending().sent.length + log.pending().unsent.length, 0);
  assert.is(await readFile(join(dir, 'log'), 'utf8'), `${LOG_HEADER}\n${good(1)}${good(2)}`);
  assert.equal((await readdir(dir)).filter((n) => n.startsWith('log.damaged')), []);
});

test('damage before the last line: the whole file is kept aside before the cut', async () => {
  const dir = await makeTmp('imz-log-');
  const text = `${LOG_HEADER}\n${good(1)}garbage line\n${good(3)}`;
  await writeFile(join(dir, 'log'), text);
  await ReintLog.open(dir);
  const copies = (await readdir(dir)).filter((n) => n.startsWith('log.damaged'));
  assert.is(copies.length, 1);
  assert.is(await readFile(join(dir, copies[0]!), 'utf8'), text);
  assert.is(await readFile(join(dir, 'log'), 'utf8'), `${LOG_HEADER}\n${good(1)}`);
});

test('damage before the last line after a line of non-ASCII text: still kept aside (bytes are not characters; found by review)', async () => {
  const dir = await makeTmp('imz-log-');
  const op = encodeLogRecord({ t: 'op', op: { seq: 1, kind: 1, path: `caf${'é'.repeat(40)}`, fromPath: '', base: 0, fromBase: 0, state: { type: 1, size: 1, mode: 420, mtimeMs: 1, hash: 'ab', target: '' } } });
  const text = `${LOG_HEADER}\n${op}x\n${good(3)}`;
  await writeFile(join(dir, 'log'), text);
  const log = await ReintLog.open(dir);
  assert.is(log.pending().unsent.length, 1);
  const copies = (await readdir(dir)).filter((n) => n.startsWith('log.damaged'));
  assert.is(copies.length, 1, 'the whole file kept aside');
  assert.is(await readFile(join(dir, copies[0]!), 'utf8'), text);
  assert.is(await readFile(join(dir, 'log'), 'utf8'), `${LOG_HEADER}\n${op}`);
});

test('a damaged header: the old file is kept aside, a fresh log starts', async () => {
  const dir = await makeTmp('imz-log-');
  const text = `imz-log 99\n${good(1)}${good(2)}`;
  await writeFile(join(dir, 'log'), text);
  await ReintLog.open(dir);
  const copies = (await readdir(dir)).filter((n) => n.startsWith('log.damaged'));
  assert.is(copies.length, 1);
  assert.is(await readFile(join(dir, 'log'), 'utf8'), `${LOG_HEADER}\n`);
});

test('a log is written only once something is logged; clearing one that holds nothing leaves the file alone; one that holds records is emptied', async () => {
  const dir = await makeTmp('imz-log-');
  const file = join(dir, 'log');
  const fresh = await ReintLog.open(dir);
  await fresh.clear();
  assert.not.ok(existsSync(file), 'opening and clearing a log that never was writes nothing');
  await fresh.append([{ t: 'done', upto: 1 }]);
  assert.is(await readFile(file, 'utf8'), `${LOG_HEADER}\n${encodeLogRecord({ t: 'done', upto: 1 })}`, 'the first append writes the header with it');
  await fresh.clear();
  const log = await ReintLog.open(dir);
  const before = await stat(file);
  await log.clear();
  const after = await stat(file);
  assert.is(after.ino, before.ino, 'not rewritten');
  assert.is(after.mtimeMs, before.mtimeMs);
  await log.append([{ t: 'done', upto: 3 }]);
  assert.is(await readFile(file, 'utf8'), `${LOG_HEADER}\n${encodeLogRecord({ t: 'done', upto: 3 })}`, 'one header only');
  await log.clear();
  assert.is(await readFile(file, 'utf8'), `${LOG_HEADER}\n`);
  const again = await ReintLog.open(dir);
  assert.equal(again.pending(), { sent: [], unsent: [] });
  // An empty file is taken as no log: its first append writes the header.
  writeFileSync(file, '');
  const empty = await ReintLog.open(dir);
  assert.is(await readFile(file, 'utf8'), '');
  await empty.append([{ t: 'done', upto: 4 }]);
  assert.equal((await ReintLog.open(dir)).pending(), { sent: [], unsent: [] });
  assert.ok((await readFile(file, 'utf8')).startsWith(`${LOG_HEADER}\n`));
});

test.run();
