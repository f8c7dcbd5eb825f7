// Entry point of the `imz` binary (bundled to dist/imz.js for node; run from
// source by `deno task imz`). It starts the scan's second thread before
// anything else loads, then runs the command: the plain forms of status,
// push and sync directly (cli/fast_path.ts), the rest through yargs
// (cli/cli.ts).
import { resolve } from 'node:path';
import { PassWorker } from '../core/pass_worker.ts';
import { fastCommand, runFast } from './fast_path.ts';

// Commands that scan the replica: the worker's start-up (25-40 ms) and, for
// status, its own start on the lstat pass overlap the loading of the command
// line. push and sync scan only once they hold the replica's lock: their
// worker only checks the cache file meanwhile.
const argv = process.argv.slice(2);
const scanning = argv.find((a) => a === 'status' || a === 'push' || a === 'sync');
if (scanning) PassWorker.warmUp(_dirHint(argv), undefined, { pass: scanning === 'status' });

// A reader that went away (`imz pull -v | head`) is not an error of ours:
// stop quietly, as git does on SIGPIPE. State stays consistent (atomic steps).
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
    throw err;
  });
}

const fast = fastCommand(argv);
if (fast) await runFast(fast);
else await import('./cli.ts');

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
