// A file written while a pull is under way, after the pull compared it with the server's version and before the
// pull indexed it, stays a change to push. (Seen in CI: two `imz sync --watch` replicas, one file written every
// ~400 ms; the pull indexed what lstat said after the write, with the hash of what it had compared, so the write
// read as synced and never went up.)
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runReport as out, cleanupAll, imz, jsonLines, sampleWorld, spawnImz } from '../helpers.ts';

const T = suite('pull: a file written during the pull');
T.after.each(cleanupAll);
T.after(cleanupAll);

const changed = async (rep: string) => jsonLines((await imz(['status', '-C', rep, '--json'])).stdout).filter((e) => e.event === 'change').map((e) => e.path);

/**
 * Two replicas sharing race.txt ("one"). `there` changes b's side (pushed with 3,000 new directories, so that the
 * pull of a spends a while making them after comparing race.txt); `here` changes a's side, not pushed. A pull of a
 * then runs, and race.txt is written in a the moment the first directory appears.
 */
async function pullWhileWriting(there: (b: string) => Promise<void>, here: (a: string) => Promise<void>): Promise<{ srv: string; a: string }> {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  await writeFile(join(a!, 'race.txt'), 'one\n');
  const p = await imz(['push', '-C', a!, '--quiet']);
  assert.is(p.code, 0, out(p));
  const q = await imz(['pull', '-C', b!, '--quiet']);
  assert.is(q.code, 0, out(q));
  await there(b!);
  await mkdir(join(b!, 'many'));
  for (let i = 0; i < 3000; i++) await mkdir(join(b!, 'many', `d${String(i).padStart(4, '0')}`));
  const r = await imz(['push', '-C', b!, '--quiet']);
  assert.is(r.code, 0, out(r));
  await here(a!);
  const { done } = await spawnImz(['pull', '-C', a!, '--json']);
  let wrote = false;
  const watch = (async () => {
    for (let t = Date.now(); Date.now() - t < 30_000 && !wrote; await new Promise((res) => setTimeout(res, 1))) {
      if (existsSync(join(a!, 'many'))) {
        writeFileSync(join(a!, 'race.txt'), 'TWO\n');
        wrote = true;
      }
    }
  })();
  const pulled = await done;
  wrote = true;
  await watch;
  assert.is(pulled.code, 0, out(pulled));
  assert.is(readFileSync(join(a!, 'race.txt'), 'utf8'), 'TWO\n', 'the write made during the pull is in place');
  return { srv, a: a! };
}

T('the same edit on both sides (the pull only indexes it): a write made meanwhile is a change, and the push sends it', async () => {
  const { srv, a } = await pullWhileWriting(
    (b) => writeFile(join(b, 'race.txt'), 'two\n'),
    (a) => writeFile(join(a, 'race.txt'), 'two\n'),
  );
  assert.equal(await changed(a), ['race.txt'], 'the write is seen as a change');
  const p = await imz(['push', '-C', a, '--json']);
  assert.is(p.code, 0, out(p));
  assert.is(readFileSync(join(srv, 'race.txt'), 'utf8'), 'TWO\n');
  assert.equal(await changed(a), []);
});

T("a chmod there (the pull sets the mode and mtime): a write made meanwhile keeps its mtime, is a change, and goes up with the server's mode", async () => {
  const { srv, a } = await pullWhileWriting((b) => chmod(join(b, 'race.txt'), 0o600), async () => undefined);
  const mtime = statSync(join(a, 'race.txt')).mtimeMs;
  const theirs = statSync(join(srv, 'race.txt')).mtimeMs;
  assert.ok(mtime > theirs, `the write keeps its own mtime (${new Date(mtime).toISOString()}), not the server's (${new Date(theirs).toISOString()})`);
  assert.is(statSync(join(a, 'race.txt')).mode & 0o777, 0o600, "the server's mode is taken");
  assert.equal(await changed(a), ['race.txt'], 'the write is seen as a change');
  const p = await imz(['push', '-C', a, '--json']);
  assert.is(p.code, 0, out(p));
  assert.is(readFileSync(join(srv, 'race.txt'), 'utf8'), 'TWO\n');
  assert.is(statSync(join(srv, 'race.txt')).mode & 0o777, 0o600);
  assert.equal(await changed(a), []);
});

T.run();
