import type { Argv, CommandModule } from 'yargs';
import type { GlobalArgs } from '../output.ts';
import { run, securityOf, workDir } from '../run.ts';

interface CatArgs extends GlobalArgs {
  path: string;
  keep: boolean;
}

/** `imz cat PATH`: a file's content on stdout, fetched if it is not here. */
export const catCommand: CommandModule<GlobalArgs, CatArgs> = {
  command: 'cat <path>',
  describe: 'write a file to stdout, fetching it from the server if its content is not here (and keeping it, unless --no-keep)',
  builder: (y: Argv<GlobalArgs>) => y
    .positional('path', { type: 'string', demandOption: true, describe: 'a file of the replica' })
    .option('keep', { type: 'boolean', default: true, describe: 'keep fetched content in the replica (--no-keep: stream only)' })
    .example('imz cat notes/todo.txt | less', 'read a file, fetching it if needed')
    .example('imz cat --no-keep big.iso | sha256sum', 'stream without filling the replica') as unknown as Argv<CatArgs>,
  handler: (args) => run(args, async () => {
    const { catFile } = await import('../../core/cat.ts');
    for await (const chunk of catFile(workDir(args), args.path, { keep: args.keep, security: securityOf(args) })) {
      if (!process.stdout.write(chunk)) await new Promise<void>((r) => process.stdout.once('drain', () => r()));
    }
    return 0;
  }),
};
