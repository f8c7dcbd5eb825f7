// scripts/test.mjs, the runner CI calls: its last line sums uvu's totals of
// every file, and a file that crashes counts as a failure. Run here on a
// project of its own (a copy of the runner, this repository's node_modules,
// a few test files), so what it counts is known.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, cleanupAll, makeTmp } from '../helpers.ts';

const T = suite('test runner');
T.after(cleanupAll);

const FILES: Record<string, string> = {
  // Prints words like uvu's totals before uvu does, and after (a log line of a test, a timer): the runner must read
  // uvu's own.
  'core/chatty_test.ts': `import { test } from 'uvu';
test('one', () => { console.log('  Total:     99'); console.log('  Passed:    99'); setTimeout(() => console.log('  Passed:    0'), 100); });
test('two', () => {});
test.run();
`,
  'core/half_test.ts': `import { test } from 'uvu';
import * as assert from 'uvu/assert';
test('passes', () => {});
test('fails', () => assert.is(1, 2));
test.run();
`,
  // Ends before uvu prints anything.
  'integration/crash_test.ts': `process.exit(3);
`,
};

/** Runs the runner in a project holding FILES; resolves with its output and exit code. */
async function runRunner(pattern?: string): Promise<{ code: number | null; out: string }> {
  const dir = await makeTmp('imz-runner-');
  mkdirSync(join(dir, 'scripts'));
  copyFileSync(join(REPO, 'scripts', 'test.mjs'), join(dir, 'scripts', 'test.mjs'));
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'), 'dir');
  for (const [p, src] of Object.entries(FILES)) {
    mkdirSync(join(dir, 'test', p, '..'), { recursive: true });
    writeFileSync(join(dir, 'test', p), src);
  }
  return new Promise((resolve, reject) => {
    // (Its own limit per file first; then SIGTERM, on which it stops the files it runs, each in a group of its own.)
    const child = spawn(process.execPath, [join(dir, 'scripts', 'test.mjs'), ...(pattern ? [pattern] : [])], {
      cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IMZ_TEST_FILE_TIMEOUT: '30' },
    });
    let out = '';
    child.stdout.on('data', (b) => (out += b));
    child.stderr.on('data', (b) => (out += b));
    const timer = setTimeout(() => child.kill('SIGTERM'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

T('the last line sums uvu\'s own totals of every file (not a test\'s log line like them), a crash counting as one failure; exit 1', async () => {
  const r = await runRunner();
  const lines = r.out.trimEnd().split('\n');
  assert.is(lines.at(-1), '3 passed, 2 failed', r.out);
  assert.is(r.code, 1);
  assert.match(r.out, /integration\/crash_test\.ts ended \(code 3, signal null\) without uvu's totals/);
});

T('a pattern picks files as uvu would, without regard to case; all passing exits 0', async () => {
  const r = await runRunner('CHATTY');
  assert.is(r.out.trimEnd().split('\n').at(-1), '2 passed, 0 failed', r.out);
  assert.is(r.code, 0);
});

T.run();
