import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { unifiedDiff } from '../../core/line_diff.ts';

test('equal texts give an empty diff', () => {
  assert.is(unifiedDiff('a\nb\n', 'a\nb\n', 'x', 'y'), '');
});

test('one changed line with context, GNU-style ranges', () => {
  const a = 'a\nb\nc\nd\ne\nf\ng\nh\n';
  const b = 'a\nb\nc\nD\ne\nf\ng\nh\n';
  assert.is(unifiedDiff(a, b, 'server/f', 'local/f'), [
    '--- server/f', '+++ local/f', '@@ -1,7 +1,7 @@', ' a', ' b', ' c', '-d', '+D', ' e', ' f', ' g', '',
  ].join('\n'));
});

test('changes far apart make two hunks; close ones one', () => {
  const lines = Array.from({ length: 30 }, (_, i) => `line ${i}`);
  const a = lines.join('\n') + '\n';
  const far = [...lines];
  far[2] = 'X';
  far[25] = 'Y';
  assert.is((unifiedDiff(a, far.join('\n') + '\n', 'a', 'b')!.match(/^@@/gm) ?? []).length, 2);
  const near = [...lines];
  near[2] = 'X';
  near[8] = 'Y';
  assert.is((unifiedDiff(a, near.join('\n') + '\n', 'a', 'b')!.match(/^@@/gm) ?? []).length, 1);
});

test('a missing final newline is shown as such', () => {
  const d = unifiedDiff('a\n', 'a', 'x', 'y')!;
  assert.is(d, '--- x\n+++ y\n@@ -1 +1 @@\n-a\n+a\n\\ No newline at end of file\n');
});

test('insertion into an empty file', () => {
  assert.is(unifiedDiff('', 'new\n', 'x', 'y'), '--- x\n+++ y\n@@ -0,0 +1 @@\n+new\n');
});

test('too many lines: undefined (the caller describes the difference instead)', () => {
  const big = Array.from({ length: 20 }, (_, i) => String(i)).join('\n');
  assert.is(unifiedDiff(big, big + '\nmore', 'x', 'y', { maxLines: 10 }), undefined);
});

test.run();
