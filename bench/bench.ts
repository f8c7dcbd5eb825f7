// imz against rsync, same data, same run.
//
//   npm run bench                      build, then both roots (real disk, then tmpfs)
//   npx tsx bench/bench.ts --quick     smaller trees, for a fast check
//   npx tsx bench/bench.ts --only disk|tmpfs
//   npx tsx bench/bench.ts --fanout    also the fan-out bench (bench/fanout.ts) at the end
//   npx tsx bench/bench.ts --section on-demand   only the on-demand rows (below), on the cached incremental tree
//   npx tsx bench/bench.ts --help      all options
//
// Cases (each on the real disk and on tmpfs):
//   clone of a tree of small files         imz clone | rsync -a | rsync -a --fsync (1 run each)
//   clone of one big file                  same, with MB/s
//   clone of the incremental tree          imz clone | rsync -a (setup, timed for information)
//   pull after 10 changes                  imz pull | rsync -a --delete | ... --fsync (best of 3)
//   no-op pull                             same, nothing changed (best of 3)
//   status, nothing changed                imz status --json | git status --porcelain on a git
//                                          checkout of the same tree (best of 3, after 1 untimed run each)
//   no-op push                             imz push | rsync -a --delete into a writable daemon module (best of 3)
//   push of 10 changed files               same, fresh rewrites each round (best of 3, after 1 warm-up)
//   push of 10,000 new small files         same, one new directory of 0-16 KiB files (1 run each); then rsync
//                                          --fsync pushes it again into the module (for information)
// On demand (issue 6; its own table), on a hard-linked copy of the incremental tree:
//   on-demand clone of the 100,000 files   imz clone --on-demand against imz clone from the same server
//                                          (best of 2 against 1 run; target ≤ 1/3)
//   imz cat of a small remote file         time to its first stdout byte minus the CLI's start-up (the first
//                                          byte of \`imz --version\`), medians of 7, each cat a different file
//   the same through one mirror            an \`imz serve --upstream --on-demand\` mirror of that server, cold:
//                                          each cat makes the mirror fetch the file from the upstream
// The push cases run on the imz replica of the incremental tree after the pulls;
// rsync pushes the same changes from its own copy into a separate writable
// module (a copy of the tree), so the pull measurements are not disturbed.
// Every imz and rsync replica (and, after a push, every server tree) is checked against the served tree (paths, types,
// sizes, exec bits, mtimes, SHA-256 of a sample plus every changed file); a
// wrong replica fails the bench. The progress log goes to stderr; the Markdown
// table goes to stdout and the figures to bench/results-<root>.json.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  killAllSync,
  run,
  runChecked,
  runFirstByte,
  startJsonServer,
  startPlain,
  stopAll,
  stopChild,
  useRegistry,
  type RunResult,
  type Server,
  log,
  loud,
  parseCli,
} from './proc.ts';
import {
  MiB,
  applyChanges,
  bigSpec,
  ensureTree,
  fmtBytes,
  incSpec,
  layout,
  listTree,
  newFilesSpec,
  planChanges,
  planModifies,
  smallSpec,
  unshareFiles,
  verifyReplica,
  writeFiles,
  type CachedTree,
  type ChangeSet,
} from './trees.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = dirname(HERE);

// ---------------------------------------------------------------- options

const USAGE = `usage: npx tsx bench/bench.ts [options]      (npm run bench builds first)

  --only disk|tmpfs   run on one root only (default: both, disk first)
  --quick             smaller trees: 2,000 files, 64 MiB, 20,000 files
  --disk-dir DIR      bench root on the real disk (default: bench/.data)
  --tmpfs-dir DIR     bench root on tmpfs (default: /dev/shm/imz-bench)
  --imz FILE          the CLI to run under node (default: dist/imz.js)
  --settle-ms N       wait after changing the served tree, before pulling (default 1500)
  --timeout-min N     bound on every step (default 10)
  --skip-imz          measure rsync only (to work on the bench while the CLI is unfinished)
  --clean             delete the cached source trees first
  --keep              keep work trees and replicas after the run (for inspection)
  --fanout            at the end, run the fan-out bench (1, 10, 50 \`imz pull --follow\`; bench/fanout.ts)
  --section S         all (default), or on-demand: only the on-demand rows (incremental tree only,
                      figures to bench/results-<root>-on-demand.json)
  -h, --help`;

interface Options {
  roots: Array<'disk' | 'tmpfs'>;
  quick: boolean;
  diskDir: string;
  tmpfsDir: string;
  imzJs: string;
  settleMs: number;
  stepMs: number;
  skipImz: boolean;
  clean: boolean;
  keep: boolean;
  fanout: boolean;
  section: 'all' | 'on-demand';
}

function parseOptions(): Options {
  const v = parseCli({
    only: { type: 'string' },
    quick: { type: 'boolean', default: false },
    'disk-dir': { type: 'string' },
    'tmpfs-dir': { type: 'string' },
    imz: { type: 'string' },
    'settle-ms': { type: 'string' },
    'timeout-min': { type: 'string' },
    'skip-imz': { type: 'boolean', default: false },
    clean: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    fanout: { type: 'boolean', default: false },
    section: { type: 'string', default: 'all' },
    help: { type: 'boolean', short: 'h', default: false },
  }, USAGE);
  if (v.only !== undefined && v.only !== 'disk' && v.only !== 'tmpfs') {
    console.error(`--only must be disk or tmpfs, not ${v.only}\n\n${USAGE}`);
    process.exit(2);
  }
  if (v.section !== 'all' && v.section !== 'on-demand') {
    console.error(`--section must be all or on-demand, not ${v.section}\n\n${USAGE}`);
    process.exit(2);
  }
  const num = (s: string | undefined, def: number, name: string): number => {
    if (s === undefined) return def;
    const n = Number(s);
    if (!Number.isFinite(n) || n < 0) {
      console.error(`${name} must be a non-negative number`);
      process.exit(2);
    }
    return n;
  };
  return {
    roots: v.only === undefined ? ['disk', 'tmpfs'] : [v.only as 'disk' | 'tmpfs'],
    quick: v.quick,
    diskDir: resolve(v['disk-dir'] ?? join(HERE, '.data')),
    tmpfsDir: resolve(v['tmpfs-dir'] ?? '/dev/shm/imz-bench'),
    imzJs: resolve(v.imz ?? join(REPO, 'dist', 'imz.js')),
    settleMs: num(v['settle-ms'], 1500, '--settle-ms'),
    stepMs: num(v['timeout-min'], 10, '--timeout-min') * 60_000,
    skipImz: v['skip-imz'],
    clean: v.clean,
    keep: v.keep,
    fanout: v.fanout,
    section: v.section as 'all' | 'on-demand',
  };
}

// ---------------------------------------------------------------- output


const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const n = (x: number): string => x.toLocaleString('en-US');
const mbps = (bytes: number, s: number | null): number | null => (s === null || s <= 0 ? null : bytes / 1e6 / s);
const best = (xs: number[]): number | null => (xs.length === 0 ? null : Math.min(...xs));

// ---------------------------------------------------------------- results

type Tool = 'imz' | 'rsync' | 'rsyncFsync' | 'git';
const TOOL_NAMES: Record<Tool, string> = { imz: 'imz', rsync: 'rsync', rsyncFsync: 'rsync --fsync', git: 'git' };
const noRuns = (): Record<Tool, number[]> => ({ imz: [], rsync: [], rsyncFsync: [], git: [] });

interface Row {
  root: string;
  case: string;
  kind: 'clone-files' | 'clone-big' | 'setup' | 'pull' | 'noop' | 'status' | 'push-noop' | 'push' | 'push-new';
  /** Seconds (best of the runs for pull/no-op), null when not measured. */
  imz: number | null;
  rsync: number | null;
  rsyncFsync: number | null;
  /** git status on a checkout of the same tree (status and no-op push rows). */
  git: number | null;
  runs: Record<Tool, number[]>;
  /** Warm-up runs (not counted). */
  warmup?: Record<Tool, number[]>;
  files?: number;
  bytes?: number;
  target?: string;
  met?: boolean | null;
  errors: string[];
  commands: Partial<Record<Tool, string>>;
}

interface RootReport {
  root: 'disk' | 'tmpfs';
  path: string;
  fsType: string;
  quick: boolean;
  startedAt: string;
  finishedAt?: string;
  host: { cpu: string; cpus: number; memGiB: number; kernel: string; node: string };
  rsyncVersion: string;
  rsyncFsync: boolean;
  imz: string;
  settleMs: number;
  pageCache: string;
  /** What the children's environment differs in from the shell's. */
  env: string;
  trees: Array<{ name: string; files: number; bytes: number; cached: boolean }>;
  rows: Row[];
  /** The on-demand section (its own table). */
  onDemand?: OdRow[];
  metrics: Record<string, number | string | null>;
  errors: string[];
}

function newRow(report: RootReport, kind: Row['kind'], name: string): Row {
  const row: Row = { root: report.root, case: name, kind, imz: null, rsync: null, rsyncFsync: null, git: null, runs: noRuns(), errors: [], commands: {} };
  report.rows.push(row);
  return row;
}

