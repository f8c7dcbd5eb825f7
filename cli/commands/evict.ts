import type { Argv, CommandModule } from 'yargs';
import { type GlobalArgs, formatBytes } from '../output.ts';
import { run, workDir } from '../run.ts';

interface EvictArgs extends GlobalArgs {
  paths: string[];
  all: boolean;
}

/** `imz evict PATH|GLOB...`: drop local content of unchanged files. */
export const evictCommand: CommandModule<GlobalArgs, EvictArgs> = {
  command: 'evict [paths..]',
  describe: 'drop the local content of unchanged files (never of files with local changes); get or cat fetches them again',
  builder: (y: Argv<GlobalArgs>) => y
    .positional('paths', { type: 'string', array: true, default: [], describe: 'files, directories or globs (* ? **)' })
    .option('all', { type: 'boolean', default: false, describe: 'every unchanged file' })
    .example('imz evict "*.iso"', 'free the space of big images')
    .example('imz evict --all', 'keep only the namespace (and local changes)') as unknown as Argv<EvictArgs>,
  handler: (args) => run(args, async (out) => {
    const { evictFiles } = await import('../../core/on_demand.ts');
    const r = await evictFiles(workDir(args), args.paths, { all: args.all });
    for (const k of r.kept) {
      out.event({ event: 'kept', path: k.path, reason: k.reason });
      out.warn(`kept ${k.path}: ${k.reason}`);
    }
    out.event({ event: 'evicted', files: r.evicted.length, bytes: r.bytes, kept: r.kept.length });
    out.line(`evicted ${r.evicted.length} files, ${formatBytes(r.bytes)}${r.kept.length > 0 ? `; kept ${r.kept.length} with local changes` : ''}`);
    return 0;
  }),
};
