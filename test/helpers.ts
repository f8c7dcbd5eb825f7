// Shared harness of the integration tests: temp dirs, fixture copies, real
// `imz` processes (server and client, under Node or Deno), tree snapshots.
// Everything created here is registered and removed by cleanupAll(), which
// every suite calls from `after` (and `after.each`), so a failing test
// leaves no process running and no directory behind.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, rmSync } from 'node:fs';
import { access, cp, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'node:http';

/** Root of the repository. */
export const REPO = resolve(fileURLToPath(new URL('..', import.meta.url)));
/** The bundled CLI that `npm run build` writes. */
export const IMZ_JS = join(REPO, 'dist', 'imz.js');
/** Deno, installed as an npm dev dependency. */
export const DENO = join(REPO, 'node_modules', '.bin', 'deno');

/** Which runtime runs the CLI: node (the bundle) or deno (the TypeScript sources). */
export type Runtime = 'node' | 'deno';

const tempDirs: string[] = [];
const procs = new Set<ChildProcess>();

let bundleCopy: Promise<string> | undefined;
let bundleDir: string | undefined;

/**
 * The bundled CLI the tests run: a private copy of dist/ taken once per test
 * process, so that a rebuild running meanwhile (which empties dist/ first)
 * cannot pull files from under a running test. The copy is checked to be
 * complete (every chunk the bundle imports is there) and retaken if not.
 * IMZ_TEST_BIN=path/to/imz.js runs that file instead.
 */
export function imzBundle(): Promise<string> {
  if (process.env.IMZ_TEST_BIN) return Promise.resolve(resolve(process.env.IMZ_TEST_BIN));
  bundleCopy ??= (async () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const d = await mkdtemp(join(tmpdir(), 'imz-dist-'));
      bundleDir = d;
      try {
        await cp(join(REPO, 'dist'), d, { recursive: true });
        if (await bundleComplete(d)) return join(d, 'imz.js');
      } catch { /* dist/ is being rebuilt: try again */ }
      await rm(d, { recursive: true, force: true });
      bundleDir = undefined;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`no complete bundle in ${join(REPO, 'dist')}: run \`npm run build\` first`);
  })();
  return bundleCopy;
}

/**
 * True when dir holds a whole build: imz.js (the loader), the bundle whose
 * SHA-256 starts with the build id the loader names, and the scan worker.
 */
async function bundleComplete(dir: string): Promise<boolean> {
  try {
    const loader = await readFile(join(dir, 'imz.js'), 'utf8');
    const id = /const BUILD = '([0-9a-f]{16})'/.exec(loader)?.[1];
    if (!id) return false;
    const bundle = await readFile(join(dir, 'imz.bundle.cjs'));
    if (createHash('sha256').update(bundle).digest('hex').slice(0, 16) !== id) return false;
    await access(join(dir, 'scan_worker.cjs'));
    return true;
  } catch {
    return false;
  }
}

/** The argv (program first) that runs `imz <args>` under a runtime. */
export async function imzArgv(args: string[], runtime: Runtime = 'node'): Promise<string[]> {
  if (runtime === 'deno') return [DENO, 'run', '-A', '--config', join(REPO, 'deno.json'), join(REPO, 'cli', 'main.ts'), ...args];
  return [process.execPath, await imzBundle(), ...args];
}

/** A fresh directory under the system temp dir, removed by cleanupAll(). */
export async function makeTmp(prefix = 'imz-test-', base = tmpdir()): Promise<string> {
  const d = await mkdtemp(join(base, prefix));
  tempDirs.push(d);
  return d;
}

/**
 * A suite's server on a copy of fixtures/sample (setup adds to it first),
 * and fresh clones of it, in one temp dir: start() in the suite's before hook.
 */
export function sampleSuiteServer(prefix: string, setup?: (srv: string) => Promise<void>) {
  let server: ServerHandle | undefined;
  let tmp = '';
  let n = 0;
  return {
    /** The suite's temp dir (the server's tree is srv/ in it). */
    get tmp(): string {
      return tmp;
    },
    async start(): Promise<void> {
      tmp = await makeTmp(prefix);
      const srv = join(tmp, 'srv');
      await copyFixture('sample', srv);
      await setup?.(srv);
      server = await startServer(srv);
    },
    /** A fresh clone of the server. */
    async clone(): Promise<string> {
      const dir = join(tmp, `replica-${++n}`);
      const r = await imz(['clone', server!.address, dir, '--json']);
      if (r.code !== 0) throw new Error(`clone exited ${r.code}\n${r.stdout}\n${r.stderr}`);
      return dir;
    },
  };
}

