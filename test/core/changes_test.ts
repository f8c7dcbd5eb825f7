// Unit tests of core/changes.ts (scanChanges) on real replicas: a server on
// a copy of fixtures/sample, a fresh clone per test (the bundled CLI,
// dist/imz.js: run `npm run build` first), then local edits and a direct
// call of scanChanges.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync } from 'node:fs';
import { appendFile, chmod, mkdir, readFile, rename, rm, rmdir, stat, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type ChangeScan, type LocalChange, isConflictCopy, scanChanges } from '../../core/changes.ts';
import { Replica } from '../../core/replica.ts';
import { cleanupAll, sampleSuiteServer } from '../helpers.ts';

const T = suite('changes');

const suiteServer = sampleSuiteServer('imz-changes-', async (srv) => {
  // A tracked file whose name looks like a conflict copy (the user added it on purpose).
  await writeFile(join(srv, 'kept.imz-conflict-abc-1.txt'), 'tracked on purpose\n');
  await writeFile(join(srv, 'docs', 'notes', 'more.md'), 'more notes\n');
  await writeFile(join(srv, 'twin-a.txt'), 'twin content\n');
  await writeFile(join(srv, 'twin-b.txt'), 'other twin!!\n'); // same size, other content
});
T.before(suiteServer.start);
T.after(cleanupAll);
const cloned = suiteServer.clone;
let refs = 0;

async function scan(dir: string): Promise<ChangeScan> {
  return scanChanges(await Replica.open(dir));
}

const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** "kind path" (or "rename from -> to") per change, in result order. */
const brief = (s: ChangeScan) => s.changes.map((c) => (c.kind === 'rename' ? `rename ${c.fromPath} -> ${c.path}` : `${c.kind} ${c.path}`));
const find = (s: ChangeScan, path: string): LocalChange => {
  const c = s.changes.find((x) => x.path === path);
  assert.ok(c, `a change for ${path} in: ${brief(s).join(', ')}`);
  return c!;
};

T('a fresh clone has no changes; tracked counts the files', async () => {
  const dir = await cloned();
  const s = await scan(dir);
  assert.equal(brief(s), []);
  assert.equal(s.skipped, []);
  // .imzignore README.txt bin/hello.sh docs/kml.txt docs/notes/history.md docs/notes/more.md src/blob.bin src/lib/math.js src/main.js kept... twin-a twin-b
  assert.is(s.tracked, 12);
  assert.is(s.deleted, 0);
  assert.equal(s.refresh, []);
});

T('every kind: create, modify, delete, mkdir, rmdir, symlink, meta, retype', async () => {
  const dir = await cloned();
  const idx = (await Replica.open(dir)).all();
  const index = await idx;
  await writeFile(join(dir, 'new.txt'), 'brand new\n');
  await appendFile(join(dir, 'README.txt'), 'one more line\n');
  await unlink(join(dir, 'src/main.js'));
  await mkdir(join(dir, 'newdir/sub'), { recursive: true });
  await rmdir(join(dir, 'empty'));
  await symlink('README.txt', join(dir, 'link-new'));
  await rm(join(dir, 'HISTORY'));
  await symlink('docs/kml.txt', join(dir, 'HISTORY')); // retarget
  await chmod(join(dir, 'bin/hello.sh'), 0o700); // mode only
  const mtime = new Date('2010-01-01T00:00:00Z');
  await utimes(join(dir, 'docs/kml.txt'), mtime, mtime); // mtime only
  await unlink(join(dir, 'src/lib/math.js'));
  await rmdir(join(dir, 'src/lib'));
  await writeFile(join(dir, 'src/lib'), 'a file where a directory was\n'); // retype dir -> file
  await unlink(join(dir, 'twin-a.txt'));
  await symlink('README.txt', join(dir, 'twin-a.txt')); // retype file -> symlink
  await chmod(join(dir, 'docs/notes'), 0o700); // directory mode

  const s = await scan(dir);
  const kinds = Object.fromEntries(s.changes.map((c) => [c.path, c.kind]));
  assert.equal(kinds, {
    'new.txt': 'create', 'README.txt': 'modify', 'src/main.js': 'delete', newdir: 'mkdir', 'newdir/sub': 'mkdir', empty: 'rmdir',
    'link-new': 'symlink', HISTORY: 'symlink', 'bin/hello.sh': 'meta', 'docs/kml.txt': 'meta', 'src/lib/math.js': 'delete',
    'src/lib': 'retype', 'twin-a.txt': 'retype', 'docs/notes': 'meta',
  });
  // Facts carried by each change.
  const create = find(s, 'new.txt');
  assert.is(create.base, 0);
  assert.is(create.index, undefined);
  assert.is(create.hash, sha('brand new\n'));
  assert.is(create.fs!.size, 10);
  const mod = find(s, 'README.txt');
  assert.is(mod.base, index.get('README.txt')!.version);
  assert.ok(mod.base > 0);
  assert.is(mod.hash, sha(await readFile(join(dir, 'README.txt'))));
  assert.is(mod.index!.hash, index.get('README.txt')!.hash);
  const del = find(s, 'src/main.js');
  assert.is(del.fs, undefined);
  assert.is(del.base, index.get('src/main.js')!.version);
  assert.is(find(s, 'HISTORY').fs!.target, 'docs/kml.txt');
  assert.is(find(s, 'HISTORY').index!.target, 'docs/notes/history.md');
  assert.is(find(s, 'bin/hello.sh').fs!.mode, 0o700);
  assert.is(find(s, 'bin/hello.sh').hash, index.get('bin/hello.sh')!.hash);
  assert.is(find(s, 'docs/kml.txt').fs!.mtimeMs, mtime.getTime());
  assert.is(find(s, 'src/lib').hash, sha('a file where a directory was\n'));
  assert.is(find(s, 'src/lib').index!.type, 2);
  assert.is(find(s, 'twin-a.txt').fs!.type, 3);
  assert.is(s.tracked, 12);
  assert.is(s.deleted, 2); // src/main.js, src/lib/math.js
});

