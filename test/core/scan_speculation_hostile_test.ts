// Hostile tests of the scan's speculation (core/scan_pass.ts and
// core/pass_worker.ts PassWorker, core/scan_worker.ts): the CLI starts the
// pass worker before it loads, the worker reads .imz/scan-cache and begins
// the lstat pass alone, and scanChanges joins that pass when the cache it
// loads holds the same rows (index buckets with the same paths are patched
// in place, in the memory the worker reads, and their rows looked at again).
// Also the relative lstat from the replica's root (cli/run.ts enterReplica).
//
// Tests whose names say "found by" pin defects a review found (and that
// were fixed); the others pin behaviour that held up under attack.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { appendFile, mkdir, readFile, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { dirname, join, relative } from 'node:path';
import { type ChangeScan, scanChanges } from '../../core/changes.ts';
import { Replica } from '../../core/replica.ts';
import { ScanCache, SCAN_CACHE_FILE } from '../../core/scan_cache.ts';
import { loadIgnoreKeyed } from '../../core/ignore_rules.ts';
import { PassWorker } from '../../core/pass_worker.ts';
import { decodeScanCache } from '../../core/scan_cache_model.ts';
import {
  type RunResult, runReport as out, type ServerHandle, cleanupAll, copyFixture, imz, imzBundle, jsonLines, makeTmp, setRemote, spawnImz, startServer, waitFor,
} from '../helpers.ts';

const T = suite('scan_speculation_hostile');

// ---------- the worker's handle, wherever the tree keeps it ----------

interface SpecLike { root: string; bytes: Uint8Array; refTime: number; pass?: { startedAt: number; state: Uint8Array; done: Uint8Array }; unchecked?: boolean }
interface PassWorkerLike {
  gone: boolean;
  speculation(root: string, waitMs?: number): Promise<SpecLike | undefined>;
  stop(): void;
}
interface PassWorkerClass {
  start(dir?: string, url?: URL): PassWorkerLike | undefined;
  warmUp(dir?: string, url?: URL, opts?: { pass?: boolean }): void;
  take(): PassWorkerLike | undefined;
}

/** PassWorker, as scanChanges sees it (the same module: warmUp and take share a static). */
async function passWorker(): Promise<PassWorkerClass> {
  return PassWorker as unknown as PassWorkerClass;
}

/** The warm worker warmUp made, without taking it (the next scan takes it). */
const warmOne = (PW: PassWorkerClass) => (PW as unknown as { _warm?: PassWorkerLike })._warm;
/** The bundle's worker, from the test's private copy of dist/ (tsx does not load .ts modules in threads). */
let WORKER: URL;

// ---------- world ----------

let tmp: string;
let server: ServerHandle;
let n = 0;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const brief = (s: ChangeScan) => s.changes.map((c) => (c.kind === 'rename' ? `rename ${c.fromPath} -> ${c.path}` : `${c.kind} ${c.path}`)).sort();
const scan = async (dir: string) => scanChanges(await Replica.open(dir));
const cacheFile = (dir: string) => join(dir, '.imz', SCAN_CACHE_FILE);

/** Names that exercise the paths' UTF-8 bytes and their order. */
const ODD = ['ünï/cødé.md', 'ünï/emoji 😀.txt', 'ünï/ﬀ-ligature.txt', 'ünï/z-last.txt', 'sp ace.txt', 'a-b', 'a.b', 'a0'];

