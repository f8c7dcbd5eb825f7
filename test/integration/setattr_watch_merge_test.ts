// (From the review of 973e2f4.): the server announces the IN_ATTRIB of its own chmod/touch (SETATTR) and of a move's new
// attributes. inotify merges an event with the last unread one when they are identical, so a local program's
// chmod or touch of the same file, made before the server's event loop has read the queue, is merged into the
// server's announced event and swallowed: never journalled (periodic rescan off here).
// The window is widened (not created) by a large file: after its chmod, the server hashes the file synchronously
// (_change, no known hash for a META or a move) before the loop turns again.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { chmod, rename, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupAll, copyFixture, imz, makeTmp, spawnImz, startServer, waitFor } from '../helpers.ts';

const T = suite('review: announced attribute events merge with a local program\'s');
T.after.each(cleanupAll);
T.after(cleanupAll);

const BIG = 48 * 1024 * 1024;

async function world(names: string[]) {
  const tmp = await makeTmp('imz-rev-attr-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  const chunk = Buffer.alloc(BIG, 7);
  for (const n of names) writeFileSync(join(srv, n), chunk);
  const server = await startServer(srv, ['--rescan-interval', '0']);
  const a = join(tmp, 'a');
  const c = await imz(['clone', server.address, a, '--json']);
  assert.is(c.code, 0, c.stderr);
  return { srv, server, a };
}

// Every journal record of path, with the state it records.
async function records(address: string, path: string): Promise<{ seq: number; mode: number; mtimeMs: number }[]> {
  const { Remote } = await import('../../core/remote.ts');
  const remote = await Remote.connect(address, { timeoutMs: 5_000 });
  try {
    const out: { seq: number; mode: number; mtimeMs: number }[] = [];
    for await (const batch of remote.journal(0)) for (const r of batch) if (r.entry.path === path) out.push({ seq: Number(r.seq), mode: r.entry.mode & 0o777, mtimeMs: Number(r.entry.mtimeMs) });
    return out;
  } finally {
    remote.close();
  }
}

// Spins (bounded) until cond holds on the server's disk, then runs act at once; true when it ran in time.
function whenThen(cond: () => boolean, act: () => void, ms: number): boolean {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (cond()) {
      act();
      return true;
    }
  }
  return false;
}

const LOCAL_S = 1_400_000_000; // a local touch's time (2014), not the pushed one

async function touchedAfter(a: string, srvFile: string, address: string, path: string, pushedMode: number) {
  // Start the push, then, as soon as the server has given the file its new mode, touch it locally (a local program).
  const { done } = await spawnImz(['push', '-C', a, '--json']);
  // (The push starts in another process: our spin blocks only this one.)
  await new Promise((r) => setTimeout(r, 50));
  const ran = whenThen(() => {
    try {
      return (statSync(srvFile).mode & 0o777) === pushedMode;
    } catch {
      return false;
    }
  }, () => {
    // A moment later: after the server's lstat of the file (what it journals), while it hashes it.
    const t = Date.now() + 15;
    while (Date.now() < t);
    utimesSync(srvFile, LOCAL_S, LOCAL_S);
  }, 20_000);
  const r = await done;
  assert.is(r.code, 0, r.stderr);
  assert.ok(ran, 'the server applied the mode within 20 s');
  assert.is(statSync(srvFile).mtimeMs, LOCAL_S * 1000, 'the local touch is what the disk holds');
  // Expected: the local touch is journalled (the watcher's event, debounced 50 ms) well within 4 s.
  if (process.env.REV_DEBUG) console.log(path, JSON.stringify(await records(address, path)), r.stdout, r.stderr);
  const ok = await waitFor(async () => (await records(address, path)).some((x) => x.mtimeMs === LOCAL_S * 1000), 4000, `${path}: the local touch journalled`).then(() => true, () => false);
  const recs = await records(address, path);
  assert.ok(ok, `${path}: a local touch made right after the server's pushed chmod is never journalled; journal has ${JSON.stringify(recs)}, disk has mtime ${statSync(srvFile).mtimeMs}`);
}

T('a pushed chmod (SETATTR), then a local touch of the file on the server at once: journalled', async () => {
  const { srv, server, a } = await world(['big.bin']);
  await chmod(join(a, 'big.bin'), 0o750);
  await touchedAfter(a, join(srv, 'big.bin'), server.address, 'big.bin', 0o750);
});

T('a pushed move with a new mode and time, then a local touch of the file on the server at once: journalled', async () => {
  const { srv, server, a } = await world(['m.bin']);
  await rename(join(a, 'm.bin'), join(a, 'm2.bin'));
  await chmod(join(a, 'm2.bin'), 0o700);
  await utimes(join(a, 'm2.bin'), 1.5e9, 1.5e9);
  await touchedAfter(a, join(srv, 'm2.bin'), server.address, 'm2.bin', 0o700);
});

T('control: a local touch of a file on the server, no push: journalled', async () => {
  const { srv, server } = await world([]);
  writeFileSync(join(srv, 'c.txt'), 'c\n');
  await waitFor(async () => (await records(server.address, 'c.txt')).length > 0, 4000, 'c.txt journalled');
  chmodSync(join(srv, 'c.txt'), 0o600);
  utimesSync(join(srv, 'c.txt'), LOCAL_S, LOCAL_S);
  await waitFor(async () => (await records(server.address, 'c.txt')).some((x) => x.mtimeMs === LOCAL_S * 1000), 4000, 'c.txt touch journalled');
});

T.run();