/**
 * Copies fixtures/<name> to dest (symlinks copied as links, modes and
 * timestamps kept). For 'sample' it also makes the empty directory `empty/`
 * that git cannot store.
 */
export async function copyFixture(name: string, dest: string): Promise<void> {
  await cp(join(REPO, 'fixtures', name), dest, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true, errorOnExist: true, force: false });
  if (name === 'sample') await mkdir(join(dest, 'empty'), { recursive: true });
}

/** Spawns a process, registers it for cleanup, collects its output. */
function spawnTracked(argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; uid?: number; gid?: number }): ChildProcess & { out: { stdout: string; stderr: string } } {
  const p = spawn(argv[0], argv.slice(1), {
    cwd: opts.cwd ?? REPO,
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: false,
  }) as ChildProcess & { out: { stdout: string; stderr: string } };
  p.out = { stdout: '', stderr: '' };
  p.stdout!.setEncoding('utf8');
  p.stderr!.setEncoding('utf8');
  p.stdout!.on('data', (s: string) => { p.out.stdout += s; });
  p.stderr!.on('data', (s: string) => { p.out.stderr += s; });
  procs.add(p);
  const forget = () => procs.delete(p);
  p.once('exit', forget);
  p.once('error', forget);
  return p;
}

/** Resolves with the exit of p (code, signal), or undefined after ms. */
function exitOf(p: ChildProcess, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve({ code: p.exitCode, signal: p.signalCode });
  return new Promise((res) => {
    const t = setTimeout(() => { p.off('close', onClose); res(undefined); }, ms);
    const onClose = (code: number | null, signal: NodeJS.Signals | null) => { clearTimeout(t); res({ code, signal }); };
    p.once('close', onClose);
  });
}

/** A running `imz serve`. */
export interface ServerHandle {
  port: number;
  address: string;
  serverId: string;
  proc: ChildProcess;
  /** Everything it printed so far. */
  output(): { stdout: string; stderr: string };
  /** Sends signal (SIGTERM by default), waits for the exit (SIGKILL after 5 s); resolves with the exit status. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts `imz serve DIR --port 0 --json [extraArgs]` and waits for its
 * listening line (first line of stdout).
 */
export async function startServer(dir: string, extraArgs: string[] = [], opts: { runtime?: Runtime; timeoutMs?: number; env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {}): Promise<ServerHandle> {
  const runtime = opts.runtime ?? 'node';
  const timeoutMs = opts.timeoutMs ?? (runtime === 'deno' ? 30_000 : 10_000);
  const hasPort = extraArgs.includes('--port');
  const argv = await imzArgv(['serve', dir, ...(hasPort ? [] : ['--port', '0']), '--json', ...extraArgs], runtime);
  const p = spawnTracked(argv, { env: opts.env, uid: opts.uid, gid: opts.gid });
  const listening = await new Promise<Record<string, unknown>>((res, rej) => {
    const fail = (why: string) => {
      cleanup();
      p.kill('SIGKILL');
      rej(new Error(`imz serve ${dir} (${runtime}) ${why}\nstdout: ${p.out.stdout}\nstderr: ${p.out.stderr}`));
    };
    const timer = setTimeout(() => fail(`printed no listening line within ${timeoutMs} ms`), timeoutMs);
    const onData = () => {
      const nl = p.out.stdout.indexOf('\n');
      if (nl < 0) return;
      const first = p.out.stdout.slice(0, nl);
      let ev: Record<string, unknown>;
      try {
        ev = JSON.parse(first);
      } catch {
        return fail(`printed a first line that is not JSON: ${first}`);
      }
      if (ev.event !== 'listening' || typeof ev.port !== 'number') return fail(`printed a first line that is not the listening event: ${first}`);
      cleanup();
      res(ev);
    };
    const onExit = (code: number | null, signal: string | null) => fail(`exited (code ${code}, signal ${signal}) before listening`);
    const onError = (err: Error) => fail(`could not start: ${err.message}`);
    const cleanup = () => {
      clearTimeout(timer);
      p.stdout!.off('data', onData);
      p.off('exit', onExit);
      p.off('error', onError);
    };
    p.stdout!.on('data', onData);
    p.once('exit', onExit);
    p.once('error', onError);
  });
  const port = listening.port as number;
  return {
    port,
    address: `${listening.host as string}:${port}`,
    serverId: String(listening.serverId ?? ''),
    proc: p,
    output: () => ({ ...p.out }),
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (p.exitCode !== null || p.signalCode !== null) return { code: p.exitCode, signal: p.signalCode };
      p.kill(signal);
      const r = await exitOf(p, 5_000);
      if (r) return r;
      p.kill('SIGKILL');
      return (await exitOf(p, 5_000)) ?? { code: null, signal: 'SIGKILL' };
    },
  };
}

/** Result of one CLI run. */
export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Options of imz() and spawnImz(). */
export interface ImzOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  runtime?: Runtime;
  /** Run as this user and group (the test process must be root): permission tests, since root ignores mode bits. */
  uid?: number;
  gid?: number;
}