function evaluateTarget(row: Row): void {
  const r = row.imz !== null && row.rsync !== null && row.rsync > 0 ? row.imz / row.rsync : null;
  const g = row.imz !== null && row.git !== null && row.git > 0 ? row.imz / row.git : null;
  switch (row.kind) {
    case 'clone-files':
      row.target = 'imz/rsync ≤ 1.0';
      row.met = r === null ? null : r <= 1.0;
      break;
    case 'clone-big':
      row.target = 'imz MB/s ≥ 70% of rsync';
      row.met = r === null ? null : 1 / r >= 0.7;
      break;
    case 'pull':
      row.target = 'imz/rsync ≤ 0.2';
      row.met = r === null ? null : r <= 0.2;
      break;
    case 'noop':
      row.target = 'imz < 0.3 s';
      row.met = row.imz === null ? null : row.imz < 0.3;
      break;
    case 'status':
    case 'push-noop':
      row.target = 'imz/git status ≤ 1.5';
      row.met = g === null ? null : g <= 1.5;
      break;
    case 'push':
      row.target = 'imz/rsync ≤ 1/3';
      row.met = r === null ? null : r <= 1 / 3;
      break;
    case 'push-new':
      row.target = 'imz/rsync ≤ 1.0';
      row.met = r === null ? null : r <= 1.0;
      break;
    default:
      row.target = '';
      row.met = null;
  }
}

// ---------------------------------------------------------------- environment

/** rsync on PATH, or Debian's, installed with apt-get (the only network use). */
function ensureRsync(stepMs: number): string {
  const have = spawnSync('sh', ['-c', 'command -v rsync'], { encoding: 'utf8' });
  if (have.status !== 0 || have.stdout.trim() === '') {
    log("rsync is not on PATH: installing Debian's rsync: apt-get update && apt-get install -y rsync");
    for (const args of [['update'], ['install', '-y', 'rsync']]) {
      log(`$ apt-get ${args.join(' ')}`);
      const r = spawnSync('apt-get', args, {
        stdio: ['ignore', 2, 2],
        timeout: stepMs,
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      });
      if (r.error !== undefined || r.status !== 0) {
        throw new Error(`apt-get ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}); install rsync and re-run`);
      }
    }
  }
  const v = spawnSync('rsync', ['--version'], { encoding: 'utf8' });
  if (v.status !== 0) throw new Error('rsync --version failed');
  return v.stdout.split('\n')[0]!.trim();
}

function rsyncHasFsync(): boolean {
  const h = spawnSync('rsync', ['--help'], { encoding: 'utf8' });
  return /--fsync\b/.test(h.stdout);
}

function fsTypeOf(path: string): string {
  let bestMount = '';
  let type = 'unknown';
  try {
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, mnt, fstype] = line.split(' ');
      if (mnt === undefined || fstype === undefined) continue;
      const m = mnt.replaceAll('\\040', ' ');
      if ((path === m || path.startsWith(m.endsWith('/') ? m : `${m}/`)) && m.length >= bestMount.length) {
        bestMount = m;
        type = fstype;
      }
    }
  } catch {
    /* not Linux */
  }
  return type;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function procStatusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  }
}

/** Poll VmRSS until it stays within 1% for ~1 s (or 30 s pass). */
async function settledRssKiB(pid: number): Promise<number | null> {
  let prev = procStatusKiB(pid, 'VmRSS');
  let stable = 0;
  for (let i = 0; i < 120 && prev !== null; i++) {
    await sleep(250);
    const cur = procStatusKiB(pid, 'VmRSS');
    if (cur === null) return prev;
    stable = Math.abs(cur - prev) <= prev * 0.01 ? stable + 1 : 0;
    prev = cur;
    if (stable >= 4) break;
  }
  return prev;
}

async function duBytes(path: string): Promise<number | null> {
  if (!existsSync(path)) return null;
  const r = await run('du', ['-sb', path], { timeoutMs: 120_000 });
  const v = Number(r.stdout.split(/\s/)[0]);
  return r.code === 0 && Number.isFinite(v) ? v : null;
}

// ---------------------------------------------------------------- one root

interface Ctx {
  opts: Options;
  report: RootReport;
  runDir: string;
  workDir: string;
  repDir: string;
  logDir: string;
  rsyncPort: number;
  fsync: boolean;
  /** The writable rsync module the push cases push into. */
  pushModule?: PushModule;
}

/** A writable daemon module (the target of the rsync pushes). */
interface PushModule {
  name: string;
  path: string;
}

async function startRsyncDaemon(ctx: Ctx, modules: CachedTree[], writable: PushModule[]): Promise<{ stop: () => Promise<string> }> {
  const dir = join(ctx.runDir, 'rsyncd');
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, 'rsyncd.conf');
  const asRoot = process.getuid?.() === 0;
  let lastErr = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const lines = [
      '# written by bench/bench.ts: modules on 127.0.0.1 for the benchmark (read-only ones to pull from, writable ones to push into)',
      `port = ${port}`,
      'address = 127.0.0.1',
      `pid file = ${join(dir, 'rsyncd.pid')}`,
      `log file = ${join(dir, 'rsyncd.log')}`,
      'use chroot = no',
      'read only = yes',
      'munge symlinks = no',
      ...(asRoot ? ['uid = root', 'gid = root'] : []),
      '',
    ];
    for (const m of modules) {
      lines.push(`[${m.spec.name}]`, `    path = ${join(ctx.workDir, m.spec.name)}`, '    exclude = /.imz-server/', '');
    }
    for (const w of writable) lines.push(`[${w.name}]`, `    path = ${w.path}`, '    read only = false', '');
    writeFileSync(conf, lines.join('\n'));
    rmSync(join(dir, 'rsyncd.pid'), { force: true });
    const child = startPlain('rsync', ['--daemon', '--no-detach', `--config=${conf}`], join(dir, 'rsyncd.out'), conf);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      const probe = await run('rsync', [`rsync://127.0.0.1:${port}/`], { timeoutMs: 5000 });
      const listed = new Set(probe.stdout.split('\n').map((l) => l.split(/\s/)[0]));
      if (probe.code === 0 && [...modules.map((m) => m.spec.name), ...writable.map((w) => w.name)].every((name) => listed.has(name))) {
        ctx.rsyncPort = port;
        log(`rsync daemon: pid ${child.pid}, 127.0.0.1:${port}, config ${conf}`);
        return { stop: () => stopChild(child) };
      }
      lastErr = probe.stderr.trim();
      await sleep(100);
    }
    await stopChild(child, 2000);
    const out = existsSync(join(dir, 'rsyncd.log')) ? readFileSync(join(dir, 'rsyncd.log'), 'utf8').trim().split('\n').slice(-5).join('\n    ') : '';
    lastErr = `${lastErr}\n    ${out}`;
    log(`rsync daemon did not come up on port ${port} (attempt ${attempt}): ${lastErr.trim()}`);
  }
  throw new Error(`could not start the rsync daemon: ${lastErr.trim()}`);
}

function rsyncUrl(ctx: Ctx, tree: CachedTree): string {
  return `rsync://127.0.0.1:${ctx.rsyncPort}/${tree.spec.name}/`;
}

/** Run a timed step: flush dirty pages first (untimed) so an earlier step's writeback does not land in it. */
async function timedRun(ctx: Ctx, cmd: string, args: string[], cwd?: string): Promise<RunResult> {
  await runChecked('sync', [], { timeoutMs: ctx.opts.stepMs });
  return runChecked(cmd, args, { timeoutMs: ctx.opts.stepMs, cwd });
}

async function timed(ctx: Ctx, cmd: string, args: string[]): Promise<number> {
  return (await timedRun(ctx, cmd, args)).seconds;
}

const imzArgs = (ctx: Ctx, ...args: string[]): string[] => [ctx.opts.imzJs, ...args];

async function attempt(ctx: Ctx, row: Row, tool: Tool, fn: () => Promise<void>): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (e) {
    const msg = `${TOOL_NAMES[tool]}: ${(e as Error).message}`;
    row.errors.push(msg);
    ctx.report.errors.push(`${row.case}: ${msg}`);
    loud(`[${ctx.report.root}] ${row.case}: ${msg}`);
    return false;
  }
}

/** Start `imz serve` on a work tree, run fn, always stop the server (SIGTERM). */
async function withImzServer(ctx: Ctx, dirName: string, row: Row | null, fn: (srv: Server | null) => Promise<void>): Promise<void> {
  if (ctx.opts.skipImz) {
    await fn(null);
    return;
  }
  const dir = join(ctx.workDir, dirName);
  let srv: Server | null = null;
  try {
    const t = performance.now();
    srv = await startJsonServer(
      process.execPath,
      imzArgs(ctx, 'serve', dir, '--port', '0', '--json'),
      join(ctx.logDir, `imz-serve-${dirName}.log`),
      dir,
      ctx.opts.stepMs,
    );
    log(`imz serve ${dirName}: pid ${srv.pid}, listening on ${srv.host}:${srv.port} after ${((performance.now() - t) / 1000).toFixed(2)} s`);
    if (srv.host !== '127.0.0.1') log(`note: the server announced host ${srv.host}; the bench connects to 127.0.0.1`);
  } catch (e) {
    const msg = `imz serve: ${(e as Error).message}`;
    if (row !== null) row.errors.push(msg);
    ctx.report.errors.push(`${row?.case ?? dirName}: ${msg}`);
    loud(`[${ctx.report.root}] ${msg}`);
  }
  let stopping = false;
  if (srv !== null) {
    const s = srv;
    s.child.once('exit', (code, signal) => {
      if (stopping) return;
      const msg = `imz serve ${dirName} (pid ${s.pid}) exited on its own (${signal ?? `exit code ${code}`}) during the bench; its output is in ${s.logPath}`;
      if (row !== null) row.errors.push(msg);
      ctx.report.errors.push(`${row?.case ?? dirName}: ${msg}`);
      loud(`[${ctx.report.root}] ${msg}`);
    });
  }
  try {
    await fn(srv);
  } finally {
    stopping = true;
    if (srv !== null) {
      const how = await stopChild(srv.child);
      srv.log.end();
      log(`imz serve ${dirName}: stopped (${how})`);
      if (how.includes('killed')) ctx.report.errors.push(`imz serve ${dirName} did not stop on SIGTERM within 10 s`);
    }
  }
}

