// Runs the uvu suites and ends with the "N passed, N failed" line CI reads.
// uvu prints "Total: / Passed: / Skipped:" (coloured unless NO_COLOR); we
// derive the plain line from those totals and keep uvu's exit status.
import { spawn } from 'node:child_process';

// Only *_test.ts files are suites (helpers and fixtures live beside them); a
// pattern argument narrows the run, e.g. `npm test -- journal`.
const pattern = process.argv[2] ? `${process.argv[2]}.*_test\\.ts$` : '_test\\.ts$';
const args = ['node_modules/uvu/bin.js', '-r', 'tsx', 'test', pattern];
const child = spawn(process.execPath, args, { env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'inherit'] });
let out = '';
child.stdout.on('data', (b) => { process.stdout.write(b); out += b.toString(); });
child.on('close', (code) => {
  const total = Number(/Total:\s+(\d+)/.exec(out)?.[1] ?? NaN);
  const passed = Number(/Passed:\s+(\d+)/.exec(out)?.[1] ?? NaN);
  if (!Number.isFinite(total) || !Number.isFinite(passed)) {
    console.log('0 passed, 1 failed');
    console.error('test runner: could not read uvu totals (did a suite crash before reporting?)');
    process.exit(1);
  }
  const failed = total - passed;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(code !== 0 || failed > 0 ? 1 : 0);
});