/**
 * Starts `imz <args>` without waiting (for tests that interrupt it). The
 * process is registered for cleanup. `done` resolves at its exit.
 */
export async function spawnImz(args: string[], opts: ImzOptions = {}): Promise<{ proc: ChildProcess; done: Promise<RunResult> }> {
  const p = spawnTracked(await imzArgv(args, opts.runtime), { cwd: opts.cwd, env: opts.env, uid: opts.uid, gid: opts.gid });
  const done = new Promise<RunResult>((res) => {
    p.once('error', (err) => res({ code: null, signal: null, stdout: p.out.stdout, stderr: p.out.stderr + String(err) }));
    p.once('close', (code, signal) => res({ code, signal, stdout: p.out.stdout, stderr: p.out.stderr }));
  });
  return { proc: p, done };
}

/**
 * Runs `imz <args>` to completion within timeoutMs (killed with SIGKILL,
 * and an error thrown, when it takes longer).
 */
export async function imz(args: string[], opts: ImzOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? (opts.runtime === 'deno' ? 30_000 : 15_000);
  const { proc, done } = await spawnImz(args, opts);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((res) => { timer = setTimeout(() => res('timeout'), timeoutMs); });
  const r = await Promise.race([done, timedOut]);
  clearTimeout(timer);
  if (r === 'timeout') {
    proc.kill('SIGKILL');
    const late = await done;
    throw new Error(`imz ${args.join(' ')} did not finish within ${timeoutMs} ms\nstdout: ${late.stdout}\nstderr: ${late.stderr}`);
  }
  return r;
}

/** A run's exit status and the ends of its output, for an assertion's message. */
export function runReport(r: RunResult): string {
  return `exit ${r.code} (signal ${r.signal})\nstdout: ${r.stdout.slice(-3000)}\nstderr: ${r.stderr.slice(-3000)}`;
}

/** Parses every stdout line as JSON (throws naming the line that is not). */
export function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout.split('\n').filter((l) => l.length > 0).map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      throw new Error(`stdout line is not JSON: ${JSON.stringify(l)}\nwhole stdout:\n${stdout}`);
    }
  });
}

/** `imz resolve --list --json` in a replica: one object per conflict listed. */
export async function listedConflicts(replica: string): Promise<Record<string, unknown>[]> {
  const r = await imz(['resolve', '--list', '--json', '-C', replica]);
  if (r.code !== 0 && r.code !== 3) throw new Error(`resolve --list exited ${r.code}\n${r.stderr}`);
  return jsonLines(r.stdout).filter((e) => e.event === 'conflict');
}

/** The conflict records a replica keeps in .imz/conflicts (with who settled them). */
export async function conflictRecords(replica: string): Promise<Record<string, unknown>[]> {
  const dir = join(replica, '.imz', 'conflicts');
  let names: string[] = [];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.json'));
  } catch { /* none yet */ }
  return Promise.all(names.map(async (n) => JSON.parse(await readFile(join(dir, n), 'utf8')) as Record<string, unknown>));
}

/** One entry of a tree snapshot. */
export interface SnapEntry {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  size?: number;
  sha256?: string;
  target?: string;
  /** Files only, truncated to whole milliseconds (imz keeps ms precision). */
  mtimeMs?: number;
}