/** Clone of a whole tree: imz clone, then (server stopped) rsync -a and rsync -a --fsync, 1 run each. */
async function cloneCase(ctx: Ctx, tree: CachedTree, kind: 'clone-files' | 'clone-big', name: string): Promise<void> {
  const row = newRow(ctx.report, kind, name);
  row.files = tree.layout.files.length;
  row.bytes = tree.layout.bytes;
  const src = join(ctx.workDir, tree.spec.name);
  const srcList = listTree(src);
  const srcHashes = new Map<string, string>();
  const check = (label: string, dest: string) =>
    verifyReplica(label, src, dest, { sample: kind === 'clone-big' ? 1 : 200, seed: `${tree.spec.seed}:${label}`, src: srcList, srcHashes });
  const say = (tool: Tool, s: number): void =>
    log(`${name}: ${TOOL_NAMES[tool]} ${s.toFixed(3)} s (${mbps(tree.layout.bytes, s)!.toFixed(1)} MB/s), replica verified`);

  log(`--- ${name}`);
  await withImzServer(ctx, tree.spec.name, row, async (srv) => {
    if (srv === null) return;
    const dest = join(ctx.repDir, `imz-${tree.spec.name}`);
    const args = imzArgs(ctx, 'clone', `127.0.0.1:${srv.port}`, dest, '--quiet');
    row.commands.imz = `node ${args.join(' ')}`;
    await attempt(ctx, row, 'imz', async () => {
      const s = await timed(ctx, process.execPath, args);
      row.runs.imz.push(s);
      row.imz = s;
      await check('imz clone', dest);
      say('imz', s);
    });
    rmSync(dest, { recursive: true, force: true });
  });
  const variants: Array<[Tool, string[]]> = [['rsync', ['-a']]];
  if (ctx.fsync) variants.push(['rsyncFsync', ['-a', '--fsync']]);
  for (const [tool, flags] of variants) {
    const dest = join(ctx.repDir, `${tool}-${tree.spec.name}`);
    const args = [...flags, rsyncUrl(ctx, tree), `${dest}/`];
    row.commands[tool] = `rsync ${args.join(' ')}`;
    await attempt(ctx, row, tool, async () => {
      const s = await timed(ctx, 'rsync', args);
      row.runs[tool].push(s);
      row[tool] = s;
      await check(TOOL_NAMES[tool], dest);
      say(tool, s);
    });
    rmSync(dest, { recursive: true, force: true });
  }
  evaluateTarget(row);
}

/** Baseline: RSS of `imz serve` on an empty tree. */
async function emptyServerRss(ctx: Ctx): Promise<number | null> {
  const empty = join(ctx.workDir, 'empty');
  mkdirSync(empty, { recursive: true });
  let rss: number | null = null;
  await withImzServer(ctx, 'empty', null, async (srv) => {
    if (srv !== null) rss = await settledRssKiB(srv.pid);
  });
  return rss;
}

/** The incremental tree: setup clones, rounds of 10 changes, no-op pulls, memory and state size. */
async function incrementalCase(ctx: Ctx, tree: CachedTree, sets: ChangeSet[], pushSets: ChangeSet[]): Promise<void> {
  const N = n(tree.layout.files.length);
  const setup = newRow(ctx.report, 'setup', `clone ${N} files (setup)`);
  setup.files = tree.layout.files.length;
  setup.bytes = tree.layout.bytes;
  const pull = newRow(ctx.report, 'pull', `pull 10 changes, ${N} files`);
  const noop = newRow(ctx.report, 'noop', `no-op pull, ${N} files`);
  pull.warmup = noRuns();
  const m = ctx.report.metrics;
  const work = join(ctx.workDir, tree.spec.name);
  const dest: Record<'imz' | 'rsync' | 'rsyncFsync', string> = {
    imz: join(ctx.repDir, `imz-${tree.spec.name}`),
    rsync: join(ctx.repDir, `rsync-${tree.spec.name}`),
    rsyncFsync: join(ctx.repDir, `rsyncFsync-${tree.spec.name}`),
  };
  const url = rsyncUrl(ctx, tree);
  const rsyncPullArgs: Record<'rsync' | 'rsyncFsync', string[]> = {
    rsync: ['-a', '--delete', url, `${dest.rsync}/`],
    rsyncFsync: ['-a', '--delete', '--fsync', url, `${dest.rsyncFsync}/`],
  };
  const rsyncTools: Array<'rsync' | 'rsyncFsync'> = ctx.fsync ? ['rsync', 'rsyncFsync'] : ['rsync'];

  log(`--- incremental tree ${tree.spec.name}`);
  if (!ctx.opts.skipImz) {
    const base = await emptyServerRss(ctx);
    m.imzServeRssEmptyKiB = base;
    log(`imz serve on an empty tree: VmRSS ${base === null ? '?' : `${(base / 1024).toFixed(1)} MiB`} (baseline)`);
  }

  await withImzServer(ctx, tree.spec.name, setup, async (srv) => {
    let imzOk = srv !== null;
    if (srv !== null) {
      const rss = await settledRssKiB(srv.pid);
      m.imzServeRssSettledKiB = rss;
      log(`imz serve ${tree.spec.name}: VmRSS ${rss === null ? '?' : `${(rss / 1024).toFixed(1)} MiB`} after start (settled)`);
      const args = imzArgs(ctx, 'clone', `127.0.0.1:${srv.port}`, dest.imz, '--quiet');
      setup.commands.imz = `node ${args.join(' ')}`;
      pull.commands.imz = noop.commands.imz = `node ${imzArgs(ctx, 'pull', '-C', dest.imz, '--quiet').join(' ')}`;
      imzOk = await attempt(ctx, setup, 'imz', async () => {
        const s = await timed(ctx, process.execPath, args);
        setup.imz = s;
        setup.runs.imz.push(s);
        await verifyReplica('imz clone', work, dest.imz, { sample: 200, seed: `${tree.spec.seed}:setup-imz` });
        log(`${setup.case}: imz ${s.toFixed(3)} s, replica verified`);
      });
      m.imzServeRssAfterCloneKiB = procStatusKiB(srv.pid, 'VmRSS');
      m.imzReplicaStateBytesAfterClone = await duBytes(join(dest.imz, '.imz'));
    }
    // rsync: the plain copy is timed (for information); the --fsync copy starts from an
    // untimed plain copy (100,000 fsyncs in sequence on a real disk would only measure the disk).
    for (const tool of rsyncTools) {
      const args = ['-a', url, `${dest[tool]}/`];
      if (tool === 'rsync') setup.commands.rsync = `rsync ${args.join(' ')}`;
      pull.commands[tool] = noop.commands[tool] = `rsync ${rsyncPullArgs[tool].join(' ')}`;
      await attempt(ctx, setup, tool, async () => {
        const s = await timed(ctx, 'rsync', args);
        if (tool === 'rsync') {
          setup.rsync = s;
          setup.runs.rsync.push(s);
        }
        await verifyReplica(`rsync copy (${tool})`, work, dest[tool], { sample: 50, seed: `${tree.spec.seed}:setup-${tool}` });
        log(`${setup.case}: rsync ${s.toFixed(3)} s${tool === 'rsyncFsync' ? ' (untimed setup of the --fsync copy)' : ''}, replica verified`);
      });
    }
    const rsyncOk: Record<'rsync' | 'rsyncFsync', boolean> = { rsync: existsSync(dest.rsync), rsyncFsync: existsSync(dest.rsyncFsync) };

    // Rounds of 10 changes; round 0 is a warm-up, not counted.
    for (const cs of sets) {
      const warm = cs.round === 0;
      applyChanges(work, tree.spec, cs);
      log(
        `round ${cs.round}${warm ? ' (warm-up, not counted)' : ''}: changed 10 paths in the served tree; waiting ${ctx.opts.settleMs} ms for the imz server's watcher to journal them (no status command to poll yet)`,
      );
      await sleep(ctx.opts.settleMs);
      const srcList = listTree(work);
      const srcHashes = new Map<string, string>();
      const mustHash = [...cs.modify.map((x) => x.rel), ...cs.create.map((x) => x.rel)];
      const vopts = { sample: 50, seed: `${tree.spec.seed}:round${cs.round}`, mustHash, mustBeAbsent: cs.delete, src: srcList, srcHashes };
      const parts: string[] = [];
      if (imzOk) {
        imzOk = await attempt(ctx, pull, 'imz', async () => {
          const s = await timed(ctx, process.execPath, imzArgs(ctx, 'pull', '-C', dest.imz, '--quiet'));
          (warm ? pull.warmup! : pull.runs).imz.push(s);
          try {
            await verifyReplica(`imz pull (round ${cs.round})`, work, dest.imz, vopts);
          } catch (e) {
            throw new Error(`${(e as Error).message}\n(if only the latest changes are missing, the server may not have journalled them within --settle-ms ${ctx.opts.settleMs})`);
          }
          parts.push(`imz ${s.toFixed(3)} s`);
        });
      }
      for (const tool of rsyncTools) {
        if (!rsyncOk[tool]) continue;
        rsyncOk[tool] = await attempt(ctx, pull, tool, async () => {
          const s = await timed(ctx, 'rsync', rsyncPullArgs[tool]);
          (warm ? pull.warmup! : pull.runs)[tool].push(s);
          await verifyReplica(`${TOOL_NAMES[tool]} (round ${cs.round})`, work, dest[tool], vopts);
          parts.push(`${TOOL_NAMES[tool]} ${s.toFixed(3)} s`);
        });
      }
      log(`round ${cs.round}: ${parts.join(', ')}; replicas verified`);
    }
    pull.imz = best(pull.runs.imz);
    pull.rsync = best(pull.runs.rsync);
    pull.rsyncFsync = best(pull.runs.rsyncFsync);

    // No-op: nothing changed since the last pull.
    for (let i = 0; i < 3; i++) {
      const parts: string[] = [];
      if (imzOk) {
        imzOk = await attempt(ctx, noop, 'imz', async () => {
          const s = await timed(ctx, process.execPath, imzArgs(ctx, 'pull', '-C', dest.imz, '--quiet'));
          noop.runs.imz.push(s);
          parts.push(`imz ${s.toFixed(3)} s`);
        });
      }
      for (const tool of rsyncTools) {
        if (!rsyncOk[tool]) continue;
        rsyncOk[tool] = await attempt(ctx, noop, tool, async () => {
          const s = await timed(ctx, 'rsync', rsyncPullArgs[tool]);
          noop.runs[tool].push(s);
          parts.push(`${TOOL_NAMES[tool]} ${s.toFixed(3)} s`);
        });
      }
      log(`no-op pull ${i + 1}/3: ${parts.join(', ')}`);
    }
    const srcList = listTree(work);
    const srcHashes = new Map<string, string>();
    const finalTools: Array<'imz' | 'rsync' | 'rsyncFsync'> = [...(imzOk ? (['imz'] as const) : []), ...rsyncTools.filter((t) => rsyncOk[t])];
    for (const tool of finalTools) {
      await attempt(ctx, noop, tool, async () => {
        await verifyReplica(`${TOOL_NAMES[tool]} after no-op pulls`, work, dest[tool], { sample: 50, seed: `${tree.spec.seed}:noop`, src: srcList, srcHashes });
      });
    }
    noop.imz = best(noop.runs.imz);
    noop.rsync = best(noop.runs.rsync);
    noop.rsyncFsync = best(noop.runs.rsyncFsync);

    // The push cases: on the same imz replica and the same served tree, against rsync pushing
    // the same changes from its pull replica into a writable copy of the tree.
    await pushCases(ctx, tree, srv, imzOk, rsyncOk.rsync, dest.imz, dest.rsync, pushSets);

    if (srv !== null) {
      m.imzServeRssEndKiB = procStatusKiB(srv.pid, 'VmRSS');
      m.imzServePeakRssKiB = procStatusKiB(srv.pid, 'VmHWM');
      m.imzServerStateBytes = await duBytes(join(work, '.imz-server'));
      m.imzReplicaStateBytesEnd = await duBytes(join(dest.imz, '.imz'));
    }
  });
  m.incrementalFiles = tree.layout.files.length;
  const base = m.imzServeRssEmptyKiB;
  const settled = m.imzServeRssSettledKiB;
  if (typeof base === 'number' && typeof settled === 'number') {
    m.imzServeBytesPerPath = Math.round(((settled - base) * 1024) / tree.layout.files.length);
  }
  if (typeof m.imzReplicaStateBytesAfterClone === 'number') {
    m.imzReplicaStateBytesPerFile = Math.round(m.imzReplicaStateBytesAfterClone / tree.layout.files.length);
  }
  for (const r of [setup, pull, noop]) evaluateTarget(r);
  if (!ctx.opts.keep) for (const d of Object.values(dest)) rmSync(d, { recursive: true, force: true });
}

