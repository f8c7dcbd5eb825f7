// Hostile tests of the scan cache (core/scan_cache.ts), its listing marks
// and the shared lstat pass (core/scan_pass.ts, core/scan_worker.ts): every
// way we could think of to make a scan miss a local change or report one
// that did not happen. Real replicas cloned from real servers (the bundled
// CLI, dist/imz.js: run `node scripts/build.mjs` first), then direct calls
// of scanChanges, and the CLI where the worker thread, Deno or another user
// matter. Clones are made up front and aged once (a listing marks only
// directories a second old), so most tests start from a fully marked cache.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, statSync } from 'node:fs';
import {
  appendFile, chmod, chown, cp, link, mkdir, readFile, rename, rm, stat, symlink, truncate, unlink, utimes, writeFile,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { type ChangeScan, scanChanges } from '../../core/changes.ts';
import { Replica } from '../../core/replica.ts';
import { SCAN_CACHE_FILE } from '../../core/scan_cache.ts';
import { FACTS, F_LISTED_MTIME, decodeScanCache, typeOfFacts } from '../../core/scan_cache_model.ts';
import { runReport as out, type ServerHandle, cleanupAll, copyFixture, imz, imzBundle, jsonLines, makeTmp, startServer } from '../helpers.ts';

const T = suite('scan_cache_hostile');

let tmp: string;
let server: ServerHandle;
let server2: ServerHandle;
let n = 0;
const pool: string[] = [];
const pool2: string[] = [];
/** A clone of a server of its own (the random test pushes freely). */
let solo: string;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const brief = (s: ChangeScan) => s.changes.map((c) => (c.kind === 'rename' ? `rename ${c.fromPath} -> ${c.path}` : `${c.kind} ${c.path}`));
const sorted = (a: string[]) => [...a].sort();
const scan = async (dir: string) => scanChanges(await Replica.open(dir));
const cacheFile = (dir: string) => join(dir, '.imz', SCAN_CACHE_FILE);
const cacheOf = (dir: string) => decodeScanCache(readFileSync(cacheFile(dir)));
/** The listing mark of a tracked directory in the cache on disk (0: none). */
const markOf = (dir: string, path: string) => {
  const c = cacheOf(dir)!;
  if (path === '') return c.rootListed;
  const i = c.paths.indexOf(path);
  return [c.facts[i * FACTS + F_LISTED_MTIME]!, c.facts[i * FACTS + F_LISTED_MTIME + 1]!];
};
/** `imz status --json --offline` as "kind path" lines, sorted. */
async function cliStatus(dir: string, env: NodeJS.ProcessEnv = {}, runtime: 'node' | 'deno' = 'node'): Promise<string[]> {
  const r = await imz(['status', '-C', dir, '--json', '--offline'], { env: { ...process.env, ...env }, runtime });
  assert.is(r.code, 0, out(r));
  return jsonLines(r.stdout).filter((e) => e.event === 'change').map((e) => `${e.kind} ${e.path}`).sort();
}
const count = (lines: string[], kind: string) => lines.filter((l) => l.startsWith(`${kind} `)).length;

/** Names a server tree may hold that exercise paths' encoding and order. */
const ODD = ['sp ace.txt', 'ünï/cødé.md', 'ünï/emoji 😀.txt', `quote'"#%&.txt`, 'back\\slash.txt', 'a-b', 'a.b', 'a/b', 'a0', `${'L'.repeat(80)}.txt`];

async function cloneOf(srv: ServerHandle, extra: string[] = []): Promise<string> {
  const dir = join(tmp, `replica-${++n}`);
  const r = await imz(['clone', ...extra, srv.address, dir, '--json']);
  assert.is(r.code, 0, `clone: ${out(r)}`);
  return dir;
}

T.before(async () => {
  tmp = await makeTmp('imz-scan-hostile-');
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  for (let i = 0; i < 10; i++) await writeFile(join(srv, 'docs', `page-${i}.txt`), `page ${i}\n`);
  for (const p of ODD) {
    await mkdir(dirname(join(srv, p)), { recursive: true });
    await writeFile(join(srv, p), `odd ${p}\n`);
  }
  server = await startServer(srv);
  const srv2 = join(tmp, 'srv2');
  await copyFixture('sample', srv2);
  server2 = await startServer(srv2);
  const srv3 = join(tmp, 'srv3');
  await copyFixture('sample', srv3);
  const server3 = await startServer(srv3);
  // Clones for the tests to take, aged together (one sleep for all), then scanned once so every directory is marked.
  for (let i = 0; i < 13; i++) pool.push(await cloneOf(server));
  for (let i = 0; i < 2; i++) pool2.push(await cloneOf(server2));
  solo = await cloneOf(server3);
  await sleep(1100);
  for (const d of [...pool, ...pool2, solo]) {
    assert.equal(brief(await scan(d)), [], `a fresh clone is clean: ${d}`);
    const c = cacheOf(d)!;
    for (let i = 0; i < c.paths.length; i++) if (typeOfFacts(c.facts, i) === 2) assert.ok(c.facts[i * FACTS + F_LISTED_MTIME]! > 0, `${c.paths.at(i)} marked`);
    assert.ok(c.rootListed[0] > 0, 'root marked');
  }
});
T.after(cleanupAll);

const take = () => {
  const d = pool.shift();
  assert.ok(d, 'a clone left in the pool');
  return d!;
};

// -- The worker thread --------------------------------------------------------

T('the worker reads the facts where they are: a cache read from its file (header first) gives the same verdicts with the worker as without', async () => {
  // A tree of a few thousand 3-byte files: several chunks of the pass, so the
  // worker (warmed by the CLI) claims some. A worker reading the facts from the
  // start of the file's buffer saw the header and other rows: a size of 3 read
  // as the symlink type code, which then passed as clean.
  const srv = join(tmp, 'big');
  await mkdir(srv);
  const D = 45;
  const F = 100;
  const name = (d: number) => `d${String(d).padStart(2, '0')}`;
  for (let d = 0; d < D; d++) {
    await mkdir(join(srv, name(d)));
    await Promise.all(Array.from({ length: F }, (_, i) => writeFile(join(srv, name(d), `f${i}`), 'ab\n')));
  }
  const big = await startServer(srv);
  const dir = await cloneOf(big);
  assert.equal(await cliStatus(dir), []);
  // The worker only gets the facts view when the file's length is a multiple of 8 (else it failed to start at all): pad to that.
  const size = (await stat(cacheFile(dir))).size;
  let k = 1;
  while ((size + 64 + 1 + k) % 8 !== 0) k++;
  await writeFile(join(dir, 'p'.repeat(k)), 'ab\n');
  const push = await imz(['push', '-C', dir]);
  assert.is(push.code, 0, out(push));
  assert.equal(await cliStatus(dir), []);
  assert.is((await stat(cacheFile(dir))).size % 8, 0, 'the cache file is a whole number of facts');

  for (let d = 0; d < D; d++) await Promise.all(Array.from({ length: F }, (_, i) => writeFile(join(dir, name(d), `f${i}`), 'cd\n')));
  for (let d = 0; d < D; d += 5) await writeFile(join(dir, name(d), 'new'), 'n\n');
  for (let d = 1; d < D; d += 9) await rm(join(dir, name(d), 'f7'));
  const creates = Math.ceil(D / 5);
  const deletes = Math.ceil((D - 1) / 9);
  const expect = (lines: string[], what: string) => {
    assert.is(count(lines, 'modify'), D * F - deletes, `${what}: modifies`);
    assert.is(count(lines, 'create'), creates, `${what}: creates`);
    assert.is(count(lines, 'delete'), deletes, `${what}: deletes`);
    assert.is(lines.length, D * F + creates, `${what}: nothing else`);
  };
  const without = await cliStatus(dir, { IMZ_SCAN_WORKER_MIN: '100000000' });
  expect(without, 'without the worker');
  for (let round = 0; round < 3; round++) assert.equal(await cliStatus(dir, { IMZ_SCAN_WORKER_MIN: '0' }), without, `with the worker, round ${round}`);

  // A worker that claims chunks and dies, and one that cannot start: the main thread does their share.
  const bundle = await imzBundle();
  const variants: Record<string, string | undefined> = {
    // In place of the bundle's worker, a CommonJS script as it is.
    dies: `const { parentPort } = require('node:worker_threads');\nparentPort?.once('message', (d) => { const ctl = new Int32Array(d.ctl); Atomics.add(ctl, 0, 1); Atomics.add(ctl, 0, 1); process.exit(3); });\n`,
    throws: `const { parentPort } = require('node:worker_threads');\nparentPort?.once('message', (d) => { const ctl = new Int32Array(d.ctl); Atomics.add(ctl, 0, 1); throw new Error('boom'); });\n`,
    missing: undefined,
  };
  for (const [what, code] of Object.entries(variants)) {
    const copy = join(tmp, `dist-${what}`);
    await cp(dirname(bundle), copy, { recursive: true });
    if (code === undefined) await rm(join(copy, 'scan_worker.cjs'));
    else await writeFile(join(copy, 'scan_worker.cjs'), code);
    const saved = process.env.IMZ_TEST_BIN;
    process.env.IMZ_TEST_BIN = join(copy, 'imz.js');
    try {
      assert.equal(await cliStatus(dir, { IMZ_SCAN_WORKER_MIN: '0' }), without, `a worker that ${what}`);
    } finally {
      if (saved === undefined) delete process.env.IMZ_TEST_BIN;
      else process.env.IMZ_TEST_BIN = saved;
    }
  }

  // Deno (no fs binding; its own worker from the sources) gives the same answer, on the cache Node wrote and Node on Deno's.
  assert.equal(await cliStatus(dir, { IMZ_SCAN_WORKER_MIN: '0' }, 'deno'), without, 'Deno');
  assert.equal(await cliStatus(dir, { IMZ_SCAN_WORKER_MIN: '0' }), without, 'Node after Deno');
  await big.stop();
});

// -- Where the tree is ----------------------------------------------------------

T('a replica opened through a symlink to it: the root is listed (lstat of the root saw the link)', async () => {
  const dir = take();
  const via = join(tmp, `link-to-${n}`);
  await symlink(dir, via);
  assert.equal(brief(await scan(via)), [], 'clean through the link');
  await writeFile(join(dir, 'new-at-root.txt'), 'x\n');
  await writeFile(join(dir, 'docs', 'new-in-docs.txt'), 'y\n');
  assert.equal(brief(await scan(via)), ['create docs/new-in-docs.txt', 'create new-at-root.txt']);
  assert.equal(await cliStatus(via), ['create docs/new-in-docs.txt', 'create new-at-root.txt']);
  assert.equal(brief(await scan(dir)), ['create docs/new-in-docs.txt', 'create new-at-root.txt'], 'and by its real path');
});

T('a tracked directory replaced by a symlink loop, a dangling link, a link to a file: retyped, its contents deleted, no ELOOP', async () => {
  const dir = take();
  await rename(join(dir, 'src'), join(tmp, `src-away-${n}`));
  await symlink('src', join(dir, 'src')); // src -> src: lstat of src/main.js is ELOOP
  await rename(join(dir, 'docs', 'notes'), join(tmp, `notes-away-${n}`));
  await symlink('/nonexistent/imz/notes', join(dir, 'docs', 'notes'));
  await rm(join(dir, 'bin'), { recursive: true });
  await symlink('README.txt', join(dir, 'bin'));
  const expected = sorted([
    'retype src', 'delete src/blob.bin', 'delete src/lib/math.js', 'delete src/main.js', 'rmdir src/lib',
    'retype docs/notes', 'delete docs/notes/history.md', 'retype bin', 'delete bin/hello.sh',
  ]);
  assert.equal(sorted(brief(await scan(dir))), expected);
  assert.equal(await cliStatus(dir, { IMZ_SCAN_WORKER_MIN: '0' }), expected, 'the CLI, worker allowed');
});

T('permissions (as nobody): a directory swapped for a link into a place not to be entered is a retype; an unreadable tracked directory is an error, never deletes', async () => {
  if (process.getuid?.() !== 0) return; // root ignores mode bits: only root can run imz as another user here
  const NOBODY = { uid: 65534, gid: 65534 };
  await chmod(dirname(await imzBundle()), 0o755);
  const own = await makeTmp('imz-scan-hostile-perm-');
  await chmod(own, 0o755);
  const dir = join(own, 'rep');
  const c = await imz(['clone', server2.address, dir]);
  assert.is(c.code, 0, out(c));
  const asNobody = async () => imz(['status', '-C', dir, '--json', '--offline'], { ...NOBODY, env: { ...process.env, IMZ_SCAN_WORKER_MIN: '0' } });
  const first = await asNobody();
  assert.is(first.code, 0, out(first));
  const secret = join(own, 'secret');
  await mkdir(secret, { mode: 0o700 });
  await writeFile(join(secret, 'main.js'), 'hidden\n');
  await rename(join(dir, 'src'), join(own, 'src-away'));
  await symlink(secret, join(dir, 'src'));
  const r = await asNobody();
  assert.is(r.code, 0, `EACCES below a symlinked directory: ${out(r)}`);
  const kinds = jsonLines(r.stdout).filter((e) => e.event === 'change').map((e) => `${e.kind} ${e.path}`).sort();
  assert.equal(kinds, sorted(['retype src', 'delete src/blob.bin', 'delete src/lib/math.js', 'delete src/main.js', 'rmdir src/lib']));
  // A real tracked directory nobody may enter: no answer is better than a wrong one.
  await rm(join(dir, 'src'));
  await rename(join(own, 'src-away'), join(dir, 'src'));
  await chmod(join(dir, 'docs', 'notes'), 0o000);
  const denied = await asNobody();
  await chmod(join(dir, 'docs', 'notes'), 0o755);
  assert.is.not(denied.code, 0, `an unreadable directory fails the scan: ${out(denied)}`);
  assert.not.match(denied.stdout, /"delete"|"rmdir"/, 'and reports no delete');
  const after = await asNobody();
  assert.is(after.code, 0, out(after));
  assert.equal(jsonLines(after.stdout).filter((e) => e.event === 'change'), [], 'clean again once readable');
});

// -- Listing marks ------------------------------------------------------------

T('marks: a name added and removed, a rename within a directory, a new name with the mtime put back to the mark', async () => {
  const dir = take();
  await writeFile(join(dir, 'empty', 'flash'), 'x\n');
  await unlink(join(dir, 'empty', 'flash'));
  assert.equal(brief(await scan(dir)), [], 'added and removed: nothing');
  await writeFile(join(dir, 'empty', 'stays'), 'x\n');
  assert.equal(brief(await scan(dir)), ['create empty/stays'], 'then added for good');
  await rm(join(dir, 'empty', 'stays'));

  await rename(join(dir, 'src', 'main.js'), join(dir, 'src', 'main2.js'));
  assert.equal(brief(await scan(dir)), ['rename src/main.js -> src/main2.js']);
  await rename(join(dir, 'src', 'main2.js'), join(dir, 'src', 'main.js'));

  // The directory's mtime put back to exactly the marked one: its ctime still moved.
  const [mt] = markOf(dir, 'src/lib');
  assert.ok(mt! > 0, 'src/lib marked');
  await writeFile(join(dir, 'src', 'lib', 'sneaky.js'), 's\n');
  await utimes(join(dir, 'src', 'lib'), mt! / 1000, mt! / 1000);
  assert.ok(Math.abs(statSync(join(dir, 'src', 'lib')).mtimeMs - mt!) < 0.01, 'mtime back at the mark');
  assert.equal(brief(await scan(dir)), ['create src/lib/sneaky.js']);
  // Likewise at the root.
  const [rm0] = markOf(dir, '');
  await writeFile(join(dir, 'root-sneaky'), 'r\n');
  await utimes(dir, rm0! / 1000, rm0! / 1000);
  assert.equal(brief(await scan(dir)), ['create root-sneaky', 'create src/lib/sneaky.js']);
});

T('marks: a directory replaced by another of the same name, with the same mtime, copied files and one more', async () => {
  const dir = take();
  const [mt] = markOf(dir, 'docs/notes');
  const other = join(tmp, `other-notes-${n}`);
  await cp(join(dir, 'docs', 'notes'), other, { recursive: true, preserveTimestamps: true });
  await writeFile(join(other, 'extra.md'), 'extra\n');
  await utimes(other, mt! / 1000, mt! / 1000);
  await rename(join(dir, 'docs', 'notes'), join(tmp, `notes-gone-${n}`));
  await rename(other, join(dir, 'docs', 'notes'));
  assert.equal(brief(await scan(dir)), ['create docs/notes/extra.md']);
  // And one that lacks a tracked file: deleted, nothing more.
  const third = join(tmp, `third-notes-${n}`);
  await mkdir(third);
  await utimes(third, mt! / 1000, mt! / 1000);
  await rm(join(dir, 'docs', 'notes'), { recursive: true });
  await rename(third, join(dir, 'docs', 'notes'));
  assert.equal(brief(await scan(dir)), ['delete docs/notes/history.md']);
});

T('marks: hard links in and out of the tree', async () => {
  const dir = take();
  const outside = join(tmp, `outside-link-${n}`);
  await link(join(dir, 'README.txt'), outside);
  await link(join(dir, 'README.txt'), join(dir, 'bin', 'hard.txt'));
  await writeFile(outside, 'rewritten through a link outside\n'); // same inode as README.txt: its ctime moves
  const s = await scan(dir);
  assert.equal(brief(s), ['modify README.txt', 'create bin/hard.txt']);
});

T('marks: a directory changed within the last second is not marked, so what follows at once is seen', async () => {
  const dir = take();
  await writeFile(join(dir, 'docs', 'a.txt'), 'a\n');
  assert.equal(brief(await scan(dir)), ['create docs/a.txt']);
  await rm(join(dir, 'docs', 'a.txt'));
  assert.equal(brief(await scan(dir)), []);
  assert.is.not(markOf(dir, 'docs')[0], statSync(join(dir, 'docs')).mtimeMs, 'docs (changed just now) not marked with its mtime');
  await writeFile(join(dir, 'docs', 'b.txt'), 'b\n');
  assert.equal(brief(await scan(dir)), ['create docs/b.txt']);
});

T('a same-size rewrite with the mtime put back, right after the index was written (racily clean)', async () => {
  const dir = take();
  await writeFile(join(dir, 'docs', 'fresh.txt'), 'fresh 1\n');
  const p = await imz(['push', '-C', dir]);
  assert.is(p.code, 0, out(p));
  const f = join(dir, 'docs', 'fresh.txt');
  const st = statSync(f);
  await writeFile(f, 'fresh 2\n');
  await utimes(f, st.atime, st.mtime);
  assert.equal(brief(await scan(dir)), ['modify docs/fresh.txt']);
  const g = join(dir, 'docs', 'page-1.txt');
  const sg = statSync(g);
  await writeFile(g, 'PAGE 1\n');
  await utimes(g, sg.atime, sg.mtime);
  await chmod(join(dir, 'docs', 'page-2.txt'), 0o600);
  assert.equal(brief(await scan(dir)), ['modify docs/fresh.txt', 'modify docs/page-1.txt', 'meta docs/page-2.txt']);
});

// -- Index changes ------------------------------------------------------------

T('pull adds, changes and removes paths in marked directories: no false create or delete, and what is new locally is still seen', async () => {
  const [a, b] = pool2;
  await writeFile(join(b!, 'docs', 'from-b.txt'), 'b\n');
  await mkdir(join(b!, 'newdir'));
  await writeFile(join(b!, 'newdir', 'f'), 'f\n');
  await rm(join(b!, 'src', 'main.js'));
  await appendFile(join(b!, 'README.txt'), 'more from b\n');
  await rename(join(b!, 'docs', 'kml.txt'), join(b!, 'docs', 'kml-renamed.txt'));
  const p = await imz(['push', '-C', b!]);
  assert.is(p.code, 0, out(p));
  const pl = await imz(['pull', '-C', a!]);
  assert.is(pl.code, 0, out(pl));
  assert.equal(brief(await scan(a!)), [], 'clean after the pull');
  await writeFile(join(a!, 'docs', 'mine.txt'), 'm\n');
  await writeFile(join(a!, 'newdir', 'g'), 'g\n');
  assert.equal(brief(await scan(a!)), ['create docs/mine.txt', 'create newdir/g']);
  // The server deletes a file this replica changed meanwhile: whatever the pull does, the local content is not lost from view.
  await appendFile(join(a!, 'src', 'lib', 'math.js'), '// local edit\n');
  await rm(join(b!, 'src', 'lib', 'math.js'));
  const p2 = await imz(['pull', '-C', b!]);
  assert.is(p2.code, 0, out(p2));
  const p3 = await imz(['push', '-C', b!]);
  assert.is(p3.code, 0, out(p3));
  await imz(['pull', '-C', a!]);
  const after = brief(await scan(a!));
  const fresh = await (async () => {
    await rm(cacheFile(a!));
    return brief(await scan(a!));
  })();
  assert.equal(after, fresh, 'the cached scan says what a scan without the cache says');
  // Still there with the local edit and not tracked as such: it must show (a create or a modify), never pass as clean or deleted.
  const local = join(a!, 'src', 'lib', 'math.js');
  if (readFileSync(local, 'utf8').includes('// local edit')) assert.ok(after.some((x) => x === 'create src/lib/math.js' || x === 'modify src/lib/math.js'), after.join('\n'));
});

T('on-demand: get, evict and fetched files deleted; remote files absent are never deletes', async () => {
  const dir = await cloneOf(server, ['--on-demand']);
  await sleep(1100);
  assert.equal(brief(await scan(dir)), []);
  const g = await imz(['get', '-C', dir, 'docs/page-1.txt', 'README.txt']);
  assert.is(g.code, 0, out(g));
  assert.equal(brief(await scan(dir)), [], 'after get');
  const e = await imz(['evict', '-C', dir, 'README.txt']);
  assert.is(e.code, 0, out(e));
  assert.equal(brief(await scan(dir)), [], 'after evict');
  await rm(join(dir, 'docs', 'page-1.txt'));
  await writeFile(join(dir, 'docs', 'local.txt'), 'l\n');
  const s = await scan(dir);
  assert.equal(brief(s), ['create docs/local.txt', 'delete docs/page-1.txt']);
  assert.is(s.deleted, 1);
});

// -- The cache file -------------------------------------------------------------

T('a stale, foreign, truncated, directory or half-saved cache: never a wrong answer', async () => {
  const dir = take();
  const other = take();
  const stale = readFileSync(cacheFile(dir));
  // The index moves on (push adds and removes), then the old cache comes back.
  await writeFile(join(dir, 'docs', 'pushed.txt'), 'p\n');
  await rm(join(dir, 'docs', 'page-4.txt'));
  const p = await imz(['push', '-C', dir]);
  assert.is(p.code, 0, out(p));
  assert.equal(brief(await scan(dir)), []);
  await writeFile(cacheFile(dir), stale);
  assert.equal(brief(await scan(dir)), [], 'a stale cache: no create of pushed.txt, no delete of page-4.txt');
  await writeFile(join(dir, 'docs', 'page-4.txt'), 'back\n');
  assert.equal(brief(await scan(dir)), ['create docs/page-4.txt']);
  await rm(join(dir, 'docs', 'page-4.txt'));
  // Another replica's cache (its marks are of its own directories).
  await writeFile(cacheFile(dir), readFileSync(cacheFile(other)));
  await writeFile(join(dir, 'src', 'lib', 'x.js'), 'x\n');
  assert.equal(brief(await scan(dir)), ['create src/lib/x.js'], 'a foreign cache');
  // Truncated, a directory in its place, a crashed save's temp file beside it.
  await truncate(cacheFile(dir), 100);
  assert.equal(brief(await scan(dir)), ['create src/lib/x.js'], 'truncated');
  await rm(cacheFile(dir));
  await mkdir(cacheFile(dir));
  await writeFile(join(dir, 'bin', 'y.sh'), 'y\n');
  assert.equal(brief(await scan(dir)), ['create bin/y.sh', 'create src/lib/x.js'], 'a directory where the cache goes');
  await rm(cacheFile(dir), { recursive: true });
  await writeFile(join(dir, '.imz', `.imz-tmp-crashed-${SCAN_CACHE_FILE}`), stale.subarray(0, 1000));
  assert.equal(brief(await scan(dir)), ['create bin/y.sh', 'create src/lib/x.js'], 'a torn temp file beside it');
  assert.ok(cacheOf(dir), 'written again');
});

T('two scans (and a CLI status) at once give the same answer and leave a cache that does too', async () => {
  const dir = take();
  await writeFile(join(dir, 'docs', 'c1.txt'), '1\n');
  await appendFile(join(dir, 'src', 'main.js'), '//\n');
  await rm(join(dir, 'bin', 'hello.sh'));
  await mkdir(join(dir, 'src', 'lib', 'deep'));
  const expected = ['mkdir src/lib/deep', 'create docs/c1.txt', 'modify src/main.js', 'delete bin/hello.sh'];
  const [x, y, z, cli] = await Promise.all([scan(dir), scan(dir), scan(dir), cliStatus(dir)]);
  for (const s of [x, y, z]) assert.equal(brief(s!), expected);
  assert.equal(cli, sorted(expected));
  assert.equal(brief(await scan(dir)), expected);
});

// -- .imzignore and conflict copies -------------------------------------------

T('.imzignore: marks made with ignored names in them are dropped when a rule goes, or the file', async () => {
  const dir = take();
  await writeFile(join(dir, 'docs', 'x.tmp'), 't\n');
  await mkdir(join(dir, 'src', 'build'));
  await writeFile(join(dir, 'src', 'build', 'out.o'), 'o\n');
  const old = new Date(Date.now() - 5000);
  for (const d of ['docs', 'src']) await utimes(join(dir, d), old, old);
  await sleep(1100); // utimes moved the ctimes: a second old before a mark
  assert.equal(brief(await scan(dir)), [], 'ignored');
  assert.ok(markOf(dir, 'docs')[0]! > 0 && markOf(dir, 'src')[0]! > 0, 'marked with the ignored names in them');
  await writeFile(join(dir, '.imzignore'), '*.tmp\n');
  assert.equal(brief(await scan(dir)), ['mkdir src/build', 'modify .imzignore', 'create src/build/out.o']);
  await rm(join(dir, '.imzignore'));
  assert.equal(brief(await scan(dir)), ['mkdir src/build', 'create docs/x.tmp', 'create src/build/out.o', 'delete .imzignore']);
  // A tracked directory ignored, a name added in it, the rule dropped.
  await writeFile(join(dir, '.imzignore'), 'bin/\n');
  await writeFile(join(dir, 'bin', 'later.sh'), 'l\n');
  assert.ok(!brief(await scan(dir)).some((x) => x.includes('bin/')), 'nothing under an ignored bin/');
  await writeFile(join(dir, '.imzignore'), '\n');
  assert.ok(brief(await scan(dir)).includes('create bin/later.sh'), 'seen once bin/ is not ignored');
});

T('conflict-copy names: ignored while untracked, seen once renamed', async () => {
  const dir = take();
  await writeFile(join(dir, 'docs', 'kml.imz-conflict-abc-3.txt'), 'copy\n');
  await mkdir(join(dir, 'src', 'lib.imz-conflict-abc-4'));
  await writeFile(join(dir, 'src', 'lib.imz-conflict-abc-4', 'math.js'), 'copy\n');
  assert.equal(brief(await scan(dir)), []);
  assert.equal(brief(await scan(dir)), [], 'again, from the cache');
  await rename(join(dir, 'docs', 'kml.imz-conflict-abc-3.txt'), join(dir, 'docs', 'kml-mine.txt'));
  assert.equal(brief(await scan(dir)), ['create docs/kml-mine.txt']);
});

// -- Names ----------------------------------------------------------------------

T('unusual names: changed, added, removed and renamed next to each other, after a rebuild of the buckets they sit in', async () => {
  const dir = take();
  await appendFile(join(dir, 'ünï', 'cødé.md'), 'more\n');
  await writeFile(join(dir, 'ünï', 'ñew 😀.txt'), 'n\n');
  await rm(join(dir, 'back\\slash.txt'));
  await rename(join(dir, 'sp ace.txt'), join(dir, 'sp  ace.txt'));
  await writeFile(join(dir, 'a', 'b'), 'changed\n');
  await writeFile(join(dir, 'a.c'), 'between a.b and a/b\n');
  const expected = ['create a.c', 'modify a/b', 'rename sp ace.txt -> sp  ace.txt', 'modify ünï/cødé.md', 'create ünï/ñew 😀.txt', 'delete back\\slash.txt'];
  assert.equal(sorted(brief(await scan(dir))), sorted(expected));
  const p = await imz(['push', '-C', dir]);
  assert.is(p.code, 0, out(p));
  assert.equal(brief(await scan(dir)), [], 'clean after the push rewrote their buckets');
  const c = cacheOf(dir)!;
  assert.equal([...c.paths], [...c.paths].sort(), 'still in string order after the merge');
  assert.ok(c.paths.includes('ünï/ñew 😀.txt') && c.paths.includes(`quote'"#%&.txt`));
  await writeFile(join(dir, 'ünï', 'emoji 😀.txt'), 'same size?\n');
  assert.equal(brief(await scan(dir)), ['modify ünï/emoji 😀.txt']);
});

// -- Everything at random, against a scan without the cache -------------------

T('random changes: the cached scan always says what a scan without the cache says', async () => {
  const dir = solo;
  let seed = 0x5eed;
  const rnd = (k: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % k;
  };
  const listAll = async (): Promise<{ files: string[]; dirs: string[] }> => {
    const files: string[] = [];
    const dirs: string[] = [''];
    const walk = async (rel: string) => {
      const { readdir } = await import('node:fs/promises');
      for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
        if (e.name === '.imz' || e.name === '.imzignore') continue;
        const p = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) {
          dirs.push(p);
          await walk(p);
        } else if (e.isFile()) files.push(p);
      }
    };
    await walk('');
    return { files, dirs };
  };
  let made = 0;
  for (let round = 0; round < 4; round++) {
    for (let op = 0; op < 8; op++) {
      const { files, dirs } = await listAll();
      const d = dirs[rnd(dirs.length)]!;
      const f = files.length ? files[rnd(files.length)]! : undefined;
      const at = (name: string) => join(dir, d, name);
      switch (rnd(10)) {
        case 0: await writeFile(at(`r${++made}.txt`), `r${made}\n`); break;
        case 1: if (f) await rm(join(dir, f)); break;
        case 2: if (f) await rename(join(dir, f), at(`moved${++made}`)); break;
        case 3: if (f) await writeFile(join(dir, f), readFileSync(join(dir, f), 'utf8').toUpperCase()); break;
        case 4: if (f) await chmod(join(dir, f), 0o600 | rnd(2) * 0o100); break;
        case 5: await mkdir(at(`dir${++made}`)); break;
        case 6: await symlink(`target-${made}`, at(`ln${++made}`)); break;
        case 7: if (f) await link(join(dir, f), at(`hl${++made}`)); break;
        case 8: { const t = new Date(Date.now() - 3600_000); await utimes(join(dir, d), t, t); break; }
        default: if (f) { await rm(join(dir, f)); await mkdir(join(dir, f)); await writeFile(join(dir, f, 'inside'), 'i\n'); } break;
      }
    }
    const cached = brief(await scan(dir));
    const again = brief(await scan(dir));
    await rm(cacheFile(dir));
    const fresh = brief(await scan(dir));
    assert.equal(cached, fresh, `round ${round}: with the cache vs without`);
    assert.equal(again, fresh, `round ${round}: a second scan from the cache`);
    if (round % 2 === 1) {
      const p = await imz(['push', '-C', dir]);
      assert.is(p.code, 0, out(p));
      assert.equal(brief(await scan(dir)), [], `round ${round}: clean after push`);
    }
    await sleep(1100); // old enough to be marked on the next listing
    assert.equal(brief(await scan(dir)), fresh.length && round % 2 === 0 ? fresh : [], `round ${round}: marks made`);
  }
  // The last state, aged and marked, then one change in each directory.
  const { dirs } = await listAll();
  for (const d of dirs) await writeFile(join(dir, d, `late-${d.replaceAll('/', '_')}.txt`), 'late\n');
  assert.is(brief(await scan(dir)).filter((x) => x.startsWith('create ') && x.includes('late-')).length, dirs.length, 'a new name in every directory seen');
});

T.run();