/** True for the names imz keeps for itself, left out of snapshots. */
export function isImzOwn(name: string): boolean {
  return name === '.imz' || name === '.imz-server' || name.startsWith('.imz-tmp-');
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * The tree under dir as a map path → facts, without following symlinks and
 * without .imz, .imz-server and .imz-tmp-* (at any depth). Directory mtimes
 * are left out (they move whenever an entry is added).
 */
export async function snapshotTree(dir: string): Promise<Record<string, SnapEntry>> {
  const out: Record<string, SnapEntry> = {};
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(dir, rel))).sort();
    for (const n of names) {
      if (isImzOwn(n)) continue;
      const p = rel ? `${rel}/${n}` : n;
      const abs = join(dir, p);
      const st = await lstat(abs);
      const mode = st.mode & 0o777;
      if (st.isSymbolicLink()) out[p] = { type: 'symlink', mode, target: await readlink(abs) };
      else if (st.isDirectory()) {
        out[p] = { type: 'dir', mode };
        await walk(p);
      } else if (st.isFile()) out[p] = { type: 'file', mode, size: st.size, sha256: await sha256File(abs), mtimeMs: Math.trunc(st.mtimeMs) };
      else out[p] = { type: 'other', mode };
    }
  };
  await walk('');
  return out;
}

