import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { checkPath, comparePaths, inDir, pathProblem } from '../../core/paths.ts';

test('safe relative paths pass', () => {
  for (const p of ['a', 'a/b/c.txt', 'dir with space/ü', '.hidden', 'a..b', '...', 'x/.imzignore']) {
    assert.is(pathProblem(p), undefined, p);
  }
});

test('unsafe paths are refused with a reason', () => {
  const bad = ['', '/etc/passwd', '../x', 'a/../../x', 'a/./b', './a', 'a//b', 'a/', 'a\u0000b', 'a\nb', '.imz', '.imz/HEAD', 'x/.imz/config',
    '.imz-server/journal', 'a/.imz-tmp-123', 'x'.repeat(256), `${'a/'.repeat(2100)}b`, 'a\u007fb'];
  for (const p of bad) assert.ok(pathProblem(p), `accepted ${JSON.stringify(p).slice(0, 40)}`);
  assert.ok(pathProblem(42));
  assert.ok(pathProblem(null));
});

test('the root is allowed only where asked', () => {
  assert.ok(pathProblem(''));
  assert.is(pathProblem('', true), undefined);
});

test('checkPath throws IMZ_BAD_PATH with a one-line message', () => {
  try {
    checkPath('../../etc/shadow', 'write file');
    assert.unreachable();
  } catch (err) {
    const e = err as { code: string; message: string };
    assert.is(e.code, 'IMZ_BAD_PATH');
    assert.match(e.message, /^cannot write file: unsafe path/);
    assert.not.match(e.message, /\n/);
  }
});

test('parents sort right before their contents', () => {
  const ps = ['a-c', 'a/b', 'a', 'a/b/c', 'a.d', 'b'];
  ps.sort(comparePaths);
  assert.ok(ps.indexOf('a') < ps.indexOf('a/b'));
  assert.ok(ps.indexOf('a/b') < ps.indexOf('a/b/c'));
  assert.equal(ps.slice(0, 3), ['a', 'a/b', 'a/b/c']);
});


test('inDir gives what path.join gives for every path that passes the check, under any root', () => {
  const paths = ['', 'a', 'a/b/c.txt', 'dir with space/ü', '.hidden', 'a..b', '...', 'x/.imzignore', 'd/😀 "x"],[y'];
  for (const root of ['/srv/tree', '/srv/tree/', '/', 'rel/dir', '/a b/ü']) {
    for (const p of paths) {
      assert.is(pathProblem(p, true), undefined, p);
      assert.is(inDir(root, p), join(root, p), `${root} + ${p}`);
    }
  }
});

test.run();