T('a tracked symlink removed is a delete; a file turned into a directory is a retype', async () => {
  const dir = await cloned();
  await rm(join(dir, 'HISTORY'));
  await unlink(join(dir, 'twin-b.txt'));
  await mkdir(join(dir, 'twin-b.txt'));
  await writeFile(join(dir, 'twin-b.txt', 'inside'), 'x');
  const s = await scan(dir);
  assert.equal(brief(s), ['retype twin-b.txt', 'create twin-b.txt/inside', 'delete HISTORY']);
  assert.is(s.deleted, 0, 'a symlink is not a tracked file');
});

T('same size, same mtime, other content: caught (ctime moves on every write)', async () => {
  const dir = await cloned();
  const p = join(dir, 'twin-a.txt');
  const before = lstatSync(p);
  // touch -r copies timestamps to the nanosecond (utimes from JS numbers cannot).
  const ref = join(suiteServer.tmp, `ref-${++refs}`);
  await writeFile(ref, '');
  execFileSync('touch', ['-m', '-r', p, ref]);
  await sleep(20);
  await writeFile(p, 'TWIN CONTENT\n'); // same length
  execFileSync('touch', ['-m', '-r', ref, p]);
  assert.is(lstatSync(p).mtimeMs, before.mtimeMs);
  assert.is(lstatSync(p).size, before.size);
  const s = await scan(dir);
  assert.equal(brief(s), ['modify twin-a.txt']);
  assert.is(find(s, 'twin-a.txt').hash, sha('TWIN CONTENT\n'));
});

T('racily clean: a file whose stat matches the index is hashed only when not older than the index write', async () => {
  const dir = await cloned();
  const r = await Replica.open(dir);
  const p = join(dir, 'README.txt');
  // Case 1: old timestamps, index entry with matching stat but a wrong hash:
  // stat is trusted, nothing is hashed, so nothing is reported (git's rule).
  await sleep(30);
  const st1 = lstatSync(p);
  const e = (await r.get('README.txt'))!;
  await r.set('README.txt', { ...e, size: st1.size, mtimeMs: st1.mtimeMs, ctimeMs: st1.ctimeMs, ino: st1.ino, mode: st1.mode & 0o7777, hash: 'f'.repeat(64) });
  await r.flushIndex();
  assert.equal(brief(await scan(dir)), [], 'stat matches and the file is older than the index: trusted');

  // Case 2: an mtime not older than the index write (here, in the future):
  // racily clean, so it is hashed, and the wrong hash shows as a modify.
  const future = new Date(Date.now() + 60_000);
  await utimes(p, future, future);
  const st2 = lstatSync(p);
  await r.set('README.txt', { ...e, size: st2.size, mtimeMs: st2.mtimeMs, ctimeMs: st2.ctimeMs, ino: st2.ino, mode: st2.mode & 0o7777, hash: 'f'.repeat(64) });
  await r.flushIndex();
  const s = await scan(dir);
  assert.equal(brief(s), ['modify README.txt']);
  assert.is(find(s, 'README.txt').hash, sha(await readFile(p)));

  // Case 3: same racy file with the right hash: hashed, found clean.
  await r.set('README.txt', { ...e, size: st2.size, mtimeMs: st2.mtimeMs, ctimeMs: st2.ctimeMs, ino: st2.ino, mode: st2.mode & 0o7777, hash: sha(await readFile(p)) });
  await r.flushIndex();
  assert.equal(brief(await scan(dir)), []);
});

