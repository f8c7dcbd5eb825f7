// Child processes for the benchmark: every child is tracked, every run is
// bounded by a timeout, and everything still alive is stopped on exit,
// on error and on SIGINT/SIGTERM/SIGHUP.
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync, writeFileSync, type WriteStream } from 'node:fs';

interface Tracked {
  child: ChildProcess;
  label: string;
}

const live = new Map<number, Tracked>();
let registryFile: string | undefined;

function track(child: ChildProcess, label: string, marker?: string): void {
  const pid = child.pid;
  if (pid === undefined) return;
  live.set(pid, { child, label });
  if (marker !== undefined) saveRegistry(pid, marker, true);
  child.once('exit', () => {
    live.delete(pid);
    if (marker !== undefined) saveRegistry(pid, marker, false);
  });
}

// Long-lived children (servers, daemon) are also written to a small registry
// file, so a later run can stop what a killed (SIGKILL) run left behind: a pid
// is only signalled if its command line still contains the marker (a path of
// this bench's run directory), never by name.
function readRegistry(file: string): Array<{ pid: number; marker: string }> {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Array<{ pid: number; marker: string }>;
  } catch {
    return [];
  }
}

function saveRegistry(pid: number, marker: string, add: boolean): void {
  if (registryFile === undefined) return;
  const list = readRegistry(registryFile).filter((e) => e.pid !== pid);
  if (add) list.push({ pid, marker });
  try {
    writeFileSync(registryFile, JSON.stringify(list));
  } catch {
    /* the run directory may be gone during cleanup */
  }
}

/** Use `file` as the registry; stop leftovers from an earlier, killed run. */
export function useRegistry(file: string, log: (s: string) => void): void {
  if (existsSync(file)) {
    for (const { pid, marker } of readRegistry(file)) {
      let cmdline = '';
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      } catch {
        continue;
      }
      if (marker.length > 0 && cmdline.includes(marker)) {
        log(`stopping leftover process ${pid} from an earlier run (${cmdline.trim().slice(0, 120)})`);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
  }
  registryFile = file;
  writeFileSync(file, '[]');
}

/** Stop one child: SIGTERM, then SIGKILL after `graceMs`. Resolves to how it ended. */
export async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<string> {
  if (child.exitCode !== null) return `exit ${child.exitCode}`;
  if (child.signalCode !== null) return `signal ${child.signalCode}`;
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => resolve(signal !== null ? `signal ${signal}` : `exit ${code}`)),
  );
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), graceMs);
  });
  const first = await Promise.race([exited, timeout]);
  clearTimeout(timer);
  if (first !== 'timeout') return first;
  child.kill('SIGKILL');
  return `${await exited} (did not stop within ${graceMs} ms of SIGTERM: killed)`;
}

/** Stop every live child (SIGTERM, then SIGKILL). */
export async function stopAll(graceMs = 10_000): Promise<void> {
  await Promise.all([...live.values()].map((t) => stopChild(t.child, graceMs)));
}

