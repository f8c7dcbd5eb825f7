import type { Argv, CommandModule } from 'yargs';
import { Exit } from '../exit_codes.ts';
import { ImzError } from '../../protocol/errors.ts';
import { type GlobalArgs, formatBytes, parseSize } from '../output.ts';
import { run, securityOf } from '../run.ts';
import { pullEventPrinter, staleWarning } from './progress.ts';

interface CloneArgs extends GlobalArgs {
  address: string;
  dir: string;
  onDemand: boolean;
  maxCache?: string;
  verbose: boolean;
}

/** `imz clone HOST:PORT DIR`: make a replica. */
export const cloneCommand: CommandModule<GlobalArgs, CloneArgs> = {
  command: 'clone <address> <dir>',
  describe: 'make a full replica of a server\'s tree in DIR (new or empty)',
  builder: (y: Argv<GlobalArgs>) => y
    .positional('address', { type: 'string', demandOption: true, describe: 'the server, HOST:PORT' })
    .positional('dir', { type: 'string', demandOption: true, describe: 'where the replica goes' })
    .option('on-demand', { type: 'boolean', default: false, describe: 'fetch the namespace only (directories, symlinks, file facts); contents come with imz get and imz cat' })
    .option('max-cache', { type: 'string', requiresArg: true, describe: 'on demand: keep at most SIZE of fetched content (e.g. 500M, 2G); least recently fetched files are evicted' })
    .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'print every path as it arrives' })
    .example('imz clone 127.0.0.1:7070 ~/tree', 'replicate the tree served on port 7070')
    .example('imz clone 127.0.0.1:7070 ~/tree', 'run it again after an interruption: it resumes')
    .example('imz clone --on-demand --max-cache 1G 127.0.0.1:7070 ~/tree', 'the namespace only; files arrive when asked for') as unknown as Argv<CloneArgs>,
  handler: (args) => run(args, async (out) => {
    const { clone } = await import('../../core/clone.ts');
    const maxCache = args.maxCache === undefined ? undefined : parseSize(args.maxCache, '--max-cache');
    if (maxCache !== undefined && !args.onDemand) throw new ImzError('IMZ_USAGE', 'cannot clone: --max-cache needs --on-demand (a full replica keeps everything)');
    const t0 = Date.now();
    const r = await clone(args.address, args.dir, { onDemand: args.onDemand, maxCache, security: securityOf(args), onEvent: pullEventPrinter(out, args.verbose) });
    const secs = (Date.now() - t0) / 1000;
    out.stopProgress();
    out.event({ event: 'cloned', dir: r.dir, changed: r.changed, files: r.files, bytes: r.bytes, cursor: r.cursor, conflicts: r.conflicts.length, stale: r.stale.length, seconds: secs });
    out.line(`cloned ${args.address} into ${r.dir}${args.onDemand ? ' on demand' : ''}: ${r.changed} entries, ${r.files} files, ${formatBytes(r.bytes)} in ${secs.toFixed(2)} s (journal at ${r.cursor})`);
    if (r.stale.length > 0) out.warn(staleWarning(r.stale.length));
    return r.outstanding > 0 ? Exit.CONFLICTS : Exit.OK;
  }),
};
