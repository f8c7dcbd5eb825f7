// The scan cache (core/scan_cache.ts, core/scan_cache_model.ts) and the
// lstat pass (core/scan_pass.ts): the cache must never hide a change. Real
// replicas cloned from a real server (the bundled CLI, dist/imz.js), then
// direct calls of scanChanges, and the CLI with and without the worker.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { lstatSync, readFileSync, writeFileSync } from 'node:fs';
import { appendFile, chmod, cp, mkdir, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { type ChangeScan, scanChanges } from '../../core/changes.ts';
import { Replica } from '../../core/replica.ts';
import { SCAN_CACHE_FILE, ScanCache } from '../../core/scan_cache.ts';
import { crc32 } from '../../core/crc32.ts';
import { FACTS, F_CTIME, F_INO, F_LISTED_MTIME, F_MODE, F_MTIME, F_SIZE, F_TYPE, type ScanCacheData, CACHE_HEADER, decodeScanCache, encodeScanCache, encodeScanCacheHead, encodeScanCacheParts, encodedLength, newFacts, typeOfFacts } from '../../core/scan_cache_model.ts';
import { PathList } from '../../core/path_list.ts';
import { BUCKETS, bucketOf } from '../../core/index_model.ts';
import { PassWorker } from '../../core/pass_worker.ts';
import { CHECK } from '../../core/scan_pass.ts';
import { cleanupAll, imz, sampleSuiteServer } from '../helpers.ts';

const T = suite('scan_cache');

const suiteServer = sampleSuiteServer('imz-scan-cache-', async (srv) => {
  for (let i = 0; i < 30; i++) await writeFile(join(srv, 'docs', `page-${i}.txt`), `page ${i}\n`);
});
T.before(suiteServer.start);
T.after(cleanupAll);

/** The bundle's worker (dist/, built before the tests): tsx does not load .ts modules in threads. */
const WORKER = new URL('../../dist/scan_worker.cjs', import.meta.url);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const brief = (s: ChangeScan) => s.changes.map((c) => (c.kind === 'rename' ? `rename ${c.fromPath} -> ${c.path}` : `${c.kind} ${c.path}`));
const scan = async (dir: string) => scanChanges(await Replica.open(dir));
const cacheOf = (dir: string) => decodeScanCache(readFileSync(join(dir, '.imz', SCAN_CACHE_FILE)));

/**
 * A fresh clone whose directories are old enough to be marked (a listing
 * marks a directory only when its mtime and ctime are a second older than
 * the listing), scanned once so the cache holds the marks.
 */
async function marked(): Promise<string> {
  const dir = await suiteServer.clone();
  await sleep(1100);
  assert.equal(brief(await scan(dir)), []);
  const c = cacheOf(dir)!;
  assert.ok(c, 'a cache was written');
  let dirs = 0;
  let marks = 0;
  for (let i = 0; i < c.paths.length; i++) {
    if (typeOfFacts(c.facts, i) !== 2) continue;
    dirs++;
    if (c.facts[i * FACTS + F_LISTED_MTIME] !== 0) marks++;
  }
  assert.ok(dirs >= 5 && marks === dirs, `every directory marked (${marks} of ${dirs})`);
  assert.ok(c.rootListed[0] > 0, 'the root marked');
  return dir;
}

T('the model round-trips without symlinks or an ignore key (empty parts), and its parts are its bytes', () => {
  for (const links of [false, true]) {
    const paths = PathList.fromStrings(['a', 'b', 'b/c']);
    const facts = newFacts(3);
    facts[F_TYPE] = 1;
    facts[FACTS + F_TYPE] = 2;
    facts[2 * FACTS + F_TYPE] = links ? 3 : 1;
    facts[2 * FACTS + F_SIZE] = 7;
    const d: ScanCacheData = {
      sections: Array.from({ length: BUCKETS }, () => ({ ino: 0, size: -1, mtimeMs: 0, ctimeMs: 0, sum: -1 })),
      paths, facts, targets: ['', '', links ? '../a' : ''], ignoreKey: links ? 'key' : '', rootListed: [0, 0],
    };
    const bytes = encodeScanCache(d);
    assert.equal(Buffer.concat(encodeScanCacheParts(d)), Buffer.from(bytes), `parts (${links})`);
    const back = decodeScanCache(bytes);
    assert.ok(back, `it checks out (${links})`);
    assert.equal([...back!.paths], ['a', 'b', 'b/c']);
    assert.equal(back!.targets, d.targets);
    assert.is(back!.ignoreKey, d.ignoreKey);
    // Written in place over its own file: the header alone, lengths from the file's, all but the checksum the same.
    d.sections[7] = { ino: 11, size: 22, mtimeMs: 33.5, ctimeMs: 44.25, sum: 55 };
    d.rootListed = [66, 77];
    const head = encodeScanCacheHead(d, bytes.subarray(0, CACHE_HEADER))!;
    const whole = encodeScanCache(d);
    assert.equal(head.subarray(20), whole.subarray(20, CACHE_HEADER), `head (${links})`);
    assert.is(encodedLength(head), whole.length);
    const fewer: ScanCacheData = { ...d, paths: PathList.fromStrings(['a', 'b']), facts: facts.slice(0, 2 * FACTS), targets: ['', ''] };
    assert.is(encodeScanCacheHead(fewer, bytes.subarray(0, CACHE_HEADER)), undefined, 'not over a file of other rows');
  }
});

T('the model round-trips, and a damaged or foreign file is refused (then rebuilt)', async () => {
  const dir = await marked();
  const bytes = readFileSync(join(dir, '.imz', SCAN_CACHE_FILE));
  const d = decodeScanCache(bytes)!;
  assert.equal(decodeScanCache(encodeScanCache(d)), d);
  assert.ok(d.paths.includes('docs/page-7.txt') && d.paths.includes('src/lib'));
  assert.equal([...d.paths], [...d.paths].sort(), 'paths in string order');
  for (const at of [20, 30, 100, bytes.length - 1, Math.floor(bytes.length / 2)]) {
    const bad = Buffer.from(bytes);
    bad[at] ^= 0x40;
    assert.is(decodeScanCache(bad), undefined, `a flipped byte at ${at}`);
  }
  assert.is(decodeScanCache(bytes.subarray(0, bytes.length - 3)), undefined, 'truncated');
  assert.is(decodeScanCache(Buffer.from('imz-index 1 0\n[]\n')), undefined, 'foreign');
  // Garbage in place of the cache: the scan still sees every change.
  await writeFile(join(dir, '.imz', SCAN_CACHE_FILE), Buffer.alloc(bytes.length, 7));
  await writeFile(join(dir, 'docs', 'new.txt'), 'new\n');
  await appendFile(join(dir, 'README.txt'), 'more\n');
  assert.equal(brief(await scan(dir)), ['create docs/new.txt', 'modify README.txt'].sort((a, b) => (a.split(' ')[1]! < b.split(' ')[1]! ? -1 : 1)));
  assert.ok(cacheOf(dir), 'rebuilt');
});

T('a marked directory that gains a name is listed again', async () => {
  const dir = await marked();
  await writeFile(join(dir, 'src', 'lib', 'added.js'), 'x\n');
  await mkdir(join(dir, 'docs', 'notes', 'deeper', 'deepest'), { recursive: true });
  await writeFile(join(dir, 'docs', 'notes', 'deeper', 'deepest', 'f'), 'f\n');
  await writeFile(join(dir, 'top.txt'), 'top\n');
  assert.equal(brief(await scan(dir)), ['mkdir docs/notes/deeper', 'mkdir docs/notes/deeper/deepest', 'create docs/notes/deeper/deepest/f', 'create src/lib/added.js', 'create top.txt']);
});

T('a same-size rewrite with the mtime put back is caught by its ctime', async () => {
  const dir = await marked();
  const f = join(dir, 'docs', 'page-3.txt');
  const old = (await import('node:fs')).statSync(f);
  await writeFile(f, 'PAGE 3\n');
  await utimes(f, old.atime, old.mtime);
  assert.equal(brief(await scan(dir)), ['modify docs/page-3.txt']);
});

T('a path the index forgets is found again, though its directory did not change', async () => {
  const dir = await marked();
  const r = await Replica.open(dir);
  await r.lock();
  await r.delete('docs/page-5.txt');
  await r.flushIndex();
  await r.unlock();
  assert.equal(brief(await scan(dir)), ['create docs/page-5.txt']);
  // And at the root (no parent directory entry holds the mark there).
  const r2 = await Replica.open(dir);
  await r2.lock();
  await r2.delete('README.txt');
  await r2.flushIndex();
  await r2.unlock();
  assert.equal(brief(await scan(dir)), ['create README.txt', 'create docs/page-5.txt']);
});

T('a new .imzignore lets in what the old one kept out, in a marked directory', async () => {
  const dir = await marked();
  const original = readFileSync(join(dir, '.imzignore'), 'utf8');
  await writeFile(join(dir, '.imzignore'), `${original}*.draft\n`);
  // Created while ignored, in a directory then marked again as holding nothing new.
  await writeFile(join(dir, 'docs', 'notes.draft'), 'draft\n');
  assert.equal(brief(await scan(dir)), ['modify .imzignore']);
  await utimes(join(dir, 'docs'), new Date(Date.now() - 5000), new Date(Date.now() - 5000));
  await sleep(1100); // the ctime that utimes moved must be a second old too
  await scan(dir);
  const docs = cacheOf(dir)!.paths.indexOf('docs');
  assert.ok(cacheOf(dir)!.facts[docs * FACTS + F_LISTED_MTIME]! > 0, 'docs/ marked with notes.draft ignored in it');
  await writeFile(join(dir, '.imzignore'), `${original}# nothing more ignored\n`);
  assert.equal(brief(await scan(dir)), ['modify .imzignore', 'create docs/notes.draft']);
});

T('a directory swapped for a symlink: what lstat finds through the link is not the tracked path', async () => {
  const dir = await marked();
  const elsewhere = join(suiteServer.tmp, `elsewhere-${basename(dir)}`);
  await cp(join(dir, 'src'), elsewhere, { recursive: true });
  await rename(join(dir, 'src'), join(suiteServer.tmp, `moved-${basename(dir)}`));
  await symlink(elsewhere, join(dir, 'src'));
  const s = await scan(dir);
  assert.equal(brief(s).filter((x) => x.includes('src')).sort(), ['delete src/blob.bin', 'delete src/lib/math.js', 'delete src/main.js', 'retype src', 'rmdir src/lib'].sort());
});

T('the CLI gives the same answer with the worker thread as without', async () => {
  const dir = await marked();
  await writeFile(join(dir, 'docs', 'page-9.txt'), 'changed, same size?\n');
  await writeFile(join(dir, 'new-top.txt'), 'n\n');
  await mkdir(join(dir, 'docs', 'sub'));
  await (await import('node:fs/promises')).rm(join(dir, 'docs', 'page-11.txt'));
  await (await import('node:fs/promises')).rm(join(dir, 'bin'), { recursive: true });
  const answers: string[] = [];
  for (const min of ['0', '1000000']) {
    const r = await imz(['status', '-C', dir, '--json', '--offline'], { env: { ...process.env, IMZ_SCAN_WORKER_MIN: min } });
    assert.is(r.code, 0, r.stderr);
    answers.push(r.stdout.split('\n').filter((l) => l.includes('"change"') || l.includes('"path"')).sort().join('\n'));
  }
  assert.ok(answers[0]!.includes('docs/page-11.txt') && answers[0]!.includes('bin/hello.sh') && answers[0]!.includes('new-top.txt'), answers[0]);
  assert.is(answers[0], answers[1]);
});

T('a worker started with the directory runs its own pass over the cache file, and stops when told', async () => {
  const dir = await marked();
  await appendFile(join(dir, 'docs', 'page-3.txt'), 'more\n');
  const replica = await Replica.open(dir);
  const w = PassWorker.start(join(dir, 'docs'), WORKER)!; // below the root: the worker finds the replica itself
  try {
    const spec = await w.speculation(replica.root, 10_000);
    assert.ok(spec, 'it began a pass');
    assert.is(spec!.root, replica.root);
    const data = decodeScanCache(spec!.bytes)!;
    const row = data.paths.indexOf('docs/page-3.txt');
    const clean = data.paths.indexOf('docs/page-4.txt');
    const pass = spec!.pass!;
    for (let waited = 0; pass.done.some((d) => d === 0) && waited < 10_000; waited += 10) await sleep(10);
    assert.ok(pass.done.every((d) => d === 1), 'it finished every chunk');
    assert.is(pass.state[row]! & CHECK, CHECK, 'the appended file needs a close look');
    assert.is(pass.state[clean], 0, 'an untouched file is clean');
  } finally {
    w.stop();
  }
  // For another directory it is stopped, and says so.
  const other = PassWorker.start(join(dir, 'docs'), WORKER)!;
  try {
    assert.is(await other.speculation('/not/this/root', 10_000), undefined);
  } finally {
    other.stop();
  }
  // Outside any replica it begins nothing.
  const none = PassWorker.start(suiteServer.tmp, WORKER)!;
  try {
    assert.is(await none.speculation(replica.root, 10_000), undefined);
  } finally {
    none.stop();
  }
});

T("a scan that joins the warm worker's pass finds what a scan without it finds, also after the index moved under the cache", async () => {
  const dir = await marked();
  const was = process.env.IMZ_SCAN_WORKER_MIN;
  process.env.IMZ_SCAN_WORKER_MIN = '0';
  try {
    const withWorker = async () => {
      PassWorker.warmUp(dir, WORKER);
      await sleep(300); // the worker's own pass under way (or done) before the scan starts
      return brief(await scan(dir)).sort();
    };
    const without = async () => {
      process.env.IMZ_SCAN_WORKER_MIN = '1000000';
      try {
        return brief(await scan(dir)).sort();
      } finally {
        process.env.IMZ_SCAN_WORKER_MIN = '0';
      }
    };
    await appendFile(join(dir, 'docs', 'page-1.txt'), 'x\n');
    await writeFile(join(dir, 'docs', 'page-2.txt'), 'page 2, other\n');
    const a = await withWorker();
    assert.ok(a.includes('modify docs/page-1.txt') && a.includes('modify docs/page-2.txt'), a.join(', '));
    assert.equal(await without(), a);
    // A push rewrites the index buckets of what it sent: the cache file's rows for them are refreshed in place at load.
    const p = await imz(['push', '-C', dir, '--json']);
    assert.is(p.code, 0, p.stderr);
    assert.equal(await withWorker(), []);
    await appendFile(join(dir, 'docs', 'page-1.txt'), 'y\n');
    await appendFile(join(dir, 'docs', 'page-5.txt'), 'z\n');
    const b = await withWorker();
    assert.equal(b, ['modify docs/page-1.txt', 'modify docs/page-5.txt']);
    assert.equal(await without(), b);
    // An evicted file is absent by design: the worker judged its row by the cache file (content here), the index now
    // says on demand. Its row is looked at again, or the scan would report a deletion.
    assert.is((await imz(['push', '-C', dir, '--json'])).code, 0);
    await scan(dir); // the cache file as it is before the eviction
    const e = await imz(['evict', '-C', dir, 'docs/page-7.txt', '--json']);
    assert.is(e.code, 0, e.stderr);
    assert.equal(await withWorker(), []);
    assert.equal(await without(), []);
  } finally {
    if (was === undefined) delete process.env.IMZ_SCAN_WORKER_MIN;
    else process.env.IMZ_SCAN_WORKER_MIN = was;
  }
});

T('a cache file whose checksum fails: the worker begins no pass over it, and the scan starts over from the index', async () => {
  const dir = await marked();
  const file = join(dir, '.imz', SCAN_CACHE_FILE);
  // A rewrite that the damaged cache would call clean: its row is given the file's new stat facts, the checksum left stale.
  await writeFile(join(dir, 'docs', 'page-6.txt'), 'page 6 rewritten\n');
  const st = lstatSync(join(dir, 'docs', 'page-6.txt'));
  const bytes = readFileSync(file);
  const d = decodeScanCache(bytes)!;
  const row = d.paths.indexOf('docs/page-6.txt');
  const at = bytes.indexOf(Buffer.from(new Float64Array(d.facts.slice(row * FACTS, (row + 1) * FACTS)).buffer));
  assert.ok(at > 0, 'the row found in the file');
  const patched = new Float64Array(d.facts.slice(row * FACTS, (row + 1) * FACTS));
  patched[F_SIZE] = st.size;
  patched[F_MTIME] = st.mtimeMs;
  patched[F_CTIME] = st.ctimeMs;
  patched[F_INO] = st.ino;
  patched[F_MODE] = st.mode & 0o7777;
  Buffer.from(patched.buffer).copy(bytes, at);
  await writeFile(file, bytes);
  assert.is(decodeScanCache(bytes), undefined, 'the file does not check out');
  assert.ok(decodeScanCache(bytes, 'none'), 'but its lengths do');
  const offered = PassWorker.start(dir, WORKER)!;
  try {
    assert.is(await offered.speculation((await Replica.open(dir)).root, 10_000), undefined, 'no pass begun over it');
  } finally {
    offered.stop();
  }
  await sleep(1100); // the rewrite is not racily clean: only the facts decide
  const was = process.env.IMZ_SCAN_WORKER_MIN;
  process.env.IMZ_SCAN_WORKER_MIN = '0';
  try {
    PassWorker.warmUp(dir, WORKER);
    await sleep(300);
    assert.equal(brief(await scan(dir)), ['modify docs/page-6.txt']);
  } finally {
    if (was === undefined) delete process.env.IMZ_SCAN_WORKER_MIN;
    else process.env.IMZ_SCAN_WORKER_MIN = was;
  }
  assert.ok(decodeScanCache(readFileSync(file)), 'rebuilt and written back');
  const cli = await imz(['status', '-C', dir, '--json', '--offline'], { env: { ...process.env, IMZ_SCAN_WORKER_MIN: '0' } });
  assert.ok(cli.stdout.includes('"path":"docs/page-6.txt"'), cli.stdout);
});

/** The facts row of path in a decoded cache, as an object (for comparing with an index entry). */
function rowOf(c: ScanCacheData, path: string) {
  const i = c.paths.indexOf(path);
  assert.ok(i >= 0, `${path} has a row`);
  const f = c.facts.subarray(i * FACTS, (i + 1) * FACTS);
  return { size: f[F_SIZE], mode: f[F_MODE], mtimeMs: f[F_MTIME], ctimeMs: f[F_CTIME], ino: f[F_INO] };
}

T("a push leaves the buckets it wrote in the cache as written: the next load reads none of them, and the rows are the index's", async () => {
  const dir = await marked();
  await appendFile(join(dir, 'docs', 'page-3.txt'), 'pushed\n');
  await writeFile(join(dir, 'docs', 'page-4.txt'), 'page 4, pushed\n');
  const p = await imz(['push', '-C', dir, '--json']);
  assert.is(p.code, 0, p.stderr);
  const c = cacheOf(dir)!;
  assert.ok(c, 'the cache checks out');
  const r = await Replica.open(dir);
  for (let b = 0; b < BUCKETS; b++) {
    const st = lstatSync(r.bucketFile(b), { throwIfNoEntry: false });
    const s = c.sections[b]!;
    if (!st) assert.is(s.size, -1, `bucket ${b} absent`);
    else assert.equal([s.ino, s.size, s.mtimeMs, s.ctimeMs], [st.ino, st.size, st.mtimeMs, st.ctimeMs], `bucket ${b}'s section is its file`);
  }
  for (const path of ['docs/page-3.txt', 'docs/page-4.txt']) {
    const e = (await r.get(path))!;
    assert.equal(rowOf(c, path), { size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, ctimeMs: e.ctimeMs, ino: e.ino }, path);
    // Written within the tick: the section records the bucket's bytes too.
    const s = c.sections[bucketOf(path)]!;
    assert.is(s.sum, crc32(readFileSync(r.bucketFile(bucketOf(path)))), `${path}'s bucket sum`);
  }
  const loaded = ScanCache.load(await Replica.open(dir), c.ignoreKey);
  assert.ok(loaded.rowsAsLoaded && loaded.patchedRows.length === 0, `nothing rebuilt (${loaded.patchedRows.length} rows)`);
  assert.equal(brief(await scan(dir)), []);
  await appendFile(join(dir, 'docs', 'page-3.txt'), 'again\n');
  assert.equal(brief(await scan(dir)), ['modify docs/page-3.txt']);
});

T('a section whose identity matches but whose sum does not is rebuilt from its bucket; with its sum it is trusted', async () => {
  const dir = await marked();
  const file = join(dir, '.imz', SCAN_CACHE_FILE);
  const path = 'docs/page-8.txt';
  const b = bucketOf(path);
  const r = await Replica.open(dir);
  const bucketBytes = readFileSync(r.bucketFile(b));
  const real = (await r.get(path))!;
  for (const trusted of [true, false]) {
    const d = decodeScanCache(readFileSync(file))!;
    // A row that disagrees with the index, under a section that claims the bucket's bytes (or other bytes).
    d.sections[b] = { ...d.sections[b]!, sum: (crc32(bucketBytes) ^ (trusted ? 0 : 1)) >>> 0 };
    d.facts[d.paths.indexOf(path) * FACTS + F_SIZE] = real.size + 1000;
    writeFileSync(file, encodeScanCache(d));
    const c = ScanCache.load(await Replica.open(dir), d.ignoreKey);
    assert.is(rowOf(c.data, path).size, trusted ? real.size + 1000 : real.size, trusted ? 'trusted by its sum' : 'rebuilt: the sum differs');
  }
});

T('save writes changed rows over the file it read, and the whole file once another replaced it; the file is then the cache', async () => {
  const dir = await marked();
  const file = join(dir, '.imz', SCAN_CACHE_FILE);
  const r = await Replica.open(dir);
  const c = ScanCache.load(r, cacheOf(dir)!.ignoreKey);
  const ino = lstatSync(file).ino;
  c.setMark('docs', 1234, 5678);
  c.save(r);
  assert.is(lstatSync(file).ino, ino, 'written in place');
  assert.equal(new Uint8Array(readFileSync(file)), encodeScanCache(c.data));
  assert.ok(cacheOf(dir), 'and it checks out');
  // Another process writes its own cache (another mark): what this one holds goes in whole.
  const other = decodeScanCache(readFileSync(file))!;
  other.facts[other.paths.indexOf('docs') * FACTS + F_LISTED_MTIME] = 99;
  writeFileSync(file + '.other', encodeScanCache(other));
  await rename(file + '.other', file);
  const replaced = lstatSync(file).ino;
  c.setMark('docs', 4321, 8765);
  c.save(r);
  assert.not.equal(lstatSync(file).ino, replaced, 'written whole, renamed in');
  assert.equal(new Uint8Array(readFileSync(file)), encodeScanCache(c.data));
  assert.is(cacheOf(dir)!.facts[cacheOf(dir)!.paths.indexOf('docs') * FACTS + F_LISTED_MTIME], 4321);
});

// Writes new files in many buckets (and at both ends of the path order) in a replica.
async function newFilesEverywhere(dir: string, tag: string): Promise<string[]> {
  for (let d = 0; d < 6; d++) {
    await mkdir(join(dir, `fresh-${tag}`, `d${d}`), { recursive: true });
    for (let i = 0; i < 60; i++) await writeFile(join(dir, `fresh-${tag}`, `d${d}`, `n${i}.txt`), `new ${tag} ${d}/${i}\n`);
  }
  await writeFile(join(dir, 'docs', `zz-last-${tag}.txt`), 'after every tracked path\n');
  await writeFile(join(dir, `A-first-${tag}.txt`), 'before every tracked path\n');
  await symlink(`zz-last-${tag}.txt`, join(dir, 'docs', `link-new-${tag}`));
  return [`fresh-${tag}/d5/n59.txt`, `A-first-${tag}.txt`, `docs/zz-last-${tag}.txt`, `docs/link-new-${tag}`];
}

// The cache a command left in dir is the one a scan rebuilds from the index, and the next load rebuilds nothing.
async function assertCacheIsIndex(dir: string, paths: string[]): Promise<void> {
  const after = cacheOf(dir)!;
  assert.ok(after, 'the command wrote the cache');
  const loaded = ScanCache.load(await Replica.open(dir), after.ignoreKey);
  assert.ok(loaded.rowsAsLoaded && loaded.patchedRows.length === 0, `the next load rebuilds nothing (${loaded.patchedRows.length} rows)`);
  writeFileSync(join(dir, '.imz', SCAN_CACHE_FILE), 'gone');
  assert.equal(brief(await scan(dir)), []);
  const rebuilt = cacheOf(dir)!;
  assert.equal(after.paths.toArray(), rebuilt.paths.toArray());
  assert.equal(after.targets, rebuilt.targets);
  for (let i = 0; i < rebuilt.paths.length; i++) {
    for (const f of [F_TYPE, F_SIZE, F_MODE, F_MTIME, F_CTIME, F_INO]) {
      assert.is(after.facts[i * FACTS + f], rebuilt.facts[i * FACTS + f], `${rebuilt.paths.at(i)} fact ${f}`);
    }
  }
  for (const q of paths) assert.ok(after.paths.indexOf(q) >= 0, q);
}

T('a push of new files in many buckets leaves a cache whose rows are those of a cache rebuilt from the index', async () => {
  const dir = await marked();
  const paths = await newFilesEverywhere(dir, 'a');
  const p = await imz(['push', '-C', dir, '--json']);
  assert.is(p.code, 0, p.stderr);
  await assertCacheIsIndex(dir, paths);
});

T('the same when the push had to rebuild the cache first (every bucket parsed): merged, not left for the next command', async () => {
  const dir = await marked();
  const paths = await newFilesEverywhere(dir, 'b');
  writeFileSync(join(dir, '.imz', SCAN_CACHE_FILE), 'gone');
  const p = await imz(['push', '-C', dir, '--json']);
  assert.is(p.code, 0, p.stderr);
  await assertCacheIsIndex(dir, paths);
});

T('a push that removes, changes and retypes paths in many buckets, and adds some: the cache is the index\'s, nothing to rebuild', async () => {
  const dir = await marked();
  await newFilesEverywhere(dir, 'e');
  assert.is((await imz(['push', '-C', dir, '--quiet'])).code, 0);
  await sleep(1100); // directories old enough to be marked again
  assert.equal(brief(await scan(dir)), []);
  for (const d of ['d0', 'd1', 'd2']) await rm(join(dir, 'fresh-e', d), { recursive: true });
  for (let i = 0; i < 60; i += 3) await writeFile(join(dir, 'fresh-e', 'd3', `n${i}.txt`), `changed ${i}\n`);
  await chmod(join(dir, 'fresh-e', 'd4'), 0o700);
  await rm(join(dir, 'docs', 'zz-last-e.txt'));
  await mkdir(join(dir, 'docs', 'zz-last-e.txt'));
  await writeFile(join(dir, 'docs', 'zz-last-e.txt', 'inside.txt'), 'a file where a file was\n');
  const paths = await newFilesEverywhere(dir, 'f');
  const p = await imz(['push', '-C', dir, '--json']);
  assert.is(p.code, 0, p.stderr);
  await assertCacheIsIndex(dir, [...paths, 'docs/zz-last-e.txt/inside.txt', 'fresh-e/d3/n3.txt']);
  const c = cacheOf(dir)!;
  assert.is(c.paths.indexOf('fresh-e/d0/n1.txt'), -1, 'a removed path has no row');
});

T("imz sync that pulls another replica's new files and pushes its own, in many buckets: the cache is the index's", async () => {
  const dir = await marked();
  const other = await marked();
  const theirs = await newFilesEverywhere(other, 'c');
  assert.is((await imz(['push', '-C', other, '--quiet'])).code, 0);
  const mine = await newFilesEverywhere(dir, 'd');
  const p = await imz(['sync', '-C', dir, '--json']);
  assert.is(p.code, 0, p.stderr);
  await assertCacheIsIndex(dir, [...theirs, ...mine]);
});

T.run();