/** Last-resort, synchronous: SIGKILL every live child (for process 'exit'). */
export function killAllSync(): void {
  for (const [pid] of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

class Tail {
  private text = '';
  private readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  push(b: Buffer): void {
    this.text += b.toString('utf8');
    if (this.text.length > this.max * 2) this.text = this.text.slice(-this.max);
  }
  toString(): string {
    return this.text.length > this.max ? this.text.slice(-this.max) : this.text;
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Wall-clock seconds from spawn to process exit. */
  seconds: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/** Run a command to completion (bounded by a timeout); time it from spawn to exit. */
export function run(cmd: string, args: string[], opts: RunOptions): Promise<RunResult> {
  return _run(cmd, args, opts, false);
}

export interface FirstByteResult extends RunResult {
  /** Seconds from spawn to the first stdout bytes read here (null: it printed nothing). */
  firstByte: number | null;
  /** All of stdout (for small outputs: checked by the caller). */
  bytes: Buffer;
}

/**
 * Run a command to completion (bounded by a timeout), timing when its first
 * stdout bytes arrive as well as its exit: latency to first byte of a CLI
 * that streams (imz cat). Stdout is kept whole, so keep it small.
 */
export function runFirstByte(cmd: string, args: string[], opts: RunOptions): Promise<FirstByteResult> {
  return _run(cmd, args, opts, true) as Promise<FirstByteResult>;
}

// One runner for both: the tail of stdout, or (whole) all of it with the first byte's time.
function _run(cmd: string, args: string[], opts: RunOptions, whole: boolean): Promise<RunResult | FirstByteResult> {
  return new Promise((resolve, reject) => {
    const label = [cmd, ...args].join(' ');
    const t0 = process.hrtime.bigint();
    let t1 = t0;
    let first: bigint | null = null;
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    track(child, label);
    const out = new Tail(64 * 1024);
    const chunks: Buffer[] = [];
    const err = new Tail(64 * 1024);
    child.stdout!.on('data', (b: Buffer) => {
      first ??= process.hrtime.bigint();
      if (whole) chunks.push(b);
      else out.push(b);
    });
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${label}: ${e.message}`));
    });
    child.once('exit', () => {
      t1 = process.hrtime.bigint();
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(new Error(`timed out after ${opts.timeoutMs / 1000} s (killed): ${label}\n${err.toString().trim()}`));
        return;
      }
      const seconds = Number(t1 - t0) / 1e9;
      if (!whole) {
        resolve({ code, signal, seconds, stdout: out.toString(), stderr: err.toString() });
        return;
      }
      const bytes = Buffer.concat(chunks);
      resolve({
        code, signal, seconds, firstByte: first === null ? null : Number(first - t0) / 1e9,
        stdout: bytes.subarray(-64 * 1024).toString('utf8'), stderr: err.toString(), bytes,
      });
    });
  });
}

/** Like run(), but a non-zero exit is an error carrying the command's stderr. */
export async function runChecked(cmd: string, args: string[], opts: RunOptions): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    let how = r.signal !== null ? `signal ${r.signal}` : `exit code ${r.code}`;
    if (r.code === 13 && cmd === process.execPath) how += ': node exits 13 when the event loop empties while a top-level await is still pending (a promise that never settled)';
    const detail = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-15).join('\n    ');
    throw new Error(`${[cmd, ...args].join(' ')} failed (${how})${detail ? `:\n    ${detail}` : ''}`);
  }
  return r;
}

export interface Server {
  child: ChildProcess;
  pid: number;
  host: string;
  port: number;
  log: WriteStream;
  logPath: string;
}

/**
 * Start a long-lived server whose stdout announces where it listens with a
 * JSON line {"event":"listening","host":...,"port":...}. Both output streams
 * are drained into `logPath` for as long as it runs (a full pipe would block it).
 */
export function startJsonServer(
  cmd: string,
  args: string[],
  logPath: string,
  marker: string,
  timeoutMs: number,
): Promise<Server> {
  return new Promise((resolve, reject) => {
    const label = [cmd, ...args].join(' ');
    const log = createWriteStream(logPath);
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child, label, marker);
    let done = false;
    let buf = '';
    const tail = new Tail(4096);
    const fail = (msg: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      const t = tail.toString().trim();
      reject(new Error(`${label}: ${msg}${t ? `\n    ${t.split('\n').slice(-15).join('\n    ')}` : ''}`));
    };
    const timer = setTimeout(() => fail(`no "listening" line within ${timeoutMs / 1000} s`), timeoutMs);
    child.stderr!.on('data', (b: Buffer) => {
      log.write(b);
      tail.push(b);
    });
    child.stdout!.on('data', (b: Buffer) => {
      log.write(b);
      tail.push(b);
      if (done) return;
      buf += b.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line === '') continue;
        let msg: unknown;
        try {
          msg = JSON.parse(line);
        } catch {
          fail(`first stdout line is not JSON: ${line.slice(0, 200)}`);
          return;
        }
        const m = msg as { event?: unknown; host?: unknown; port?: unknown };
        if (m.event === 'listening' && typeof m.port === 'number') {
          done = true;
          clearTimeout(timer);
          resolve({
            child,
            pid: child.pid!,
            host: typeof m.host === 'string' ? m.host : '127.0.0.1',
            port: m.port,
            log,
            logPath,
          });
          return;
        }
      }
    });
    child.once('error', (e) => fail(`cannot start: ${e.message}`));
    child.once('exit', (code, signal) => fail(`exited (${signal ?? code}) before listening`));
  });
}

/** Start a server that announces nothing (the rsync daemon): output goes to a log file. */
export function startPlain(cmd: string, args: string[], logPath: string, marker: string): ChildProcess {
  const log = createWriteStream(logPath);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child, [cmd, ...args].join(' '), marker);
  child.stdout!.pipe(log, { end: false });
  child.stderr!.pipe(log, { end: false });
  child.once('error', () => {
    /* reported by the caller's readiness check */
  });
  return child;
}

export interface LineChild {
  child: ChildProcess;
  pid: number;
  label: string;
  /** The last stderr output (for error messages). */
  stderrTail: () => string;
}

/**
 * Start a long-lived child that reports on stdout one line at a time:
 * `onLine` gets each complete line with performance.now() taken when this
 * process read it. Both streams are also copied to `logPath`. The child is
 * tracked (stopped on exit/error/signal) and written to the registry with `marker`.
 */
export function startLines(
  cmd: string,
  args: string[],
  logPath: string,
  marker: string,
  onLine: (line: string, at: number) => void,
  env?: NodeJS.ProcessEnv,
): LineChild {
  const label = [cmd, ...args].join(' ');
  const log = createWriteStream(logPath);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  track(child, label, marker);
  const err = new Tail(4096);
  let buf = '';
  child.stdout!.on('data', (b: Buffer) => {
    const at = performance.now();
    log.write(b);
    buf += b.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim() !== '') onLine(line, at);
    }
  });
  child.stderr!.on('data', (b: Buffer) => {
    log.write(b);
    err.push(b);
  });
  child.once('error', (e) => err.push(Buffer.from(`cannot start: ${e.message}\n`)));
  child.once('close', () => log.end());
  return { child, pid: child.pid ?? -1, label, stderrTail: () => err.toString() };
}

/**
 * Parses a bench script's command line (node:util parseArgs, no positionals):
 * a bad option prints the message and the usage and exits 2; --help prints
 * the usage and exits 0.
 */
type _Values<T extends ParseArgsConfig['options']> = ReturnType<typeof parseArgs<{ options: T; allowPositionals: false }>>['values'];

export function parseCli<T extends ParseArgsConfig['options']>(options: T, usage: string): _Values<T> {
  let v: _Values<T>;
  try {
    v = parseArgs({ options, allowPositionals: false }).values as _Values<T>;
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${usage}`);
    process.exit(2);
  }
  if ((v as { help?: boolean }).help) {
    console.log(usage);
    process.exit(0);
  }
  return v;
}

const _t0 = performance.now();

/** When the bench started (wall clock), for reports. */
export function startedAt(): string {
  return new Date(Date.now() - (performance.now() - _t0)).toISOString();
}

/** A progress line on stderr, stamped with the seconds since the bench started. */
export function log(s: string): void {
  const t = ((performance.now() - _t0) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[${t}s] ${s}\n`);
}

/** A problem worth seeing in a long log, set off on stderr. */
export function loud(s: string): void {
  process.stderr.write(`\n!!! ${s.replaceAll('\n', '\n!!! ')}\n\n`);
}
