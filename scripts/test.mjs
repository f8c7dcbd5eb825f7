// Runs the uvu suites and ends with the "N passed, N failed" line CI reads.
//
// Each test file runs in its own uvu process, two at a time on a machine with
// two or more CPUs (IMZ_TEST_JOBS sets how many): a test spends most of its
// time in the imz processes it starts, one after another, so one file keeps
// about one CPU busy. Files start longest first (test/durations.json, the
// seconds each took in a recorded run; a file not listed counts as long) so
// that the run does not end waiting on one long file. A file's output is
// printed whole once it ends. uvu prints "Total: / Passed:" per process; the
// plain line sums them. A file that ends without its totals (a crash) counts
// as one failure, and so does one still running after IMZ_TEST_FILE_TIMEOUT
// seconds (default 600): its process group is killed, what it printed shown.
//
//   node scripts/test.mjs [pattern]   only the files whose path matches, e.g. `push` or `core/journal`
//   node scripts/test.mjs --record    also write the seconds of every file that ran into test/durations.json
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, relative } from 'node:path';

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
const testDir = join(root, 'test');
const durationsFile = join(testDir, 'durations.json');
const args = process.argv.slice(2);
const record = args.includes('--record');
const pattern = args.find((a) => !a.startsWith('--'));
// (Without regard to case, as uvu matches.)
const match = pattern ? new RegExp(`${pattern}.*_test\\.ts$`, 'i') : /_test\.ts$/;
const fileTimeoutMs = (Number(process.env.IMZ_TEST_FILE_TIMEOUT) || 600) * 1000;

/** Every *_test.ts under test/, as paths relative to it (what uvu matches against). */
function testFiles(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.') || e.name === 'node_modules' || e.name === 'fixtures') continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...testFiles(p));
    else if (e.name.endsWith('_test.ts')) out.push(relative(testDir, p));
  }
  return out;
}

let durations = {};
try {
  durations = JSON.parse(readFileSync(durationsFile, 'utf8'));
} catch { /* no record yet: every file counts as long */ }
const expected = (f) => durations[f] ?? 60;
const all = testFiles(testDir);
const files = all.filter((f) => match.test(f)).sort((a, b) => expected(b) - expected(a) || a.localeCompare(b));
const jobs = Math.max(1, Math.min(files.length, Number(process.env.IMZ_TEST_JOBS) || Math.min(2, availableParallelism())));

// The environment of every test process and of the imz processes they start. Without NODE_EXTRA_CA_CERTS: set to
// the system's CA bundle on the machines here, it makes Node read and parse that file at every start (~90 ms of CPU
// per imz process, of which a run starts thousands; the bench drops it too). No test trusts a CA through it: the TLS
// tests pass their own (--tls-ca), and the self-signed certificate is refused by the system CAs with or without it.
const childEnv = { ...process.env, FORCE_COLOR: '0' };
delete childEnv.NODE_EXTRA_CA_CERTS;

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// The files running now. Each is in a process group of its own, which a Ctrl-C at the terminal (or CI stopping
// this runner) does not reach: stopped here, with every process they started.
const running = new Set();
/** Kills a running file's process group: its uvu process and everything it started. */
function killGroup(child) {
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch { /* gone already */ }
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    for (const child of running) killGroup(child);
    process.stdout.write(`\ntest runner: stopped by ${sig}\n0 passed, 1 failed\n`);
    process.exit(1);
  });
}

/** Runs one file in its own uvu process; resolves with its output, totals and seconds. */
function runFile(file) {
  const started = Date.now();
  return new Promise((resolve) => {
    // In a process group of its own, so that a file that hangs can be stopped with every process it started.
    const child = spawn(process.execPath, ['node_modules/uvu/bin.js', '-r', 'tsx', 'test', `^${esc(file)}$`], {
      cwd: root, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
    });
    running.add(child);
    let out = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child);
    }, fileTimeoutMs);
    let stdout = '';
    child.stdout.on('data', (b) => {
      const s = b.toString();
      out += s;
      stdout += s;
    });
    child.stderr.on('data', (b) => { out += b.toString(); });
    child.on('close', (code, signal) => {
      running.delete(child);
      clearTimeout(timer);
      if (timedOut) out += `\ntest runner: ${file} still running after ${fileTimeoutMs / 1000} s: stopped\n`;
      // uvu's totals: its closing block (Total, Passed, Skipped, Duration on lines of their own), the last one in
      // its stdout; a test may print words like one of them itself.
      const block = [...stdout.matchAll(/^\s*Total:\s+(\d+)[^\n]*\n\s*Passed:\s+(\d+)[^\n]*\n\s*Skipped:\s+\d+[^\n]*\n\s*Duration:/gm)].at(-1);
      const total = Number(block?.[1] ?? NaN);
      const passed = Number(block?.[2] ?? NaN);
      // read: uvu printed its totals (a crash or a stop by the time limit leaves none, or none to trust).
      const read = !timedOut && Number.isFinite(total) && Number.isFinite(passed);
      resolve({ file, out, code, signal, read, total, passed, seconds: (Date.now() - started) / 1000 });
    });
  });
}

const results = [];
let next = 0;
async function worker() {
  while (next < files.length) {
    const r = await runFile(files[next++]);
    results.push(r);
    process.stdout.write(`\n=== ${r.file} (${r.seconds.toFixed(1)} s)\n${r.out.trimEnd()}\n`);
    if (!r.read) process.stdout.write(`test runner: ${r.file} ended (code ${r.code}, signal ${r.signal}) without uvu's totals: counted as 1 failed\n`);
  }
}
const t0 = Date.now();
await Promise.all(Array.from({ length: jobs }, worker));

let passed = 0;
let failed = 0;
for (const r of results) {
  if (r.read) {
    passed += r.passed;
    failed += r.total - r.passed;
    if (r.code !== 0 && r.total === r.passed) failed++; // exited non-zero with every test passed: something broke after
  } else failed++;
}
const failing = results.filter((r) => !r.read || r.total !== r.passed || r.code !== 0).map((r) => r.file);
if (record && failing.length === 0) {
  // Merged: a run of a few files keeps the others' times (files no longer there are dropped).
  const present = new Set(all);
  const merged = { ...durations };
  for (const r of results) merged[r.file] = Math.round(r.seconds * 10) / 10;
  const out = {};
  for (const f of Object.keys(merged).filter((f) => present.has(f)).sort()) out[f] = merged[f];
  writeFileSync(durationsFile, JSON.stringify(out, null, 2) + '\n');
}
process.stdout.write(`\n${files.length} files, ${jobs} at a time, ${((Date.now() - t0) / 1000).toFixed(0)} s${failing.length ? `; failing: ${failing.join(', ')}` : ''}\n`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || files.length === 0 ? 1 : 0);
