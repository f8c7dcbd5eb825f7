import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// uvu runs the tests a file registered before its run(): one registered after
// it is never run, and nothing says so (two such tests, added on 2026-11-27, never ran until this guard found them).

const ROOT = fileURLToPath(new URL('.', import.meta.url));

function _testFiles(dir: string): string[] {
  const out: string[] = [];
  for (const d of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, d.name);
    if (d.isDirectory()) out.push(..._testFiles(p));
    else if (d.name.endsWith('_test.ts')) out.push(p);
  }
  return out;
}

test('no test file registers a test after its run()', () => {
  const late: string[] = [];
  const files = _testFiles(ROOT);
  assert.ok(files.length > 50, 'the test files were found');
  for (const f of files) {
    const lines = readFileSync(f, 'utf8').split('\n');
    // Suites are `test` or named with suite(); a registration starts a line, a run() ends the file's part for it.
    const ranAt = new Map<string, number>();
    lines.forEach((l, i) => {
      const m = /^(\w+)\.run\(\);?\s*$/.exec(l);
      if (m) ranAt.set(m[1]!, i);
    });
    lines.forEach((l, i) => {
      const m = /^(\w+)(?:\.only|\.skip)?\(\s*['"`]/.exec(l);
      const ran = m ? ranAt.get(m[1]!) : undefined;
      if (ran !== undefined && i > ran) late.push(`${f.slice(ROOT.length)}:${i + 1}`);
    });
  }
  assert.equal(late, []);
});

test.run();
