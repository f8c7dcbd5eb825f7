// Entry point of the `imz` binary (bundled to dist/imz.bundle.cjs for node; run from
// source by `deno task imz`). It starts the scan's second thread before
// anything else loads, then runs the command: the plain forms of status,
// push and sync directly (cli/fast_path.ts), the rest through yargs
// (cli/cli.ts).
import { resolve } from 'node:path';
import { startEarly } from '../core/pass_boot.ts';
import './start_dir.ts'; // before anything changes the working directory
import { commandWord } from './command_word.ts';

// Commands that scan the replica start the scan's second thread first of
// all, before the rest of the CLI loads: its start-up (25-40 ms) is the
// longest part of an `imz status` on a large tree. Once the CLI has loaded,
// the thread is told the directory: it reads and checks the cache file, and
// for status starts the lstat pass on its own, which the scan joins; push
// and sync scan only once they hold the replica's lock, so theirs waits.
const argv = process.argv.slice(2);
const command = commandWord(argv);
const scanning = command.word === 'status' || command.word === 'push' || command.word === 'sync' ? command.word : undefined;
if (scanning) startEarly();

// The server fsyncs a batch's files together, through libuv's thread pool
// (core/server_apply.ts): more threads than its default 4 let a disk merge
// more of them into one flush. Read when the pool starts, after this.
if (command.word === 'serve' && process.env.UV_THREADPOOL_SIZE === undefined) process.env.UV_THREADPOOL_SIZE = '16';

// A reader that went away (`imz pull -v | head`) is not an error of ours:
// stop quietly, as git does on SIGPIPE. State stays consistent (atomic steps).
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
    throw err;
  });
}

// A function, not top-level awaits: the node bundle is a CommonJS script (scripts/build.mjs), which has none.
async function _main(): Promise<void> {
  if (scanning) {
    const { PassWorker, replicaRootOf } = await import('../core/pass_worker.ts');
    const dir = _dirHint(argv);
    // The command enters the replica's root now, as it would once parsed (cli/run.ts enterReplica): the thread's
    // pass, which begins before that, then takes paths relative to it too (~20% less work in the kernel per path).
    // Only when the command word is sure: an option of another command could have taken it as its value.
    if (dir !== undefined && command.plain) _enterRoot(dir, replicaRootOf);
    PassWorker.warmUp(dir, undefined, { pass: scanning === 'status' });
  }
  const { fastCommand, runFast } = await import('./fast_path.ts');
  const fast = fastCommand(argv);
  if (fast) {
    await runFast(fast);
    // Done, and nothing left to write (stdout and stderr are synchronous on Linux; elsewhere this waits for them):
    // end now. What Node still ran first was the engine's idle-time garbage collection and the loop's last turns,
    // 3-7 ms of a 0.18 s push, none of it ours.
    if (!fast.args.watch && process.stdout.writableLength === 0 && process.stderr.writableLength === 0) process.exit();
  } else await (await import('./cli.ts')).runCli();
}
void _main();

/**
 * The directory a scanning command will work on, read from argv before
 * yargs has parsed it (-C DIR or -C=DIR, else the working directory): a
 * hint for the scan's worker only, which the scan checks against the
 * replica the command opens.
 */
function _dirHint(args: string[]): string | undefined {
  let dir = '.';
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    if (a === '-C' && i + 1 < args.length) dir = args[++i]!;
    else if (a.startsWith('-C=')) dir = a.slice(3);
  }
  try {
    return resolve(dir);
  } catch {
    return undefined; // the working directory is gone: the command says so
  }
}

/** Enters the root of the replica holding dir, if there is one and it can be entered. */
function _enterRoot(dir: string, rootOf: (dir: string) => string | undefined): void {
  try {
    const root = rootOf(dir);
    if (root !== undefined) process.chdir(root);
  } catch {
    // Not to be looked at or entered (ENOTDIR, EACCES, ELOOP...): the command reports it once parsed.
  }
}