/**
 * The last JSON object on an `imz --json` stdout whose event is `event`. Every
 * line must be JSON, except the first one, which may be cut (run() keeps the last 64 KiB).
 */
function lastEvent(stdout: string, event: string): Record<string, unknown> {
  let found: Record<string, unknown> | undefined;
  const lines = stdout.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i]!.trim();
    if (t === '') continue;
    let o: unknown;
    try {
      o = JSON.parse(t);
    } catch {
      if (i === 0 && stdout.length >= 64 * 1024) continue;
      throw new Error(`a stdout line of --json is not JSON: ${t.slice(0, 200)}`);
    }
    if (typeof o === 'object' && o !== null && (o as { event?: unknown }).event === event) found = o as Record<string, unknown>;
  }
  if (found === undefined) throw new Error(`no {"event":"${event}"} line on stdout:\n    ${stdout.trim().split('\n').slice(-5).join('\n    ')}`);
  return found;
}

/**
 * After a push (exit 0): the replica has nothing left to push and no conflict
 * (`imz status --json --offline`, untimed), and its log is empty.
 */
async function checkPushedReplica(ctx: Ctx, rep: string): Promise<void> {
  const r = await runChecked(process.execPath, imzArgs(ctx, 'status', '-C', rep, '--json', '--offline'), { timeoutMs: ctx.opts.stepMs });
  const ev = lastEvent(r.stdout, 'status');
  if (ev.changes !== 0 || ev.conflicts !== 0) throw new Error(`after imz push, imz status --offline still reports ${JSON.stringify(ev)}`);
}

// No automatic gc or maintenance: after committing 100,000 files git would start one in the
// background, which slows what is timed next and still writes in .git/ when the bench removes it.
const GIT_IDENTITY = ['-c', 'user.name=imz-bench', '-c', 'user.email=imz-bench@localhost', '-c', 'gc.auto=0', '-c', 'maintenance.auto=false'];

/**
 * Issue 3's cases, after the pull rounds, on the imz replica of the incremental tree:
 *   status (nothing changed)   imz status --json            | git status --porcelain on a git checkout of the same tree
 *   no-op push                 imz push                     | rsync -a --delete REP/ rsync://.../<tree>-push/ (for information)
 *   push of 10 rewrites        imz push, then the server tree checked | the same rewrites in rsync's replica, pushed into the writable module
 *   push of N new small files  the same, one new directory of 0-16 KiB files (and rsync --fsync, for information)
 * rsync pushes from its pull replica (now equal to the served tree) into a
 * separate writable copy, so nothing the pulls measure is touched.
 */