T('stat differs but content and metadata do not (a copy over itself): clean, with a refresh hint', async () => {
  const dir = await cloned();
  const p = join(dir, 'docs/kml.txt');
  const st = lstatSync(p);
  const body = await readFile(p);
  await sleep(20);
  await unlink(p);
  await writeFile(p, body, { mode: st.mode & 0o777 });
  await utimes(p, st.atime, st.mtime);
  const s = await scan(dir);
  assert.equal(brief(s), []);
  assert.is(s.refresh.length, 1);
  assert.is(s.refresh[0]!.path, 'docs/kml.txt');
  assert.is(s.refresh[0]!.hash, sha(body));
});

T('renames: same content under a new name, each deleted file paired at most once', async () => {
  const dir = await cloned();
  const body = await readFile(join(dir, 'README.txt'));
  await rename(join(dir, 'README.txt'), join(dir, 'docs/README-moved.txt'));
  await writeFile(join(dir, 'zz-copy.txt'), body); // a second file with the same content: a create
  await rename(join(dir, 'twin-a.txt'), join(dir, 'twin-c.txt'));
  await unlink(join(dir, 'twin-b.txt')); // same size as twin-a, other content: stays a delete
  const s = await scan(dir);
  assert.equal(brief(s), ['rename README.txt -> docs/README-moved.txt', 'rename twin-a.txt -> twin-c.txt', 'create zz-copy.txt', 'delete twin-b.txt']);
  const r = find(s, 'docs/README-moved.txt');
  assert.is(r.base, 0);
  assert.ok(r.fromBase! > 0);
  assert.is(r.fromIndex!.hash, sha(body));
  assert.is(r.hash, sha(body));
  assert.is(r.index, undefined);
  assert.is(s.deleted, 1, 'renames are not deletions');
});

T('a directory renamed: new dirs first, files renamed out, old dirs removed last', async () => {
  const dir = await cloned();
  await rename(join(dir, 'docs'), join(dir, 'papers'));
  const s = await scan(dir);
  assert.equal(brief(s), [
    'mkdir papers', 'mkdir papers/notes',
    'rename docs/kml.txt -> papers/kml.txt', 'rename docs/notes/history.md -> papers/notes/history.md', 'rename docs/notes/more.md -> papers/notes/more.md',
    'rmdir docs/notes', 'rmdir docs',
  ]);
  assert.is(s.deleted, 0);
});

T('order: mkdirs shallow first, then path order, removals deepest first; retype to a dir before its children', async () => {
  const dir = await cloned();
  await mkdir(join(dir, 'b/c/d'), { recursive: true });
  await mkdir(join(dir, 'a'));
  await writeFile(join(dir, 'b/c/d/f.txt'), 'f');
  await writeFile(join(dir, 'a/z.txt'), 'z');
  await writeFile(join(dir, 'b/c/e.txt'), 'e');
  await unlink(join(dir, 'twin-a.txt'));
  await mkdir(join(dir, 'twin-a.txt'));
  await mkdir(join(dir, 'twin-a.txt/inner'));
  await rm(join(dir, 'docs'), { recursive: true });
  await rm(join(dir, 'src/lib'), { recursive: true });
  await symlink('x', join(dir, 'src/lib'));
  await appendFile(join(dir, 'src/main.js'), '//\n');
  const s = await scan(dir);
  assert.equal(brief(s), [
    'mkdir a', 'mkdir b', 'retype twin-a.txt', 'mkdir b/c', 'mkdir twin-a.txt/inner', 'mkdir b/c/d',
    'create a/z.txt', 'create b/c/d/f.txt', 'create b/c/e.txt', 'modify src/main.js',
    'delete docs/notes/history.md', 'delete docs/notes/more.md', 'delete src/lib/math.js', 'delete docs/kml.txt', 'rmdir docs/notes', 'retype src/lib', 'rmdir docs',
  ]);
});

