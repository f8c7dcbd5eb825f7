// `npm run fuzz`: the property-based suites (test/**/*_fuzz_test.ts) run long,
// with a fresh random seed, through the same runner as `npm test`. Each suite
// prints "fuzz: <suite>: N inputs, seed S" to stderr; this adds them up.
//   IMZ_FUZZ_RUNS   runs per property (default 200000)
//   IMZ_FUZZ_SEED   replay a seed (printed at the start and in every failure)
import { randomInt } from 'node:crypto';
import { spawn } from 'node:child_process';

const runs = process.env.IMZ_FUZZ_RUNS || '200000';
const seed = process.env.IMZ_FUZZ_SEED || String(randomInt(1, 2 ** 31 - 1));
console.log(`fuzz: ${runs} runs per property, seed ${seed} (replay with IMZ_FUZZ_SEED=${seed})`);

const t0 = Date.now();
const child = spawn(process.execPath, ['scripts/test.mjs', '_fuzz'], {
  env: { ...process.env, IMZ_FUZZ_RUNS: runs, IMZ_FUZZ_SEED: seed },
  stdio: ['ignore', 'inherit', 'pipe'],
});
let total = 0;
let suites = 0;
let pending = '';
child.stderr.on('data', (b) => {
  process.stderr.write(b);
  pending += b.toString();
  const lines = pending.split('\n');
  pending = lines.pop() ?? '';
  for (const l of lines) {
    const m = /^fuzz: .*: (\d+) inputs, seed/.exec(l);
    if (m) {
      total += Number(m[1]);
      suites++;
    }
  }
});
child.on('close', (code) => {
  const mins = ((Date.now() - t0) / 60000).toFixed(1);
  console.log(`fuzz: ${total} inputs over ${suites} suites in ${mins} min, seed ${seed}${code === 0 ? '' : ' (FAILED: see above; replay with the seed)'}`);
  process.exit(code ?? 1);
});
