// Entry point of the `imz` binary (bundled to dist/imz.js for node; run from
// source by `deno task imz`). It starts the scan's second thread before
// anything else loads, then the command line (cli/cli.ts).
import { resolve } from 'node:path';
import { PassWorker } from '../core/scan_pass.ts';

// Commands that scan the replica: the worker's start-up (30-40 ms) and its
// own start on the lstat pass overlap the loading of the command line.
const argv = process.argv.slice(2);
if (argv.some((a) => a === 'status' || a === 'push' || a === 'sync')) PassWorker.warmUp(_dirHint(argv));

await import('./cli.ts');

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