T('.imzignore: ignored new paths are not reported, an ignored directory is not entered, a tracked path now ignored is not a deletion', async () => {
  const dir = await cloned();
  await writeFile(join(dir, 'scratch.tmp'), 'ignored by the fixture\'s .imzignore');
  await mkdir(join(dir, 'build/deep'), { recursive: true });
  await writeFile(join(dir, 'build/deep/out.o'), 'object');
  let s = await scan(dir);
  assert.equal(brief(s), []);
  // Ignore a tracked directory, then remove it: no deletion is reported.
  await appendFile(join(dir, '.imzignore'), 'docs/\n');
  await rm(join(dir, 'docs'), { recursive: true });
  s = await scan(dir);
  assert.equal(brief(s), ['modify .imzignore']);
  assert.is(s.deleted, 0);
});

T('conflict copies: untracked ones (files and dirs) are never picked up; a tracked one is scanned like any file', async () => {
  const dir = await cloned();
  assert.ok(isConflictCopy('report.imz-conflict-0f3a-17.txt'));
  assert.ok(!isConflictCopy('report.txt'));
  await writeFile(join(dir, 'README.imz-conflict-1234-5.txt'), 'the loser\n');
  await mkdir(join(dir, 'docs.imz-conflict-1234-6'));
  await writeFile(join(dir, 'docs.imz-conflict-1234-6', 'inside.txt'), 'inside a conflict copy dir\n');
  await appendFile(join(dir, 'kept.imz-conflict-abc-1.txt'), 'edited\n');
  const s = await scan(dir);
  assert.equal(brief(s), ['modify kept.imz-conflict-abc-1.txt']);
});

T('special files are skipped, never reported as deletions of what they replaced', async () => {
  const dir = await cloned();
  await unlink(join(dir, 'twin-b.txt'));
  execFileSync('mkfifo', [join(dir, 'twin-b.txt')]);
  execFileSync('mkfifo', [join(dir, 'new-fifo')]);
  const s = await scan(dir);
  assert.equal(brief(s), []);
  assert.equal(s.skipped.map((x) => x.path).sort(), ['new-fifo', 'twin-b.txt']);
  assert.is(s.deleted, 0);
});

T('the root emptied: every tracked file deleted (the mass-delete guard reads tracked/deleted)', async () => {
  const dir = await cloned();
  for (const name of ['.imzignore', 'README.txt', 'HISTORY', 'bin', 'docs', 'src', 'empty', 'kept.imz-conflict-abc-1.txt', 'twin-a.txt', 'twin-b.txt']) {
    await rm(join(dir, name), { recursive: true });
  }
  const s = await scan(dir);
  assert.is(s.tracked, 12);
  assert.is(s.deleted, 12);
  // Deepest first; .imz is untouched and never scanned.
  const kinds = s.changes.map((c) => c.kind);
  assert.ok(kinds.every((k) => k === 'delete' || k === 'rmdir'));
  assert.ok((await stat(join(dir, '.imz'))).isDirectory());
});

T('progress is reported and the scan writes nothing but its cache', async () => {
  const dir = await cloned();
  await writeFile(join(dir, 'new.txt'), 'x');
  // The scan cache (.imz/scan-cache) is derived; everything else stays as it was.
  const list = `cd '${dir}/.imz' && find . -mindepth 1 ! -name scan-cache -printf '%p %s %T@\\n' | sort`;
  const before = execFileSync('sh', ['-c', list]).toString();
  const seen: number[] = [];
  const s = await scanChanges(await Replica.open(dir), { onProgress: (k) => seen.push(k) });
  assert.equal(brief(s), ['create new.txt']);
  assert.ok(seen.length >= 1 && seen[seen.length - 1]! >= 15, `progress calls: ${seen}`);
  const after = execFileSync('sh', ['-c', list]).toString();
  assert.is(after, before, '.imz/ unchanged');
  assert.ok(lstatSync(join(dir, '.imz', 'scan-cache')).isFile(), 'the scan cache is written');
});