T.before(async () => {
  tmp = await makeTmp('imz-spec-hostile-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  for (let i = 0; i < 12; i++) await writeFile(join(srv, 'docs', `page-${i}.txt`), `page ${i}\n`);
  for (const p of ODD) {
    await mkdir(dirname(join(srv, p)), { recursive: true });
    await writeFile(join(srv, p), `odd ${p}\n`);
  }
  server = await startServer(srv);
  WORKER = new URL(`file://${join(dirname(await imzBundle()), 'scan_worker.cjs')}`);
});
T.after(cleanupAll);

/** Runs fn with env vars set, restoring them after. */
async function withEnv<R>(vars: Record<string, string | undefined>, fn: () => Promise<R>): Promise<R> {
  const was: Record<string, string | undefined> = {};
  for (const k of Object.keys(vars)) {
    was[k] = process.env[k];
    if (vars[k] === undefined) delete process.env[k];
    else process.env[k] = vars[k];
  }
  try {
    return await fn();
  } finally {
    for (const k of Object.keys(was)) {
      if (was[k] === undefined) delete process.env[k];
      else process.env[k] = was[k];
    }
  }
}
const WORKER_ON = { IMZ_SCAN_WORKER_MIN: '0' };
const WORKER_OFF = { IMZ_SCAN_WORKER_MIN: '100000000' };

/** A scan with no worker at all: the reference answer. */
const plainScan = (dir: string) => withEnv(WORKER_OFF, async () => brief(await scan(dir)));

/**
 * A clone aged past the racy second and scanned once, so its cache file
 * matches the index (a scan with a warm worker then joins the worker's pass).
 */
async function settled(srv: ServerHandle = server): Promise<string> {
  const dir = join(tmp, `replica-${++n}`);
  const r = await imz(['clone', srv.address, dir, '--json']);
  assert.is(r.code, 0, `clone: ${out(r)}`);
  await sleep(1100);
  assert.equal(await plainScan(dir), [], 'a fresh clone is clean');
  assert.ok(decodeScanCache(readFileSync(cacheFile(dir))), 'a cache was written');
  return dir;
}

/** Warms a worker on dir, after stopping one a failed test may have left warm. */
function warmFresh(PW: PassWorkerClass, dir: string): void {
  PW.take()?.stop();
  PW.warmUp(dir, WORKER);
}

/**
 * Warms a worker on dir (as cli/main.ts does) and waits until its own pass
 * over the cache file is done; the next scan of this process takes it.
 */
async function warmAndFinish(PW: PassWorkerClass, dir: string): Promise<SpecLike> {
  warmFresh(PW, dir);
  const w = warmOne(PW);
  assert.ok(w, 'a worker was started');
  const root = (await Replica.open(dir)).root;
  const spec = await w!.speculation(root, 20_000);
  assert.ok(spec?.pass, 'the worker began a pass of its own');
  await waitFor(() => spec!.pass!.done.every((d) => d === 1), 20_000, "the worker's own pass to finish");
  return spec!;
}

// ---------- speculation is older than the scan ----------

T('a joined pass dates from the command start: a change made after the worker looked shows once the pass is too old to join, and always under the replica lock', async () => {
  const PW = await passWorker();
  const dir = await settled();
  const want = ['create docs/notes/later.md', 'modify docs/page-3.txt'];
  await withEnv(WORKER_ON, async () => {
    await warmAndFinish(PW, dir);
    // After the worker's lstat, before the scan starts: `imz status` reports the tree as the command found it.
    await appendFile(join(dir, 'docs', 'page-3.txt'), 'written before the scan started\n');
    await writeFile(join(dir, 'docs', 'notes', 'later.md'), 'made before the scan started\n');
    await sleep(400); // older than a pass may be to be joined
    assert.equal(brief(await scan(dir)), want, 'a pass older than SPECULATION_MAX_AGE_MS is not joined');
    await warmAndFinish(PW, dir);
    await appendFile(join(dir, 'docs', 'page-4.txt'), 'written after the worker looked\n');
    const replica = await Replica.open(dir);
    await replica.lock();
    try {
      assert.equal(brief(await scanChanges(replica)), [...want, 'modify docs/page-4.txt'], 'under the lock, a pass begun before it is not joined');
    } finally {
      await replica.unlock();
    }
  });
});

T('a joined pass does not invent deletions: a directory away while the worker looked, back before the scan (found by 91c319e)', async () => {
  const PW = await passWorker();
  const dir = await settled();
  await withEnv(WORKER_ON, async () => {
    await rename(join(dir, 'docs'), join(dir, 'docs-away'));
    await warmAndFinish(PW, dir);
    await rename(join(dir, 'docs-away'), join(dir, 'docs'));
    const got = brief(await scan(dir));
    assert.equal(got, [], `the tree is as the index has it, yet: ${got.slice(0, 4).join(', ')}${got.length > 4 ? ` (+${got.length - 4})` : ''}`);
  });
  assert.equal(await plainScan(dir), []);
});

/**
 * A TCP proxy to target that holds every connection until open() is
 * called: a server that is slow to answer, so a command's scan starts late.
 */
async function gatedProxy(target: ServerHandle): Promise<{ address: string; accepted: Promise<void>; open(): void; close(): Promise<void> }> {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let accepted!: () => void;
  const first = new Promise<void>((r) => (accepted = r));
  const sockets = new Set<Socket>();
  const srv: Server = createServer((c) => {
    sockets.add(c);
    c.on('error', () => c.destroy());
    c.pause();
    accepted();
    void gate.then(() => {
      const u = connect(target.port, '127.0.0.1');
      sockets.add(u);
      u.on('error', () => c.destroy());
      c.on('close', () => u.destroy());
      u.on('close', () => c.destroy());
      c.pipe(u).pipe(c);
      c.resume();
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${port}`,
    accepted: first,
    open,
    close: async () => {
      open();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** p's value, or undefined after ms (the timer does not outlive it). */
async function within<R>(p: Promise<R>, ms: number): Promise<R | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** A server of its own for the tests that push (the shared one stays as cloned). */
async function ownServer(name: string): Promise<ServerHandle> {
  const srv = join(tmp, name);
  await copyFixture('sample', srv);
  for (let i = 0; i < 12; i++) await writeFile(join(srv, 'docs', `page-${i}.txt`), `page ${i}\n`);
  return startServer(srv);
}

/**
 * Starts `imz push` in dir (with the worker) through proxy, and waits until
 * it has connected: held there until finish() opens the gate, which returns
 * its result once it exited 0.
 */
async function pushHeldAtConnect(dir: string, proxy: Awaited<ReturnType<typeof gatedProxy>>): Promise<{ finish(): Promise<RunResult> }> {
  await setRemote(dir, proxy.address);
  const { done } = await spawnImz(['push', '-C', dir, '--json'], { env: { ...process.env, ...WORKER_ON } });
  await Promise.race([proxy.accepted, done.then(() => { throw new Error('push ended before connecting'); })]);
  return {
    async finish() {
      proxy.open();
      const r = await within(done, 30_000);
      assert.ok(r, 'push finished');
      assert.is(r!.code, 0, out(r!));
      return r!;
    },
  };
}

T('imz push pushes a file modified while it waited for a slow server (found by 91c319e: the scan joined the pass its worker made at start-up)', async () => {
  const srv = await ownServer('srv-push');
  const dir = await settled(srv);
  const proxy = await gatedProxy(srv);
  try {
    // push has loaded, opened and locked the replica and is connecting: its worker started before all that.
    const push = await pushHeldAtConnect(dir, proxy);
    await sleep(800);
    await appendFile(join(dir, 'docs', 'page-5.txt'), 'saved while push was connecting\n');
    await sleep(200);
    const r = await push.finish();
    const pushed = jsonLines(r.stdout).find((e) => e.event === 'pushed');
    const onServer = await readFile(join(tmp, 'srv-push', 'docs', 'page-5.txt'), 'utf8');
    assert.ok(onServer.includes('saved while push was connecting'),
      `the change was on disk before push scanned (it scans after connecting), yet push said ${JSON.stringify(pushed)} and the server has ${JSON.stringify(onServer)}`);
  } finally {
    await proxy.close();
  }
});

T('imz push pushes a file saved just after it started (found by the review: its scan kept the verdict its worker made before it locked)', async () => {
  const srv = await ownServer('srv-push-fresh');
  const dir = await settled(srv);
  const misses: string[] = [];
  // Timing: the worker must have looked at the file before the save, and the scan start soon after. Up to three tries;
  // any one that misses the save is the defect (a correct push never does).
  for (let attempt = 0; attempt < 3 && misses.length === 0; attempt++) {
    const file = `docs/page-${7 + attempt}.txt`;
    const proxy = await gatedProxy(srv);
    try {
      const t0 = Date.now();
      const push = await pushHeldAtConnect(dir, proxy);
      const tAccept = Date.now() - t0;
      await sleep(60);
      await appendFile(join(dir, file), `saved ${attempt}\n`);
      const r = await push.finish();
      const onServer = await readFile(join(tmp, 'srv-push-fresh', file), 'utf8');
      if (!onServer.includes(`saved ${attempt}`)) {
        misses.push(`${file} (connected ${tAccept} ms after start, saved 60 ms later): push said ${JSON.stringify(jsonLines(r.stdout).find((e) => e.event === 'pushed'))}`);
      }
    } finally {
      await proxy.close();
    }
    await sleep(1100); // what was pushed no longer racy
    await imz(['status', '-C', dir, '--offline', '--json']); // the cache file matches the index again
  }
  assert.equal(misses, [], 'every save made before push scanned is pushed');
});

T('imz push does not delete on the server files that were away only while its worker looked (found by 91c319e: it pushed 5 deletions)', async () => {
  const srv = await ownServer('srv-push-del');
  const dir = await settled(srv);
  const proxy = await gatedProxy(srv);
  try {
    await rename(join(dir, 'src'), join(tmp, 'src-away')); // e.g. a build step that regenerates it
    const push = await pushHeldAtConnect(dir, proxy);
    await sleep(800);
    await rename(join(tmp, 'src-away'), join(dir, 'src'));
    await sleep(200);
    const r = await push.finish();
    const pushed = jsonLines(r.stdout).find((e) => e.event === 'pushed');
    const there = await readFile(join(tmp, 'srv-push-del', 'src', 'main.js'), 'utf8').then(() => true, () => false);
    assert.ok(there, `src/ was in the replica all along when push scanned, yet push said ${JSON.stringify(pushed)} and the server lost src/main.js`);
  } finally {
    await proxy.close();
  }
});

/** The cache file with one byte of a path's text changed and the checksum left as it was (the structure still reads). */
function corruptPathByte(dir: string, path: string): void {
  const bytes = readFileSync(cacheFile(dir));
  const at = bytes.indexOf(Buffer.from(`${path}\0`));
  assert.ok(at > 0, `${path} in the cache file`);
  bytes[at + path.length - 5] = 'X'.charCodeAt(0); // docs/page-3.txt -> docs/page-X.txt
  writeFileSync(cacheFile(dir), bytes);
  assert.is(decodeScanCache(bytes), undefined, 'the file does not check out');
}

T('a cache file that fails its checksum is not trusted when the scan does not join the worker (found in the deferred-checksum work: a change missed for good)', async () => {
  const PW = await passWorker();
  const dir = await settled();
  corruptPathByte(dir, 'docs/page-3.txt');
  await appendFile(join(dir, 'docs', 'page-3.txt'), 'changed\n');
  const want = ['modify docs/page-3.txt'];
  // The CLI, with the default worker threshold (this tree is far below it: the pass is not joined); twice, as the
  // file is not rewritten.
  const env = { ...process.env };
  delete env.IMZ_SCAN_WORKER_MIN;
  for (let i = 0; i < 2; i++) assert.equal(await cliStatus(['-C', dir], { env: env as Record<string, string> }), want, `imz status, run ${i + 1}`);
  await withEnv({ IMZ_SCAN_WORKER_MIN: undefined }, async () => {
    await warmAndFinish(PW, dir);
    assert.equal(brief(await scan(dir)), want, 'a scan with a warm worker');
  });
  assert.equal(await plainScan(dir), want, 'no worker: the file is read and checked');
});

T('push and sync have the cache file read by the thread pool at start (no pass of the worker\'s own): one that fails its checksum is not trusted, by the scan or by the CLI', async () => {
  const PW = await passWorker();
  const srv = await ownServer('srv-preread');
  const dir = await settled(srv);
  corruptPathByte(dir, 'docs/page-3.txt');
  await appendFile(join(dir, 'docs', 'page-3.txt'), 'changed under a damaged cache\n');
  const want = ['modify docs/page-3.txt'];
  await withEnv(WORKER_ON, async () => {
    PW.warmUp(dir, WORKER, { pass: false });
    const w = warmOne(PW);
    assert.ok(w, 'a worker was started');
    const spec = await w!.speculation((await Replica.open(dir)).root, 20_000);
    assert.ok(spec?.unchecked, 'the file was read for the scan, its checksum left to the scan');
    assert.is(spec!.pass, undefined, 'no pass begun');
    const replica = await Replica.open(dir);
    await replica.lock();
    try {
      assert.equal(brief(await scanChanges(replica)), want, 'the scan under the lock, given the damaged bytes');
    } finally {
      await replica.unlock();
    }
  });
  corruptPathByte(dir, 'docs/page-3.txt');
  const r = await imz(['push', '-C', dir, '--json'], { env: { ...process.env, ...WORKER_ON }, timeoutMs: 30_000 });
  assert.is(r.code, 0, out(r));
  assert.ok((await readFile(join(tmp, 'srv-preread', 'docs', 'page-3.txt'), 'utf8')).includes('changed under a damaged cache'), `the change reached the server: ${r.stdout}`);
  assert.equal(await plainScan(dir), [], 'pushed: nothing left to push');
});

T('...nor written back by a rebuild under a fresh checksum (found in the deferred-checksum work: tracked files reported as created, by every scan after)', async () => {
  const PW = await passWorker();
  const dir = await settled();
  corruptPathByte(dir, 'docs/page-3.txt');
  await appendFile(join(dir, 'docs', 'page-3.txt'), 'changed\n');
  await appendFile(join(dir, '.imzignore'), '# another rule set: the rows are rebuilt, the cache written\n');
  const want = ['modify .imzignore', 'modify docs/page-3.txt'];
  let first: string[] = [];
  await withEnv({ IMZ_SCAN_WORKER_MIN: undefined }, async () => {
    // The worker checks the file before its pass (it once did so after): it begins none over this one.
    warmFresh(PW, dir);
    assert.is(await warmOne(PW)!.speculation((await Replica.open(dir)).root, 20_000), undefined, 'no pass begun over a file that does not check out');
    first = brief(await scan(dir));
  });
  const after = decodeScanCache(readFileSync(cacheFile(dir)));
  const laundered = after !== undefined && after.paths.includes('docs/page-X.txt');
  const plain = await plainScan(dir);
  assert.ok(!laundered, `the damaged path was written back in a cache that checks out (the scan said: ${first.join(', ')}; a scan without the worker now says: ${plain.join(', ') || 'nothing'})`);
  assert.equal(first, want, 'the scan that rebuilt');
  assert.equal(plain, want, 'a scan without the worker, after');
});

// ---------- what held up: the join, the patch, the cache file, the worker, the CLI ----------

/** The CLI's status (offline) as sorted "kind path" lines, from cwd, with extra env. */
async function cliStatus(args: string[], opts: { cwd?: string; env?: Record<string, string>; runtime?: 'node' | 'deno' } = {}): Promise<string[]> {
  const r = await imz(['status', ...args, '--json', '--offline'], { cwd: opts.cwd, env: { ...process.env, ...opts.env }, runtime: opts.runtime, timeoutMs: 30_000 });
  assert.is(r.code, 0, out(r));
  return jsonLines(r.stdout).filter((e) => e.event === 'change').map((e) => `${e.kind} ${e.path}`).sort();
}

T('odd UTF-8 names: buckets rewritten by a push are patched in place, and a joined pass still sees every later change', async () => {
  const srv = await ownServer('srv-odd');
  for (const p of ODD) {
    await mkdir(dirname(join(tmp, 'srv-odd', p)), { recursive: true });
    await writeFile(join(tmp, 'srv-odd', p), `odd ${p}\n`);
  }
  const dir = await settled(srv);
  const PW = await passWorker();
  // Contents change, names stay: the push rewrites those buckets with the same paths in them.
  for (const p of ODD.slice(0, 4)) await appendFile(join(dir, p), 'pushed\n');
  const cacheFile = join(dir, '.imz', SCAN_CACHE_FILE);
  const before = readFileSync(cacheFile);
  const p1 = await imz(['push', '-C', dir, '--json']);
  assert.is(p1.code, 0, out(p1));
  await sleep(1100); // the pushed files no longer racy
  const key = (await loadIgnoreKeyed(dir)).key;
  // The push wrote its buckets into the cache as it wrote them: nothing to patch.
  const current = ScanCache.load(await Replica.open(dir), key);
  assert.ok(current.rowsAsLoaded && current.patchedRows.length === 0, `left current by the push (${current.patchedRows.length} rows patched)`);
  // The cache as the push found it (a push killed before writing it back): the load takes the in-place path (same rows, some updated).
  writeFileSync(cacheFile, before);
  const replica = await Replica.open(dir);
  const c = ScanCache.load(replica, key);
  assert.ok(c.rowsAsLoaded && c.patchedRows.length >= 1, `patched in place (rowsAsLoaded ${c.rowsAsLoaded}, ${c.patchedRows.length} rows)`);
  // Later local changes, in patched rows and beside them; then the worker's pass, then the scan.
  await appendFile(join(dir, 'ünï/emoji 😀.txt'), 'again\n');
  await appendFile(join(dir, 'ünï/z-last.txt'), 'again\n');
  await writeFile(join(dir, 'ünï/new ✓.txt'), 'new\n');
  await unlink(join(dir, 'a.b'));
  await writeFile(join(dir, 'ünï', 'bad\nname.txt'), 'a control character: skipped, never tracked\n');
  const want = ['create ünï/new ✓.txt', 'delete a.b', 'modify ünï/emoji 😀.txt', 'modify ünï/z-last.txt'].sort();
  const was = process.cwd();
  try {
    await withEnv(WORKER_ON, async () => {
      await warmAndFinish(PW, dir);
      const s = await scan(dir);
      assert.equal(brief(s), want, 'joined, from elsewhere');
      assert.ok(s.skipped.some((x) => x.path === 'ünï/bad\nname.txt'), 'the bad name is skipped');
      // And relative, from the root (as the CLI runs it).
      process.chdir(dir);
      await warmAndFinish(PW, dir);
      assert.equal(brief(await scan(dir)), want, 'joined, relative');
    });
  } finally {
    process.chdir(was);
  }
  assert.equal(await plainScan(dir), want);
  assert.equal(await cliStatus(['-C', dir], { env: WORKER_ON }), want);
});

T('a pulled retype (file to symlink, same path) is patched in place; the joined scan judges the row by the new type', async () => {
  const srv = await ownServer('srv-retype');
  const a = await settled(srv);
  const b = await settled(srv);
  const PW = await passWorker();
  await unlink(join(a, 'docs', 'page-2.txt'));
  await symlink('page-1.txt', join(a, 'docs', 'page-2.txt'));
  await appendFile(join(a, 'docs', 'page-4.txt'), 'from a\n');
  assert.is((await imz(['push', '-C', a, '--json'])).code, 0);
  const pl = await imz(['pull', '-C', b, '--json']);
  assert.is(pl.code, 0, out(pl));
  // The buckets pulled are racy now: the cache is patched at every load until they age (and not written back meanwhile).
  for (const age of [0, 1100]) {
    await sleep(age);
    await withEnv(WORKER_ON, async () => {
      await warmAndFinish(PW, b);
      assert.equal(brief(await scan(b)), [], `clean after the pull (aged ${age} ms)`);
    });
  }
  await appendFile(join(b, 'docs', 'page-4.txt'), 'then b\n');
  await unlink(join(b, 'docs', 'page-2.txt'));
  await symlink('page-3.txt', join(b, 'docs', 'page-2.txt'));
  await withEnv(WORKER_ON, async () => {
    await warmAndFinish(PW, b);
    assert.equal(brief(await scan(b)), ['modify docs/page-4.txt', 'symlink docs/page-2.txt']);
  });
  assert.equal(await plainScan(b), ['modify docs/page-4.txt', 'symlink docs/page-2.txt']);
});

T('0 and 1 tracked paths: the worker speculates over an empty or one-row cache, and the scan joins it', async () => {
  const PW = await passWorker();
  for (const files of [[], ['only.txt']]) {
    const srvDir = join(tmp, `srv-size-${files.length}`);
    await mkdir(srvDir, { recursive: true });
    for (const f of files) await writeFile(join(srvDir, f), 'one\n');
    const srv = await startServer(srvDir);
    const dir = await settled(srv);
    const cache = decodeScanCache(readFileSync(cacheFile(dir)))!;
    assert.is(cache.paths.length, files.length);
    await withEnv(WORKER_ON, async () => {
      await warmAndFinish(PW, dir);
      assert.equal(brief(await scan(dir)), [], `${files.length}: clean`);
      await writeFile(join(dir, 'made.txt'), 'made\n');
      if (files.length) await unlink(join(dir, 'only.txt'));
      await warmAndFinish(PW, dir);
      const want = files.length ? ['delete only.txt', 'create made.txt'].sort() : ['create made.txt'];
      assert.equal(brief(await scan(dir)), want, `${files.length}: changes`);
    });
    assert.equal(await cliStatus(['-C', dir], { env: WORKER_ON }), files.length ? ['create made.txt', 'delete only.txt'] : ['create made.txt']);
    await srv.stop();
  }
});

T('a damaged, truncated, foreign or misplaced cache file: the worker begins nothing (or the rows are checked) and the scan is right', async () => {
  const PW = await passWorker();
  const dir = await settled();
  await appendFile(join(dir, 'docs', 'page-6.txt'), 'changed\n');
  const want = ['modify docs/page-6.txt'];
  const good = readFileSync(cacheFile(dir));
  const flip = Buffer.from(good);
  flip[Math.floor(good.length / 2)] ^= 0x20;
  const v1 = Buffer.from(good);
  v1.write('imz-scan-cache 1', 0);
  // Another replica's cache of the same server: valid, but every bucket's identity differs (all rows patched and checked again).
  const other = await settled();
  const foreign = readFileSync(cacheFile(other));
  const cases: Array<[string, Buffer | 'dir' | 'none']> = [
    ['flipped byte', flip], ['truncated', good.subarray(0, good.length - 5)], ['empty', Buffer.alloc(0)], ['version 1', v1],
    ['another replica', foreign], ['a directory', 'dir'], ['none', 'none'],
  ];
  for (const [what, bytes] of cases) {
    await rm(cacheFile(dir), { recursive: true, force: true });
    if (bytes === 'dir') await mkdir(cacheFile(dir));
    else if (bytes !== 'none') writeFileSync(cacheFile(dir), bytes);
    await withEnv(WORKER_ON, async () => {
      warmFresh(PW, dir);
      await sleep(300);
      assert.equal(brief(await scan(dir)), want, what);
    });
    await rm(cacheFile(dir), { recursive: true, force: true });
  }
  // The file replaced after the worker read it: the scan goes by what the worker read (checked against the index).
  writeFileSync(cacheFile(dir), good);
  await withEnv(WORKER_ON, async () => {
    await warmAndFinish(PW, dir);
    writeFileSync(cacheFile(dir), flip);
    assert.equal(brief(await scan(dir)), want, 'replaced after the read');
  });
  assert.equal(await plainScan(dir), want);
});

T('.imzignore changed after the worker began: the rows are rebuilt, the pass not joined, every directory listed again', async () => {
  const PW = await passWorker();
  const dir = await settled();
  await mkdir(join(dir, 'build'), { recursive: true });
  await writeFile(join(dir, 'build', 'out.o'), 'ignored until the rule goes\n');
  await writeFile(join(dir, 'docs', 'x.tmp'), 'ignored until the rule goes\n');
  assert.equal(await plainScan(dir), []);
  await withEnv(WORKER_ON, async () => {
    await warmAndFinish(PW, dir);
    await writeFile(join(dir, '.imzignore'), 'build/\n'); // *.tmp no longer ignored
    const got = brief(await scan(dir));
    assert.ok(got.includes('create docs/x.tmp') && !got.includes('create build/out.o'), got.join(', '));
  });
});

T('the worker dies before, during or after its own pass: the scan is right and ends', async () => {
  const PW = await passWorker();
  const dir = await settled();
  await appendFile(join(dir, 'docs', 'page-8.txt'), 'changed\n');
  await writeFile(join(dir, 'docs', 'notes', 'new.md'), 'new\n');
  const want = ['create docs/notes/new.md', 'modify docs/page-8.txt'];
  const kill = (w: PassWorkerLike) => void (w as unknown as { _w: { terminate(): Promise<number> } })._w.terminate();
  for (const when of ['at once', 'once it said', 'once done']) {
    await withEnv(WORKER_ON, async () => {
      warmFresh(PW, dir);
      const w = warmOne(PW)!;
      if (when === 'once it said') await w.speculation((await Replica.open(dir)).root, 20_000);
      if (when === 'once done') await warmAndFinish(PW, dir);
      kill(w);
      const s = await within(scan(dir), 20_000);
      assert.ok(s, `the scan ended (${when})`);
      assert.equal(brief(s!), want, when);
    });
  }
});

T('the CLI from a relative -C, through a symlinked root, from a subdirectory, with a non-ASCII root: the same answers with the worker as without', async () => {
  const srvDir = join(tmp, 'srv-cli');
  await copyFixture('sample', srvDir);
  const srv = await startServer(srvDir);
  const dir = join(tmp, 'rép lica ü');
  const c = await imz(['clone', srv.address, dir, '--json']);
  assert.is(c.code, 0, out(c));
  await sleep(1100);
  assert.equal(await cliStatus(['-C', dir], { env: WORKER_OFF }), []);
  await appendFile(join(dir, 'src', 'main.js'), '// changed\n');
  await writeFile(join(dir, 'src', 'lib', 'new.js'), 'new\n');
  await unlink(join(dir, 'docs', 'kml.txt'));
  const want = ['create src/lib/new.js', 'delete docs/kml.txt', 'modify src/main.js'];
  const link = join(tmp, 'link-to-replica');
  await symlink(dir, link);
  const ways: Array<[string, string[], string | undefined]> = [
    ['relative -C', ['-C', relative(tmp, dir)], tmp],
    ['relative -C=', [`-C=${relative(join(tmp, 'srv-cli'), dir)}`], join(tmp, 'srv-cli')],
    ['-C a symlink', ['-C', link], undefined],
    ['-C below a symlink', ['-C', join(link, 'docs')], undefined],
    ['cwd a subdirectory', [], join(dir, 'src', 'lib')],
    ['cwd through a symlink', [], join(link, 'src')],
  ];
  for (const [what, args, cwd] of ways) {
    for (const env of [WORKER_ON, WORKER_OFF]) {
      assert.equal(await cliStatus(args, { cwd, env }), want, `${what} (${env.IMZ_SCAN_WORKER_MIN})`);
    }
  }
  assert.equal(await cliStatus(['-C', relative(tmp, dir)], { cwd: tmp, env: WORKER_ON, runtime: 'deno' }), want, 'deno');
});

T('a replica inside another: the worker speculates on the replica the hint names, the scan checks it against the one it opens', async () => {
  const srvDir = join(tmp, 'srv-outer');
  await copyFixture('sample', srvDir);
  const srv = await startServer(srvDir);
  const outer = join(tmp, 'outer');
  assert.is((await imz(['clone', srv.address, outer, '--json'])).code, 0);
  const inner = join(outer, 'docs', 'inner');
  assert.is((await imz(['clone', server.address, inner, '--json'])).code, 0);
  await sleep(1100);
  await appendFile(join(inner, 'docs', 'page-1.txt'), 'inner change\n');
  await appendFile(join(outer, 'src', 'main.js'), 'outer change\n');
  const answers: Record<string, string[]> = {};
  for (const env of [WORKER_OFF, WORKER_ON]) {
    const tag = env.IMZ_SCAN_WORKER_MIN;
    const i1 = await cliStatus([], { cwd: join(inner, 'docs'), env });
    const o1 = await cliStatus(['-C', outer], { cwd: join(inner, 'docs'), env }); // the hint says outer, cwd is in inner
    const o2 = await cliStatus(['-C', '../../..'], { cwd: join(inner, 'docs'), env }); // relative, up out of inner
    const i2 = await cliStatus(['-C', inner], { cwd: outer, env });
    assert.ok(i1.includes('modify docs/page-1.txt') && !i1.includes('modify src/main.js'), `inner (${tag}): ${i1.join(', ')}`);
    assert.ok(o1.includes('modify src/main.js'), `outer (${tag}): ${o1.join(', ')}`);
    assert.equal(o2, o1, `relative -C (${tag})`);
    assert.equal(i2, i1, `-C inner from outer (${tag})`);
    answers[tag!] = [...i1, '|', ...o1];
  }
  assert.equal(answers[WORKER_ON.IMZ_SCAN_WORKER_MIN], answers[WORKER_OFF.IMZ_SCAN_WORKER_MIN]);
});

T('a relative --token-file still works once push has entered the replica', async () => {
  const srvDir = join(tmp, 'srv-token');
  await copyFixture('sample', srvDir);
  const tokDir = join(tmp, 'tokens');
  await mkdir(tokDir, { recursive: true });
  await writeFile(join(tokDir, 'rw'), 'a-secret-token-of-enough-length-1234567890\n');
  const srv = await startServer(srvDir, ['--token-file', join(tokDir, 'rw')]);
  const dir = join(tmp, 'tok-replica');
  const c = await imz(['clone', srv.address, dir, '--token-file', 'rw', '--json'], { cwd: tokDir });
  assert.is(c.code, 0, out(c));
  // Forget the saved token file: only the command line's, relative to where the user is, gives access.
  const cfgPath = join(dir, '.imz', 'config');
  const cfg = JSON.parse(await readFile(cfgPath, 'utf8'));
  delete cfg.tokenFile;
  await writeFile(cfgPath, JSON.stringify(cfg, null, 2) + '\n');
  await appendFile(join(dir, 'README.txt'), 'pushed with a relative token file\n');
  const p = await imz(['push', '-C', relative(tokDir, dir), '--token-file', 'rw', '--json'], { cwd: tokDir, env: { ...process.env, ...WORKER_ON } });
  assert.is(p.code, 0, out(p));
  assert.ok((await readFile(join(srvDir, 'README.txt'), 'utf8')).includes('relative token file'));
});

T('a scanning command that fails before its scan still exits at once while its worker speculates (node and deno)', async () => {
  const dir = await settled();
  // Another server: push and sync stop at the identity check, before any scan; status on a non-replica stops at once.
  const srvDir = join(tmp, 'srv-other');
  await copyFixture('sample', srvDir);
  const other = await startServer(srvDir);
  await setRemote(dir, other.address);
  for (const runtime of ['node', 'deno'] as const) {
    for (const args of [['push', '-C', dir], ['sync', '-C', dir], ['status', '-C', tmp]]) {
      const t0 = Date.now();
      const r = await imz([...args, '--json'], { env: { ...process.env, ...WORKER_ON }, runtime, timeoutMs: 30_000 });
      assert.ok(r.code !== 0, `${runtime} ${args[0]} fails: ${out(r)}`);
      assert.ok(Date.now() - t0 < 15_000, `${runtime} ${args[0]} took ${Date.now() - t0} ms`);
    }
  }
  await other.stop();
});

T('past one chunk (1,100 paths): a pulled content change patched in place, both threads on the joined pass and on a job, relative paths', async () => {
  const srvDir = join(tmp, 'srv-many');
  await mkdir(srvDir, { recursive: true });
  for (let d = 0; d < 11; d++) {
    await mkdir(join(srvDir, 'many', `d${d}`), { recursive: true });
    for (let f = 0; f < 100; f++) await writeFile(join(srvDir, 'many', `d${d}`, `f${f}.txt`), `${d}/${f}\n`);
  }
  const srv = await startServer(srvDir);
  const a = await settled(srv);
  const b = await settled(srv);
  const PW = await passWorker();
  for (let d = 0; d < 11; d++) await appendFile(join(a, 'many', `d${d}`, `f${d * 7}.txt`), 'from a\n');
  assert.is((await imz(['push', '-C', a, '--json'], { timeoutMs: 60_000 })).code, 0);
  assert.is((await imz(['pull', '-C', b, '--json'], { timeoutMs: 60_000 })).code, 0);
  await sleep(1100);
  // Local changes in b: in rows the pull patched (f0, f7...) and beside them, in the first and the last chunk.
  await appendFile(join(b, 'many', 'd0', 'f0.txt'), 'b\n');
  await appendFile(join(b, 'many', 'd10', 'f70.txt'), 'b\n');
  await appendFile(join(b, 'many', 'd10', 'f99.txt'), 'b\n');
  await unlink(join(b, 'many', 'd5', 'f50.txt'));
  await writeFile(join(b, 'many', 'd9', 'new.txt'), 'new\n');
  await mkdir(join(b, 'many', 'd3', 'sub'));
  const want = ['create many/d9/new.txt', 'delete many/d5/f50.txt', 'mkdir many/d3/sub', 'modify many/d0/f0.txt', 'modify many/d10/f70.txt', 'modify many/d10/f99.txt'].sort();
  assert.equal(await plainScan(b), want);
  const was = process.cwd();
  try {
    process.chdir(b);
    await withEnv(WORKER_ON, async () => {
      await warmAndFinish(PW, b);
      assert.equal(brief(await scan(b)), want, 'joined after its pass');
      warmFresh(PW, b); // joined while the worker is still at it
      assert.equal(brief(await scan(b)), want, 'joined mid-pass');
      assert.equal(brief(await scan(b)), want, 'a job, relative paths in the worker');
    });
  } finally {
    process.chdir(was);
  }
  assert.equal(await cliStatus(['-C', b], { env: WORKER_ON }), want);
});

T.run();