async function pushCases(ctx: Ctx, tree: CachedTree, srv: Server | null, imzOkIn: boolean, rsyncOkIn: boolean, imzRep: string, rsyncRep: string, sets: ChangeSet[]): Promise<void> {
  const N = n(tree.layout.files.length);
  const newSpec = newFilesSpec(ctx.opts.quick ? 2_000 : 10_000);
  const newLay = layout(newSpec);
  const statusRow = newRow(ctx.report, 'status', `status, nothing changed, ${N} files`);
  const noopRow = newRow(ctx.report, 'push-noop', `no-op push, ${N} files`);
  const pushRow = newRow(ctx.report, 'push', `push 10 changed files, ${N} files`);
  const newFilesRow = newRow(ctx.report, 'push-new', `push ${n(newLay.files.length)} new files (0-16 KiB), ${N} files`);
  pushRow.warmup = noRuns();
  newFilesRow.files = newLay.files.length;
  newFilesRow.bytes = newLay.bytes;
  const m = ctx.report.metrics;
  const work = join(ctx.workDir, tree.spec.name);
  const mod = ctx.pushModule!;
  const pushUrl = `rsync://127.0.0.1:${ctx.rsyncPort}/${mod.name}/`;
  const gitDir = join(ctx.repDir, `git-${tree.spec.name}`);
  let imzOk = imzOkIn && srv !== null;
  let rsyncOk = rsyncOkIn;
  let gitOk = true;
  const step = ctx.opts.stepMs;

  const imzStatus = imzArgs(ctx, 'status', '-C', imzRep, '--json');
  const imzPush = imzArgs(ctx, 'push', '-C', imzRep, '--quiet');
  const rsyncPush = ['-a', '--delete', `${rsyncRep}/`, pushUrl];
  const gitStatus = ['status', '--porcelain'];
  statusRow.commands = { imz: `node ${imzStatus.join(' ')}`, git: `git ${gitStatus.join(' ')} (in ${gitDir})` };
  for (const r of [noopRow, pushRow, newFilesRow]) r.commands = { imz: `node ${imzPush.join(' ')}`, rsync: `rsync ${rsyncPush.join(' ')}` };
  noopRow.commands.git = `${statusRow.commands.git}: the status row's figure`;

  log(`--- push cases on ${tree.spec.name}`);
  // Untimed setup: the writable module (a copy of rsync's replica, mtimes kept) and the git checkout.
  if (rsyncOk) {
    rsyncOk = await attempt(ctx, pushRow, 'rsync', async () => {
      mkdirSync(dirname(mod.path), { recursive: true });
      const r = await runChecked('cp', ['-a', rsyncRep, mod.path], { timeoutMs: step });
      log(`push module ${mod.name}: ${mod.path}, a copy of rsync's replica (${r.seconds.toFixed(1)} s, untimed)`);
    });
  }
  gitOk = await attempt(ctx, statusRow, 'git', async () => {
    const t = performance.now();
    await runChecked('rsync', ['-a', '--exclude=/.imz-server/', `${work}/`, `${gitDir}/`], { timeoutMs: step });
    const copied = performance.now();
    await runChecked('git', ['init', '-q'], { cwd: gitDir, timeoutMs: step });
    const add = await runChecked('git', ['add', '-A'], { cwd: gitDir, timeoutMs: step });
    const commit = await runChecked('git', [...GIT_IDENTITY, 'commit', '-qm', 'x'], { cwd: gitDir, timeoutMs: step });
    const warm = await runChecked('git', gitStatus, { cwd: gitDir, timeoutMs: step });
    if (warm.stdout.trim() !== '') throw new Error(`git status is not clean after the commit:\n    ${warm.stdout.trim().split('\n').slice(0, 5).join('\n    ')}`);
    m.gitAddSeconds = add.seconds;
    m.gitCommitSeconds = commit.seconds;
    log(
      `git checkout ${gitDir}: copy ${((copied - t) / 1000).toFixed(1)} s, git add -A ${add.seconds.toFixed(1)} s, commit ${commit.seconds.toFixed(1)} s, first git status ${warm.seconds.toFixed(3)} s (all untimed)`,
    );
  });

  // 1. Status with nothing changed: one untimed run each (git's was above), then best of 3.
  if (imzOk) {
    imzOk = await attempt(ctx, statusRow, 'imz', async () => {
      const r = await timedRun(ctx, process.execPath, imzStatus);
      const ev = lastEvent(r.stdout, 'status');
      m.imzStatusFirstSeconds = r.seconds;
      log(`imz status (untimed first run): ${r.seconds.toFixed(3)} s, ${JSON.stringify(ev)}`);
    });
  }
  for (let i = 0; i < 3; i++) {
    const parts: string[] = [];
    if (imzOk) {
      imzOk = await attempt(ctx, statusRow, 'imz', async () => {
        const r = await timedRun(ctx, process.execPath, imzStatus);
        const ev = lastEvent(r.stdout, 'status');
        if (ev.changes !== 0 || ev.conflicts !== 0) throw new Error(`imz status should report no changes and no conflicts: ${JSON.stringify(ev)}`);
        if (ev.reachable !== true) throw new Error(`imz status did not reach the server (it waits up to 2 s for it): ${JSON.stringify(ev)}`);
        statusRow.runs.imz.push(r.seconds);
        parts.push(`imz ${r.seconds.toFixed(3)} s (behind ${String(ev.behind)})`);
      });
    }
    if (gitOk) {
      gitOk = await attempt(ctx, statusRow, 'git', async () => {
        const r = await timedRun(ctx, 'git', gitStatus, gitDir);
        if (r.stdout.trim() !== '') throw new Error(`git status --porcelain should print nothing:\n    ${r.stdout.trim().split('\n').slice(0, 5).join('\n    ')}`);
        statusRow.runs.git.push(r.seconds);
        parts.push(`git ${r.seconds.toFixed(3)} s`);
      });
    }
    log(`status ${i + 1}/3: ${parts.join(', ')}`);
  }
  statusRow.imz = best(statusRow.runs.imz);
  statusRow.git = best(statusRow.runs.git);

  // 2. No-op push, best of 3 (rsync's no-op push for information).
  for (let i = 0; i < 3; i++) {
    const parts: string[] = [];
    if (imzOk) {
      imzOk = await attempt(ctx, noopRow, 'imz', async () => {
        const r = await timedRun(ctx, process.execPath, imzPush);
        if (r.stdout.trim() !== '') throw new Error(`imz push --quiet printed:\n    ${r.stdout.trim().split('\n').slice(0, 5).join('\n    ')}`);
        noopRow.runs.imz.push(r.seconds);
        parts.push(`imz ${r.seconds.toFixed(3)} s`);
      });
    }
    if (rsyncOk) {
      rsyncOk = await attempt(ctx, noopRow, 'rsync', async () => {
        const s = await timed(ctx, 'rsync', rsyncPush);
        noopRow.runs.rsync.push(s);
        parts.push(`rsync ${s.toFixed(3)} s`);
      });
    }
    log(`no-op push ${i + 1}/3: ${parts.join(', ')}`);
  }
  noopRow.imz = best(noopRow.runs.imz);
  noopRow.rsync = best(noopRow.runs.rsync);
  noopRow.git = statusRow.git;

  // 3. Rounds of 10 in-place rewrites, the same in both replicas; round 0 is a warm-up.
  for (const cs of sets) {
    const warm = cs.round === 0;
    const rels = cs.modify.map((x) => x.rel);
    if (imzOk) applyChanges(imzRep, tree.spec, cs);
    if (rsyncOk) applyChanges(rsyncRep, tree.spec, cs);
    const vopts = (who: string) => ({ sample: 20, seed: `${tree.spec.seed}:push${cs.round}:${who}`, mustHash: rels });
    const parts: string[] = [];
    if (imzOk) {
      imzOk = await attempt(ctx, pushRow, 'imz', async () => {
        const s = await timed(ctx, process.execPath, imzPush);
        (warm ? pushRow.warmup! : pushRow.runs).imz.push(s);
        await verifyReplica(`server tree after imz push (round ${cs.round})`, imzRep, work, vopts('imz'));
        await checkPushedReplica(ctx, imzRep);
        parts.push(`imz ${s.toFixed(3)} s`);
      });
    }
    if (rsyncOk) {
      rsyncOk = await attempt(ctx, pushRow, 'rsync', async () => {
        const s = await timed(ctx, 'rsync', rsyncPush);
        (warm ? pushRow.warmup! : pushRow.runs).rsync.push(s);
        await verifyReplica(`rsync module after rsync push (round ${cs.round})`, rsyncRep, mod.path, vopts('rsync'));
        parts.push(`rsync ${s.toFixed(3)} s`);
      });
    }
    log(`push round ${cs.round}${warm ? ' (warm-up, not counted)' : ''}: ${parts.join(', ')}; server trees verified`);
  }
  pushRow.imz = best(pushRow.runs.imz);
  pushRow.rsync = best(pushRow.runs.rsync);

  // 4. A new directory of small files, 1 run each.
  const t = performance.now();
  if (imzOk) writeFiles(join(imzRep, newSpec.name), newSpec, newLay);
  if (rsyncOk) writeFiles(join(rsyncRep, newSpec.name), newSpec, newLay);
  log(`generated ${n(newLay.files.length)} new files (${fmtBytes(newLay.bytes)}) in ${newSpec.name}/ of each replica in ${((performance.now() - t) / 1000).toFixed(1)} s (untimed)`);
  // Each timed push starts with nothing dirty on the disk: the files just generated for both tools (and what the
  // run before wrote) would otherwise be written back during whichever push comes first, and a push that flushes
  // (imz makes what it applies durable; rsync --fsync) would wait for all of it.
  const settleDisk = () => spawnSync('sync');
  const newOpts = (who: string) => ({ sample: 200, seed: `${newSpec.seed}:${who}` });
  if (imzOk) {
    imzOk = await attempt(ctx, newFilesRow, 'imz', async () => {
      settleDisk();
      const s = await timed(ctx, process.execPath, imzPush);
      newFilesRow.runs.imz.push(s);
      newFilesRow.imz = s;
      await verifyReplica(`${newSpec.name}/ on the server after imz push`, join(imzRep, newSpec.name), join(work, newSpec.name), newOpts('imz'));
      await verifyReplica('server tree after imz push of new files', imzRep, work, { sample: 20, seed: `${newSpec.seed}:imz-all` });
      await checkPushedReplica(ctx, imzRep);
      log(`${newFilesRow.case}: imz ${s.toFixed(3)} s, server tree verified`);
    });
  }
  if (rsyncOk) {
    rsyncOk = await attempt(ctx, newFilesRow, 'rsync', async () => {
      settleDisk();
      const s = await timed(ctx, 'rsync', rsyncPush);
      newFilesRow.runs.rsync.push(s);
      newFilesRow.rsync = s;
      await verifyReplica(`${newSpec.name}/ in the rsync module`, join(rsyncRep, newSpec.name), join(mod.path, newSpec.name), newOpts('rsync'));
      await verifyReplica('rsync module after push of new files', rsyncRep, mod.path, { sample: 20, seed: `${newSpec.seed}:rsync-all` });
      log(`${newFilesRow.case}: rsync ${s.toFixed(3)} s, module verified`);
    });
  }
  // The same push with --fsync, for information (imz makes each file durable before the server acknowledges it):
  // the new directory taken out of the module again (untimed), then pushed anew.
  if (rsyncOk && ctx.fsync) {
    await attempt(ctx, newFilesRow, 'rsyncFsync', async () => {
      rmSync(join(mod.path, newSpec.name), { recursive: true, force: true });
      settleDisk();
      const s = await timed(ctx, 'rsync', ['-a', '--delete', '--fsync', `${rsyncRep}/`, pushUrl]);
      newFilesRow.runs.rsyncFsync.push(s);
      newFilesRow.rsyncFsync = s;
      await verifyReplica(`${newSpec.name}/ in the rsync module (--fsync)`, join(rsyncRep, newSpec.name), join(mod.path, newSpec.name), newOpts('rsync-fsync'));
      log(`${newFilesRow.case}: rsync --fsync ${s.toFixed(3)} s, module verified`);
    });
  }
  for (const r of [statusRow, noopRow, pushRow, newFilesRow]) evaluateTarget(r);
  if (!ctx.opts.keep) {
    rmSync(gitDir, { recursive: true, force: true, maxRetries: 5 });
    rmSync(mod.path, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- on demand (issue 6)

/** One row of the on-demand table: imz against another imz figure, or a latency net of the CLI's start-up. */
interface OdRow {
  root: string;
  case: string;
  kind: 'od-clone' | 'full-clone' | 'cat' | 'cat-mirror';
  /** Seconds: the clone (best run), or the cat's first byte net of the start-up (medians). */
  imz: number | null;
  /** The full clone (od-clone rows). */
  ref: number | null;
  /** Cat rows: median seconds from spawn to the first stdout byte, and the same for `imz --version`. */
  raw?: number | null;
  startup?: number | null;
  runs: number[];
  startupRuns?: number[];
  target: string;
  met: boolean | null;
  errors: string[];
  commands: string[];
}

/** Runs of `imz cat` (and of `imz --version`) per latency figure, after one untimed run each. */
const CAT_RUNS = 7;

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function odAttempt(ctx: Ctx, row: OdRow, fn: () => Promise<void>): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (e) {
    const msg = `imz: ${(e as Error).message}`;
    row.errors.push(msg);
    ctx.report.errors.push(`${row.case}: ${msg}`);
    loud(`[${ctx.report.root}] ${row.case}: ${msg}`);
    return false;
  }
}

/**
 * First-byte latency of `imz cat` on files that are not in the replica (one
 * untimed run, then CAT_RUNS, each a different file, content checked), and of
 * `imz --version` (the CLI's start-up). Fills row.raw, row.startup, row.imz.
 */
async function catLatency(ctx: Ctx, row: OdRow, rep: string, files: string[], srcDir: string, startup: number[]): Promise<void> {
  const step = ctx.opts.stepMs;
  row.commands.push(`node ${imzArgs(ctx, 'cat', '-C', rep, 'FILE').join(' ')} (a different remote file each run)`, `node ${imzArgs(ctx, '--version').join(' ')} (start-up)`);
  await odAttempt(ctx, row, async () => {
    for (let i = 0; i < files.length; i++) {
      const rel = files[i]!;
      await runChecked('sync', [], { timeoutMs: step });
      const r = await runFirstByte(process.execPath, imzArgs(ctx, 'cat', '-C', rep, rel), { timeoutMs: step });
      if (r.code !== 0) throw new Error(`imz cat ${rel} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`);
      const want = readFileSync(join(srcDir, rel));
      if (!r.bytes.equals(want)) throw new Error(`imz cat ${rel} printed ${r.bytes.length} bytes that differ from the served file (${want.length} bytes)`);
      if (!readFileSync(join(rep, rel)).equals(want)) throw new Error(`imz cat ${rel} did not keep the file in the replica`);
      if (i > 0) row.runs.push(r.firstByte!);
    }
  });
  row.startupRuns = startup;
  row.raw = median(row.runs);
  row.startup = median(startup);
  row.imz = row.raw !== null && row.startup !== null ? row.raw - row.startup : null;
  const ms = (x: number | null | undefined) => (x == null ? '?' : (x * 1000).toFixed(1));
  log(`${row.case}: first byte ${ms(row.raw)} ms (runs ${row.runs.map((x) => ms(x)).join(', ')}), start-up ${ms(row.startup)} ms → ${ms(row.imz)} ms after the CLI started`);
}

/**
 * Issue 6's figures on a hard-linked copy of the incremental tree, served by
 * its own `imz serve`: on-demand clone against full clone, `imz cat` of a small
 * remote file (first byte after start-up), and the same through an on-demand
 * mirror of that server.
 */
async function onDemandCase(ctx: Ctx, tree: CachedTree): Promise<void> {
  const N = n(tree.layout.files.length);
  const rows: OdRow[] = (ctx.report.onDemand ??= []);
  const mk = (kind: OdRow['kind'], name: string, target: string): OdRow => {
    const r: OdRow = { root: ctx.report.root, case: name, kind, imz: null, ref: null, runs: [], target, met: null, errors: [], commands: [] };
    rows.push(r);
    return r;
  };
  const od = mk('od-clone', `on-demand clone, ${N} files`, 'on-demand/full ≤ 1/3');
  const full = mk('full-clone', `full clone, ${N} files`, '');
  const cat = mk('cat', 'imz cat, small remote file: first byte after CLI start', '< 50 ms');
  const viaMirror = mk('cat-mirror', 'imz cat through one on-demand mirror (cold): first byte after CLI start', '< 100 ms');
  const m = ctx.report.metrics;
  const step = ctx.opts.stepMs;
  const dirName = `${tree.spec.name}-od`;
  const work = join(ctx.workDir, dirName);
  const mirrorDir = join(ctx.workDir, `${dirName}-mirror`);
  const odRep = join(ctx.repDir, `imz-od-${tree.spec.name}`);
  const mirrorRep = join(ctx.repDir, `imz-od-mirror-${tree.spec.name}`);
  const fullRep = join(ctx.repDir, `imz-full-${tree.spec.name}`);
  for (const d of [work, mirrorDir, odRep, mirrorRep, fullRep]) rmSync(d, { recursive: true, force: true });

  log(`--- on demand, ${tree.spec.name}`);
  await runChecked('cp', ['-al', tree.dir, work], { timeoutMs: step });
  const srcList = listTree(work);
  const srcDirs = [...srcList.values()].filter((e) => e.type === 'dir').length;
  // Small files spread over the tree: 2 × (1 untimed + CAT_RUNS), none read twice.
  const files = tree.layout.files;
  const picks = Array.from({ length: 2 * (CAT_RUNS + 1) }, (_, i) => files[Math.floor(((i + 0.5) * files.length) / (2 * (CAT_RUNS + 1)))]!.rel);

  await withImzServer(ctx, dirName, null, async (srv) => {
    if (srv === null) {
      od.errors.push('imz serve did not start');
      return;
    }
    const addr = `127.0.0.1:${srv.port}`;
    // 1. On-demand clone (best of 2, each into a new directory), then a full clone (1 run).
    const odArgs = imzArgs(ctx, 'clone', '--on-demand', addr, odRep, '--quiet');
    od.commands.push(`node ${odArgs.join(' ')}`);
    for (let i = 0; i < 2; i++) {
      rmSync(odRep, { recursive: true, force: true });
      const ok = await odAttempt(ctx, od, async () => {
        const s = await timed(ctx, process.execPath, odArgs);
        const got = listTree(odRep);
        const fileCount = [...got.values()].filter((e) => e.type === 'file').length;
        const dirCount = [...got.values()].filter((e) => e.type === 'dir').length;
        if (fileCount !== 0 || dirCount !== srcDirs) throw new Error(`the on-demand replica holds ${fileCount} files and ${dirCount} directories (expected 0 and ${srcDirs})`);
        const st = lastEvent((await runChecked(process.execPath, imzArgs(ctx, 'status', '-C', odRep, '--json', '--offline'), { timeoutMs: step })).stdout, 'status');
        if (st.changes !== 0) throw new Error(`imz status finds ${String(st.changes)} changes in the fresh on-demand replica`);
        od.runs.push(s);
        log(`${od.case}: ${s.toFixed(3)} s (run ${i + 1}/2), namespace verified (${n(dirCount)} directories, no file content)`);
      });
      if (!ok) break;
    }
    od.imz = best(od.runs);
    m.imzOnDemandReplicaStateBytes = await duBytes(join(odRep, '.imz'));
    m.imzOnDemandReplicaBytes = await duBytes(odRep);
    const fullArgs = imzArgs(ctx, 'clone', addr, fullRep, '--quiet');
    full.commands.push(`node ${fullArgs.join(' ')}`);
    await odAttempt(ctx, full, async () => {
      const s = await timed(ctx, process.execPath, fullArgs);
      await verifyReplica('imz full clone (on-demand section)', work, fullRep, { sample: 200, seed: `${tree.spec.seed}:od-full`, src: srcList });
      full.runs.push(s);
      full.imz = s;
      log(`${full.case}: ${s.toFixed(3)} s, replica verified`);
    });
    rmSync(fullRep, { recursive: true, force: true });
    od.ref = full.imz;
    od.met = od.imz !== null && full.imz !== null ? od.imz / full.imz <= 1 / 3 : null;

    // 2. The CLI's start-up, then imz cat of small remote files.
    const startup: number[] = [];
    await odAttempt(ctx, cat, async () => {
      for (let i = 0; i <= CAT_RUNS; i++) {
        const r = await runFirstByte(process.execPath, imzArgs(ctx, '--version'), { timeoutMs: step });
        if (r.code !== 0 || r.firstByte === null) throw new Error(`imz --version failed (exit ${r.code})`);
        if (i > 0) startup.push(r.firstByte);
      }
    });
    await catLatency(ctx, cat, odRep, picks.slice(0, CAT_RUNS + 1), work, startup);
    cat.met = cat.imz === null ? null : cat.imz < 0.05;

    // 3. Through a mirror: imz serve --upstream --on-demand, and an on-demand replica of the mirror.
    let mirror: Server | null = null;
    await odAttempt(ctx, viaMirror, async () => {
      const t = performance.now();
      const args = imzArgs(ctx, 'serve', mirrorDir, '--upstream', addr, '--on-demand', '--port', '0', '--json');
      viaMirror.commands.push(`node ${args.join(' ')}`);
      mirror = await startJsonServer(process.execPath, args, join(ctx.logDir, `imz-mirror-${dirName}.log`), mirrorDir, step);
      log(`imz mirror of ${addr}: pid ${mirror.pid}, listening on ${mirror.host}:${mirror.port} after ${((performance.now() - t) / 1000).toFixed(2)} s`);
      const c = await timed(ctx, process.execPath, imzArgs(ctx, 'clone', '--on-demand', `127.0.0.1:${mirror.port}`, mirrorRep, '--quiet'));
      log(`on-demand clone of the mirror: ${c.toFixed(3)} s (for information)`);
    });
    try {
      if (mirror !== null) {
        await catLatency(ctx, viaMirror, mirrorRep, picks.slice(CAT_RUNS + 1), work, startup);
        viaMirror.met = viaMirror.imz === null ? null : viaMirror.imz < 0.1;
      }
    } finally {
      if (mirror !== null) {
        const mm = mirror as Server;
        log(`imz mirror: stopped (${await stopChild(mm.child)})`);
        mm.log.end();
      }
    }
  });
  if (!ctx.opts.keep) for (const d of [work, mirrorDir, odRep, mirrorRep, fullRep]) rmSync(d, { recursive: true, force: true });
}

function odTable(reports: RootReport[]): string {
  const ms = (x: number | null | undefined): string => (x == null ? '—' : `${(x * 1000).toFixed(1)} ms`);
  const s = (x: number | null | undefined): string => (x == null ? '—' : `${x.toFixed(3)} s`);
  const lines = ['| root | case | imz | compared with | ratio | target |', '| --- | --- | ---: | --- | ---: | --- |'];
  for (const rep of reports) {
    for (const r of rep.onDemand ?? []) {
      const failed = r.errors.length > 0 && r.imz === null;
      const tgt = r.target ? `${r.target} ${r.met === true ? '✓' : r.met === false ? '✗' : '?'}` : '(reference)';
      if (r.kind === 'od-clone' || r.kind === 'full-clone') {
        const ratio = r.kind === 'od-clone' && r.imz !== null && r.ref !== null && r.ref > 0 ? (r.imz / r.ref).toFixed(3) : '';
        lines.push(`| ${rep.root} | ${r.case} | ${failed ? 'FAILED' : s(r.imz)} | ${r.kind === 'od-clone' ? `full clone ${s(r.ref)}` : ''} | ${ratio} | ${tgt} |`);
      } else {
        lines.push(`| ${rep.root} | ${r.case} | ${failed ? 'FAILED' : ms(r.imz)} | raw first byte ${ms(r.raw)} − start-up ${ms(r.startup)} (\`imz --version\`) | | ${tgt} |`);
      }
    }
  }
  return lines.join('\n');
}

function odNotes(reports: RootReport[]): string {
  const out: string[] = [];
  for (const rep of reports) {
    const m = rep.metrics;
    if (m.imzOnDemandReplicaBytes === undefined) continue;
    const b = (x: unknown) => (typeof x === 'number' ? fmtBytes(x) : '?');
    out.push(`- ${rep.root}: the on-demand replica takes ${b(m.imzOnDemandReplicaBytes)} on disk (du), of which .imz/ ${b(m.imzOnDemandReplicaStateBytes)}.`);
  }
  out.push(`- Clones: \`imz clone --on-demand\` best of 2 and \`imz clone\` 1 run, from one \`imz serve\` of a hard-linked copy of the incremental tree, after \`sync\`; the on-demand replica is checked to hold every directory and no file content.`);
  out.push(`- Cat: time from spawning \`imz cat -C REPLICA FILE\` to its first stdout byte, median of ${CAT_RUNS} (after 1 untimed run), each a different 1-4 KiB file whose content is not in the replica (kept afterwards, checked);`);
  out.push(`  minus the median time to the first stdout byte of \`imz --version\` (node starting, the bundle loading, yargs): what remains is imz's own work (open the replica, lock, connect, HELLO, READ).`);
  out.push('  Through a mirror: the same on an on-demand replica of an `imz serve --upstream --on-demand` mirror of that server; each file is cold on the mirror, which fetches it from the upstream.');
  return out.join('\n');
}

async function benchRoot(opts: Options, root: 'disk' | 'tmpfs', rsyncVersion: string, fsync: boolean): Promise<RootReport> {
  const base = root === 'disk' ? opts.diskDir : opts.tmpfsDir;
  const report: RootReport = {
    root,
    path: base,
    fsType: 'unknown',
    quick: opts.quick,
    startedAt: new Date().toISOString(),
    host: { cpu: os.cpus()[0]?.model ?? 'unknown', cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version },
    rsyncVersion,
    rsyncFsync: fsync,
    imz: opts.skipImz ? '(skipped: --skip-imz)' : opts.imzJs,
    settleMs: opts.settleMs,
    pageCache: 'warm: the page cache is not dropped; the imz server reads every file when it starts, rsync reads the same cached data',
    env: EXTRA_CA_UNSET ? 'NODE_EXTRA_CA_CERTS was set here and is unset for every child (node reads that CA file at each start)' : 'as given',
    trees: [],
    rows: [],
    metrics: {},
    errors: [],
  };
  log(`===== root ${root}: ${base}`);
  if (root === 'tmpfs' && !existsSync(dirname(base))) throw new Error(`${dirname(base)} does not exist: no tmpfs root here`);
  mkdirSync(base, { recursive: true });
  report.fsType = fsTypeOf(base);
  if (root === 'tmpfs' && report.fsType !== 'tmpfs') loud(`${base} is on ${report.fsType}, not tmpfs: the "tmpfs" figures are not what they claim`);
  if (root === 'disk' && report.fsType === 'tmpfs') loud(`${base} is on tmpfs, not a disk: the "disk" figures are not what they claim`);
  try {
    const st = statfsSync(base);
    const free = st.bavail * st.bsize;
    log(`${base}: ${report.fsType}, ${fmtBytes(free)} free`);
    if (free < (opts.quick ? 1 : 6) * 1024 * MiB) loud(`only ${fmtBytes(free)} free under ${base}; the bench may run out of space`);
  } catch {
    /* statfs unavailable */
  }

  useRegistry(join(base, 'children.json'), log);
  const srcRoot = join(base, 'src');
  const runDir = join(base, 'run');
  if (opts.clean) {
    log(`--clean: removing cached trees in ${srcRoot}`);
    rmSync(srcRoot, { recursive: true, force: true });
  }
  rmSync(runDir, { recursive: true, force: true });
  const ctx: Ctx = {
    opts,
    report,
    runDir,
    workDir: join(runDir, 'work'),
    repDir: join(runDir, 'rep'),
    logDir: join(runDir, 'logs'),
    rsyncPort: 0,
    fsync,
  };
  for (const d of [srcRoot, ctx.workDir, ctx.repDir, ctx.logDir]) mkdirSync(d, { recursive: true });

  const q = opts.quick;
  if (opts.section === 'on-demand') {
    // Only issue 6's rows: the incremental tree, no rsync.
    const inc = ensureTree(srcRoot, incSpec(q ? 20_000 : 100_000), log);
    await runChecked('sync', [], { timeoutMs: opts.stepMs });
    report.trees.push({ name: inc.spec.name, files: inc.layout.files.length, bytes: inc.layout.bytes, cached: inc.reused });
    try {
      await onDemandCase(ctx, inc);
    } finally {
      if (!opts.keep) {
        rmSync(ctx.workDir, { recursive: true, force: true });
        rmSync(ctx.repDir, { recursive: true, force: true });
      }
    }
    return finishRoot(report, `results-${root}-on-demand.json`);
  }
  const trees = [smallSpec(q ? 2_000 : 10_000), bigSpec((q ? 64 : 512) * MiB), incSpec(q ? 20_000 : 100_000)].map((s) => ensureTree(srcRoot, s, log));
  await runChecked('sync', [], { timeoutMs: opts.stepMs });
  for (const t of trees) report.trees.push({ name: t.spec.name, files: t.layout.files.length, bytes: t.layout.bytes, cached: t.reused });
  const [small, big, inc] = trees as [CachedTree, CachedTree, CachedTree];

  // Served trees are hard-linked copies of the cache (fast, and the servers'
  // state directories and the incremental changes never touch the cache).
  for (const t of trees) await runChecked('cp', ['-al', t.dir, join(ctx.workDir, t.spec.name)], { timeoutMs: opts.stepMs });
  const sets = planChanges(inc.spec, inc.layout, 4);
  // Push rounds of 10 rewrites (1 warm-up + 3), on files the pull rounds leave alone.
  const pushSets = planModifies(inc.spec, inc.layout, 4, 10, new Set(sets.flatMap((cs) => [...cs.modify.map((x) => x.rel), ...cs.delete])));
  // (the push sets too, in case the server ever rewrites a file in place)
  unshareFiles(join(ctx.workDir, inc.spec.name), [...sets, ...pushSets]);
  await runChecked('sync', [], { timeoutMs: opts.stepMs });
  ctx.pushModule = { name: `${inc.spec.name}-push`, path: join(runDir, 'push', inc.spec.name) };

  const daemon = await startRsyncDaemon(ctx, trees, [ctx.pushModule]);
  try {
    await cloneCase(ctx, small, 'clone-files', `clone ${n(small.layout.files.length)} files`);
    await cloneCase(ctx, big, 'clone-big', `clone ${big.layout.bytes / MiB} MiB file`);
    await incrementalCase(ctx, inc, sets, pushSets);
    await onDemandCase(ctx, inc);
  } finally {
    log(`rsync daemon: stopped (${await daemon.stop()})`);
    if (!opts.keep) {
      rmSync(ctx.workDir, { recursive: true, force: true });
      rmSync(ctx.repDir, { recursive: true, force: true });
    }
  }
  return finishRoot(report, `results-${root}.json`);
}

function finishRoot(report: RootReport, file: string): RootReport {
  report.finishedAt = new Date().toISOString();
  const out = join(HERE, file);
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  log(`results written to ${out}`);
  return report;
}

// ---------------------------------------------------------------- report

function table(reports: RootReport[]): string {
  const f = (x: number | null, d = 3): string => (x === null ? '—' : x.toFixed(d));
  const ratio = (a: number | null, b: number | null): string => (a === null || b === null || b <= 0 ? '—' : (a / b).toFixed(2));
  const lines = [
    '| root | case | imz s | rsync s | rsync --fsync s | git status s | imz/rsync | imz/rsync--fsync | imz/git | imz MB/s | rsync MB/s | rsync --fsync MB/s | target |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const rep of reports) {
    for (const r of rep.rows) {
      const hasRate = r.kind === 'clone-files' || r.kind === 'clone-big' || r.kind === 'setup';
      const rate = (s: number | null): string => (hasRate && r.bytes !== undefined ? f(mbps(r.bytes, s), 1) : '');
      const imzCell = r.imz === null && r.errors.some((e) => e.startsWith('imz')) ? 'FAILED' : f(r.imz);
      const tgt = r.target ? `${r.target} ${r.met === true ? '✓' : r.met === false ? '✗' : '?'}` : '';
      lines.push(
        `| ${rep.root} | ${r.case} | ${imzCell} | ${f(r.rsync)} | ${f(r.rsyncFsync)} | ${f(r.git ?? null)} | ${ratio(r.imz, r.rsync)} | ${ratio(r.imz, r.rsyncFsync)} | ${ratio(r.imz, r.git ?? null)} | ${rate(r.imz)} | ${rate(r.rsync)} | ${rate(r.rsyncFsync)} | ${tgt} |`,
      );
    }
  }
  return lines.join('\n');
}

function notes(reports: RootReport[]): string {
  const out: string[] = [];
  const mib = (k: unknown): string => (typeof k === 'number' ? `${(k / 1024).toFixed(1)} MiB` : '?');
  const bytes = (b: unknown): string => (typeof b === 'number' ? fmtBytes(b) : '?');
  for (const rep of reports) {
    const m = rep.metrics;
    out.push(`- ${rep.root} (${rep.path}, ${rep.fsType}): ${rep.trees.map((t) => `${t.name} ${n(t.files)} file${t.files === 1 ? '' : 's'} ${fmtBytes(t.bytes)}${t.cached ? ' (cached)' : ''}`).join('; ')}`);
    if (m.incrementalFiles !== undefined && m.imzServeRssSettledKiB !== undefined) {
      out.push(
        `  - imz serve RSS with ${n(Number(m.incrementalFiles))} files: ${mib(m.imzServeRssSettledKiB)} after start, ${mib(m.imzServeRssAfterCloneKiB)} after the clone, ${mib(m.imzServeRssEndKiB)} at the end (peak ${mib(m.imzServePeakRssKiB)}); empty tree ${mib(m.imzServeRssEmptyKiB)} → ${m.imzServeBytesPerPath ?? '?'} bytes per path`,
      );
      out.push(
        `  - replica .imz/: ${bytes(m.imzReplicaStateBytesAfterClone)} after the clone (${m.imzReplicaStateBytesPerFile ?? '?'} bytes per file), ${bytes(m.imzReplicaStateBytesEnd)} at the end; server .imz-server/: ${bytes(m.imzServerStateBytes)}`,
      );
    } else if (!rep.imz.startsWith('(skipped')) {
      out.push('  - imz serve RSS and .imz/ size: not measured (the incremental tree was not served; see the errors)');
    }
  }
  const r0 = reports[0];
  if (r0 !== undefined) {
    out.push(`- ${r0.rsyncVersion}${r0.rsyncFsync ? '' : ' (no --fsync option: that column is empty)'}; rsync daemon on 127.0.0.1; node ${r0.host.node}; ${r0.host.cpus} × ${r0.host.cpu}; ${r0.host.memGiB} GiB RAM; kernel ${r0.host.kernel}`);
    if (EXTRA_CA_UNSET) out.push('- NODE_EXTRA_CA_CERTS, set on this machine for its proxy, is unset for every child: node reads that CA file at each start (~50 ms here).');
    out.push('- Clones: 1 run each, into an empty directory. Pulls: best of 3 rounds (after 1 warm-up round), each round a fresh set of 10 changes (5 files rewritten in place, 3 created, 2 deleted);');
    out.push(`  after each change set the bench waits ${r0.settleMs} ms for the imz server's watcher to journal it (no status command to poll yet), then times imz pull and rsync -a --delete.`);
    out.push('- Status: `imz status --json` (it also asks the server how far behind the replica is) against `git status --porcelain` (git defaults) on a git checkout of the same tree');
    out.push('  (copied, `git add -A`, committed, one untimed `git status` first; imz also gets one untimed run); best of 3. The no-op push row compares with the same git figure.');
    out.push('- Pushes: `imz push --quiet` on the imz replica (exit 0; then, untimed, the server tree is compared with the replica: listing, sizes, modes, mtimes,');
    out.push('  SHA-256 of every changed file plus a sample; and `imz status --offline` must find nothing left to push) against');
    out.push('  `rsync -a --delete REPLICA/ rsync://127.0.0.1:PORT/<tree>-push/` from rsync\'s replica into a writable');
    out.push('  daemon module holding a separate copy of the tree (checked the same way). 10 changed files: 10 in-place rewrites that change the size, a fresh set each round,');
    out.push('  best of 3 after 1 warm-up. New files: one new directory of small files (0-16 KiB, spread over subdirectories), 1 run each;');
    out.push('  then, for information, the directory is taken out of the module and pushed again with `rsync --fsync` (imz syncs each file before the server acknowledges it).');
    out.push('- Every timed step starts after `sync`; the page cache is warm (not dropped). imz times include starting node.');
  }
  return out.join('\n');
}

// ---------------------------------------------------------------- main

let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    loud(`${sig}: stopping child processes`);
    void stopAll(3000).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  });
}
process.on('exit', killAllSync);

