import type { Argv, CommandModule } from 'yargs';
import { type GlobalArgs, formatBytes } from '../output.ts';
import { run, workDir } from '../run.ts';

interface LsArgs extends GlobalArgs {
  path?: string;
}

/** `imz ls [PATH]`: the replica's entries, and whether their content is here. */
export const lsCommand: CommandModule<GlobalArgs, LsArgs> = {
  command: 'ls [path]',
  describe: 'list a directory of the replica: size, version, and whether the content is here (on demand)',
  builder: (y: Argv<GlobalArgs>) => y
    .positional('path', { type: 'string', describe: 'a directory or file of the replica (default: the current directory)' })
    .example('imz ls', 'the current directory of the replica')
    .example('imz ls docs --json', 'one JSON line per entry') as unknown as Argv<LsArgs>,
  handler: (args) => run(args, async (out) => {
    const { listReplica } = await import('../../core/ls.ts');
    const entries = await listReplica(workDir(args), args.path ?? '');
    for (const e of entries) {
      out.event({ event: 'entry', ...e });
      const where = e.type !== 'file' ? '      ' : e.local ? 'local ' : 'remote';
      const what = e.type === 'dir' ? 'dir' : e.type === 'symlink' ? `-> ${e.target}` : formatBytes(e.size);
      out.line(`${where}  ${e.type.padEnd(7)} ${what.padStart(10)}  v${String(e.version).padEnd(6)} ${e.path}${e.type === 'dir' ? '/' : ''}`);
    }
    return 0;
  }),
};