/** Every path (relative, at any depth, .imz included) whose name starts with .imz-tmp-. */
export async function findTemps(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const d of await readdir(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${d.name}` : d.name;
      if (d.name.startsWith('.imz-tmp-')) found.push(p);
      if (d.isDirectory()) await walk(p);
    }
  };
  await walk('');
  return found.sort();
}

/** Lines describing how two snapshots differ (empty when equal). */
export function diffTrees(a: Record<string, SnapEntry>, b: Record<string, SnapEntry>, names = ['server', 'replica']): string[] {
  const lines: string[] = [];
  for (const p of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const x = JSON.stringify(a[p] ?? null);
    const y = JSON.stringify(b[p] ?? null);
    if (x !== y) lines.push(`${p}: ${names[0]} ${x} / ${names[1]} ${y}`);
  }
  return lines.sort();
}

/** n small files of distinct content under root/dir, in subdirectories of 100 (s0, s1...); their paths. */
export async function manyFiles(root: string, dir: string, n: number, tag: string): Promise<string[]> {
  const paths: string[] = [];
  for (let i = 0; i < n; i++) {
    const sub = `${dir}/s${Math.floor(i / 100)}`;
    if (i % 100 === 0) await mkdir(join(root, sub), { recursive: true });
    const p = `${sub}/f${i}.txt`;
    await writeFile(join(root, p), `${tag} file ${i}\n`.repeat(1 + (i % 7)));
    paths.push(p);
  }
  return paths;
}

/**
 * Lines describing how two snapshots differ, conflict copies left out (a
 * server-wins copy stays in its replica by design).
 */
export function diffTreesBut(a: Record<string, SnapEntry>, b: Record<string, SnapEntry>, names?: string[]): string[] {
  const noCopies = (t: Record<string, SnapEntry>) => Object.fromEntries(Object.entries(t).filter(([p]) => !p.includes('.imz-conflict-')));
  return diffTrees(noCopies(a), noCopies(b), names);
}

/** Polls fn until it returns a truthy value (returned) or fails after timeoutMs. */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 5_000, what = 'condition', intervalMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Kills every process spawned here (SIGTERM, then SIGKILL) and removes every temp dir. */
export async function cleanupAll(): Promise<void> {
  const running = [...procs];
  for (const p of running) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
  await Promise.all(running.map(async (p) => {
    if (await exitOf(p, 3_000)) return;
    p.kill('SIGKILL');
    await exitOf(p, 3_000);
  }));
  procs.clear();
  const dirs = tempDirs.splice(0);
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true, maxRetries: 3 })));
}

// Last resort when the test run itself dies: no orphan servers, no litter.
process.once('exit', () => {
  for (const p of procs) {
    try {
      p.kill('SIGKILL');
    } catch { /* already gone */ }
  }
  for (const d of [...tempDirs, ...(bundleDir ? [bundleDir] : [])]) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch { /* best effort */ }
  }
});

// ---------- disconnected operation (push, sync) ----------

/** Points a replica at another server address by editing "remote" in .imz/config (a restarted server listens on a new port). */
export async function setRemote(replica: string, address: string): Promise<void> {
  const cfgPath = join(replica, '.imz', 'config');
  const cfg = JSON.parse(await readFile(cfgPath, 'utf8'));
  cfg.remote = address;
  // Atomically, as imz itself writes it: a follower may re-read it at any moment.
  const tmp = `${cfgPath}.test-${process.pid}`;
  await writeFile(tmp, JSON.stringify(cfg, null, 2) + '\n');
  await rename(tmp, cfgPath);
}

/** The replica id kept in .imz/config. */
export async function replicaIdOf(replica: string): Promise<string> {
  return String(JSON.parse(await readFile(join(replica, '.imz', 'config'), 'utf8')).replicaId);
}

/** One line of a replica's reintegration log (.imz/log), decoded. */
export type LogLine = { t: 'op'; op: { seq: number; kind: number; path: string; fromPath: string; base: number } } | { t: 'sent' | 'done' | 'drop'; upto: number };

/**
 * The records of REPLICA/.imz/log ("imz-log 1" header, then one
 * "<crc32 hex> <json>" line each); a torn last line is left out. [] when
 * there is no log.
 */
export async function readReintLog(replica: string): Promise<LogLine[]> {
  let text: string;
  try {
    text = await readFile(join(replica, '.imz', 'log'), 'utf8');
  } catch {
    return [];
  }
  const lines = text.split('\n');
  const out: LogLine[] = [];
  for (const l of lines.slice(1)) {
    const m = /^[0-9a-f]{8} (.*)$/.exec(l);
    if (!m) continue;
    try {
      out.push(JSON.parse(m[1]!));
    } catch { /* torn */ }
  }
  return out;
}

/** One journal record as the tests look at it. */
export interface JournalLine {
  seq: number;
  /** Change code (1 create, 2 modify, 3 meta, 4 remove, 5 mkdir, 6 rmdir, 7 symlink, 8 retype). */
  change: number;
  path: string;
  /** Entry type after the change (0 none, 1 file, 2 dir, 3 symlink). */
  type: number;
  hash: string;
  origin: string;
  originSeq: number;
}

/**
 * Every journal record of the server at address after `since`, read with a
 * JOURNAL request (the same stream `imz pull` replays, before it coalesces
 * records per path), so tests can count what the server applied.
 */
export async function readJournal(address: string, since = 0): Promise<JournalLine[]> {
  const { Remote } = await import('../core/remote.ts');
  const remote = await Remote.connect(address, { timeoutMs: 5_000 });
  try {
    const out: JournalLine[] = [];
    for await (const batch of remote.journal(since)) {
      for (const r of batch) {
        out.push({
          seq: Number(r.seq), change: r.change, path: r.entry.path, type: r.entry.type,
          hash: Buffer.from(r.entry.hash).toString('hex'), origin: r.origin, originSeq: Number(r.originSeq),
        });
      }
    }
    return out;
  } finally {
    remote.close();
  }
}

/**
 * fixtures/sample (plus extend) served from a fresh temp dir, and n replicas
 * cloned from it (named replica0, replica1, ...). Throws if a clone fails.
 */
export async function sampleWorld(n: number, extend?: (srv: string) => Promise<void>): Promise<{ tmp: string; srv: string; server: ServerHandle; replicas: string[] }> {
  const tmp = await makeTmp();
  const srv = join(tmp, 'srv');
  await copyFixture('sample', srv);
  if (extend) await extend(srv);
  const server = await startServer(srv);
  const replicas: string[] = [];
  for (let i = 0; i < n; i++) {
    const d = join(tmp, `replica${i}`);
    const r = await imz(['clone', server.address, d, '--json']);
    if (r.code !== 0) throw new Error(`clone exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    replicas.push(d);
  }
  return { tmp, srv, server, replicas };
}

/**
 * A push of 3,000 new files from the first of two replicas, caught while its
 * groups go up: resolves once the server has journalled more than a group of
 * it (or the push is over), with what a test needs to kill either side.
 */
export async function pushUnderWay(): Promise<{
  srv: string; server: ServerHandle; replicas: string[]; since: number; paths: string[]; proc: ChildProcess; done: Promise<RunResult>;
}> {
  const { srv, server, replicas } = await sampleWorld(2);
  const since = (await readJournal(server.address)).at(-1)?.seq ?? 0;
  const paths = await manyFiles(replicas[0]!, 'burst', 3000, 'k');
  const { proc, done } = await spawnImz(['push', '-C', replicas[0]!, '--json']);
  await waitFor(async () => proc.exitCode !== null || (await readJournal(server.address, since)).length > 400, 20_000, 'a group applied', 5);
  return { srv, server, replicas, since, paths, proc, done };
}