// This machine sets NODE_EXTRA_CA_CERTS for its proxy; node then reads the CA
// bundle at every start (~50 ms here), which users' machines do not pay and
// git and rsync never do. Every child (imz above all) runs without it.
const EXTRA_CA_UNSET = process.env.NODE_EXTRA_CA_CERTS !== undefined;
delete process.env.NODE_EXTRA_CA_CERTS;

async function main(): Promise<number> {
  const opts = parseOptions();
  process.umask(0o022);
  const rsyncVersion = ensureRsync(opts.stepMs);
  const fsync = rsyncHasFsync();
  log(`${rsyncVersion}${fsync ? '' : ' (no --fsync: that column stays empty)'}`);
  if (!opts.skipImz && !existsSync(opts.imzJs)) {
    throw new Error(`${opts.imzJs} does not exist: run \`npm run build\` first (\`npm run bench\` does), or pass --imz FILE / --skip-imz`);
  }
  if (opts.skipImz) loud('--skip-imz: imz is not measured, only rsync');
  const reports: RootReport[] = [];
  const fatal: string[] = [];
  try {
    for (const root of opts.roots) {
      try {
        reports.push(await benchRoot(opts, root, rsyncVersion, fsync));
      } catch (e) {
        fatal.push(`[${root}] ${(e as Error).stack ?? String(e)}`);
        loud(`[${root}] bench aborted: ${(e as Error).message}`);
      }
    }
  } finally {
    await stopAll();
  }
  if (reports.some((r) => r.rows.length > 0)) {
    console.log(`\n## imz vs rsync${opts.quick ? ' (--quick: smaller trees)' : ''}\n`);
    console.log(table(reports));
    console.log(`\n${notes(reports)}\n`);
  }
  if (reports.some((r) => (r.onDemand ?? []).length > 0)) {
    console.log(`\n## imz on demand${opts.quick ? ' (--quick: smaller trees)' : ''}\n`);
    console.log(odTable(reports));
    console.log(`\n${odNotes(reports)}\n`);
  }
  if (opts.fanout && !opts.skipImz) {
    log('===== fan-out (bench/fanout.ts)');
    try {
      const { runFanout, defaultFanoutOptions } = await import('./fanout.ts');
      const f = await runFanout({ ...defaultFanoutOptions(), imzJs: opts.imzJs, stepMs: opts.stepMs, keep: opts.keep });
      console.log('\n## imz fan-out: one server, N `imz pull --follow` followers\n');
      console.log(f.table);
      console.log(`\n${f.notes}\n`);
      fatal.push(...f.errors.map((e) => `[fan-out] ${e}`));
    } catch (e) {
      fatal.push(`[fan-out] ${(e as Error).stack ?? String(e)}`);
      loud(`[fan-out] aborted: ${(e as Error).message}`);
    } finally {
      await stopAll();
    }
  }
  const errors = [...reports.flatMap((r) => r.errors.map((e) => `[${r.root}] ${e}`)), ...fatal];
  if (errors.length > 0) {
    loud(`the bench FAILED (${errors.length} error(s)):\n${errors.map((e) => `- ${e.split('\n')[0]}`).join('\n')}`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    loud(`bench failed: ${(e as Error).stack ?? String(e)}`);
    void stopAll(3000).finally(() => process.exit(1));
  },
);
