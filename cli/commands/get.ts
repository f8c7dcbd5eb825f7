import type { Argv, CommandModule } from 'yargs';
import { Exit } from '../exit_codes.ts';
import { type GlobalArgs, formatBytes } from '../output.ts';
import { run, securityOf, workDir } from '../run.ts';
import { pullEventPrinter } from './progress.ts';

interface GetArgs extends GlobalArgs {
  paths: string[];
  all: boolean;
  verbose: boolean;
}

/** `imz get PATH|GLOB...`: fetch content into an on-demand replica. */
export const getCommand: CommandModule<GlobalArgs, GetArgs> = {
  command: 'get [paths..]',
  describe: 'fetch the content of files (paths, directories, globs) into an on-demand replica; pulls keep them fresh',
  builder: (y: Argv<GlobalArgs>) => y
    .positional('paths', { type: 'string', array: true, default: [], describe: 'files, directories or globs (* ? **), relative to the current directory' })
    .option('all', { type: 'boolean', default: false, describe: 'fetch everything: the replica becomes a full one' })
    .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'print every file as it arrives' })
    .example('imz get report.pdf', 'one file')
    .example('imz get "docs/**/*.md" images', 'a glob and a directory')
    .example('imz get --all', 'turn the replica into a full one') as unknown as Argv<GetArgs>,
  handler: (args) => run(args, async (out) => {
    const { getFiles } = await import('../../core/on_demand.ts');
    const r = await getFiles(workDir(args), args.paths, { all: args.all, security: securityOf(args), onEvent: pullEventPrinter(out, args.verbose) });
    out.stopProgress();
    out.event({ event: 'got', fetched: r.fetched, bytes: r.bytes, already: r.already, evicted: r.evicted.length, full: r.full, outstanding: r.outstanding });
    out.line(`fetched ${r.fetched} files, ${formatBytes(r.bytes)}${r.already > 0 ? ` (${r.already} already here)` : ''}${r.full ? '; the replica is now a full one' : ''}`);
    if (r.evicted.length > 0) out.warn(`${r.evicted.length} least recently fetched files were evicted to stay under the cache limit`);
    if (r.outstanding > 0) {
      out.warn(`${r.outstanding} conflicts remain (details in .imz/conflicts/)`);
      return Exit.CONFLICTS;
    }
    return Exit.OK;
  }),
};