/** How many of these journal records each path has (those that keep passes, when given). */
export function recordsPerPath(records: JournalLine[], keep: (x: JournalLine) => boolean = () => true): Map<string, number> {
  const perPath = new Map<string, number>();
  for (const x of records) if (keep(x)) perPath.set(x.path, (perPath.get(x.path) ?? 0) + 1);
  return perPath;
}

/** Journal records made by a replica (origin set), rather than by the server's own scan. */
export const byReplica = (x: JournalLine): boolean => x.origin !== '';

/** How many journal records made by a replica (origin set) each path has after seq `since`. */
export async function appliedPerPath(address: string, since: number): Promise<Map<string, number>> {
  return recordsPerPath(await readJournal(address, since), byReplica);
}

/** An HTTP answer, read whole. */
export interface HttpReply { status: number; headers: Record<string, string | string[] | undefined>; body: Buffer; complete: boolean }

/** One HTTP request to 127.0.0.1:port over a fresh connection, the target sent exactly as given (no URL normalising). */
export function httpRequest(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (b: Buffer) => parts.push(b));
      res.on('error', () => {});
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), complete: res.complete }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * Replica b pushes a few thousand new files and replica a pulls them, killed
 * (SIGKILL) once .imz/placing is there and some are in a's tree, until a try
 * leaves files placed and not indexed (a try that misses the window is
 * finished by a plain pull). The paths of batch<round>/... b made, and those
 * a holds unindexed; tries says how each try ended.
 */
export async function pullKilledWhilePlacing(a: string, b: string, maxTries = 6): Promise<{ rounds: number; placed: string[]; unindexed: string[]; tries: string[] }> {
  const { Replica } = await import('../core/replica.ts');
  let placed: string[] = [];
  let unindexed: string[] = [];
  const tries: string[] = [];
  const check = (r: RunResult, what: string) => {
    if (r.code !== 0) throw new Error(`${what}: exit ${r.code} (signal ${r.signal})\nstdout: ${r.stdout.slice(0, 2000)}\nstderr: ${r.stderr}`);
  };
  for (let round = 0; round < maxTries && unindexed.length === 0; round++) {
    const paths = await manyFiles(b, `batch${round}`, 2500, `round ${round}`);
    check(await imz(['push', '-C', b, '--quiet']), 'the push of the new files');
    const { proc, done } = await spawnImz(['pull', '-C', a, '--quiet']);
    await waitFor(() => proc.exitCode !== null || (existsSync(join(a, '.imz', 'placing')) && existsSync(join(a, paths[0]!))), 20_000, 'the pull to place files', 1);
    if (proc.exitCode === null) proc.kill('SIGKILL');
    const r = await done;
    placed = paths.filter((p) => existsSync(join(a, p)));
    const index = await Replica.open(a);
    unindexed = [];
    for (const p of placed) if (!(await index.get(p))) unindexed.push(p);
    tries.push(`round ${round}: ${r.signal ?? `exit ${r.code}`}, ${placed.length} placed, ${unindexed.length} not indexed`);
    // Missed the window: the next round's pull takes what is left of this one too.
    if (unindexed.length === 0) check(await imz(['pull', '-C', a, '--quiet']), 'the pull after a missed try');
  }
  return { rounds: tries.length, placed, unindexed, tries };
}

/**
 * A server on a new directory holding files (relative path → content,
 * parents made) and one clone of it, in a temp dir registered for cleanup.
 */
export async function servedClone(prefix: string, files: Record<string, string>): Promise<{ tmp: string; srv: string; server: ServerHandle; a: string }> {
  const tmp = await makeTmp(prefix);
  const srv = join(tmp, 'srv');
  await mkdir(srv, { recursive: true });
  for (const [p, c] of Object.entries(files)) {
    await mkdir(dirname(join(srv, p)), { recursive: true });
    await writeFile(join(srv, p), c);
  }
  const server = await startServer(srv);
  const a = join(tmp, 'a');
  const r = await imz(['clone', server.address, a, '--quiet']);
  if (r.code !== 0) throw new Error(`clone exited ${r.code}: ${r.stderr}`);
  return { tmp, srv, server, a };
}