T('contentHashes: false hashes only what classification needs', async () => {
  const dir = await cloned();
  await writeFile(join(dir, 'new.txt'), 'x');
  await appendFile(join(dir, 'README.txt'), 'longer\n');
  const s = await scanChanges(await Replica.open(dir), { contentHashes: false });
  assert.equal(brief(s), ['modify README.txt', 'create new.txt']);
  assert.is(find(s, 'new.txt').hash, undefined);
  assert.is(find(s, 'README.txt').hash, undefined);
});

T('the scan walks exactly what walkTree walks: reserved, bad, long and special names, ignore rules', async () => {
  const dir = await cloned();
  const raw = (name: string | Buffer) => (typeof name === 'string' ? join(dir, name) : Buffer.concat([Buffer.from(dir + '/'), name]));
  await mkdir(join(dir, 'w/sub'), { recursive: true });
  await writeFile(raw('w/ctl\x01name'), 'control char');
  await writeFile(raw(Buffer.from([0x62, 0x61, 0x64, 0xff, 0x2e, 0x74])), 'not utf-8');
  await writeFile(raw('w/' + 'a'.repeat(200)), 'long but fine (200 bytes)');
  await writeFile(raw('w/' + 'é'.repeat(100)), 'long but fine (200 bytes, 100 units)');
  await writeFile(raw('w/.imz-tmp-123'), 'a temp file: never seen');
  await mkdir(join(dir, 'w/sub/.imz'));
  await writeFile(join(dir, 'w/sub/.imz/x'), 'reserved dir');
  await writeFile(join(dir, 'w/sub/keep.txt'), 'kept');
  await writeFile(join(dir, 'w/sub/drop.tmp'), 'ignored');
  await mkdir(join(dir, 'w/build'));
  await writeFile(join(dir, 'w/build/out'), 'ignored dir');
  execFileSync('mkfifo', [join(dir, 'w/fifo')]);
  await symlink('../README.txt', join(dir, 'w/sub/link'));

  const replica = await Replica.open(dir);
  const s = await scanChanges(replica);
  const { walkTree } = await import('../../core/tree_scan.ts');
  const { loadIgnore } = await import('../../core/ignore_rules.ts');
  const walked: string[] = [];
  const skipped: string[] = [];
  for await (const e of walkTree(dir, '', { ignore: await loadIgnore(dir), onSkip: (x) => skipped.push(`${x.path}: ${x.reason}`) })) walked.push(e.path);
  const tracked = [...(await replica.all()).keys()];
  const fromScan = [...tracked, ...s.changes.filter((c) => c.fs && !c.index).map((c) => c.path)];
  assert.equal(fromScan.sort(), walked.sort());
  assert.equal(s.skipped.map((x) => `${x.path}: ${x.reason}`).sort(), skipped.sort());
  assert.is(s.skipped.length, 3, `skipped: ${skipped.join(', ')}`);
});

T('with the working directory at the root, the scan takes relative paths and finds the same changes', async () => {
  const dir = await cloned();
  await sleep(1100); // past the racy second, so the pass settles clean files itself
  await writeFile(join(dir, 'docs', 'notes', 'more.md'), 'changed notes!\n');
  await unlink(join(dir, 'twin-a.txt'));
  await mkdir(join(dir, 'newdir'));
  await writeFile(join(dir, 'newdir', 'x.txt'), 'x\n');
  const whole = brief(await scan(dir));
  assert.ok(whole.includes('modify docs/notes/more.md') && whole.includes('delete twin-a.txt') && whole.includes('create newdir/x.txt'), whole.join(', '));
  const was = process.cwd();
  try {
    process.chdir(dir);
    assert.equal(brief(await scan(dir)), whole, 'the same from inside the root');
    // A directory of the same name made where the root was: the working directory is the old one, so whole paths are used.
    const moved = `${dir}-moved`;
    await rename(dir, moved);
    execFileSync('cp', ['-a', moved, dir]);
    await writeFile(join(dir, 'twin-b.txt'), 'only in the new one\n');
    const fresh = brief(await scan(dir));
    assert.ok(fresh.includes('modify twin-b.txt'), `the tree at the root's path is scanned, not the working directory: ${fresh.join(', ')}`);
  } finally {
    process.chdir(was);
  }
});

T.run();
